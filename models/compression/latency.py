"""Latency budget (``--target-latency F``): the search shared by pruning and decomposition.

Latency does not add up per layer, so it is measured. The MAC fraction is the lever: compress
to a MAC fraction, time the result against the original (alternating, ``torch.utils.benchmark``)
with the chosen runtime, and update the fraction (proportional step, then bisection once the
answer is bracketed) until the measured ratio is at most ``F`` and close to it.
"""
import dataclasses
import logging

import torch
import torch.nn as nn

from utils.errors import CompressionError

logger = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "eager")
# Once a candidate's measured latency ratio is this close below the target, stop searching.
LATENCY_TOLERANCE = 0.05


def check_runtime(runtime):
    name = str(runtime).strip().lower()
    if name not in RUNTIMES:
        raise CompressionError(f"unknown --runtime '{runtime}' for --target-latency: use one of {', '.join(RUNTIMES)}")
    return name


def make_runner(model, runtime, device, input_size, threads):
    """``f(images)`` running ``model`` with ``runtime`` (BN-folded ONNX in onnxruntime, or eager)."""
    from models.deploy import prepare_inference

    # The body's three outputs are intermediate tensors of the main path, so timing the main
    # output (what prepare_inference returns) times the whole body.
    return prepare_inference(model, backend=runtime, device=device, example_input=tuple(input_size),
                             threads=threads)


def time_pair(baseline, candidate, images, threads, rounds=3, min_run_time=0.5):
    """Median seconds per call of ``baseline`` and ``candidate``, measured alternately.

    Alternating rounds put both under the same background load (the machine may be shared).
    """
    # Imported here: torch.utils.benchmark pulls in cpp_extension, which warns on import on
    # machines with a CUDA toolkit but no driver, and the CLIs must print one line on errors.
    import torch.utils.benchmark as benchmark

    threads = int(threads or torch.get_num_threads())
    timers = [benchmark.Timer(stmt="run(x)", globals={"run": run, "x": images}, num_threads=threads)
              for run in (baseline, candidate)]
    samples = ([], [])
    for _ in range(rounds):
        for timer, sample in zip(timers, samples):
            sample.append(timer.blocked_autorange(min_run_time=min_run_time).median)
    return [sorted(s)[len(s) // 2] for s in samples]


@dataclasses.dataclass
class LatencyResult:
    model: nn.Module
    plan: dict
    macs_fraction: float
    ratio: float
    baseline_s: float
    candidate_s: float
    trials: list


def _next_fraction(trials, fraction, lowest_fraction):
    """Next MAC fraction to try: regula falsi on the measured (MAC fraction, latency ratio) points.

    Latency is roughly ``overhead + slope * MACs``, so the ratio is close to linear in the MAC
    fraction through (1, 1); the line through the bracketing points (or through (1, 1) and the
    best failing point) is solved for the budget. A measurement without speed-up (noise)
    halves the fraction instead.
    """
    passing = [t for t in trials if t["latency_ratio"] <= fraction]
    failing = [t for t in trials if t["latency_ratio"] > fraction]
    high = max(passing, key=lambda t: t["macs_fraction"]) if passing else None
    low = min(failing, key=lambda t: t["macs_fraction"]) if failing else None
    if high is not None and low is not None and high["macs_fraction"] < low["macs_fraction"]:
        a, b = (high["macs_fraction"], high["latency_ratio"]), (low["macs_fraction"], low["latency_ratio"])
    elif low is not None:
        a, b = (low["macs_fraction"], low["latency_ratio"]), (1.0, 1.0)
    else:  # everything passed: move up towards the budget from the largest passing point
        a, b = (high["macs_fraction"], high["latency_ratio"]), (1.0, 1.0)
    slope = (b[1] - a[1]) / (b[0] - a[0]) if b[0] != a[0] else 0.0
    if slope <= 0:
        guess = a[0] / 2
    else:
        guess = a[0] + (fraction - a[1]) / slope
    if high is not None and low is not None and high["macs_fraction"] < low["macs_fraction"]:
        # stay strictly inside the bracket (noise can put the line's root outside it)
        span = low["macs_fraction"] - high["macs_fraction"]
        guess = min(max(guess, high["macs_fraction"] + 0.1 * span), low["macs_fraction"] - 0.1 * span)
    elif low is not None:
        # one noisy point makes the line steep or flat: at most halve the fraction per step
        guess = max(guess, low["macs_fraction"] / 2)
    return min(max(guess, lowest_fraction), 0.999)


def search_latency(build, fraction, baseline, runtime, device, input_size, threads, lowest_fraction,
                   max_trials=6, rounds=3, min_run_time=0.3):
    """Prune to MAC fractions until the measured latency ratio is at most ``fraction``.

    Args:
        build: ``f(mac_fraction) -> (pruned model, plan, achieved MAC fraction)``.
        fraction: the latency budget in (0, 1).
        baseline: the unpruned model.
        lowest_fraction: the smallest MAC fraction pruning reaches (the search's floor).

    Returns:
        :class:`LatencyResult` of the passing candidate with the most MACs.

    Raises:
        CompressionError: no candidate met the budget within ``max_trials`` measurements.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, int(input_size[0]), int(input_size[1]), generator=generator).to(device)
    base_runner = make_runner(baseline, runtime, device, input_size, threads)
    mac_goal = max(fraction, lowest_fraction)
    best, trials = None, []
    for _ in range(max_trials):
        pruned, plan, macs_fraction = build(mac_goal)
        runner = make_runner(pruned, runtime, device, input_size, threads)
        base_s, cand_s = time_pair(base_runner, runner, images, threads, rounds, min_run_time)
        ratio = cand_s / base_s
        trials.append({"macs_fraction": macs_fraction, "latency_ratio": ratio,
                       "baseline_ms": 1e3 * base_s, "latency_ms": 1e3 * cand_s})
        logger.info("MAC fraction %.3f -> measured latency ratio %.3f (%.2f ms vs %.2f ms, %s)",
                    macs_fraction, ratio, 1e3 * cand_s, 1e3 * base_s, runtime)
        if ratio <= fraction:
            if best is None or macs_fraction > best.macs_fraction:
                best = LatencyResult(pruned, plan, macs_fraction, ratio, base_s, cand_s, trials)
            if ratio >= fraction * (1.0 - LATENCY_TOLERANCE):
                break
        elif macs_fraction <= lowest_fraction * 1.001:
            break  # the floor itself is too slow: nothing left to try
        following = _next_fraction(trials, fraction, lowest_fraction)
        if any(abs(t["macs_fraction"] - following) < 1e-3 for t in trials):
            break  # converged to a point already measured
        mac_goal = following
    if best is None:
        lowest = min(trials, key=lambda t: t["latency_ratio"])
        raise CompressionError(f"--target-latency {fraction} was not reached with {runtime} on this machine: "
                               f"the lowest measured latency ratio was {lowest['latency_ratio']:.3f} (at MAC "
                               f"fraction {lowest['macs_fraction']:.3f}, floor {lowest_fraction:.3f}); ask for a "
                               "larger --target-latency or try the other --runtime")
    best.trials = trials
    return best
