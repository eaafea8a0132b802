import pytest
import torch
import torch.nn as nn

from models.compression import graph as graph_lib
from models.compression.importance import geometric_median_distances, lamp_scores, squared_norms


def test_lamp_score_hand_example():
    # sorted ascending: 1 (idx 1), 2 (idx 3), 4 (idx 0), 9 (idx 2); tails 16, 15, 13, 9
    scores = lamp_scores([4.0, 1.0, 9.0, 2.0])
    assert scores.tolist() == pytest.approx([4 / 13, 1 / 16, 1.0, 2 / 15])


def test_lamp_strongest_channel_scores_one_and_order_follows_norm():
    squared = torch.rand(17) + 0.1
    scores = lamp_scores(squared)
    assert scores[squared.argmax()] == pytest.approx(1.0)
    assert torch.equal(torch.argsort(scores), torch.argsort(squared.double()))


def _net():
    net = nn.Sequential(nn.Conv2d(3, 5, 1, bias=False), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 2, 1))
    values = [0.0, 1.0, 2.0, 4.0, 10.0]
    with torch.no_grad():
        net[0].weight.zero_()
        for i, v in enumerate(values):
            net[0].weight[i, 0] = v
    return net.eval()


def test_group_norms_and_geometric_median_distances():
    net = _net()
    graph = graph_lib.build_graph(net, torch.randn(1, 3, 8, 8))
    group = [g for g in graph_lib.channel_groups(graph) if g.prunable]
    assert [g.name for g in group] == ["0"]
    tp_group = graph_lib.full_group(graph, group[0])
    assert squared_norms(graph, tp_group, 5).tolist() == pytest.approx([0, 1, 4, 16, 100])
    # summed |v_i - v_j|: 17, 14, 13, 15, 33 -> channel 2 is the geometric median
    assert geometric_median_distances(graph, tp_group, 5).tolist() == pytest.approx([17, 14, 13, 15, 33])
