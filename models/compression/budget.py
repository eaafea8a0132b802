"""Compression to a budget: keep at most a fraction of the body's MACs, or of its latency.

MAC budget (``--target-macs F``): channels are removed one at a time, always the one that
loses the least importance per MAC it saves. Importance is the channel's LAMP score within
its group (as in SLAMP, so that scores of different layers compare); the MACs a channel saves
are exact: every convolution whose output or input channels the group prunes shrinks, and the
saving of a channel falls as its neighbours are pruned, so the greedy re-prices lazily (a
saving can only fall, so a stale heap key is a lower bound). MACs per layer come from
``torch.utils.flop_counter`` on a ``meta`` copy of the model at the export size; pruning only
changes channel counts, never spatial sizes, so a layer's MACs scale with its kept in/out
fractions. Rounding channel counts (``round_to``) may overshoot, so the internal target is
bisected until the rounded plan fits.

Decomposition (FD_TK / FD_SVD, :class:`RankPlanner`): a layer's rank is priced by the
singular-value energy it discards per MAC it saves; see the class for the search.

Latency budget (``--target-latency F``): latency does not add up per layer, so it is
measured. The MAC fraction is the lever: prune to a MAC fraction, time the result against
the original (alternating, ``torch.utils.benchmark``) with the chosen runtime, and update
the fraction (proportional step, then bisection once the answer is bracketed) until the
measured ratio is at most ``F`` and close to it.
"""
import copy
import dataclasses
import heapq
import logging
import math

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from models.compression.graph import _CONV
from models.compression.importance import lamp_scores
from models.compression.recommend import lowest, rounded_keep
from utils.errors import CompressionError

logger = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "eager")
# Once a candidate's measured latency ratio is this close below the target, stop searching.
LATENCY_TOLERANCE = 0.05


def check_budget(value, what):
    """A budget fraction in (0, 1), or a :class:`CompressionError` naming the flag."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise CompressionError(f"{what} must be a number in (0, 1), got {value!r}") from None
    if math.isnan(fraction) or not 0.0 < fraction < 1.0:
        raise CompressionError(f"{what} must be in (0, 1) (the fraction of the original to keep), got {value}")
    return fraction


def check_runtime(runtime):
    name = str(runtime).strip().lower()
    if name not in RUNTIMES:
        raise CompressionError(f"unknown --runtime '{runtime}' for --target-latency: use one of {', '.join(RUNTIMES)}")
    return name


def layer_macs(model, input_size):
    """``{module name: MACs}`` of every conv / linear layer for one ``1x3xHxW`` image.

    Counted by ``torch.utils.flop_counter`` (FLOPs / 2) on a ``meta`` copy, so no arithmetic runs.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, 3, int(input_size[0]), int(input_size[1]), device="meta"))
    counts = counter.get_flop_counts()
    root = type(meta).__name__
    macs = {}
    for name, module in meta.named_modules():
        if isinstance(module, (_CONV, nn.Linear)):
            ops = counts.get(f"{root}.{name}", {})
            macs[name] = sum(int(v) for v in ops.values()) // 2
    return macs


def _sizes(module):
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return module.out_channels, module.in_channels


