"""Decomposition ranks to a budget (FD_TK / FD_SVD with ``--target-macs`` / ``--target-latency``).

A layer's rank is priced by the singular-value energy it discards per MAC it saves; see
:class:`RankPlanner` for the search. A latency budget measures candidates with
:mod:`models.compression.latency`.
"""
import copy
import dataclasses
import logging
import math

import torch

from models.compression import decompose, decompose_ranks
from models.compression.checks import check_budget
from models.compression.latency import check_runtime, search_latency
from models.compression.report import count_macs
from utils.errors import CompressionError

logger = logging.getLogger(__name__)


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
    weight = module.weight.detach().double().cpu()
    total = weight.pow(2).sum().clamp_min(1e-300)
    c_in, c_out = decompose_ranks.layer_dims(module)
    if method == "FD_SVD":
        loss = _tail_energy(weight.reshape(weight.shape[0], -1)) / total
        rank = torch.arange(1, loss.numel() + 1)
        before, after = decompose_ranks.layer_macs_for_rank(module, method, rank, geometry)
        ranks = [int(r) for r in rank]
    else:  # FD_TK: HOSVD bound, discarded energy of the input and output mode unfoldings
        loss_in = _tail_energy(weight.transpose(0, 1).reshape(c_in, -1)) / total
        loss_out = _tail_energy(weight.reshape(c_out, -1)) / total
        r_in = torch.arange(1, loss_in.numel() + 1)
        r_out = torch.arange(1, loss_out.numel() + 1)
        before, after = decompose_ranks.layer_macs_for_rank(module, method, [r_in[:, None], r_out[None, :]], geometry)
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
        if method not in ("FD_TK", "FD_SVD"):
            raise CompressionError(f"--target-macs / --target-latency choose ranks by singular-value energy, which "
                                   f"{method} has not: use FD_TK or FD_SVD, or {method} with --ratio / --layer-ranks")
        geometry = decompose_ranks.layer_geometry(model, input_size)
        names = [n for n in decompose_ranks.decomposable_layers(model, method) if n in geometry]
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
