"""Timing of runners and the ``auto`` backend's choice among the candidates."""
import logging

import torch
import torch.utils.benchmark as benchmark

from models.deploy import runtimes

logger = logging.getLogger(__name__)


def auto_candidates(device):
    """The backends ``auto`` times, in order: fused, then onnxruntime when it can run on
    ``device``, then openvino on the CPU when it is installed.

    ``compile`` is not probed: compiling PIDNet takes minutes on CPU, which costs more than it
    saves for one evaluation; ask for it explicitly.
    """
    candidates = ["fused"]
    if runtimes.onnxruntime_available():
        import onnxruntime as ort

        if device.type == "cpu" or "CUDAExecutionProvider" in ort.get_available_providers():
            candidates.append("onnxruntime")
    if device.type == "cpu" and runtimes.openvino_available():
        candidates.append("openvino")
    return candidates


def time_runner(runner, images, iters=3, warmup=1):
    """Mean seconds per call of ``runner(images)`` over ``iters`` calls.

    ``torch.utils.benchmark.Timer`` synchronises CUDA around the timed region and runs two
    warm-up calls of its own; ``warmup`` adds untimed calls before those. The Timer is given
    torch's current thread count (its default of 1 would slow the torch backends only).
    """
    for _ in range(max(0, warmup - 2)):
        runner(images)
    timer = benchmark.Timer(stmt="runner(images)", globals={"runner": runner, "images": images},
                            num_threads=torch.get_num_threads())
    return timer.timeit(max(1, int(iters))).mean


def choose_fastest(candidates, build, example, probe_iters=3):
    """``build(name)`` for each candidate, timed on ``example``; returns the fastest runner."""
    best, best_time = None, float("inf")
    for name in candidates:
        runner = build(name)
        seconds = time_runner(runner, example, iters=probe_iters)
        logger.info("auto: %s %.1f ms at %s", name, seconds * 1e3, tuple(example.shape))
        if seconds < best_time:
            best, best_time = runner, seconds
    logger.info("auto: using backend %s", best.backend)
    return best
