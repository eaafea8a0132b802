"""Channel groups of a network, found with torch-pruning's DependencyGraph.

Channels tied by residual adds, concatenations, the LightBag/Bag blends and the PagFM
fusion must be removed together; torch-pruning traces those ties through autograd. One
rule is ours: PagFM's gate is ``sigmoid(sum_c f_x(x)_c * f_y(y)_c)``, a reduction over the
channel axis. torch-pruning treats unknown ops as element-wise, so it would tie the ``f_x``
/ ``f_y`` channels (``planes``) to the fused features (``2 * planes``) through that sum and
prune wrong indices. We cut the graph at every channel reduction: the product ``x_k * y_q``
still ties ``f_x`` and ``f_y`` output channels (same indices), and the one-channel gate no
longer drags them into the P-branch group.

A group is prunable when none of its channels reaches a network output (the exported head
and the classifier keep their channel counts) and it does not prune the output channels of
a grouped convolution (PAPPM's ``scale_process``, groups=4). Input channels of a grouped
convolution may be pruned when the indices repeat identically in every group, which the
concatenation of PAPPM's four equally shaped scale branches guarantees; that is checked.
"""
import dataclasses
import logging

import torch
import torch.nn as nn
import torch_pruning as tp

from utils.cli import first_line
from utils.errors import CompressionError

logger = logging.getLogger(__name__)

_CONV = nn.modules.conv._ConvNd


def _reduces_channels(grad_fn):
    """True for a sum/mean whose reduced dimensions include the channel axis (dim 1 of NCHW)."""
    name = grad_fn.name() if hasattr(grad_fn, "name") else ""
    if not name.startswith(("SumBackward", "MeanBackward")):
        return False
    dims = getattr(grad_fn, "_saved_dim", None)
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if dims is None:  # a full reduction to a scalar also mixes all channels
        return True
    rank = len(sizes) if sizes is not None else 4
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return any(int(d) % rank == 1 for d in dims)


class PIDNetDependencyGraph(tp.DependencyGraph):
    """torch-pruning's graph plus the channel-reduction cut that PagFM needs."""

    def _build_dependency(self, module2node):
        self.cut_reductions = []
        for node in module2node.values():
            if node.type == tp.ops.OPTYPE.ELEMENTWISE and _reduces_channels(node.grad_fn):
                for source in node.inputs:
                    source.outputs = [n for n in source.outputs if n is not node]
                node.inputs = []
                self.cut_reductions.append(node)
        return super()._build_dependency(module2node)


@dataclasses.dataclass
class ChannelGroup:
    """Channels pruned together, identified by the root convolution's name.

    ``layers`` are the convolutions whose output channels the group removes (one filter per
    layer per channel); ``inputs`` those whose input channels follow.
    """
    name: str
    module: nn.Module
    channels: int
    layers: list
    inputs: list
    prunable: bool
    reason: str = ""

    @property
    def filters(self):
        """Prunable filters: one per channel and output-pruned convolution."""
        return self.channels * len(self.layers)


def build_graph(model, example_input):
    """Trace ``model`` (eval mode, gradients on) and return the dependency graph."""
    was_training = model.training
    saved = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
    output_grad_fns = set()

    def record_outputs(out):
        outputs = _flatten_outputs(out)
        output_grad_fns.update(o.grad_fn for o in outputs)
        return outputs

    try:
        with torch.enable_grad():
            graph = PIDNetDependencyGraph().build_dependency(
                # A list, so that torch-pruning calls model(x): given a bare tensor it first
                # tries model(*x), which an unbatched-capable conv net silently accepts.
                model, example_inputs=[example_input.requires_grad_(True)], verbose=False,
                output_transform=record_outputs)
        # torch-pruning only adds an output node when the output is not a module's own
        # result (e.g. the classifier conv), so outputs are recognised by their grad_fn.
        graph.output_grad_fns = output_grad_fns
    except CompressionError:
        raise
    except Exception as exc:  # a foreign module can fail in any way while being traced
        raise CompressionError(f"cannot trace the model for pruning ({type(exc).__name__}: "
                               f"{first_line(exc)}): pass a model written by "
                               "tools/export_netspresso.py or tools/compress.py") from None
    finally:
        for p, flag in zip(model.parameters(), saved):
            p.requires_grad_(flag)
        model.train(was_training)
    return graph


