import copy

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from models.checkpoint import load_module_file
from models.compression import compress_model
from models.compression.report import conv_channels, count_macs, count_params
from utils.errors import CompressionError
from utils.io import atomic_save


def _run(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _check_interface(original, pruned, head, x):
    before, after = _run(original, x), _run(pruned, x)
    assert [o.shape for o in before] == [o.shape for o in after]
    composed = _run(nn.Sequential(pruned, head), x)
    assert [o.shape for o in composed] == [o.shape for o in _run(nn.Sequential(original, head), x)]
    assert all(torch.isfinite(o).all() for o in composed)


def _achieved_from_layers(report):
    prunable = [g for g in report["groups"] if g["prunable"]]
    names = [name for g in prunable for name in g["layers"]]
    before = sum(report["layers"][n]["out"][0] for n in names)
    after = sum(report["layers"][n]["out"][1] for n in names)
    return 1 - after / before, before


@pytest.mark.parametrize("kind", ["sm", "l"])
def test_slamp_reaches_ratio_and_preserves_the_interface(kind, tiny_sm, tiny_l, fast):
    body, head = copy.deepcopy(tiny_sm if kind == "sm" else tiny_l)
    pruned, report = compress_model(body, "PR_L2", "slamp", 0.5, **fast)
    achieved, total = _achieved_from_layers(report)
    assert report["ratio_achieved"] == pytest.approx(achieved)
    widest = max(len(g["layers"]) for g in report["groups"] if g["prunable"])
    assert 0.5 <= achieved < 0.5 + widest / total
    assert report["after"]["params"] == count_params(pruned) < count_params(body) == report["before"]["params"]
    channels = conv_channels(pruned)
    assert channels["final_layer.conv2"][1] == 5  # classifier untouched
    for name, (cin, cout) in channels.items():
        assert report["layers"][name]["in"][1] == cin and report["layers"][name]["out"][1] == cout
    _check_interface(body, pruned, head, torch.randn(2, 3, 64, 96))
    assert not any(p is q for p in pruned.parameters() for q in body.parameters())  # the input is untouched


def test_pagfm_projections_pruned_with_the_same_indices(tiny_sm, fast):
    body, head = copy.deepcopy(tiny_sm)
    pruned, _ = compress_model(body, "PR_L2", "manual", layer_ratios={"pag3.f_x.0": 0.5}, **fast)
    named, original = dict(pruned.named_modules()), dict(body.named_modules())
    kept = {}
    for proj in ("f_x", "f_y"):
        w_new = named[f"pag3.{proj}.0"].weight
        w_old = original[f"pag3.{proj}.0"].weight
        assert w_new.shape[0] == 4 and named[f"pag3.{proj}.1"].num_features == 4
        kept[proj] = [next(i for i in range(w_old.shape[0]) if torch.equal(w_old[i], row)) for row in w_new]
    assert kept["f_x"] == kept["f_y"]
    # PR_L2 keeps the strongest: joint squared norm of both projections
    joint = (original["pag3.f_x.0"].weight.flatten(1).pow(2).sum(1)
             + original["pag3.f_y.0"].weight.flatten(1).pow(2).sum(1))
    assert kept["f_x"] == sorted(torch.argsort(joint, descending=True)[:4].tolist())
    _check_interface(body, pruned, head, torch.randn(1, 3, 64, 64))


def test_manual_ratio_on_a_residual_group(tiny_l, fast):
    body, head = copy.deepcopy(tiny_l)
    pruned, _ = compress_model(body, "PR_L2", "manual", layer_ratios={"layer1.1.conv2": 0.5,
                                                                            "layer2.0.conv1": 0.25}, **fast)
    channels = conv_channels(pruned)
    for name in ("conv1.3", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"):
        assert channels[name][1] == 4
    for name in ("layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"):
        assert channels[name][0] == 4
    assert channels["layer2.0.conv1"][1] == 12
    assert channels["layer3.0.conv1"] == conv_channels(body)["layer3.0.conv1"]  # untouched
    _check_interface(body, pruned, head, torch.randn(1, 3, 64, 64))


def test_pr_id_removes_exactly_the_listed_channels(tiny_sm, fast):
    body, _ = copy.deepcopy(tiny_sm)
    pruned, report = compress_model(body, "PR_ID", layer_indices={"layer1.0.conv1": [0, 3]}, **fast)
    old = dict(body.named_modules())["layer1.0.conv1"].weight
    new = dict(pruned.named_modules())["layer1.0.conv1"].weight
    assert torch.equal(new, old[[1, 2, 4, 5, 6, 7]])
    assert report["method"] == "PR_ID" and report["recommendation"] == "manual"
    assert report["removed_filters"] == 2


def _median_net():
    net = nn.Sequential(nn.Conv2d(3, 5, 1, bias=False), nn.ReLU(), nn.Conv2d(5, 2, 1))
    with torch.no_grad():
        net[0].weight.zero_()
        for i, v in enumerate([0.0, 1.0, 2.0, 4.0, 10.0]):
            net[0].weight[i, 0] = v
    return net


@pytest.mark.parametrize("method, removed", [("PR_GM", 2), ("PR_L2", 0)])
def test_gm_removes_the_geometric_median_and_l2_the_weakest(method, removed):
    net = _median_net()
    pruned, _ = compress_model(net, method, "manual", layer_ratios={"0": 0.2}, trace_size=(32, 32),
                               report_sizes=[(32, 32)])
    values = pruned[0].weight[:, 0, 0, 0].tolist()
    expected = [v for i, v in enumerate([0.0, 1.0, 2.0, 4.0, 10.0]) if i != removed]
    assert values == expected


def test_round_to(tiny_sm, fast):
    body, head = copy.deepcopy(tiny_sm)
    pruned, report = compress_model(body, "PR_L2", "slamp", 0.6, round_to=4, **fast)
    assert report["round_to"] == 4
    pruned_groups = [g for g in report["groups"] if g["channels"][1] != g["channels"][0]]
    assert pruned_groups
    for group in pruned_groups:
        assert group["channels"][1] % 4 == 0
    _check_interface(body, pruned, head, torch.randn(1, 3, 64, 64))


def test_iterative_compression_and_retrace(tiny_sm, fast, tmp_path):
    body, head = copy.deepcopy(tiny_sm)
    first, report1 = compress_model(body, "PR_L2", "slamp", 0.3, **fast)
    atomic_save(first, tmp_path / "c1.pt")
    reloaded = load_module_file(tmp_path / "c1.pt")
    assert isinstance(reloaded, fx.GraphModule)
    second, report2 = compress_model(reloaded, "PR_GM", "slamp", 0.3, **fast)
    assert report2["before"]["params"] == report1["after"]["params"] > report2["after"]["params"]
    _check_interface(body, second, head, torch.randn(1, 3, 64, 64))
    retraced = fx.symbolic_trace(second)
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(_run(second, x), _run(retraced, x)))


def test_report_contents_and_macs_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 2, 1))
    assert count_macs(net, (16, 16)) == 16 * 16 * 8 * 3 * 9 + 16 * 16 * 2 * 8
    pruned, report = compress_model(net, "PR_L2", "manual", layer_ratios={"0": 0.5}, trace_size=(32, 32),
                                    report_sizes=[(16, 16), (32, 64)])
    assert report["before"]["macs"] == {"16x16": 16 * 16 * 8 * 27 + 16 * 16 * 16, "32x64": 32 * 64 * (8 * 27 + 16)}
    assert report["after"]["macs"]["16x16"] == 16 * 16 * 4 * 27 + 16 * 16 * 2 * 4
    assert report["layers"] == {"0": {"in": [3, 3], "out": [8, 4]}, "3": {"in": [8, 4], "out": [2, 2]}}
    assert report["before"]["params"] == 8 * 27 + 16 + 16 + 2
    assert report["after"]["params"] == 4 * 27 + 8 + 8 + 2
    assert report["ratio_achieved"] == 0.5 and report["prunable_filters"] == 8
    assert report["input_size"] == [16, 16]
    assert report["macs_kept"] == pytest.approx((4 * 27 + 8) / (8 * 27 + 16))
    assert [g["name"] for g in report["groups"] if not g["prunable"]] == ["3"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="PR_XX", ratio=0.5), "unknown compression method 'PR_XX'"),
    (dict(method="PR_L2", ratio=1.0), r"\(0, 1\)"),
    (dict(method="PR_L2", ratio=0.0), r"\(0, 1\)"),
    (dict(method="PR_L2", recommendation="vbmf", ratio=0.5), "vbmf recommends decomposition ranks"),
    (dict(method="PR_L2", recommendation="lamp", ratio=0.5), "unknown recommendation"),
    (dict(method="PR_ID", recommendation="slamp", ratio=0.5), "PR_ID removes the channel indices"),
    (dict(method="PR_ID"), "PR_ID needs channel indices"),
    (dict(method="PR_L2", recommendation="manual"), "needs per-layer ratios"),
    (dict(method="PR_L2", ratio=0.5, round_to=0), "round-to"),
])
def test_bad_requests(kwargs, match):
    with pytest.raises(CompressionError, match=match):
        compress_model(_median_net(), **kwargs)


def test_models_that_cannot_be_compressed():
    with pytest.raises(CompressionError, match="does not run"):
        compress_model(nn.Linear(4, 4), "PR_L2", ratio=0.5, trace_size=(32, 32))
    only_classifier = nn.Sequential(nn.Conv2d(3, 4, 1))
    with pytest.raises(CompressionError, match="no prunable channels"):
        compress_model(only_classifier, "PR_L2", ratio=0.5, trace_size=(32, 32), report_sizes=[(32, 32)])
