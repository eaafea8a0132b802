"""Structured pruning of an exported PIDNet body (or any conv net with tensor/list outputs).

Methods, named as NetsPresso names them:

* ``PR_L2``: remove the filters with the smallest L2 norm;
* ``PR_GM``: remove the filters closest to the geometric median of their group (FPGM);
* ``PR_NN``: remove the filters whose output feature maps have the smallest nuclear norm,
  averaged over real images (needs ``images``);
* ``PR_ID``: remove the channel indices the user lists per layer.

How many channels each layer loses comes from the ``slamp`` recommendation (a global
ranking of structured LAMP scores reaching an overall ``ratio``), from per-layer ratios
(``manual``), or from a budget (``target_macs`` / ``target_latency``, see
:mod:`models.compression.budget` and :mod:`models.compression.latency`). Coupled channels are
pruned as one group (see :mod:`models.compression.graph`), and the model's outputs keep their
shapes, so the exported head still composes.
"""
import copy
import logging

import torch

from models.compression import budget as budget_lib
from models.compression import checks
from models.compression import graph as graph_lib
from models.compression import importance, latency, recommend, report
from utils.cli import first_line
from utils.errors import CompressionError

logger = logging.getLogger(__name__)

METHODS = ("PR_L2", "PR_GM", "PR_NN", "PR_ID")
RECOMMENDATIONS = ("slamp", "manual")


def check_method(method):
    return checks.check_method(method, METHODS, "compression")


def check_recommendation(method, recommendation):
    """Default: ``slamp`` for PR_L2/PR_GM, explicit indices (``manual``) for PR_ID."""
    refused = {"vbmf": f"vbmf recommends decomposition ranks (FD_TK, FD_SVD), not pruning ({method}): "
                       "use --recommendation slamp or manual, or --method FD_TK / FD_SVD"}
    if method == "PR_ID":
        refused["slamp"] = ("PR_ID removes the channel indices you list (--indices FILE); "
                            "it takes no recommendation: drop --recommendation or use manual")
    return checks.check_recommendation(method, recommendation, RECOMMENDATIONS,
                                       "manual" if method == "PR_ID" else "slamp", refused)


def _shapes(model, example):
    with torch.no_grad():
        return [tuple(o.shape) for o in report.as_outputs(model(example))]


def check_request(method, recommendation=None, ratio=None, layer_ratios=None, layer_indices=None, round_to=1,
                  images=None, target_macs=None, target_latency=None, runtime=None):
    """Validate a pruning request before any work (the CLI, the planner and the console share it).

    Returns ``(method, recommendation, ratio, round_to, budget)``, normalised.
    """
    method = check_method(method)
    recommendation = check_recommendation(method, recommendation)
    try:
        round_to = int(round_to)
    except (TypeError, ValueError):
        raise CompressionError(f"--round-to must be a positive integer, got {round_to!r}") from None
    if round_to < 1:
        raise CompressionError(f"--round-to must be a positive integer, got {round_to}")
    budget = None
    if target_macs is not None and target_latency is not None:
        raise CompressionError("give one budget: --target-macs or --target-latency, not both")
    if target_macs is not None or target_latency is not None:
        flag = "--target-macs" if target_macs is not None else "--target-latency"
        if method == "PR_ID":
            raise CompressionError(f"PR_ID removes the indices you list; {flag} needs PR_L2, PR_GM or PR_NN")
        if recommendation != "slamp":
            raise CompressionError(f"{flag} chooses the per-layer amounts itself: drop --recommendation manual")
        if ratio is not None:
            raise CompressionError(f"{flag} replaces --ratio: give one of them")
        value = target_macs if target_macs is not None else target_latency
        budget = {"kind": "macs" if target_macs is not None else "latency",
                  "fraction": checks.check_budget(value, flag)}
        if budget["kind"] == "latency":
            budget["runtime"] = latency.check_runtime(runtime)
    elif recommendation == "slamp":
        ratio = recommend.check_ratio(ratio)
    elif method == "PR_ID" and not layer_indices:
        raise CompressionError("PR_ID needs channel indices: pass --indices FILE ({\"layer\": [0, 3, ...]})")
    elif method != "PR_ID" and not layer_ratios:
        raise CompressionError("manual compression needs per-layer ratios: pass --layer-ratios FILE "
                               "({\"layer\": 0.5, ...}) or use --recommendation slamp --ratio R")
    if method == "PR_NN" and not images:
        raise CompressionError("PR_NN ranks filters by their feature maps on real images: pass --images DIR "
                               "(a folder of images like the ones the model will see)")
    return method, recommendation, ratio, round_to, budget


def _check_runs(model, example, trace_size):
    try:
        return _shapes(model, example)
    except Exception as exc:  # a foreign module can fail in any way
        raise CompressionError(f"the model does not run on a 1x3x{trace_size[0]}x{trace_size[1]} image "
                               f"({type(exc).__name__}: {first_line(exc)}): "
                               "pass the exported body (model_modelfx.pt)") from None