class MacEstimator:
    """Exact MACs of the model after removing any set of channels from its prunable groups.

    Args:
        model: the (unpruned) network the graph was built on.
        graph: its :class:`models.compression.graph.PIDNetDependencyGraph`.
        tp_groups: for each prunable group, the torch-pruning group holding all its channels.
        input_size: ``(height, width)`` at which MACs count.
    """

    def __init__(self, model, graph, tp_groups, input_size):
        self.base = layer_macs(model, input_size)
        self.total = sum(self.base.values())
        modules = dict(model.named_modules())
        self.shape = {name: _sizes(modules[name]) for name in self.base}
        # effects[g][root channel] = {(layer, "out"|"in"): number of that layer's channels it removes}
        self.effects = []
        for tp_group in tp_groups:
            seen, per_channel = set(), {}
            for item in tp_group:
                module, handler = item.dep.target.module, item.dep.handler
                name = graph._module2name.get(module)
                if name not in self.base:
                    continue
                if graph.is_out_channel_pruning_fn(handler):
                    kind = "out"
                elif graph.is_in_channel_pruning_fn(handler):
                    kind = "in"
                else:
                    continue
                for idx, root in zip(item.idxs, item.root_idxs):
                    if (name, kind, idx) in seen:  # the same layer reached along two paths
                        continue
                    seen.add((name, kind, idx))
                    slot = per_channel.setdefault(int(root), {})
                    slot[(name, kind)] = slot.get((name, kind), 0) + 1
            self.effects.append(per_channel)

    def layer(self, name, removed_out, removed_in):
        out, inp = self.shape[name]
        return self.base[name] * (out - removed_out) / out * (inp - removed_in) / inp

    def macs(self, plan):
        """Total MACs after removing ``plan = {group index: [root channel indices]}``."""
        removed = {}
        for gi, idxs in plan.items():
            for root in idxs:
                for (name, kind), n in self.effects[gi].get(int(root), {}).items():
                    pair = removed.setdefault(name, [0, 0])
                    pair[0 if kind == "out" else 1] += n
        total = 0.0
        for name in self.base:
            ro, ri = removed.get(name, (0, 0))
            total += self.layer(name, ro, ri)
        return total


def _greedy_counts(estimator, squared, target):
    """Channels to remove per group so that MACs fall to ``target``, cheapest importance per MAC first.

    Returns ``(counts, macs_reached)``; ``macs_reached > target`` when every group is down to one channel.
    """
    removed = {}
    orders = [torch.argsort(torch.as_tensor(v, dtype=torch.float64), stable=True).tolist() for v in squared]
    lamps = [lamp_scores(v).tolist() for v in squared]
    counts = [0] * len(squared)
    current = float(estimator.total)

    def saving(gi, root):
        total = 0.0
        for (name, kind), n in estimator.effects[gi].get(root, {}).items():
            ro, ri = removed.get(name, (0, 0))
            new = (ro + n, ri) if kind == "out" else (ro, ri + n)
            total += estimator.layer(name, ro, ri) - estimator.layer(name, *new)
        return total

    def update(gi, root, sign):
        for (name, kind), n in estimator.effects[gi].get(root, {}).items():
            pair = removed.setdefault(name, [0, 0])
            pair[0 if kind == "out" else 1] += sign * n

    def key(gi):
        root = orders[gi][counts[gi]]
        save = saving(gi, root)
        return (lamps[gi][root] / save) if save > 0 else math.inf

    heap = [(key(gi), gi) for gi in range(len(squared)) if len(orders[gi]) > 1]
    heapq.heapify(heap)
    while heap and current > target:
        stale, gi = heapq.heappop(heap)
        fresh = key(gi)
        if fresh > stale and heap and fresh > heap[0][0]:
            heapq.heappush(heap, (fresh, gi))
            continue
        if math.isinf(fresh):
            continue
        root = orders[gi][counts[gi]]
        current -= saving(gi, root)
        update(gi, root, +1)
        counts[gi] += 1
        if counts[gi] + 1 < len(orders[gi]):
            heapq.heappush(heap, (key(gi), gi))
    if target >= 0:
        current = _refill(estimator, orders, lamps, counts, removed, current, target, update)
    return counts, current


def _refill(estimator, orders, lamps, counts, removed, current, target, update):
    """Give back removed channels while MACs stay within ``target``, most importance per MAC first.

    The greedy's last step can overshoot by a whole wide group (a residual stream couples many
    layers); smaller channels elsewhere then fit back into the slack.
    """
    def cost(gi, root):
        total = 0.0
        for (name, kind), n in estimator.effects[gi].get(root, {}).items():
            ro, ri = removed.get(name, (0, 0))
            old = (ro - n, ri) if kind == "out" else (ro, ri - n)
            total += estimator.layer(name, *old) - estimator.layer(name, ro, ri)
        return total

    while True:
        best, best_value = None, -1.0
        for gi, count in enumerate(counts):
            if count == 0:
                continue
            root = orders[gi][count - 1]
            extra = cost(gi, root)
            if current + extra > target:
                continue
            value = lamps[gi][root] / extra if extra > 0 else math.inf
            if value > best_value:
                best, best_value = (gi, root, extra), value
        if best is None:
            return current
        gi, root, extra = best
        update(gi, root, -1)
        counts[gi] -= 1
        current += extra


