"""Plan a compression and preview its effect per layer, without compressing anything.

:func:`analyse` traces a copy of the model once (channel groups, L2 scores); :func:`plan`
turns a request (method, recommendation, ratio or per-layer values) into the channels each
group loses, with the same validation and the same selection rules as
:func:`models.compression.pruner.compress_model`; :func:`preview` gives per-layer channels and
MACs after that plan. ``tools/compress.py --dry-run`` and the console's preview both use it,
and the tests check it against the pruned model layer by layer.
"""
import copy
import dataclasses
import logging

import torch

from models.compression import graph as graph_lib
from models.compression import importance, recommend, report
from models.compression import pruner
from utils.cli import first_line
from utils.errors import CompressionError

logger = logging.getLogger(__name__)

# What each method does, and the compress_model keyword that takes its per-layer (manual) values;
# front ends (tools/console.py) build their forms from these tables.
METHOD_HELP = {
    "PR_L2": "remove the filters with the smallest L2 norm",
    "PR_GM": "remove the filters closest to the geometric median (FPGM)",
    "PR_NN": "remove the filters whose feature maps have the smallest nuclear norm (needs images)",
    "PR_ID": "remove the channel indices listed per layer",
    "FD_TK": "Tucker-2 decomposition of KxK convolutions (two ranks per layer)",
    "FD_CP": "CP decomposition of KxK convolutions (one rank per layer)",
    "FD_SVD": "truncated SVD of 1x1 convolutions and linear layers (one rank per layer)",
}
RECOMMENDATION_HELP = {
    "slamp": "global structured LAMP ranking reaching the ratio of removed filters",
    "vbmf": "ranks from variational Bayesian matrix factorisation, calibrated by the ratio in [-1, 1]",
    "manual": "per-layer values edited in the layer table",
}


# Methods whose plan can be previewed here (others compress directly).
PREVIEW_METHODS = ("PR_L2", "PR_GM", "PR_NN", "PR_ID", "FD_TK", "FD_CP", "FD_SVD")


def manual_keyword(method):
    """The compress_model keyword taking ``method``'s per-layer values."""
    if method == "PR_ID":
        return "layer_indices"
    if method.startswith("FD_"):
        return "layer_ranks"
    return "layer_ratios"


@dataclasses.dataclass
class Analysis:
    """A traced copy of a model with its channel groups and their L2 scores (nothing pruned).

    One analysis serves any number of plans and previews (the console's table).
    """
    model: torch.nn.Module
    graph: object
    all_groups: list
    groups: list
    tp_groups: list
    norms: list
    nuclear: list = None  # PR_NN's per-group feature-map nuclear norms, when analysed with images

    def squared(self, method):
        """The per-group squared magnitudes SLAMP ranks for ``method`` (as the pruner's)."""
        if method == "PR_NN":
            return [n.pow(2) for n in self.nuclear]
        return self.norms

    def scores(self, method, gi):
        """Per-channel importance of prunable group ``gi`` (lowest = removed first)."""
        if method == "PR_NN":
            return self.nuclear[gi].pow(2)
        if method == "PR_GM":
            return importance.geometric_median_distances(self.graph, self.tp_groups[gi], self.groups[gi].channels)
        return self.norms[gi]


def analyse(model, trace_size=(256, 256), device="cpu", images=None):
    """Trace a copy of ``model`` and find its channel groups; with ``images`` (preprocessed
    ``3xHxW`` tensors) also PR_NN's feature-map importance, so PR_NN plans can be previewed.

    Raises:
        CompressionError: the model does not run on an image, cannot be traced, or has nothing
            prunable.
    """
    model = copy.deepcopy(model).to(device).eval()
    example = torch.randn(1, 3, int(trace_size[0]), int(trace_size[1]), device=device)
    try:
        with torch.no_grad():
            report.as_outputs(model(example))
    except Exception as exc:  # a foreign module can fail in any way
        raise CompressionError(f"the model does not run on a 1x3x{trace_size[0]}x{trace_size[1]} image "
                               f"({type(exc).__name__}: {first_line(exc)}): "
                               "pass the exported body (model_modelfx.pt)") from None
    dep_graph = graph_lib.build_graph(model, example)
    all_groups = graph_lib.channel_groups(dep_graph)
    groups = [g for g in all_groups if g.prunable]
    if not groups:
        raise CompressionError("the model has no prunable channels (every channel feeds an output)")
    tp_groups = [graph_lib.full_group(dep_graph, g) for g in groups]
    norms = [importance.squared_norms(dep_graph, tg, g.channels) for tg, g in zip(tp_groups, groups)]
    nuclear = importance.nuclear_norms_per_group(model, dep_graph, tp_groups, groups, images) if images else None
    return Analysis(model, dep_graph, all_groups, groups, tp_groups, norms, nuclear)


def check_request(method, recommendation=None, ratio=None, layer_ratios=None, layer_indices=None, round_to=1,
                  images=None):
    """Validate a pruning request as compress_model does; returns ``(method, recommendation, ratio, round_to)``."""
    method, recommendation, ratio, round_to, _ = pruner.check_request(method, recommendation, ratio, layer_ratios,
                                                                      layer_indices, round_to, images)
    return method, recommendation, ratio, round_to


