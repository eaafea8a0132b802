import pytest
import torch

from models.compression.vbmf import calibrate, check_vbmf_ratio, evbmf_rank
from utils.errors import CompressionError


@pytest.mark.parametrize("rows, cols, rank", [(64, 576, 8), (128, 128, 20), (300, 40, 5), (32, 288, 3)])
def test_evbmf_recovers_the_rank_of_low_rank_plus_noise(rows, cols, rank):
    g = torch.Generator().manual_seed(rows + rank)
    signal = torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)
    noisy = signal + 0.1 * signal.std() * torch.randn(rows, cols, generator=g)
    assert evbmf_rank(noisy) == rank
    assert evbmf_rank(noisy.T) == rank
    assert evbmf_rank(torch.randn(rows, cols, generator=g)) == 0  # pure noise has no signal


@pytest.mark.parametrize("ratio, expected", [(-1, 1), (-0.5, 5), (0, 10), (0.5, 35), (1, 60)])
def test_calibration_formula(ratio, expected):
    # vbmf 10, full 60: ratio > 0 -> 10 + round(50 * ratio); ratio < 0 -> 10 + round(10 * ratio), at least 1
    assert calibrate(10, 60, ratio) == expected


def test_calibration_clamps_and_rejects_out_of_range():
    assert calibrate(0, 16, 0) == 1
    assert calibrate(16, 16, 0.3) == 16
    for bad in (1.5, -1.01, float("nan"), "x"):
        with pytest.raises(CompressionError, match=r"\[-1, 1\]"):
            check_vbmf_ratio(bad)
