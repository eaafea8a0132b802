"""Planning without pruning: the preview equals what compress_model then does, layer by layer."""
import copy

import pytest
import torch

from models.compression import plan as plan_lib
from models.compression import pruner
from models.compression.report import conv_channels, layer_macs
from utils.errors import CompressionError

SIZE = (64, 128)
REQUESTS = [
    dict(method="PR_L2", recommendation="slamp", ratio=0.5),
    dict(method="PR_GM", ratio=0.3, round_to=4),
    dict(method="PR_L2", recommendation="manual", layer_ratios={"layer1.1.conv2": 0.5, "layer3.0.conv1": 0.25}),
    dict(method="PR_ID", layer_indices={"layer3.0.conv1": [0, 2, 5]}),
]


@pytest.mark.parametrize("kind", ["sm", "l"])
def test_preview_matches_the_pruned_model(kind, tiny_sm, tiny_l, fast):
    body, _ = copy.deepcopy(tiny_sm if kind == "sm" else tiny_l)
    analysis = plan_lib.analyse(body, fast["trace_size"])
    for request in REQUESTS:
        plan = plan_lib.plan(analysis, **request)
        preview = plan_lib.preview(analysis, plan, SIZE)
        pruned, report = pruner.compress_model(body, trace_size=fast["trace_size"], report_sizes=[SIZE], **request)
        assert preview["macs"][1] == report["after"]["macs"]["64x128"] < preview["macs"][0], request
        assert preview["ratio_achieved"] == pytest.approx(report["ratio_achieved"])
        real_macs, real_channels = layer_macs(pruned, SIZE), conv_channels(pruned)
        for name, row in preview["layers"].items():
            assert row["macs"][1] == real_macs[name], (request, name)
            assert (row["in"][1], row["out"][1]) == real_channels[name], (request, name)
    assert conv_channels(analysis.model) == conv_channels(body)  # planning pruned nothing


def test_plan_rejects_bad_requests_like_the_cli(tiny_sm, fast):
    analysis = plan_lib.analyse(copy.deepcopy(tiny_sm[0]), fast["trace_size"])
    with pytest.raises(CompressionError, match=r"in \(0, 1\)"):
        plan_lib.plan(analysis, "PR_L2", "slamp", 1.5)
    with pytest.raises(CompressionError, match="ratio of layer|must be in"):
        plan_lib.plan(analysis, "PR_L2", "manual", layer_ratios={"layer3.0.conv1": 1.0})
    with pytest.raises(CompressionError, match="no convolution named 'nope'"):
        plan_lib.plan(analysis, "PR_L2", "manual", layer_ratios={"nope": 0.5})
    with pytest.raises(CompressionError, match="cannot be pruned"):
        plan_lib.plan(analysis, "PR_L2", "manual", layer_ratios={"final_layer.conv2": 0.5})


# Decomposition is slow on CPU (FD_TK ~30-80 s, FD_CP ~50 s on a tiny body on the shared box): SVD
# covers the vbmf path and the bookkeeping.
@pytest.mark.parametrize("method, recommendation, ratio", [("FD_SVD", "vbmf", 0.5)])
def test_rank_preview_matches_the_decomposed_model(method, recommendation, ratio, tiny_sm):
    decompose = pytest.importorskip("models.compression.decompose", reason="filter decomposition not merged")
    body = copy.deepcopy(tiny_sm[0])
    ranks, vbmf_ranks = plan_lib.plan_ranks(body, method, recommendation, ratio)
    preview = plan_lib.preview_ranks(body, method, ranks, SIZE, vbmf_ranks)
    _, report = decompose.compress_model(body, method, recommendation, ratio, report_sizes=[SIZE])
    assert preview["macs"] == [report["before"]["macs"]["64x128"], report["after"]["macs"]["64x128"]]
    assert preview["decomposed_layers"] == report["decomposed_layers"] > 0
    for name, entry in report["layers"].items():
        if entry["decomposed"]:
            assert preview["layers"][name]["ranks"] == entry["ranks"]
            assert preview["layers"][name]["macs"] == entry["macs"]


def test_pr_nn_preview_matches_the_pruned_model_and_needs_images(tiny_sm, fast):
    body, _ = copy.deepcopy(tiny_sm)
    torch.manual_seed(0)
    images = [torch.randn(3, *SIZE) for _ in range(2)]
    with pytest.raises(CompressionError, match="PR_NN ranks filters by their feature maps on real images"):
        plan_lib.plan(plan_lib.analyse(body, fast["trace_size"]), "PR_NN", "slamp", 0.5)
    analysis = plan_lib.analyse(body, fast["trace_size"], images=images)
    for request in (dict(method="PR_NN", recommendation="slamp", ratio=0.5),
                    dict(method="PR_NN", recommendation="manual", layer_ratios={"layer3.0.conv1": 0.5})):
        preview = plan_lib.preview(analysis, plan_lib.plan(analysis, **request), SIZE)
        pruned, report = pruner.compress_model(body, trace_size=fast["trace_size"], report_sizes=[SIZE],
                                               images=images, **request)
        assert preview["macs"][1] == report["after"]["macs"]["64x128"] < preview["macs"][0], request
        real_macs, real_channels = layer_macs(pruned, SIZE), conv_channels(pruned)
        for name, row in preview["layers"].items():
            assert row["macs"][1] == real_macs[name], (request, name)
            assert (row["in"][1], row["out"][1]) == real_channels[name], (request, name)
    # the NN plan is not the L2 one: the images decide which filters go
    assert plan_lib.plan(analysis, "PR_NN", "slamp", 0.5) != plan_lib.plan(analysis, "PR_L2", "slamp", 0.5)
