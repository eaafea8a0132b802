"""The layer table of a loaded model: what the page shows before anything is compressed.

Per layer: kind, in/out channels, parameters, MACs (:func:`models.compression.report.layer_macs`),
the channel group it is pruned with and that group's importance (L2 and GM from
:mod:`models.compression.importance`; NN, the ``PR_NN`` feature-map nuclear norm, when images
are given), and for decomposable layers the EVBMF rank (:mod:`models.compression.vbmf`, through
:func:`models.compression.decompose_ranks.layer_vbmf_rank`: ``[r_in, r_out]`` for the KxK layers
Tucker-2 splits, ``r`` for the 1x1 / linear layers SVD splits).
"""
import logging

import torch.nn as nn

from utils.console.catalog import compression_methods

logger = logging.getLogger(__name__)


def _kind(module):
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = "x".join(str(k) for k in module.kernel_size)
        stride = "" if set(module.stride) == {1} else f" /{module.stride[0]}"
        groups = f" g{module.groups}" if module.groups > 1 else ""
        return f"{type(module).__name__} {kernel}{stride}{groups}"
    return type(module).__name__


def vbmf_ranks(model):
    """``{layer: {"method": FD_*, "rank": r or [r_in, r_out], "full": ...}}`` for every layer a
    VBMF-recommending decomposition can split ({} without the decomposition module)."""
    methods = [m["name"] for m in compression_methods() if any(r["name"] == "vbmf" for r in m["recommendations"])]
    if not methods:
        return {}
    from models.compression import decompose_ranks as ranks

    out = {}
    for method in methods:
        for name in ranks.decomposable_layers(model, method):
            if name not in out:
                module = model.get_submodule(name)
                out[name] = {"method": method, "rank": ranks.layer_vbmf_rank(module, method),
                             "full": ranks.layer_full_rank(module, method)}
    return out


def nn_scores(analysis, images):
    """Mean ``PR_NN`` importance (feature-map nuclear norm summed over the coupled convolutions,
    as :func:`models.compression.pruner.compress_model` ranks channels) of each prunable group."""
    from models.compression import importance

    nuclear = analysis.nuclear
    if nuclear is None:
        nuclear = importance.nuclear_norms_per_group(analysis.model, analysis.graph, analysis.tp_groups,
                                                     analysis.groups, images)
    return {group.name: float(norms.mean()) for group, norms in zip(analysis.groups, nuclear)}


def layer_table(analysis, input_size, images=None):
    """Rows ``{name, kind, in, out, params, macs, group, prunable, reason, l2, gm, nn, vbmf}`` and totals.

    ``images``: preprocessed tensors (:func:`utils.images.load_images`) for the NN column;
    without them ``nn`` is None.
    """
    from models.compression import importance
    from models.compression.report import count_params, layer_macs

    model = analysis.model
    modules = dict(model.named_modules())
    macs = layer_macs(model, input_size)
    group_of, scores = {}, {}
    for group in analysis.all_groups:
        for name in group.layers:
            group_of[name] = group
    for gi, group in enumerate(analysis.groups):
        gm = importance.geometric_median_distances(analysis.graph, analysis.tp_groups[gi], group.channels)
        scores[group.name] = (float(analysis.norms[gi].sqrt().mean()), float(gm.mean() / max(1, group.channels - 1)))
    nuclear = nn_scores(analysis, images) if images else {}
    ranks = vbmf_ranks(model)
    rows = []
    for name, value in macs.items():
        module = modules[name]
        group = group_of.get(name)
        prunable = group is not None and group.prunable
        l2, gm = scores.get(group.name, (None, None)) if prunable else (None, None)
        rows.append({"name": name, "kind": _kind(module),
                     "in": getattr(module, "in_channels", getattr(module, "in_features", None)),
                     "out": getattr(module, "out_channels", getattr(module, "out_features", None)),
                     "params": int(sum(p.numel() for p in module.parameters(recurse=False))),
                     "macs": value, "group": group.name if group is not None else "",
                     "root": group is not None and group.name == name, "prunable": bool(prunable),
                     "reason": group.reason if group is not None else "", "l2": l2, "gm": gm,
                     "nn": nuclear.get(group.name) if prunable else None, "vbmf": ranks.get(name)})
    return {"layers": rows, "totals": {"params": count_params(model), "macs": sum(macs.values()),
                                       "layers": len(rows), "prunable_groups": len(analysis.groups),
                                       "prunable_filters": sum(g.filters for g in analysis.groups),
                                       "vbmf_layers": len(ranks), "nn_images": len(images or [])},
            "input_size": list(input_size)}
