"""MAC budget of pruning (``--target-macs F``): keep at most a fraction of the body's MACs.

Channels are removed one at a time, always the one that loses the least importance per MAC it
saves. Importance is the channel's LAMP score within its group (as in SLAMP, so that scores of
different layers compare); the MACs a channel saves are exact: every convolution whose output
or input channels the group prunes shrinks, and the saving of a channel falls as its neighbours
are pruned, so the greedy re-prices lazily (a saving can only fall, so a stale heap key is a
lower bound). MACs per layer come from ``torch.utils.flop_counter`` on a ``meta`` copy of the
model at the export size; pruning only changes channel counts, never spatial sizes, so a layer's
MACs scale with its kept in/out fractions. Rounding channel counts (``round_to``) may overshoot,
so the internal target is bisected until the rounded plan fits.

The latency budget is :mod:`models.compression.latency`; the decomposition ranks for a budget
are :mod:`models.compression.decompose_budget`.
"""
import heapq
import logging
import math

import torch
import torch.nn as nn

from models.compression.importance import lamp_scores
from models.compression.recommend import lowest, rounded_keep
from models.compression.report import layer_macs
from utils.errors import CompressionError

logger = logging.getLogger(__name__)


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
