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

API used by the budget search (stable)::

    names = decomposable_layers(model, method)            # eligible layers, module order
    full = full_ranks(model, method)                      # {name: [r_in, r_out] | r}
    geometry = layer_geometry(model, (1024, 2048))        # {name: Geometry}, one forward pass
    before, after = layer_macs_for_rank(model.get_submodule(name), method, rank, geometry[name])
    ranks, vbmf_ranks = recommend_ranks(model, method, "vbmf", ratio=0.0)
    decomposed, report = decompose_model(model, method, ranks, report_sizes=[(1024, 2048)])
"""
import copy
import dataclasses
import logging
import warnings

import tensorly
import torch
import torch.nn as nn
from tensorly.decomposition import parafac, partial_tucker

from models.compression import report as report_lib
from models.compression import vbmf as vbmf_lib
from utils.cli import first_line
from utils.errors import CompressionError

logger = logging.getLogger(__name__)

METHODS = ("FD_TK", "FD_CP", "FD_SVD")
RECOMMENDATIONS = ("vbmf", "manual")
_VBMF_METHODS = ("FD_TK", "FD_SVD")
# ALS sweeps for CP: the fit gains little after a few dozen, and each costs seconds on wide layers
_CP_ITERATIONS = 30


def check_method(method):
    name = str(method).strip().upper()
    if name not in METHODS:
        raise CompressionError(f"unknown decomposition method '{method}': use one of {', '.join(METHODS)}")
    return name


def check_recommendation(method, recommendation):
    """Default ``vbmf`` for FD_TK / FD_SVD and ``manual`` for FD_CP (as NetsPresso pairs them)."""
    if recommendation in (None, ""):
        return "vbmf" if method in _VBMF_METHODS else "manual"
    name = str(recommendation).strip().lower()
    if name == "slamp":
        raise CompressionError(f"slamp recommends pruning amounts (PR_L2, PR_GM, PR_NN); for {method} use "
                               "--recommendation vbmf or manual")
    if name not in RECOMMENDATIONS:
        raise CompressionError(f"unknown recommendation '{recommendation}' for {method}: use "
                               f"{' or '.join(RECOMMENDATIONS)}")
    if name == "vbmf" and method not in _VBMF_METHODS:
        raise CompressionError(f"vbmf does not recommend CP ranks ({method}): use --recommendation manual with "
                               "--ratio R (fraction of the full rank) or --layer-ranks FILE")
    return name


def check_manual_ratio(ratio):
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise CompressionError(f"--ratio for manual decomposition must be a number in (0, 1], got {ratio!r}") from None
    if not 0.0 < value <= 1.0:
        raise CompressionError(f"--ratio for manual decomposition must be in (0, 1] (fraction of the full rank "
                               f"kept), got {ratio}")
    return value


# --------------------------------------------------------------------------- eligibility, ranks


def _is_kxk(module):
    return isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)


def _is_1x1(module):
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)


def _ineligible_reason(module, method):
    """Why ``module`` cannot be decomposed by ``method`` (``""`` when it can, ``None`` when it is not a candidate)."""
    if method in ("FD_TK", "FD_CP"):
        if not _is_kxk(module):
            return None
        if module.groups != 1:
            return f"grouped convolution (groups={module.groups})"
        if method == "FD_CP" and (isinstance(module.padding, str) or module.padding_mode != "zeros"):
            return "padding other than explicit zeros cannot be split into Kx1 and 1xK"
        return ""
    if isinstance(module, nn.Linear):
        return ""
    if not _is_1x1(module):
        return None
    return f"grouped convolution (groups={module.groups})" if module.groups != 1 else ""


def candidate_layers(model, method):
    """``{name: reason}`` for every layer of the kind ``method`` handles; ``""`` = decomposable."""
    method = check_method(method)
    out = {}
    for name, module in model.named_modules():
        reason = _ineligible_reason(module, method)
        if reason is not None:
            out[name] = reason
    return out


def decomposable_layers(model, method):
    """Names of the layers ``method`` can decompose, in module order."""
    return [name for name, reason in candidate_layers(model, method).items() if not reason]


def _dims(module):
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def layer_full_rank(module, method):
    c_in, c_out = _dims(module)
    if method == "FD_TK":
        return [c_in, c_out]
    if method == "FD_CP":
        return max(c_in, c_out)
    return min(c_in, c_out)


def full_ranks(model, method):
    """``{name: full rank}``: ``[in, out]`` for FD_TK, an int for FD_CP / FD_SVD."""
    method = check_method(method)
    return {name: layer_full_rank(model.get_submodule(name), method) for name in decomposable_layers(model, method)}


def _matrix(weight):
    return weight.detach().double().cpu()


def layer_vbmf_rank(module, method):
    """EVBMF ranks: ``[r_in, r_out]`` from the mode-1 / mode-0 unfoldings (FD_TK), ``r`` (FD_SVD)."""
    weight = _matrix(module.weight)
    if method == "FD_TK":
        return [vbmf_lib.evbmf_rank(weight.transpose(0, 1).reshape(weight.shape[1], -1)),
                vbmf_lib.evbmf_rank(weight.reshape(weight.shape[0], -1))]
    if method == "FD_SVD":
        return vbmf_lib.evbmf_rank(weight.reshape(weight.shape[0], -1))
    raise CompressionError(f"vbmf does not recommend ranks for {method}: use --recommendation manual")


def _calibrated(vbmf_rank, full, ratio):
    if isinstance(full, list):
        return [vbmf_lib.calibrate(v, f, ratio) for v, f in zip(vbmf_rank, full)]
    return vbmf_lib.calibrate(vbmf_rank, full, ratio)


def _fraction(full, ratio):
    if isinstance(full, list):
        return [max(1, min(f, int(round(f * ratio)))) for f in full]
    return max(1, min(full, int(round(full * ratio))))


def check_layer_ranks(model, method, layer_ranks, source="--layer-ranks"):
    """Validate ``{name: [r_in, r_out] | r}``: layers exist, are decomposable, ranks in [1, full]."""
    method = check_method(method)
    candidates = candidate_layers(model, method)
    valid = [n for n, r in candidates.items() if not r]
    shape = "[r_in, r_out]" if method == "FD_TK" else "an integer rank"
    out = {}
    for name, value in layer_ranks.items():
        if name not in candidates:
            what = "KxK convolution" if method in ("FD_TK", "FD_CP") else "1x1 convolution or linear layer"
            hint = ", ".join(valid[:6]) + (" ..." if len(valid) > 6 else "")
            raise CompressionError(f"{source}: no {what} named '{name}' in the model ({method}); "
                                   f"decomposable layers include {hint}")
        if candidates[name]:
            raise CompressionError(f"{source}: layer '{name}' cannot be decomposed by {method} "
                                   f"({candidates[name]}); remove it from the file")
        full = layer_full_rank(model.get_submodule(name), method)
        items = value if method == "FD_TK" else [value]
        limits = full if method == "FD_TK" else [full]
        if (method == "FD_TK" and (not isinstance(value, (list, tuple)) or len(value) != 2)) or \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise CompressionError(f"{source}: rank of layer '{name}' must be {shape} for {method}, got {value!r}")
        if any(not 1 <= v <= f for v, f in zip(items, limits)):
            raise CompressionError(f"{source}: rank {value} of layer '{name}' is out of range: each must be "
                                   f"in [1, {full}] for {method}")
        out[name] = list(items) if method == "FD_TK" else int(value)
    return out


def recommend_ranks(model, method, recommendation=None, ratio=None, layer_ranks=None):
    """Ranks per layer: ``(ranks, vbmf_ranks)``; ``vbmf_ranks`` is empty for ``manual``.

    ``vbmf``: every decomposable layer, EVBMF rank calibrated by ``ratio`` in [-1, 1]
    (default 0). ``manual``: ``layer_ranks`` for the layers it names and, when ``ratio`` is
    given, ``round(full * ratio)`` (ratio in (0, 1]) for every other layer.
    """
    method = check_method(method)
    recommendation = check_recommendation(method, recommendation)
    names = decomposable_layers(model, method)
    if not names:
        raise CompressionError(f"the model has no layer {method} can decompose")
    if recommendation == "vbmf":
        if layer_ranks:
            raise CompressionError("--layer-ranks sets ranks by hand: use it with --recommendation manual")
        ratio = vbmf_lib.check_vbmf_ratio(0.0 if ratio is None else ratio)
        vbmf_ranks = {n: layer_vbmf_rank(model.get_submodule(n), method) for n in names}
        ranks = {n: _calibrated(vbmf_ranks[n], layer_full_rank(model.get_submodule(n), method), ratio) for n in names}
        return ranks, vbmf_ranks
    if not layer_ranks and ratio is None:
        raise CompressionError(f"manual decomposition needs ranks: pass --layer-ranks FILE "
                               f"({{\"layer\": {'[r_in, r_out]' if method == 'FD_TK' else 'r'}}}) or --ratio R "
                               "(fraction of the full rank kept)")
    ranks = {}
    if ratio is not None:
        ratio = check_manual_ratio(ratio)
        ranks = {n: _fraction(layer_full_rank(model.get_submodule(n), method), ratio) for n in names}
    ranks.update(check_layer_ranks(model, method, layer_ranks or {}))
    return ranks, {}


# --------------------------------------------------------------------------- MACs


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Spatial sizes seen by a layer in one forward pass (``rows`` for linear layers)."""
    in_hw: tuple
    out_hw: tuple
    rows: int


