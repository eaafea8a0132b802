"""Filter decomposition of an exported PIDNet body (NetsPresso's FD_TK, FD_CP, FD_SVD).

* ``FD_TK``: Tucker-2 of a KxK convolution (modes out/in, tensorly ``partial_tucker``) ->
  1x1 (in -> r_in), KxK core (r_in -> r_out, the original stride/padding/dilation), 1x1
  (r_out -> out, the bias). Ranks: ``[r_in, r_out]``, full = ``[in, out]`` (exact there).
* ``FD_CP``: CP decomposition (tensorly ``parafac``) of a KxK convolution -> 1x1 (in -> R),
  Kx1 depthwise (stride/padding/dilation along H), 1xK depthwise (along W), 1x1 (R -> out, the
  bias). Rank: ``R``; its reference "full" rank is ``max(in, out)`` (a CP rank has no finite
  full value; that is the smallest rank an exact CP of a generic kernel can have).
* ``FD_SVD``: truncated SVD of a 1x1 convolution or a linear layer into two layers (in -> r
  with the original stride/padding, r -> out with the bias). Rank: ``r``, full = ``min(in, out)``.

Only ``groups == 1`` ``nn.Conv2d`` / ``nn.Linear`` layers are decomposed. Each chosen layer is
replaced in place by an ``nn.Sequential`` of plain layers (names ``<layer>.0``, ``<layer>.1``,
...), so the body stays an ordinary module (a ``GraphModule`` resolves submodules by name at
call time, and re-traces them as leaves when unpickled): it fine-tunes, evaluates, exports to
ONNX and prunes like any other. A layer whose decomposition would not lower its MACs at the
export size is left as it is, and the report says so.

Where each part lives::

    decompose.py          decompose_model (one pass over the model: replace layers, report),
                          compress_model (recommend ranks, then decompose); the method and
                          recommendation names and checks, re-exported for the tools
    decompose_ranks.py    eligible layers, full ranks, vbmf / manual ranks, MACs at a rank:
                          decomposable_layers, full_ranks, layer_geometry, layer_macs_for_rank,
                          recommend_ranks, check_layer_ranks
    decompose_layers.py   the factorisations: tucker_layers, cp_layers, svd_layers, decompose_layer
    decompose_budget.py   ranks for --target-macs / --target-latency: RankPlanner, decompose_to_budget
"""
import copy
import logging

import torch

from models.compression import report as report_lib
from models.compression.decompose_layers import decompose_layer
# The names and checks of a decomposition request, imported by the tools and the console from here.
from models.compression.decompose_ranks import METHODS, RECOMMENDATIONS, check_manual_ratio  # noqa: F401
from models.compression.decompose_ranks import (candidate_layers, check_layer_ranks, check_method,
                                                check_recommendation, layer_dims, layer_full_rank,
                                                layer_geometry, layer_macs_for_rank, recommend_ranks)
from utils.errors import CompressionError

logger = logging.getLogger(__name__)