def _plan(counts, groups, select_scores, round_to):
    plan = {}
    for gi, count in enumerate(counts):
        channels = groups[gi].channels
        count = channels - rounded_keep(channels, channels - count, round_to)
        if count > 0:
            plan[gi] = lowest(select_scores[gi], count)
    return plan


def lowest_fraction(estimator, groups, squared, select_scores, round_to=1):
    """``(fraction, plan, macs)``: the fewest MACs pruning reaches (one channel, or ``round_to``, per group)."""
    counts, _ = _greedy_counts(estimator, squared, -1.0)
    plan = _plan(counts, groups, select_scores, round_to)
    macs = estimator.macs(plan)
    return macs / float(estimator.total), plan, macs


def plan_for_macs(estimator, groups, squared, select_scores, fraction, round_to=1):
    """``({group index: [channels to remove]}, achieved fraction)`` keeping at most ``fraction`` of the MACs.

    ``squared`` (squared importances, e.g. squared filter norms) decide how many channels each
    group loses: the LAMP score of the group's weakest channel per MAC it saves;
    ``select_scores`` decide which (the lowest go), e.g. geometric-median distances for PR_GM.

    Raises:
        CompressionError: ``fraction`` is below what pruning every group to one channel reaches.
    """
    total = float(estimator.total)
    if total <= 0:
        raise CompressionError("the model has no conv / linear MACs to budget")
    goal = fraction * total
    floor_fraction, floor_plan, floor = lowest_fraction(estimator, groups, squared, select_scores, round_to)
    if floor_fraction > fraction:
        raise CompressionError(f"--target-macs {fraction} is below what pruning can reach: "
                               f"{floor_fraction:.4f} of the MACs remain with one channel per prunable group "
                               "(layers feeding the head keep theirs); ask for at least "
                               f"{math.ceil(floor_fraction * 1000) / 1000}")

    def attempt(target):
        counts, _ = _greedy_counts(estimator, squared, target)
        plan = _plan(counts, groups, select_scores, round_to)
        return plan, estimator.macs(plan)

    plan, macs = attempt(goal)
    if macs > goal:
        # Rounding kept too much: bisect the internal target between the floor and the goal.
        low, high, best = floor, goal, (floor_plan, floor)
        for _ in range(40):
            middle = (low + high) / 2
            plan, macs = attempt(middle)
            if macs <= goal:
                low = middle
                if macs > best[1]:
                    best = (plan, macs)
            else:
                high = middle
            if high - low < 1e-4 * total:
                break
        plan, macs = best
    achieved = macs / total
    if achieved < 0.98 * fraction:
        logger.warning("MACs kept %.4f for a budget of %.4f: channel rounding (round_to=%d) cannot land closer",
                       achieved, fraction, round_to)
    return plan, achieved


# --------------------------------------------------------------------------- latency

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


# --------------------------------------------------------------------------- decomposition ranks

@dataclasses.dataclass
class _RankOptions:
    """Every rank choice of one layer: ``ranks[i]`` loses ``loss[i]`` and costs ``macs[i]``.

    Option 0 is the layer left as it is (loss 0, its original MACs).
    """
    name: str
    ranks: list
    loss: torch.Tensor
    macs: torch.Tensor


def _tail_energy(matrix):
    """``tail[r - 1]``: squared singular values beyond the first ``r`` (r = 1..min dim)."""
    energy = torch.linalg.svdvals(matrix).pow(2)
    return energy.sum() - torch.cumsum(energy, 0)


