"""Decomposition (FD_TK / FD_SVD) to a MAC budget: ranks by discarded singular-value energy per MAC."""
import pytest
import torch
import torch.nn as nn

from models.compression import decompose_budget
from models.compression import latency as latency_lib
from models.compression.report import count_macs
from utils.errors import CompressionError


def _low_rank_pair():
    """Two equal 1x1 convs; the first has rank-2 weights, the second full rank."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 1))
    with torch.no_grad():
        net[0].weight.copy_((torch.randn(16, 2) @ torch.randn(2, 16))[:, :, None, None])
    return net.eval()


def _adapter(net):
    """3-channel image in, as the budget's MAC counting feeds a 1x3xHxW image."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *net).eval()


def test_svd_budget_decomposes_the_low_rank_layer_first():
    net = _adapter(_low_rank_pair())
    total = count_macs(net, (8, 8))
    planner = decompose_budget.RankPlanner(net, "FD_SVD", (8, 8), total)
    first = count_macs(net[:1], (8, 8))
    # decomposing layer "1" at its true rank 2 costs 2 * 32 instead of 256 MACs per pixel
    fraction = (first + 64 * 64 + 64 * 256) / total
    ranks, achieved = planner.plan(fraction + 0.01)
    assert ranks == {"1": 2}
    assert achieved == pytest.approx(fraction)


@pytest.mark.parametrize("method, fraction", [("FD_TK", 0.5), ("FD_SVD", 0.95)])
def test_decompose_to_budget_lands_within_two_percent(method, fraction):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, 24, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(24, 32, 1)).eval()
    model, report = decompose_budget.decompose_to_budget(net, method, target_macs=fraction, report_sizes=[(16, 16)])
    kept = count_macs(model, (16, 16)) / count_macs(net, (16, 16))
    assert 0.98 * fraction <= kept <= fraction
    assert report["budget"] == {"kind": "macs", "asked": fraction, "achieved": pytest.approx(kept),
                                "input_size": [16, 16], "macs_kept": pytest.approx(kept)}
    assert report["decomposed_layers"] >= 1 and report["recommendation"] == "budget"
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert model(x).shape == net(x).shape


def test_decomposition_budget_errors():
    net = _adapter(_low_rank_pair())
    with pytest.raises(CompressionError, match="below what FD_SVD can reach"):
        decompose_budget.decompose_to_budget(net, "FD_SVD", target_macs=0.05, report_sizes=[(8, 8)])
    with pytest.raises(CompressionError, match="which FD_CP has not"):
        decompose_budget.decompose_to_budget(net, "FD_CP", target_macs=0.5, report_sizes=[(8, 8)])
    with pytest.raises(CompressionError, match=r"--target-latency must be in \(0, 1\)"):
        decompose_budget.decompose_to_budget(net, "FD_SVD", target_latency=1.2, report_sizes=[(8, 8)])


def test_decompose_to_latency_budget_reports_the_measurement(monkeypatch):
    """The latency search drives the rank planner; timings are faked (latency = 0.2 + 0.8 * MACs)."""
    from models.compression.report import count_macs as macs_of

    net = _adapter(_low_rank_pair())
    total = macs_of(net, (8, 8))
    monkeypatch.setattr(latency_lib, "make_runner", lambda model, *a, **k: model)
    monkeypatch.setattr(latency_lib, "time_pair",
                        lambda base, cand, *a, **k: (1.0, 0.2 + 0.8 * macs_of(cand, (8, 8)) / total))
    model, report = decompose_budget.decompose_to_budget(net, "FD_SVD", target_latency=0.9, runtime="eager", threads=1,
                                                   report_sizes=[(8, 8)])
    budget = report["budget"]
    assert budget["kind"] == "latency" and budget["asked"] == 0.9 and budget["runtime"] == "eager"
    assert budget["achieved"] <= 0.9 and budget["achieved"] == pytest.approx(0.2 + 0.8 * report["macs_kept"])
    assert budget["latency_ms"] == {"before": 1000.0, "after": pytest.approx(1e3 * budget["achieved"])}
    assert macs_of(model, (8, 8)) / total == pytest.approx(report["macs_kept"])
