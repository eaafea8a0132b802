"""Choosing decomposition ranks: which layers each method handles, full ranks, the ``vbmf`` and
``manual`` recommendations, and the MACs a layer costs at a rank.

The method and recommendation names live here too (``decompose.py`` re-exports them), since
which recommendation fits which method is a question of the ranks it produces.
"""
import dataclasses

import torch
import torch.nn as nn

from models.compression import checks
from models.compression import vbmf as vbmf_lib
from utils.cli import first_line
from utils.errors import CompressionError

METHODS = ("FD_TK", "FD_CP", "FD_SVD")
RECOMMENDATIONS = ("vbmf", "manual")
_VBMF_METHODS = ("FD_TK", "FD_SVD")


def check_method(method):
    return checks.check_method(method, METHODS, "decomposition")


def check_recommendation(method, recommendation):
    """Default ``vbmf`` for FD_TK / FD_SVD and ``manual`` for FD_CP (as NetsPresso pairs them)."""
    refused = {"slamp": f"slamp recommends pruning amounts (PR_L2, PR_GM, PR_NN); for {method} use "
                        "--recommendation vbmf or manual"}
    if method not in _VBMF_METHODS:
        refused["vbmf"] = (f"vbmf does not recommend CP ranks ({method}): use --recommendation manual with "
                           "--ratio R (fraction of the full rank) or --layer-ranks FILE")
    return checks.check_recommendation(method, recommendation, RECOMMENDATIONS,
                                       "vbmf" if method in _VBMF_METHODS else "manual", refused)


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


def layer_dims(module):
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def layer_full_rank(module, method):
    c_in, c_out = layer_dims(module)
    if method == "FD_TK":
        return [c_in, c_out]
    if method == "FD_CP":
        return max(c_in, c_out)
    return min(c_in, c_out)


def full_ranks(model, method):
    """``{name: full rank}``: ``[in, out]`` for FD_TK, an int for FD_CP / FD_SVD."""
    method = check_method(method)
    return {name: layer_full_rank(model.get_submodule(name), method) for name in decomposable_layers(model, method)}



def layer_vbmf_rank(module, method):
    """EVBMF ranks: ``[r_in, r_out]`` from the mode-1 / mode-0 unfoldings (FD_TK), ``r`` (FD_SVD)."""
    weight = module.weight.detach().double().cpu()
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
    c_in, c_out = layer_dims(module)
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