def _rank_options(name, module, method, geometry):
    from models.compression import decompose

    weight = module.weight.detach().double().cpu()
    total = weight.pow(2).sum().clamp_min(1e-300)
    c_in, c_out = (module.in_features, module.out_features) if isinstance(module, nn.Linear) else \
        (module.in_channels, module.out_channels)
    if method == "FD_SVD":
        loss = _tail_energy(weight.reshape(weight.shape[0], -1)) / total
        rank = torch.arange(1, loss.numel() + 1)
        before, after = decompose.layer_macs_for_rank(module, method, rank, geometry)
        ranks = [int(r) for r in rank]
    else:  # FD_TK: HOSVD bound, discarded energy of the input and output mode unfoldings
        loss_in = _tail_energy(weight.transpose(0, 1).reshape(c_in, -1)) / total
        loss_out = _tail_energy(weight.reshape(c_out, -1)) / total
        r_in = torch.arange(1, loss_in.numel() + 1)
        r_out = torch.arange(1, loss_out.numel() + 1)
        before, after = decompose.layer_macs_for_rank(module, method, [r_in[:, None], r_out[None, :]], geometry)
        loss = (loss_in[:, None] + loss_out[None, :]).flatten()
        after = after.flatten()
        grid_in, grid_out = torch.meshgrid(r_in, r_out, indexing="ij")
        ranks = [[int(a), int(b)] for a, b in zip(grid_in.flatten().tolist(), grid_out.flatten().tolist())]
    after = torch.as_tensor(after, dtype=torch.float64)
    pays = after < before  # a decomposition that does not lower MACs is never chosen
    keep = [None] + [r for r, p in zip(ranks, pays.tolist()) if p]
    return _RankOptions(name, keep, torch.cat([torch.zeros(1, dtype=torch.float64), loss[pays]]),
                        torch.cat([torch.tensor([float(before)], dtype=torch.float64), after[pays]]))


def _choose(options, lam):
    return [int(torch.argmin(o.loss + lam * o.macs)) for o in options]


class RankPlanner:
    """Decomposition ranks keeping at most a fraction of the MACs (FD_TK, FD_SVD).

    Every decomposable layer has a curve of (discarded energy, MACs) over its ranks; the energy
    is the squared singular values dropped from the weight's unfoldings (the output one for
    FD_SVD; input + output, the HOSVD bound, for FD_TK), as a fraction of the layer's energy so
    that layers compare. A Lagrange multiplier trades energy for MACs across all layers at
    once (each layer takes the rank minimising ``energy + lambda * MACs``, which also decides
    whether decomposing pays at all); it is bisected to the largest MACs within the budget,
    then the slack is filled rank by rank, most energy back per MAC first.

    Args:
        model: the body; method: ``FD_TK`` or ``FD_SVD``; input_size: ``(H, W)`` for MACs;
        total_macs: the body's MACs at ``input_size`` (as the report counts them).
    """

    def __init__(self, model, method, input_size, total_macs):
        from models.compression import decompose

        if method not in ("FD_TK", "FD_SVD"):
            raise CompressionError(f"--target-macs / --target-latency choose ranks by singular-value energy, which "
                                   f"{method} has not: use FD_TK or FD_SVD, or {method} with --ratio / --layer-ranks")
        geometry = decompose.layer_geometry(model, input_size)
        names = [n for n in decompose.decomposable_layers(model, method) if n in geometry]
        if not names:
            raise CompressionError(f"the model has no layer {method} can decompose")
        self.method = method
        self.total = float(total_macs)
        self.options = [_rank_options(n, model.get_submodule(n), method, geometry[n]) for n in names]
        self.fixed = self.total - sum(float(o.macs[0]) for o in self.options)
        self.lowest_fraction = (self.fixed + sum(float(o.macs.min()) for o in self.options)) / self.total

    def _macs(self, choice):
        return self.fixed + sum(float(o.macs[i]) for o, i in zip(self.options, choice))

    def plan(self, fraction):
        """``({layer: rank}, achieved fraction)``.

        Raises:
            CompressionError: ``fraction`` is below what rank 1 everywhere reaches.
        """
        options, goal = self.options, fraction * self.total
        if self.lowest_fraction > fraction:
            raise CompressionError(f"--target-macs {fraction} is below what {self.method} can reach: "
                                   f"{self.lowest_fraction:.4f} of the MACs remain at rank 1 in every layer; ask for "
                                   f"at least {math.ceil(self.lowest_fraction * 1000) / 1000}")
        scale = 1.0 / self.total  # lambda per unit of energy, MACs as a fraction of the total
        low, high = 0.0, 1.0
        while self._macs(_choose(options, high * scale)) > goal and high < 1e12:
            high *= 4.0
        for _ in range(60):
            middle = (low + high) / 2
            if self._macs(_choose(options, middle * scale)) > goal:
                low = middle
            else:
                high = middle
        choice = _choose(options, high * scale)
        if self._macs(choice) > goal:  # ties kept the multiplier from getting there: cheapest ranks
            choice = [int(torch.argmin(o.macs)) for o in options]
        current = self._macs(choice)
        for _ in range(10000):  # refill: rank increases that fit the slack, most energy back per MAC
            best, best_value = None, 0.0
            for li, o in enumerate(options):
                extra = o.macs - o.macs[choice[li]]
                gain = o.loss[choice[li]] - o.loss
                fits = (extra > 0) & (gain > 0) & (current + extra <= goal)
                if not bool(fits.any()):
                    continue
                value = torch.where(fits, gain / extra.clamp_min(1e-300), torch.zeros_like(gain))
                i = int(torch.argmax(value))
                if float(value[i]) > best_value:
                    best, best_value = (li, i), float(value[i])
            if best is None:
                break
            li, i = best
            current += float(options[li].macs[i] - options[li].macs[choice[li]])
            choice[li] = i
        ranks = {o.name: o.ranks[i] for o, i in zip(options, choice) if i != 0}
        achieved = current / self.total
        if achieved < 0.98 * fraction:
            logger.warning("MACs kept %.4f for a budget of %.4f: the rank steps cannot land closer", achieved, fraction)
        return ranks, achieved


