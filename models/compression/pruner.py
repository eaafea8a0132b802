"""Structured pruning of an exported PIDNet body (or any conv net with tensor/list outputs).

Methods, named as NetsPresso names them:

* ``PR_L2``: remove the filters with the smallest L2 norm;
* ``PR_GM``: remove the filters closest to the geometric median of their group (FPGM);
* ``PR_ID``: remove the channel indices the user lists per layer.

How many channels each layer loses comes from the ``slamp`` recommendation (a global
ranking of structured LAMP scores reaching an overall ``ratio``) or from per-layer ratios
(``manual``). Coupled channels are pruned as one group (see :mod:`models.compression.graph`),
and the model's outputs keep their shapes, so the exported head still composes.
"""
import copy
import logging

import torch

from models.compression import graph as graph_lib
from models.compression import importance, recommend, report
from utils.errors import CompressionError

logger = logging.getLogger(__name__)

METHODS = ("PR_L2", "PR_GM", "PR_ID")
RECOMMENDATIONS = ("slamp", "manual")


def check_method(method):
    name = str(method).strip().upper()
    if name not in METHODS:
        raise CompressionError(f"unknown compression method '{method}': use one of {', '.join(METHODS)}")
    return name


def check_recommendation(method, recommendation):
    """Default: ``slamp`` for PR_L2/PR_GM, explicit indices (``manual``) for PR_ID."""
    if recommendation in (None, ""):
        return "manual" if method == "PR_ID" else "slamp"
    name = str(recommendation).strip().lower()
    if name == "vbmf":
        raise CompressionError(f"vbmf recommends decomposition ranks (FD_TK, FD_SVD), not pruning ({method}): "
                               "use --recommendation slamp or manual, or --method FD_TK / FD_SVD")
    if name not in RECOMMENDATIONS:
        raise CompressionError(f"unknown recommendation '{recommendation}': use one of {', '.join(RECOMMENDATIONS)}")
    if method == "PR_ID" and name != "manual":
        raise CompressionError("PR_ID removes the channel indices you list (--indices FILE); "
                               "it takes no recommendation: drop --recommendation or use manual")
    return name


def _outputs(out):
    return [out] if torch.is_tensor(out) else list(out)


def _shapes(model, example):
    with torch.no_grad():
        return [tuple(o.shape) for o in _outputs(model(example))]


def compress_model(model, method="PR_L2", recommendation=None, ratio=None, layer_ratios=None,
                   layer_indices=None, round_to=1, trace_size=(256, 256), report_sizes=((1024, 2048),),
                   device="cpu"):
    """Prune a copy of ``model``; return ``(pruned_model, report_dict)``.

    Args:
        model: an ``nn.Module`` (typically the fx body ``model_modelfx.pt``) taking one NCHW image.
        method: ``PR_L2``, ``PR_GM`` or ``PR_ID``.
        recommendation: ``slamp`` (needs ``ratio``) or ``manual`` (needs ``layer_ratios``, or
            ``layer_indices`` for ``PR_ID``); ``None`` picks the method's default.
        ratio: fraction of prunable filters to remove, in (0, 1).
        layer_ratios: ``{conv name: ratio}`` for manual compression.
        layer_indices: ``{conv name: [channel indices]}`` for ``PR_ID``.
        round_to: kept channels per group snap to a multiple of this (NetsPresso step size).
        trace_size: ``(height, width)`` of the dummy input used to trace the graph.
        report_sizes: ``(height, width)`` sizes at which MACs are reported (first = export size).
        device: where tracing and pruning run; the result is returned on the CPU.

    Raises:
        CompressionError: bad method/ratio/layer names, nothing prunable, or an untraceable model.
    """
    method = check_method(method)
    recommendation = check_recommendation(method, recommendation)
    round_to = int(round_to)
    if round_to < 1:
        raise CompressionError(f"--round-to must be a positive integer, got {round_to}")
    if recommendation == "slamp":
        ratio = recommend.check_ratio(ratio)
    elif method == "PR_ID" and not layer_indices:
        raise CompressionError("PR_ID needs channel indices: pass --indices FILE ({\"layer\": [0, 3, ...]})")
    elif method != "PR_ID" and not layer_ratios:
        raise CompressionError("manual compression needs per-layer ratios: pass --layer-ratios FILE "
                               "({\"layer\": 0.5, ...}) or use --recommendation slamp --ratio R")

    model = copy.deepcopy(model).to(device).eval()
    example = torch.randn(1, 3, int(trace_size[0]), int(trace_size[1]), device=device)
    try:
        shapes_before = _shapes(model, example)
    except Exception as exc:  # a foreign module can fail in any way
        raise CompressionError(f"the model does not run on a 1x3x{trace_size[0]}x{trace_size[1]} image "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                               "pass the exported body (model_modelfx.pt)") from None
    sizes = [tuple(s) for s in report_sizes]
    before = report.summary(model, sizes)
    channels_before = report.conv_channels(model)

    dep_graph = graph_lib.build_graph(model, example)
    all_groups = graph_lib.channel_groups(dep_graph)
    groups = [g for g in all_groups if g.prunable]
    if not groups:
        raise CompressionError("the model has no prunable channels (every channel feeds an output)")
    logger.info("%d channel groups, %d prunable (%d filters); %d channel reductions cut (PagFM gates)",
                len(all_groups), len(groups), sum(g.filters for g in groups), len(dep_graph.cut_reductions))

    tp_groups = [graph_lib.full_group(dep_graph, g) for g in groups]
    norms = [importance.squared_norms(dep_graph, tg, g.channels) for tg, g in zip(tp_groups, groups)]

    if method == "PR_ID":
        plan = recommend.indices_per_group(groups, all_groups, layer_indices)
    else:
        if recommendation == "slamp":
            counts = recommend.slamp_counts(groups, norms, ratio, round_to)
        else:
            counts = recommend.manual_counts(groups, all_groups, layer_ratios, round_to)
        plan = {}
        for gi, count in enumerate(counts):
            if count <= 0:
                continue
            if method == "PR_L2":
                scores = norms[gi]
            else:
                scores = importance.geometric_median_distances(dep_graph, tp_groups[gi], groups[gi].channels)
            plan[gi] = recommend.lowest(scores, count)

    for gi, idxs in plan.items():
        graph_lib.prune_group(dep_graph, groups[gi], idxs)

    try:
        shapes_after = _shapes(model, example)
    except Exception as exc:  # an inconsistency here is a bug in the grouping, not user input
        raise CompressionError(f"the pruned model no longer runs ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}); please report this with the command used") from None
    if shapes_after != shapes_before:
        raise CompressionError(f"pruning changed the output shapes {shapes_before} -> {shapes_after}; "
                               "please report this with the command used")

    model = model.cpu()
    result = _report(model, method, recommendation, ratio, round_to, sizes, before, channels_before,
                     all_groups, plan)
    logger.info("removed %.1f%% of prunable filters; params %d -> %d", 100 * result["ratio_achieved"],
                result["before"]["params"], result["after"]["params"])
    return model, result


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