def layer_geometry(model, input_size, device=None):
    """``{name: Geometry}`` of every Conv2d / Linear that runs on a 1x3xHxW zero image."""
    was_training = model.training
    model.eval()
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    found = {}

    def hook(name):
        def record(module, inputs, output):
            if isinstance(module, nn.Linear):
                found[name] = Geometry((1, 1), (1, 1), output.numel() // module.out_features)
            else:
                found[name] = Geometry(tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:]), output.shape[0])
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, int(input_size[0]), int(input_size[1]), device=device))
    except Exception as exc:  # a foreign module can fail in any way
        raise CompressionError(f"the model does not run on a 1x3x{input_size[0]}x{input_size[1]} image "
                               f"({type(exc).__name__}: {first_line(exc)}): "
                               "pass the exported body (model_modelfx.pt)") from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return found


def _prod(hw):
    return int(hw[0]) * int(hw[1])


def layer_macs_for_rank(module, method, rank, geometry):
    """``(macs_before, macs_after)`` of one layer at ``geometry`` if decomposed at ``rank``.

    Counted as :func:`models.compression.report.count_macs` does (output elements times
    input channels per group times kernel size), so the totals agree with the report.
    """
    c_in, c_out = _dims(module)
    n = geometry.rows
    if isinstance(module, nn.Linear):
        return n * c_in * c_out, n * rank * (c_in + c_out)
    kh, kw = module.kernel_size
    hw_in, hw_out = _prod(geometry.in_hw), _prod(geometry.out_hw)
    before = n * hw_out * c_out * (c_in // module.groups) * kh * kw
    if method == "FD_TK":
        r_in, r_out = rank
        after = n * (hw_in * c_in * r_in + hw_out * r_in * r_out * kh * kw + hw_out * r_out * c_out)
    elif method == "FD_CP":
        # the Kx1 stage keeps the input width; the 1xK stage produces the output size
        hw_mid = int(geometry.out_hw[0]) * int(geometry.in_hw[1])
        after = n * rank * (hw_in * c_in + hw_mid * kh + hw_out * kw + hw_out * c_out)
    else:
        after = n * hw_out * rank * (c_in + c_out)
    return before, after


# --------------------------------------------------------------------------- factorisations


def _conv(weight, bias=None, **kwargs):
    out_ch, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(in_per_group * kwargs.get("groups", 1), out_ch, (kh, kw), bias=bias is not None, **kwargs)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _like(layers, module):
    ref = module.weight
    return nn.Sequential(*layers).to(device=ref.device, dtype=ref.dtype).train(module.training)


def _bias(module):
    return None if module.bias is None else module.bias.detach().double().cpu()


def tucker_factors(weight, ranks):
    """``(core, u_out, u_in)`` of the Tucker-2 decomposition of ``weight`` [out, in, kh, kw] at ``[r_in, r_out]``."""
    r_in, r_out = ranks
    # tensorly's pytorch backend: its SVDs then follow torch.set_num_threads (numpy's BLAS
    # threads do not, and oversubscribe a busy machine badly)
    with tensorly.backend_context("pytorch"):
        (core, (u_out, u_in)), _ = partial_tucker(_matrix(weight), rank=[r_out, r_in], modes=[0, 1],
                                                  init="svd", n_iter_max=50, random_state=0)
    return core.contiguous(), u_out, u_in


def tucker_layers(conv, core, u_out, u_in):
    """1x1 (in -> r_in), KxK core (r_in -> r_out, original geometry), 1x1 (r_out -> out, bias)."""
    first = _conv(u_in.t()[:, :, None, None])
    middle = _conv(core, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                   padding_mode=conv.padding_mode)
    last = _conv(u_out[:, :, None, None], _bias(conv))
    return _like([first, middle, last], conv)


def cp_factors(weight, rank):
    """``(lambdas, a_out, a_in, a_h, a_w)`` of a rank-``rank`` CP decomposition of ``weight``."""
    with warnings.catch_warnings():
        # tensorly warns when the rank exceeds a kernel side (SVD init pads those columns randomly): expected
        warnings.filterwarnings("ignore", message="Trying to compute SVD", category=UserWarning)
        with tensorly.backend_context("pytorch"):
            cp = parafac(_matrix(weight), rank=int(rank), init="svd", n_iter_max=_CP_ITERATIONS, tol=1e-7,
                         random_state=0)
    return (cp.weights,) + tuple(cp.factors)


def cp_layers(conv, lambdas, a_out, a_in, a_h, a_w):
    """1x1 (in -> R), Kx1 depthwise (H geometry), 1xK depthwise (W geometry), 1x1 (R -> out, bias).

    Zero padding is separable, so padding H in the first depthwise stage and W in the second
    reproduces the 2-D convolution exactly for the CP kernel.
    """
    rank = a_out.shape[1]
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    first = _conv(a_in.t()[:, :, None, None])
    vertical = _conv(a_h.t()[:, None, :, None], stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), groups=rank)
    horizontal = _conv(a_w.t()[:, None, None, :], stride=(1, sw), padding=(0, pw), dilation=(1, dw), groups=rank)
    last = _conv((a_out * lambdas[None, :])[:, :, None, None], _bias(conv))
    return _like([first, vertical, horizontal, last], conv)


