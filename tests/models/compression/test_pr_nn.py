"""PR_NN: filters ranked by the nuclear norm of their feature maps over real images."""
import pytest
import torch
import torch.nn as nn

from models.compression import compress_model
from models.compression import graph as graph_lib
from models.compression.importance import feature_nuclear_norms, group_nuclear_norms
from utils.errors import CompressionError

DEAD = 3  # filter of the middle conv whose output is constant zero


def _net():
    """conv a (3->4) -> conv b (4->5) -> conv c (5->2); b's filter DEAD only reads a's zero channel 0.

    That filter has the largest weights of b (PR_L2 would keep it) but a constant-zero map.
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(5, 2, 1))
    with torch.no_grad():
        net[0].weight[0].zero_()
        net[0].bias[0] = 0.0
        net[2].weight[DEAD].zero_()
        net[2].weight[DEAD, 0] = 5.0
        net[2].bias[DEAD] = 0.0
    return net.eval()


def _images(count=3):
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(3, 12 + 4 * i, 16, generator=generator) for i in range(count)]


def test_nuclear_norm_is_the_mean_over_images_of_each_map():
    net, images = _net(), _images()
    norms = feature_nuclear_norms(net, [net[2]], images)[net[2]]
    expected = torch.zeros(5, dtype=torch.float64)
    with torch.no_grad():
        for image in images:
            maps = net[:3](image.unsqueeze(0))[0]
            expected += torch.linalg.matrix_norm(maps.double(), ord="nuc")
    assert norms.tolist() == pytest.approx((expected / len(images)).tolist(), rel=1e-4)
    assert norms[DEAD] == 0 and (norms[torch.arange(5) != DEAD] > 0).all()


def test_constant_zero_filter_ranks_last_and_is_pruned_first():
    net, images = _net(), _images()
    graph = graph_lib.build_graph(net, torch.randn(1, 3, 16, 16))
    groups = {g.name: g for g in graph_lib.channel_groups(graph) if g.prunable}
    tp_group = graph_lib.full_group(graph, groups["2"])
    scores = group_nuclear_norms(graph, tp_group, 5, feature_nuclear_norms(net, [net[2]], images))
    assert int(torch.argmin(scores)) == DEAD
    # PR_L2 keeps that filter (it has the largest weights); PR_NN removes it first
    for method, kept_dead in (("PR_L2", True), ("PR_NN", False)):
        pruned, report = compress_model(net, method, "manual", layer_ratios={"2": 0.2}, images=images,
                                        trace_size=(16, 16), report_sizes=[(16, 16)])
        assert pruned[2].out_channels == 4
        dead_row = net[2].weight[DEAD].detach()
        assert any(torch.equal(row, dead_row) for row in pruned[2].weight.detach()) == kept_dead
    assert report["images"] == len(images)


def test_pr_nn_slamp_on_pidnet_keeps_the_interface(tiny_sm, fast):
    body, head = tiny_sm
    generator = torch.Generator().manual_seed(2)
    images = [torch.randn(3, 64, 64, generator=generator), torch.randn(3, 48, 80, generator=generator)]
    pruned, report = compress_model(body, "PR_NN", "slamp", 0.5, images=images, **fast)
    assert report["method"] == "PR_NN" and 0.5 <= report["ratio_achieved"] < 0.55
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert [o.shape for o in pruned(x)] == [o.shape for o in body(x)]


def test_pr_nn_needs_images():
    with pytest.raises(CompressionError, match="PR_NN .* pass --images DIR"):
        compress_model(_net(), "PR_NN", "slamp", 0.5, trace_size=(16, 16), report_sizes=[(16, 16)])
