"""Conv -> BatchNorm folding for inference (the arithmetic is ``torch.nn.utils.fusion``'s).

Pairs are found on the torch.fx graph (a conv whose only user is a BN); models fx cannot trace
fall back to conv -> BN neighbours inside ``nn.Sequential`` containers. BNs that precede
ReLU + conv (PIDNet's segment heads, PAPPM/DAPPM and Bag) have no conv before them and stay.
"""
import copy
import logging

import torch
import torch.fx
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from utils.cli import first_line

logger = logging.getLogger(__name__)


def _fold_into_conv(conv, bn):
    """Fold an eval-mode BatchNorm into the preceding conv's weight and bias, in place.

    The fusion is computed in float64 and cast back, so folding adds no rounding of its own.
    """
    with torch.no_grad():
        double = (lambda t: None if t is None else t.double())
        weight, bias = fuse_conv_bn_weights(
            conv.weight.double(), double(conv.bias), bn.running_mean.double(), bn.running_var.double(),
            bn.eps, double(bn.weight), double(bn.bias))
        conv.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.detach().to(conv.weight.dtype))
        else:
            conv.bias.copy_(bias.to(conv.bias.dtype))


def _foldable(conv, bn):
    lazy = torch.nn.modules.lazy.LazyModuleMixin
    return (isinstance(conv, nn.Conv2d) and not isinstance(conv, lazy)
            and isinstance(bn, nn.modules.batchnorm._BatchNorm) and not isinstance(bn, lazy)
            and bn.track_running_stats and bn.running_mean is not None
            and bn.num_features == conv.out_channels)


def _graph_pairs(model, graph):
    """(conv_name, bn_name) where the BN consumes the conv output and nothing else does.

    A conv or BN module that is called more than once in the graph is left alone: folding
    it would change its other uses.
    """
    modules = dict(model.named_modules())
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (node,):
            continue
        bn_name = users[0].target
        if calls[node.target] == 1 and calls[bn_name] == 1 and _foldable(modules[node.target], modules.get(bn_name)):
            pairs.append((node.target, bn_name))
    return pairs


def _sequential_pairs(model):
    """Module-structure fallback for models fx cannot trace: Conv2d directly followed by a BN
    inside an ``nn.Sequential`` (the order of a Sequential is its forward order)."""
    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if _foldable(conv, bn):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + conv_name, prefix + bn_name))
    return pairs


def find_conv_bn_pairs(model):
    """Names of the conv -> BatchNorm pairs that can be folded, in graph order."""
    if isinstance(model, torch.fx.GraphModule):
        return _graph_pairs(model, model.graph)
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        logger.warning("torch.fx cannot trace %s (%s: %s); folding only conv->BN pairs inside "
                       "nn.Sequential containers", type(model).__name__, type(exc).__name__,
                       first_line(exc))
        return _sequential_pairs(model)
    return _graph_pairs(model, graph)


def fold_batchnorm(model, inplace=False):
    """Fold every conv -> BatchNorm pair of ``model`` (eval semantics) and return the model.

    The result is the same class (a PIDNet stays a PIDNet, a GraphModule a GraphModule): each
    folded BN becomes ``nn.Identity`` (and is removed from a GraphModule's graph). BNs that
    are not directly preceded by a conv (pre-activation BN-ReLU-conv in the heads, PAPPM,
    DAPPM and Bag) cannot be folded forwards and are kept.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    pairs = find_conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        _fold_into_conv(model.get_submodule(conv_name), model.get_submodule(bn_name))
        model.set_submodule(bn_name, nn.Identity())
    if isinstance(model, torch.fx.GraphModule) and pairs:
        folded = {bn for _, bn in pairs}
        for node in list(model.graph.nodes):
            if node.op == "call_module" and node.target in folded:
                node.replace_all_uses_with(node.args[0])
                model.graph.erase_node(node)
        model.graph.lint()
        model.recompile()
    logger.info("folded %d conv->BatchNorm pairs of %s", len(pairs), type(model).__name__)
    return model


def count_batchnorms(model):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