def _prunable_groups(model, example):
    dep_graph = graph_lib.build_graph(model, example)
    all_groups = graph_lib.channel_groups(dep_graph)
    groups = [g for g in all_groups if g.prunable]
    if not groups:
        raise CompressionError("the model has no prunable channels (every channel feeds an output)")
    return dep_graph, all_groups, groups


def _apply(dep_graph, groups, plan, model, example, shapes_before):
    """Prune ``plan`` from ``model`` (the graph's own model) and check the outputs kept their shapes."""
    for gi, idxs in plan.items():
        graph_lib.prune_group(dep_graph, groups[gi], idxs)
    try:
        shapes_after = _shapes(model, example)
    except Exception as exc:  # an inconsistency here is a bug in the grouping, not user input
        raise CompressionError(f"the pruned model no longer runs ({type(exc).__name__}: "
                               f"{first_line(exc)}); please report this with the command used") from None
    if shapes_after != shapes_before:
        raise CompressionError(f"pruning changed the output shapes {shapes_before} -> {shapes_after}; "
                               "please report this with the command used")
    return model


def _pruned_copy(model, plan_by_name, example, shapes_before):
    """A fresh copy of the unpruned ``model`` with ``{group name: [indices]}`` removed."""
    copied = copy.deepcopy(model)
    dep_graph, _, groups = _prunable_groups(copied, example)
    index = {g.name: gi for gi, g in enumerate(groups)}
    return _apply(dep_graph, groups, {index[name]: idxs for name, idxs in plan_by_name.items()},
                  copied, example, shapes_before)


def compress_model(model, method="PR_L2", recommendation=None, ratio=None, layer_ratios=None,
                   layer_indices=None, round_to=1, trace_size=(256, 256), report_sizes=((1024, 2048),),
                   device="cpu", images=None, target_macs=None, target_latency=None, runtime="onnxruntime",
                   threads=None, latency_trials=6):
    """Prune a copy of ``model``; return ``(pruned_model, report_dict)``.

    Args:
        model: an ``nn.Module`` (typically the fx body ``model_modelfx.pt``) taking one NCHW image.
        method: ``PR_L2``, ``PR_GM``, ``PR_NN`` or ``PR_ID``.
        recommendation: ``slamp`` (needs ``ratio`` or a budget) or ``manual`` (needs
            ``layer_ratios``, or ``layer_indices`` for ``PR_ID``); ``None`` picks the method's default.
        ratio: fraction of prunable filters to remove, in (0, 1).
        layer_ratios: ``{conv name: ratio}`` for manual compression.
        layer_indices: ``{conv name: [channel indices]}`` for ``PR_ID``.
        round_to: kept channels per group snap to a multiple of this (NetsPresso step size).
        trace_size: ``(height, width)`` of the dummy input used to trace the graph.
        report_sizes: ``(height, width)`` sizes at which MACs are reported (first = export size,
            also the size at which budgets are counted and timed).
        device: where tracing, importance, pruning and latency measurement run; the result is
            returned on the CPU.
        images: preprocessed ``3xHxW`` tensors for ``PR_NN`` (e.g. from :func:`utils.images.input_transform`).
        target_macs: keep at most this fraction of the MACs (instead of ``ratio``).
        target_latency: keep at most this fraction of the measured latency (instead of ``ratio``).
        runtime: ``onnxruntime`` or ``eager``: what ``target_latency`` is measured with.
        threads: CPU threads for the latency measurement (default: torch's setting).
        latency_trials: at most this many pruned candidates are timed for ``target_latency``.

    Raises:
        CompressionError: bad method/ratio/budget/layer names, nothing prunable, an unreachable
            budget, or an untraceable model.
    """
    method, recommendation, ratio, round_to, budget = check_request(
        method, recommendation, ratio, layer_ratios, layer_indices, round_to, images, target_macs,
        target_latency, runtime)

    model = copy.deepcopy(model).to(device).eval()
    original = copy.deepcopy(model) if budget and budget["kind"] == "latency" else None
    example = torch.randn(1, 3, int(trace_size[0]), int(trace_size[1]), device=device)
    shapes_before = _check_runs(model, example, trace_size)
    sizes = [tuple(s) for s in report_sizes]
    before = report.summary(model, sizes)
    channels_before = report.conv_channels(model)

    dep_graph, all_groups, groups = _prunable_groups(model, example)
    logger.info("%d channel groups, %d prunable (%d filters); %d channel reductions cut (PagFM gates)",
                len(all_groups), len(groups), sum(g.filters for g in groups), len(dep_graph.cut_reductions))

    tp_groups = [graph_lib.full_group(dep_graph, g) for g in groups]
    if method == "PR_NN":
        # LAMP compares squared magnitudes, as for the L2 criterion.
        squared = [n.pow(2) for n in importance.nuclear_norms_per_group(model, dep_graph, tp_groups, groups, images)]
    else:
        squared = [importance.squared_norms(dep_graph, tg, g.channels) for tg, g in zip(tp_groups, groups)]

    def select_scores(gi):
        if method == "PR_GM":
            return importance.geometric_median_distances(dep_graph, tp_groups[gi], groups[gi].channels)
        return squared[gi]

    budget_result = None
    if method == "PR_ID":
        plan = recommend.indices_per_group(groups, all_groups, layer_indices)
    elif budget is not None:
        estimator = budget_lib.MacEstimator(model, dep_graph, tp_groups, sizes[0])
        selections = [select_scores(gi) for gi in range(len(groups))]
        if budget["kind"] == "macs":
            plan, achieved = budget_lib.plan_for_macs(estimator, groups, squared, selections,
                                                      budget["fraction"], round_to)
            budget_result = {"kind": "macs", "asked": budget["fraction"], "predicted": achieved}
        else:
            plan, budget_result = _latency_plan(original, estimator, groups, squared, selections, budget, round_to,
                                                example, shapes_before, sizes[0], device, threads, latency_trials)
    else:
        if recommendation == "slamp":
            counts = recommend.slamp_counts(groups, squared, ratio, round_to)
        else:
            counts = recommend.manual_counts(groups, all_groups, layer_ratios, round_to)
        plan = {gi: recommend.lowest(select_scores(gi), count) for gi, count in enumerate(counts) if count > 0}

    model = _apply(dep_graph, groups, plan, model, example, shapes_before).cpu()
    result = _report(model, method, recommendation, ratio, round_to, sizes, before, channels_before,
                     all_groups, plan)
    if method == "PR_NN":
        result["images"] = len(images)
    if budget_result is not None:
        result["budget"] = _budget_report(budget_result, result, sizes[0])
    logger.info("removed %.1f%% of prunable filters; params %d -> %d", 100 * result["ratio_achieved"],
                result["before"]["params"], result["after"]["params"])
    return model, result


