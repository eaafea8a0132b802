"""Model size figures: parameters, MACs at an input size, channels per convolution.

MACs are counted by ``torch.utils.flop_counter`` during one real forward pass (convolutions and
linear layers, the usual convention; element-wise ops, BN and interpolation are not counted). A
``meta``-device pass would avoid the arithmetic but is slower on CPU for this many ops.
"""
import logging

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)


def as_outputs(out):
    """A model's output as a list (a body returns several tensors, a plain network one)."""
    return [out] if torch.is_tensor(out) else list(out)


def count_params(model):
    return int(sum(p.numel() for p in model.parameters()))


def layer_macs(model, input_size, batch=1):
    """``{module name: multiply-accumulates}`` of every convolution and linear layer at ``input_size``.

    Counted by ``torch.utils.flop_counter`` (FLOPs / 2) during one forward pass; a module called
    several times (shared weights) sums its calls.
    """
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(torch.zeros(batch, 3, int(input_size[0]), int(input_size[1]), device=device))
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    return {name: sum(int(v) for v in counts.get(f"{root}.{name}", {}).values()) // 2
            for name, module in model.named_modules() if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))}


def count_macs(model, input_size, batch=1):
    """Multiply-accumulates of one forward pass at ``input_size`` = (height, width)."""
    return int(sum(layer_macs(model, input_size, batch).values()))


def conv_channels(model):
    """``{name: (in_channels, out_channels)}`` for every convolution, in module order."""
    return {name: (m.in_channels, m.out_channels) for name, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd)}


def summary(model, input_sizes):
    """Parameters and MACs at each ``(height, width)`` in ``input_sizes``."""
    return {"params": count_params(model),
            "macs": {f"{h}x{w}": count_macs(model, (h, w)) for h, w in input_sizes}}