def plan(analysis, method="PR_L2", recommendation=None, ratio=None, layer_ratios=None, layer_indices=None,
         round_to=1):
    """``{prunable group index: [channel indices to remove]}`` for a request; prunes nothing."""
    method, recommendation, ratio, round_to = check_request(method, recommendation, ratio, layer_ratios,
                                                            layer_indices, round_to, analysis.nuclear)
    groups, all_groups = analysis.groups, analysis.all_groups
    if method == "PR_ID":
        return recommend.indices_per_group(groups, all_groups, layer_indices)
    if method not in PREVIEW_METHODS or method.startswith("FD_"):
        raise CompressionError(f"{method} has no channel preview (its plan is made while compressing): "
                               "compress directly (drop --dry-run)")
    if recommendation == "slamp":
        counts = recommend.slamp_counts(groups, analysis.squared(method), ratio, round_to)
    else:
        counts = recommend.manual_counts(groups, all_groups, layer_ratios, round_to)
    return {gi: recommend.lowest(analysis.scores(method, gi), count) for gi, count in enumerate(counts) if count > 0}


def planned_channels(analysis, channel_plan):
    """Per-convolution ``{name: (in_channels, out_channels)}`` after ``channel_plan``."""
    channels = report.conv_channels(analysis.model)
    removed_in = dict.fromkeys(channels, 0)
    removed_out = dict.fromkeys(channels, 0)
    for gi, idxs in channel_plan.items():
        for name, (n_in, n_out) in graph_lib.removed_channels(analysis.graph, analysis.groups[gi], idxs).items():
            removed_in[name] += n_in
            removed_out[name] += n_out
    return {name: (cin - removed_in[name], cout - removed_out[name]) for name, (cin, cout) in channels.items()}


def _macs_after(module, macs, before, after):
    """MACs scale with out_channels * in_channels / groups (depthwise: groups follow the channels)."""
    (cin, cout), (cin2, cout2) = before, after
    groups = module.groups
    groups2 = cin2 if groups > 1 and groups == cin == cout else groups
    denominator = cout * (cin // groups)
    return int(round(macs * cout2 * (cin2 // groups2) / denominator)) if denominator else 0


def preview(analysis, channel_plan, input_size, layer_macs=None):
    """Per-layer effect of ``channel_plan`` at ``input_size`` = (height, width), without pruning.

    ``layer_macs``: :func:`models.compression.report.layer_macs` of the unpruned model at that size,
    when the caller already has it (saves one forward pass per preview).

    Returns ``{"layers": {name: {"in": [before, after], "out": [before, after], "macs": [before,
    after]}}, "macs": [before, after], "removed_filters": n, "prunable_filters": n,
    "ratio_achieved": r}`` (MACs of convolutions and linear layers, as the report counts them).
    """
    channels = report.conv_channels(analysis.model)
    after = planned_channels(analysis, channel_plan)
    macs = layer_macs if layer_macs is not None else report.layer_macs(analysis.model, input_size)
    modules = dict(analysis.model.named_modules())
    layers = {}
    for name, value in macs.items():
        if name in channels:
            value_after = _macs_after(modules[name], value, channels[name], after[name])
            layers[name] = {"in": [channels[name][0], after[name][0]], "out": [channels[name][1], after[name][1]],
                            "macs": [value, value_after]}
        else:
            layers[name] = {"macs": [value, value]}
    total = sum(g.filters for g in analysis.groups)
    removed = sum(len(analysis.groups[gi].layers) * len(idxs) for gi, idxs in channel_plan.items())
    return {"layers": layers,
            "macs": [sum(v["macs"][0] for v in layers.values()), sum(v["macs"][1] for v in layers.values())],
            "prunable_filters": total, "removed_filters": removed,
            "ratio_achieved": removed / total if total else 0.0}


# --------------------------------------------------------------------------- decomposition

def plan_ranks(model, method, recommendation=None, ratio=None, layer_ranks=None):
    """``(ranks, vbmf_ranks)`` per layer for a decomposition request, as its compress_model picks them."""
    from models.compression import decompose_ranks

    recommendation = decompose_ranks.check_recommendation(decompose_ranks.check_method(method), recommendation)
    if recommendation == "vbmf" and ratio is None:
        ratio = 0.0
    return decompose_ranks.recommend_ranks(model, method, recommendation, ratio=ratio, layer_ranks=layer_ranks)


def preview_ranks(model, method, ranks, input_size, vbmf_ranks=None):
    """Per-layer MACs if ``ranks`` were applied at ``input_size``; layers that would not get cheaper stay.

    Same ``{"layers", "macs"}`` shape as :func:`preview`, with ``ranks`` / ``vbmf_ranks`` /
    ``full_ranks`` on the layers concerned.
    """
    from models.compression import decompose_ranks

    geometry = decompose_ranks.layer_geometry(model, input_size)
    layers = {name: {"macs": [value, value]} for name, value in report.layer_macs(model, input_size).items()}
    decomposed = 0
    for name, rank in ranks.items():
        if name not in geometry or name not in layers:
            continue
        module = model.get_submodule(name)
        before, after = decompose_ranks.layer_macs_for_rank(module, method, rank, geometry[name])
        entry = layers[name]
        entry.update(ranks=rank, full_ranks=decompose_ranks.layer_full_rank(module, method))
        if vbmf_ranks and name in vbmf_ranks:
            entry["vbmf_ranks"] = vbmf_ranks[name]
        if after < before:
            entry["macs"] = [before, after]
            decomposed += 1
        else:
            entry["reason"] = "kept: this rank would not lower its MACs"
    return {"layers": layers,
            "macs": [sum(v["macs"][0] for v in layers.values()), sum(v["macs"][1] for v in layers.values())],
            "decomposed_layers": decomposed}