def _latency_plan(original, estimator, groups, squared, selections, budget, round_to, example, shapes_before,
                  input_size, device, threads, max_trials):
    names = [g.name for g in groups]
    lowest_fraction = budget_lib.lowest_fraction(estimator, groups, squared, selections, round_to)[0]

    def build(mac_fraction):
        plan, achieved = budget_lib.plan_for_macs(estimator, groups, squared, selections, mac_fraction, round_to)
        pruned = _pruned_copy(original, {names[gi]: idxs for gi, idxs in plan.items()}, example, shapes_before)
        return pruned, plan, achieved

    found = latency.search_latency(build, budget["fraction"], original, budget["runtime"], device, input_size,
                                      threads, lowest_fraction, max_trials=max_trials)
    return found.plan, {"kind": "latency", "asked": budget["fraction"], "achieved": found.ratio,
                        "runtime": budget["runtime"], "threads": int(threads or torch.get_num_threads()),
                        "device": str(device), "latency_ms": {"before": 1e3 * found.baseline_s,
                                                              "after": 1e3 * found.candidate_s},
                        "predicted": found.macs_fraction, "trials": found.trials}


def _budget_report(budget_result, result, input_size):
    out = dict(budget_result)
    out["input_size"] = list(input_size)
    out["macs_kept"] = result["macs_kept"]
    if out["kind"] == "macs":
        out["achieved"] = result["macs_kept"]
    predicted = out.pop("predicted")
    if abs(predicted - result["macs_kept"]) > 1e-6:
        logger.warning("MAC estimate %.6f differs from the count after pruning %.6f", predicted, result["macs_kept"])
    return out


def _report(model, method, recommendation, ratio, round_to, sizes, before, channels_before, all_groups, plan):
    after = report.summary(model, sizes)
    channels_after = report.conv_channels(model)
    pruned_by_group = {id(g): 0 for g in all_groups}
    prunable = [g for g in all_groups if g.prunable]
    for gi, idxs in plan.items():
        pruned_by_group[id(prunable[gi])] = len(idxs)
    total = sum(g.filters for g in prunable)
    removed = sum(len(g.layers) * pruned_by_group[id(g)] for g in prunable)
    layers = {name: {"in": [channels_before[name][0], channels_after[name][0]],
                     "out": [channels_before[name][1], channels_after[name][1]]}
              for name in channels_before if name in channels_after}
    groups = [{"name": g.name, "layers": g.layers, "channels": [g.channels, g.channels - pruned_by_group[id(g)]],
               "prunable": g.prunable, **({"reason": g.reason} if g.reason else {})} for g in all_groups]
    first = f"{sizes[0][0]}x{sizes[0][1]}"
    return {
        "method": method,
        "recommendation": recommendation,
        "ratio_requested": ratio,
        "ratio_achieved": removed / total if total else 0.0,
        "round_to": round_to,
        "prunable_filters": total,
        "removed_filters": removed,
        "input_size": list(sizes[0]),
        "before": before,
        "after": after,
        "params_kept": after["params"] / before["params"],
        "macs_kept": after["macs"][first] / before["macs"][first] if before["macs"][first] else 1.0,
        "layers": layers,
        "groups": groups,
    }