def svd_layers(module, rank):
    """Two layers ``in -> rank -> out`` from the truncated SVD (singular values split evenly)."""
    weight = _matrix(module.weight).reshape(module.weight.shape[0], -1)
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = s[:rank].sqrt()
    left, right = u[:, :rank] * root[None, :], root[:, None] * vh[:rank]
    bias = _bias(module)
    if isinstance(module, nn.Linear):
        first, second = nn.Linear(module.in_features, rank, bias=False), nn.Linear(rank, module.out_features,
                                                                                 bias=bias is not None)
        with torch.no_grad():
            first.weight.copy_(right)
            second.weight.copy_(left)
            if bias is not None:
                second.bias.copy_(bias)
        return _like([first, second], module)
    first = _conv(right[:, :, None, None], stride=module.stride, padding=module.padding, dilation=module.dilation,
                  padding_mode=module.padding_mode)
    return _like([first, _conv(left[:, :, None, None], bias)], module)


def decompose_layer(module, method, rank):
    """The ``nn.Sequential`` replacing ``module`` (decomposed by ``method`` at ``rank``)."""
    if method == "FD_TK":
        return tucker_layers(module, *tucker_factors(module.weight, rank))
    if method == "FD_CP":
        return cp_layers(module, *cp_factors(module.weight, rank))
    return svd_layers(module, int(rank))


# --------------------------------------------------------------------------- whole model


def _replace(model, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _layer_params(module):
    return int(sum(p.numel() for p in module.parameters()))


def _outputs(out):
    return [out] if torch.is_tensor(out) else list(out)


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
        shapes_before = [tuple(o.shape) for o in _outputs(model(probe))]
    before = report_lib.summary(model, sizes)
    candidates = candidate_layers(model, method)
    layers = {}
    for name, reason in candidates.items():
        module = model.get_submodule(name)
        c_in, c_out = _dims(module)
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
        shapes_after = [tuple(o.shape) for o in _outputs(model(probe))]
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
