import json

import pytest
import torch

from models.compression.graph import ChannelGroup
from models.compression.recommend import (check_ratio, indices_per_group, load_layer_indices,
                                          load_layer_ratios, manual_counts, rounded_keep, slamp_counts)
from utils.errors import CompressionError


def _group(name, channels, layers=1):
    return ChannelGroup(name=name, module=None, channels=channels,
                        layers=[name] + [f"{name}.coupled{i}" for i in range(layers - 1)],
                        inputs=[], prunable=True)


def test_slamp_global_ranking_hand_example():
    groups = [_group("a", 4), _group("b", 4)]
    norms = [torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([100.0, 1.0, 1.0, 1.0])]
    # LAMP: a -> 1/4, 1/3, 1/2, 1; b -> ~0.0097, 0.0098, 0.0099, 1. Half of 8 filters = 4:
    # the three weak channels of b first, then the weakest of a.
    assert slamp_counts(groups, norms, 0.5) == [1, 3]


def test_slamp_reaches_the_ratio_counting_filters_and_keeps_one_channel():
    torch.manual_seed(0)
    groups = [_group("a", 16, layers=3), _group("b", 32), _group("c", 8, layers=2)]
    norms = [torch.rand(g.channels) for g in groups]
    total = sum(g.filters for g in groups)
    for ratio in (0.2, 0.5, 0.9):
        counts = slamp_counts(groups, norms, ratio)
        removed = sum(c * len(g.layers) for c, g in zip(counts, groups))
        assert ratio * total <= removed < ratio * total + 3  # one step of the widest group at most
        assert all(c < g.channels for c, g in zip(counts, groups))


def test_rounded_keep():
    assert rounded_keep(64, 27, 8) == 24
    assert rounded_keep(64, 29, 8) == 32
    assert rounded_keep(64, 2, 8) == 8
    assert rounded_keep(6, 1, 8) == 6  # narrower than one step: untouched
    assert rounded_keep(10, 0, 1) == 1


def test_slamp_round_to():
    groups = [_group("a", 64), _group("b", 64)]
    counts = slamp_counts(groups, [torch.rand(64), torch.rand(64)], 0.6, round_to=8)
    assert all((64 - c) % 8 == 0 and c < 64 for c in counts)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "x", None, float("nan")])
def test_check_ratio_rejects(bad):
    with pytest.raises(CompressionError, match=r"\(0, 1\)"):
        check_ratio(bad)


def test_manual_counts_and_coupled_layers():
    groups = [_group("a", 10, layers=2), _group("b", 8)]
    assert manual_counts(groups, groups, {"a": 0.5, "b": 0.25}) == [5, 2]
    assert manual_counts(groups, groups, {"a.coupled0": 0.3}) == [3, 0]
    with pytest.raises(CompressionError, match="share channels"):
        manual_counts(groups, groups, {"a": 0.5, "a.coupled0": 0.2})
    with pytest.raises(CompressionError, match="no convolution named 'zzz'"):
        manual_counts(groups, groups, {"zzz": 0.5})
    blocked = ChannelGroup("out", None, 4, ["out"], [], False, "feeds a network output")
    with pytest.raises(CompressionError, match="cannot be pruned.*network output"):
        manual_counts(groups, groups + [blocked], {"out": 0.5})


def test_indices_validation():
    groups = [_group("a", 6)]
    assert indices_per_group(groups, groups, {"a": [4, 1]}) == {0: [1, 4]}
    for bad, msg in (([6], "out of range"), ([1, 1], "duplicates"), (list(range(6)), "all 6")):
        with pytest.raises(CompressionError, match=msg):
            indices_per_group(groups, groups, {"a": bad})


def test_json_loaders(tmp_path):
    good = tmp_path / "r.json"
    good.write_text(json.dumps({"layer1.0.conv1": 0.5}))
    assert load_layer_ratios(str(good)) == {"layer1.0.conv1": 0.5}
    bad_ratio = tmp_path / "b.json"
    bad_ratio.write_text(json.dumps({"x": 2}))
    with pytest.raises(CompressionError, match="ratio of layer 'x'"):
        load_layer_ratios(str(bad_ratio))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(CompressionError, match="not valid JSON"):
        load_layer_ratios(str(broken))
    with pytest.raises(CompressionError, match="not found"):
        load_layer_indices(str(tmp_path / "none.json"))
    ids = tmp_path / "i.json"
    ids.write_text(json.dumps({"x": [0, "1"]}))
    with pytest.raises(CompressionError, match="list of integers"):
        load_layer_indices(str(ids))