def _flatten_outputs(out):
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (list, tuple)) and all(torch.is_tensor(o) for o in out):
        return list(out)
    raise CompressionError(f"the model returns {type(out).__name__}, not a tensor or a list of tensors: "
                           "pass the exported body (model_modelfx.pt)")


def _conv_name(graph, module):
    return graph._module2name.get(module, type(module).__name__)


def _grouped_inputs_symmetric(module, idxs):
    """Input indices of a grouped conv must hit the same positions in every group."""
    per_group = module.in_channels // module.groups
    buckets = [set() for _ in range(module.groups)]
    for i in idxs:
        buckets[i // per_group].add(i % per_group)
    return all(b == buckets[0] for b in buckets)


def channel_groups(graph):
    """All channel groups rooted at convolutions, prunable or not, in graph order."""
    groups, seen = [], set()
    for module in list(graph.module2node):
        if not isinstance(module, _CONV) or module in seen:
            continue
        group = graph.get_pruning_group(module, tp.prune_conv_out_channels, list(range(module.out_channels)))
        layers, inputs, reason = [], [], ""
        for dep, idxs in group:
            target, handler = dep.target.module, dep.handler
            if isinstance(target, tp.ops._OutputOp) or (dep.target.grad_fn in graph.output_grad_fns
                                                        and graph.is_out_channel_pruning_fn(handler)):
                reason = reason or "feeds a network output (head interface / classifier)"
            if not isinstance(target, _CONV):
                continue
            if graph.is_out_channel_pruning_fn(handler):
                seen.add(target)
                layers.append(_conv_name(graph, target))
                if target.groups > 1:
                    reason = reason or f"output channels of grouped conv {_conv_name(graph, target)}"
            elif graph.is_in_channel_pruning_fn(handler):
                inputs.append(_conv_name(graph, target))
                if target.groups > 1 and not _grouped_inputs_symmetric(target, idxs):
                    reason = reason or f"uneven input channels of grouped conv {_conv_name(graph, target)}"
        layers = sorted(set(layers), key=layers.index)
        groups.append(ChannelGroup(name=_conv_name(graph, module), module=module, channels=module.out_channels,
                                   layers=layers, inputs=sorted(set(inputs), key=inputs.index),
                                   prunable=not reason and module.out_channels > 1, reason=reason))
    return groups


def full_group(graph, group):
    """The torch-pruning group holding every channel of ``group`` (for importance)."""
    return graph.get_pruning_group(group.module, tp.prune_conv_out_channels, list(range(group.module.out_channels)))


def removed_channels(graph, group, idxs):
    """``{conv name: (input channels removed, output channels removed)}`` if ``idxs`` of ``group`` went.

    Reads the same torch-pruning group :func:`prune_group` would apply, so a preview matches
    the pruned model (concatenations and grouped convolutions included); nothing changes.
    """
    if not idxs:
        return {}
    removed = {}
    pruning = graph.get_pruning_group(group.module, tp.prune_conv_out_channels, sorted(int(i) for i in idxs))
    for dep, dep_idxs in pruning:
        target = dep.target.module
        if not isinstance(target, _CONV):
            continue
        name = _conv_name(graph, target)
        n_in, n_out = removed.get(name, (0, 0))
        if graph.is_out_channel_pruning_fn(dep.handler):
            n_out += len(dep_idxs)
        elif graph.is_in_channel_pruning_fn(dep.handler):
            n_in += len(dep_idxs)
        removed[name] = (n_in, n_out)
    return removed


def prune_group(graph, group, idxs):
    """Remove channels ``idxs`` (root-conv numbering) from every coupled layer."""
    if not idxs:
        return
    pruning = graph.get_pruning_group(group.module, tp.prune_conv_out_channels, sorted(int(i) for i in idxs))
    for dep, dep_idxs in pruning:
        target = dep.target.module
        if isinstance(target, _CONV) and target.groups > 1 and graph.is_in_channel_pruning_fn(dep.handler):
            if not _grouped_inputs_symmetric(target, dep_idxs):
                raise CompressionError(f"pruning {group.name} would break grouped conv "
                                       f"{_conv_name(graph, target)}; exclude that layer")
    pruning.prune()