def _replace(model, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _layer_params(module):
    return int(sum(p.numel() for p in module.parameters()))


def decompose_model(model, method, ranks, report_sizes=((1024, 2048),), recommendation="manual", ratio=None,
                    vbmf_ranks=None, device="cpu"):
    """Decompose a copy of ``model``; return ``(decomposed_model, report_dict)`` (model on the CPU, eval mode).

    Args:
        model: an ``nn.Module`` (typically the fx body ``model_modelfx.pt``) taking one NCHW image.
        method: ``FD_TK``, ``FD_CP`` or ``FD_SVD``.
        ranks: ``{layer name: [r_in, r_out] (FD_TK) | r}``, validated against the model.
        report_sizes: ``(height, width)`` sizes for the MAC figures; the first decides whether a
            layer's decomposition lowers its MACs (otherwise it is kept and reported).
        recommendation, ratio, vbmf_ranks: recorded in the report.
        device: where the size-probing forward passes run.

    Raises:
        CompressionError: bad method, layer names or ranks, or a model that does not run.
    """
    method = check_method(method)
    ranks = check_layer_ranks(model, method, ranks, source="ranks")
    sizes = [tuple(int(v) for v in s) for s in report_sizes]
    model = copy.deepcopy(model).to(device).eval()
    geometry = layer_geometry(model, sizes[0])
    probe = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        shapes_before = [tuple(o.shape) for o in report_lib.as_outputs(model(probe))]
    before = report_lib.summary(model, sizes)
    candidates = candidate_layers(model, method)
    layers = {}
    for name, reason in candidates.items():
        module = model.get_submodule(name)
        c_in, c_out = layer_dims(module)
        entry = {"method": method, "in": [c_in, c_in], "out": [c_out, c_out],
                 "full_ranks": layer_full_rank(module, method), "decomposed": False}
        if vbmf_ranks and name in vbmf_ranks:
            entry["vbmf_ranks"] = vbmf_ranks[name]
        params = _layer_params(module)
        if name in geometry:
            macs = layer_macs_for_rank(module, method, layer_full_rank(module, method), geometry[name])[0]
            entry["macs"] = [macs, macs]
        if reason:
            entry["reason"] = reason
        elif name not in ranks:
            entry["reason"] = "no rank given"
        elif name not in geometry:
            entry["reason"] = "does not run in the forward pass"
        else:
            entry["ranks"] = ranks[name]
            macs_before, macs_after = layer_macs_for_rank(module, method, ranks[name], geometry[name])
            if macs_after >= macs_before:
                entry["reason"] = (f"rank {ranks[name]} would not lower MACs ({macs_before} -> {macs_after} "
                                   f"at {sizes[0][0]}x{sizes[0][1]})")
            else:
                new = decompose_layer(module, method, ranks[name])
                _replace(model, name, new)
                entry.update(decomposed=True, macs=[macs_before, macs_after])
                params_after = _layer_params(new)
                entry["params"] = [params, params_after]
        entry.setdefault("params", [params, params])
        layers[name] = entry
    decomposed = [n for n, e in layers.items() if e["decomposed"]]
    kept = [n for n, e in layers.items() if not e["decomposed"] and n in ranks]
    if kept:
        logger.info("%d layer(s) left as they are (decomposition would not lower their MACs or they cannot be "
                    "decomposed): %s", len(kept), ", ".join(kept[:6]) + (" ..." if len(kept) > 6 else ""))
    with torch.no_grad():
        shapes_after = [tuple(o.shape) for o in report_lib.as_outputs(model(probe))]
    if shapes_after != shapes_before:  # a bug in the layer construction, not user input
        raise CompressionError(f"decomposition changed the output shapes {shapes_before} -> {shapes_after}; "
                               "please report this with the command used")
    model = model.cpu()
    after = report_lib.summary(model, sizes)
    first = f"{sizes[0][0]}x{sizes[0][1]}"
    result = {
        "method": method,
        "recommendation": recommendation,
        "ratio_requested": ratio,
        "input_size": list(sizes[0]),
        "before": before,
        "after": after,
        "params_kept": after["params"] / before["params"],
        "macs_kept": after["macs"][first] / before["macs"][first] if before["macs"][first] else 1.0,
        "decomposed_layers": len(decomposed),
        "kept_layers": kept,
        "layers": layers,
    }
    logger.info("%s: %d layer(s) decomposed; params %d -> %d, MACs@%s %d -> %d", method, len(decomposed),
                before["params"], after["params"], first, before["macs"][first], after["macs"][first])
    return model, result


def compress_model(model, method, recommendation=None, ratio=None, layer_ranks=None,
                   report_sizes=((1024, 2048),), device="cpu"):
    """Recommend ranks (``vbmf`` / ``manual``) and decompose: ``(model, report)``, as the pruner's."""
    method = check_method(method)
    recommendation = check_recommendation(method, recommendation)
    if recommendation == "vbmf" and ratio is None:
        ratio = 0.0
    ranks, vbmf_ranks = recommend_ranks(model, method, recommendation, ratio=ratio, layer_ranks=layer_ranks)
    return decompose_model(model, method, ranks, report_sizes=report_sizes, recommendation=recommendation,
                           ratio=ratio, vbmf_ranks=vbmf_ranks, device=device)
