"""Model size figures: parameters, MACs at an input size, channels per convolution.

MACs are counted with forward hooks during one real forward pass (convolutions and linear
layers, the usual convention; element-wise ops, BN and interpolation are not counted). A
``meta``-device pass would avoid the arithmetic but is slower on CPU for this many ops.
"""
import logging

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


def count_params(model):
    return int(sum(p.numel() for p in model.parameters()))


def _conv_macs(module, output):
    kernel = 1
    for k in module.kernel_size:
        kernel *= k
    return output.numel() * (module.in_channels // module.groups) * kernel


def layer_macs(model, input_size, batch=1):
    """``{module name: multiply-accumulates}`` of every convolution and linear layer at ``input_size``.

    A module called several times (shared weights) sums its calls.
    """
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    names = {m: name for name, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    macs = dict.fromkeys(names.values(), 0)

    def hook(module, _inputs, output):
        if isinstance(module, nn.modules.conv._ConvNd):
            macs[names[module]] += _conv_macs(module, output)
        else:
            macs[names[module]] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.inference_mode():
            model(torch.zeros(batch, 3, int(input_size[0]), int(input_size[1]), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: int(value) for name, value in macs.items()}


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
