"""Rank selection by empirical variational Bayesian matrix factorisation (EVBMF).

The closed-form global solution of fully observed VBMF (Nakajima, Sugiyama, Babacan and
Tomioka, *Global analytic solution of fully-observed variational Bayesian matrix
factorization*, JMLR 14, 2013): with the noise variance estimated by minimising the free
energy, every singular value above a threshold that depends only on the matrix shape and the
noise survives, the rest are zero; the count of survivors is the rank. No maintained package
ships it (tensorly has none; musco-pytorch / CasvandenBogaard's VBMF.py are unpackaged scripts
that this follows, re-derived from the paper), so it lives here.

NetsPresso calibrates the VBMF rank with a ratio in [-1, 1] (:func:`calibrate`).
"""
import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from utils.errors import CompressionError

# tau-bar of Nakajima et al. 2013 (eq. 27): the root of a scalar equation, tabulated by the authors.
_TAU_BAR_FACTOR = 2.5129


def _tau(x, alpha):
    return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _free_energy(sigma2, rows, cols, s, residual, x_bar):
    """Free energy (up to constants) of the EVBMF solution at noise variance ``sigma2``."""
    count = len(s)
    alpha = rows / cols
    x = s ** 2 / (cols * sigma2)
    z1, z2 = x[x > x_bar], x[x <= x_bar]
    tau_z1 = _tau(z1, alpha)
    tiny = np.finfo(float).tiny
    return (np.sum(z2 - np.log(z2 + tiny)) + np.sum(z1 - tau_z1) + np.sum(np.log((tau_z1 + 1) / z1))
            + alpha * np.sum(np.log(tau_z1 / alpha + 1)) + residual / (cols * sigma2)
            + (rows - count) * np.log(sigma2))


def evbmf_rank(matrix):
    """Rank kept by EVBMF for a 2-D ``matrix`` (tensor or array), at least 0, at most min(shape)."""
    y = matrix.detach().double().cpu() if torch.is_tensor(matrix) else torch.as_tensor(matrix, dtype=torch.float64)
    if y.ndim != 2 or min(y.shape) < 1:
        raise CompressionError(f"VBMF needs a non-empty 2-D matrix, got shape {tuple(y.shape)}")
    if y.shape[0] > y.shape[1]:
        y = y.T
    rows, cols = y.shape
    # Singular values from the small Gram matrix: an order of magnitude faster than an SVD of
    # the wide unfolding, and only their comparison with the noise threshold matters here.
    s = torch.linalg.eigvalsh(y @ y.T).clamp_min(0).sqrt().flip(0).numpy()
    if s[0] <= 0 or not np.isfinite(s).all():
        return 0
    if rows == 1:  # no spectrum to separate signal from noise: a vector is its own rank
        return 1
    alpha = rows / cols
    tau_bar = _TAU_BAR_FACTOR * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    # Search bounds for sigma2 from the paper's Theorem 4: the noise cannot exceed the mean
    # energy, nor be smaller than what the trailing singular values imply.
    upper = float(np.sum(s ** 2)) / (rows * cols)
    h_ub = int(min(math.ceil(rows / (1 + alpha)) - 1, rows)) - 1
    tail = s[h_ub + 1:]
    lower = max(float(tail[0] ** 2) / (cols * x_bar), float(np.mean(tail ** 2)) / cols) if len(tail) else 0.0
    lower = max(lower, upper * 1e-12)
    if lower >= upper:
        sigma2 = upper
    else:
        sigma2 = minimize_scalar(_free_energy, args=(rows, cols, s, 0.0, x_bar), bounds=(lower, upper),
                                 method="bounded").x
    threshold = math.sqrt(cols * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return int(np.sum(s > threshold))


def calibrate(vbmf_rank, full_rank, ratio):
    """NetsPresso's calibration of a VBMF rank by ``ratio`` in [-1, 1], clamped to [1, full_rank].

    ratio > 0 moves towards the full rank (1 = full), ratio < 0 towards zero (-1 = 0, then 1
    by the clamp), 0 keeps the VBMF rank.
    """
    ratio = check_vbmf_ratio(ratio)
    if ratio >= 0:
        kept = vbmf_rank + round((full_rank - vbmf_rank) * ratio)
    else:
        kept = vbmf_rank + round(vbmf_rank * ratio)
    return int(max(1, min(full_rank, kept)))


def check_vbmf_ratio(ratio):
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise CompressionError(f"--ratio for vbmf must be a number in [-1, 1], got {ratio!r}") from None
    if math.isnan(value) or not -1.0 <= value <= 1.0:
        raise CompressionError(f"--ratio for vbmf must be in [-1, 1] (0 = the VBMF rank, 1 = full rank, "
                               f"-1 = the smallest), got {ratio}")
    return value
