"""Compression to a MAC or latency budget."""
import copy
import math

import pytest
import torch

from models.compression import budget as budget_lib
from models.compression import compress_model
from models.compression import graph as graph_lib
from models.compression import latency as latency_lib
from models.compression.report import count_macs
from utils.errors import CompressionError


def test_layer_macs_agree_with_the_hook_count(tiny_l):
    body, _ = tiny_l
    assert sum(budget_lib.layer_macs(body, (64, 96)).values()) == count_macs(body, (64, 96))


@pytest.mark.parametrize("kind", ["sm", "l"])
def test_estimator_is_exact_after_pruning(kind, tiny_sm, tiny_l):
    body = copy.deepcopy((tiny_sm if kind == "sm" else tiny_l)[0])
    example = torch.randn(1, 3, 64, 64)
    graph = graph_lib.build_graph(body, example)
    groups = [g for g in graph_lib.channel_groups(graph) if g.prunable]
    tp_groups = [graph_lib.full_group(graph, g) for g in groups]
    estimator = budget_lib.MacEstimator(body, graph, tp_groups, (64, 128))
    assert estimator.total == count_macs(body, (64, 128))
    generator = torch.Generator().manual_seed(0)
    plan = {}
    for gi, group in enumerate(groups):
        if gi % 3 != 2:  # leave some groups whole, so that in/out shrink independently
            count = int(torch.randint(1, group.channels, (1,), generator=generator))
            plan[gi] = sorted(torch.randperm(group.channels, generator=generator)[:count].tolist())
    predicted = estimator.macs(plan)
    for gi, idxs in plan.items():
        graph_lib.prune_group(graph, groups[gi], idxs)
    assert predicted == pytest.approx(count_macs(body, (64, 128)), rel=1e-9)


@pytest.mark.parametrize("method, fraction, round_to", [("PR_L2", 0.5, 1), ("PR_GM", 0.7, 1), ("PR_L2", 0.6, 2)])
def test_target_macs_lands_within_two_percent(method, fraction, round_to, tiny_sm, fast):
    body, head = tiny_sm
    pruned, report = compress_model(body, method, target_macs=fraction, round_to=round_to, **fast)
    kept = count_macs(pruned, fast["report_sizes"][0]) / count_macs(body, fast["report_sizes"][0])
    assert 0.98 * fraction <= kept <= fraction
    assert report["budget"]["kind"] == "macs" and report["budget"]["asked"] == fraction
    assert report["budget"]["achieved"] == pytest.approx(kept) == report["macs_kept"]
    assert report["ratio_requested"] is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert [o.shape for o in head(pruned(x))] == [o.shape for o in head(body(x))]


def test_budget_prunes_cheap_importance_per_mac():
    """Two equally important parallel branches; the one at full resolution costs 16x the MACs per channel."""
    import torch.nn as nn

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.full = nn.Conv2d(3, 8, 3, padding=1)
            self.full_out = nn.Conv2d(8, 2, 1)
            self.low = nn.Conv2d(3, 8, 3, padding=1, stride=4)
            self.low_out = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return [self.full_out(self.full(x)), self.low_out(self.low(x))]

    torch.manual_seed(0)
    net = TwoBranches().eval()
    with torch.no_grad():
        net.low.weight.copy_(net.full.weight)
    pruned, _ = compress_model(net, "PR_L2", target_macs=0.6, trace_size=(32, 32), report_sizes=[(32, 32)])
    assert pruned.full.out_channels < 8 and pruned.low.out_channels == 8


def test_unreachable_and_bad_budgets(tiny_sm, fast):
    body, _ = tiny_sm
    with pytest.raises(CompressionError, match=r"below what pruning can reach: .* ask for at least"):
        compress_model(body, "PR_L2", target_macs=0.01, **fast)
    for bad in (0, 1, 1.5, -0.2, math.nan, "x"):
        with pytest.raises(CompressionError, match=r"--target-macs must be"):
            compress_model(body, "PR_L2", target_macs=bad, **fast)
    with pytest.raises(CompressionError, match="not both"):
        compress_model(body, "PR_L2", target_macs=0.5, target_latency=0.5, **fast)
    with pytest.raises(CompressionError, match="replaces --ratio"):
        compress_model(body, "PR_L2", ratio=0.3, target_latency=0.5, **fast)
    with pytest.raises(CompressionError, match="unknown --runtime"):
        compress_model(body, "PR_L2", target_latency=0.5, runtime="tvm", **fast)


def _trial(macs, ratio):
    return {"macs_fraction": macs, "latency_ratio": ratio}


def test_next_fraction_solves_the_line_and_stays_in_the_bracket():
    # latency = 0.2 + 0.8 * macs: from (0.5, 0.6) and (1, 1) the budget 0.4 needs macs 0.25
    assert latency_lib._next_fraction([_trial(0.5, 0.6)], 0.4, 0.05) == pytest.approx(0.25)
    # no speed-up measured (noise): halve
    assert latency_lib._next_fraction([_trial(0.5, 1.1)], 0.4, 0.05) == pytest.approx(0.25)
    # bracketed: inside (0.2, 0.3)
    step = latency_lib._next_fraction([_trial(0.3, 0.5), _trial(0.2, 0.3)], 0.4, 0.05)
    assert 0.2 < step < 0.3
    assert latency_lib._next_fraction([_trial(0.1, 0.9)], 0.4, 0.08) == 0.08  # floor
    # a steep extrapolation (one noisy point) is damped to halving
    assert latency_lib._next_fraction([_trial(0.7, 1.3), _trial(0.35, 0.82)], 0.7, 0.01) == pytest.approx(0.175)


def test_search_latency_meets_the_budget_with_a_linear_latency(monkeypatch):
    """With latency = 0.3 + 0.7 * MACs (no noise) the search ends within tolerance below the budget."""
    monkeypatch.setattr(latency_lib, "make_runner", lambda model, *a, **k: model)
    monkeypatch.setattr(latency_lib, "time_pair", lambda base, cand, *a, **k: (1.0, 0.3 + 0.7 * cand))

    def build(mac_fraction):
        return mac_fraction, {"plan": mac_fraction}, mac_fraction

    found = latency_lib.search_latency(build, 0.6, 1.0, "eager", "cpu", (32, 32), 1, lowest_fraction=0.05)
    assert 0.6 * (1 - latency_lib.LATENCY_TOLERANCE) <= found.ratio <= 0.6
    assert found.macs_fraction == pytest.approx((found.ratio - 0.3) / 0.7)
    assert len(found.trials) <= 3
    with pytest.raises(CompressionError, match=r"--target-latency 0.2 was not reached .* lowest measured latency"):
        latency_lib.search_latency(build, 0.2, 1.0, "eager", "cpu", (32, 32), 1, lowest_fraction=0.05)
