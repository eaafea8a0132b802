"""Device selection: automatic by default, clear errors for devices that are not there."""
import pytest
import torch

from utils.device import resolve_device
from utils.errors import DeviceError


def test_auto_picks_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for name in (None, "", "auto"):
        assert resolve_device(name).type == expected


def test_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    with pytest.raises(DeviceError, match="CUDA is not available here: use --device cpu"):
        resolve_device("cuda")


def test_bad_index_and_unknown_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="only 1 CUDA device"):
        resolve_device("cuda:3")
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(DeviceError, match="unsupported device 'meta'"):
        resolve_device("meta")
