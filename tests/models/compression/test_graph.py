import copy

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from models.compression import graph as graph_lib
from models.compression.pruner import compress_model

def _groups(body):
    graph = graph_lib.build_graph(body, torch.randn(1, 3, 64, 64))
    return graph, {g.name: g for g in graph_lib.channel_groups(graph)}


def _find(groups, layer):
    return next(g for g in groups.values() if layer in g.layers)


def test_pagfm_rule_couples_f_x_and_f_y_only(tiny_sm):
    graph, groups = _groups(copy.deepcopy(tiny_sm[0]))
    assert len(graph.cut_reductions) == 2  # pag3 and pag4 gates
    for pag in ("pag3", "pag4"):
        group = _find(groups, f"{pag}.f_x.0")
        assert set(group.layers) == {f"{pag}.f_x.0", f"{pag}.f_y.0"}
        assert group.channels == 8 and group.prunable


def test_without_the_rule_torch_pruning_ties_pagfm_to_the_p_branch(tiny_sm):
    body = copy.deepcopy(tiny_sm[0])
    plain = tp.DependencyGraph().build_dependency(body, example_inputs=torch.randn(1, 3, 64, 64), verbose=False)
    f_x = dict(body.named_modules())["pag3.f_x.0"]
    group = plain.get_pruning_group(f_x, tp.prune_conv_out_channels, list(range(f_x.out_channels)))
    names = {plain._module2name.get(dep.target.module) for dep, _ in group}
    assert "compression3.0" in names  # 8 gate channels wrongly tied to 16 P-branch channels


def test_outputs_grouped_conv_and_classifier_are_protected(tiny_sm):
    _, groups = _groups(copy.deepcopy(tiny_sm[0]))
    assert not _find(groups, "final_layer.conv2").prunable  # classifier
    assert not _find(groups, "compression3.0").prunable  # feeds p_features (seghead_p)
    assert not _find(groups, "diff4.0").prunable  # feeds d_features (seghead_d)
    assert not _find(groups, "spp.scale_process.2").prunable  # groups=4 outputs
    assert "grouped conv" in _find(groups, "spp.scale_process.2").reason
    assert _find(groups, "final_layer.conv1").prunable  # hidden classifier width is fine
    scale0 = _find(groups, "spp.scale0.2")
    assert scale0.prunable and "spp.scale_process.2" in scale0.inputs
    assert {"spp.scale1.3", "spp.scale2.3", "spp.scale3.3", "spp.scale4.3"} <= set(scale0.layers)


def test_residual_group(tiny_l):
    _, groups = _groups(copy.deepcopy(tiny_l[0]))
    trunk = _find(groups, "layer1.0.conv2")
    assert {"conv1.3", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(trunk.layers)
    assert {"layer1.0.conv1", "layer2.0.conv1", "layer2.0.downsample.0"} <= set(trunk.inputs)


def _zero_channels(model, graph, group, idxs):
    """Make channels ``idxs`` of ``group`` contribute exactly nothing, without removing them."""
    pruning = graph.get_pruning_group(group.module, tp.prune_conv_out_channels, idxs)
    with torch.no_grad():
        for dep, dep_idxs in pruning:
            module = dep.target.module
            if isinstance(module, nn.Conv2d) and graph.is_out_channel_pruning_fn(dep.handler):
                module.weight[dep_idxs] = 0
                if module.bias is not None:
                    module.bias[dep_idxs] = 0
            elif isinstance(module, nn.Conv2d):
                per_group = module.in_channels // module.groups
                if module.groups == 1:
                    module.weight[:, dep_idxs] = 0
                else:
                    for i in dep_idxs:
                        g, k = divmod(i, per_group)
                        out_per_group = module.out_channels // module.groups
                        module.weight[g * out_per_group:(g + 1) * out_per_group, k] = 0
            elif isinstance(module, nn.BatchNorm2d):
                module.weight[dep_idxs] = 0
                module.bias[dep_idxs] = 0


@pytest.mark.parametrize("kind", ["sm", "l"])
def test_pruning_equals_zeroing_the_same_channels(kind, tiny_sm, tiny_l, fast):
    """The strongest grouping check: removing channels == silencing them in the original.

    Covers residual chains, PagFM, the PAPPM concat into the grouped conv, Bag/LightBag.
    """
    body = copy.deepcopy((tiny_sm if kind == "sm" else tiny_l)[0])
    gen = torch.Generator().manual_seed(1)
    for module in body.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    graph, groups = _groups(body)
    plan = {g.name: [0, 2] for g in groups.values() if g.prunable and g.channels > 3}
    assert {"pag3.f_y.0", "spp.scale0.2", "conv1.3"} <= set(plan)
    pruned, _ = compress_model(body, "PR_ID", layer_indices=plan, **fast)

    zeroed = copy.deepcopy(body)
    zgraph, zgroups = _groups(zeroed)
    for name, idxs in plan.items():
        _zero_channels(zeroed, zgraph, zgroups[name], idxs)
    x = torch.randn(2, 3, 64, 96, generator=gen)
    with torch.no_grad():
        expected, got = zeroed.eval()(x), pruned.eval()(x)
        original = body.eval()(x)
    for a, b, o in zip(expected, got, original):
        assert a.shape == b.shape == o.shape
        # Random deep nets reach activations ~1e3: compare relative to the output scale.
        scale = a.abs().max().item()
        assert (a - b).abs().max().item() <= 1e-4 * scale + 1e-5
    assert (expected[1] - original[1]).abs().max().item() > 1e-2 * expected[1].abs().max().item()