def decompose_to_budget(model, method, target_macs=None, target_latency=None, runtime="onnxruntime", threads=None,
                        latency_trials=6, report_sizes=((1024, 2048),), device="cpu"):
    """Filter decomposition (FD_TK / FD_SVD) to a MAC or latency budget: ``(model, report)``.

    The report is :func:`models.compression.decompose.decompose_model`'s plus ``budget`` (asked,
    achieved; for latency the measured times and every trial), as for pruning.
    """
    from models.compression import decompose
    from models.compression.report import count_macs

    if (target_macs is None) == (target_latency is None):
        raise CompressionError("give one budget: --target-macs or --target-latency")
    flag = "--target-macs" if target_macs is not None else "--target-latency"
    fraction = check_budget(target_macs if target_macs is not None else target_latency, flag)
    if target_latency is not None:
        runtime = check_runtime(runtime)
    sizes = [tuple(int(v) for v in s) for s in report_sizes]
    model = copy.deepcopy(model).to(device).eval()
    total = count_macs(model, sizes[0])

    planner = RankPlanner(model, method, sizes[0], total)

    def build(mac_fraction):
        ranks, _ = planner.plan(mac_fraction)
        decomposed, report = decompose.decompose_model(model, method, ranks, report_sizes=sizes,
                                                       recommendation="budget", device=device)
        return decomposed, report, report["macs_kept"]

    if target_macs is not None:
        decomposed, report, _ = build(fraction)
        report["budget"] = {"kind": "macs", "asked": fraction, "achieved": report["macs_kept"],
                            "input_size": list(sizes[0]), "macs_kept": report["macs_kept"]}
        return decomposed, report
    found = search_latency(build, fraction, model, runtime, device, sizes[0], threads, planner.lowest_fraction,
                           max_trials=latency_trials)
    report = found.plan
    report["budget"] = {"kind": "latency", "asked": fraction, "achieved": found.ratio, "runtime": runtime,
                        "threads": int(threads or torch.get_num_threads()), "device": str(device),
                        "latency_ms": {"before": 1e3 * found.baseline_s, "after": 1e3 * found.candidate_s},
                        "input_size": list(sizes[0]), "macs_kept": report["macs_kept"], "trials": found.trials}
    return found.model.cpu(), report
