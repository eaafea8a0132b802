"""The layer factorisations of filter decomposition: Tucker-2 (FD_TK), CP (FD_CP), truncated SVD (FD_SVD).

Each returns the ``nn.Sequential`` of plain layers replacing one convolution / linear layer
(see :mod:`models.compression.decompose` for the layer shapes and the whole-model pass).
"""
import warnings

import tensorly
import torch
import torch.nn as nn
from tensorly.decomposition import parafac, partial_tucker

# ALS sweeps for CP: the fit gains little after a few dozen, and each costs seconds on wide layers
_CP_ITERATIONS = 30


def _matrix(weight):
    return weight.detach().double().cpu()



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
