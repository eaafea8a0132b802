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


def count_macs(model, input_size, batch=1):
    """Multiply-accumulates of one forward pass at ``input_size`` = (height, width)."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    total = [0]

    def hook(module, _inputs, output):
        if isinstance(module, nn.modules.conv._ConvNd):
            total[0] += _conv_macs(module, output)
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with torch.inference_mode():
            model(torch.zeros(batch, 3, int(input_size[0]), int(input_size[1]), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return int(total[0])


def conv_channels(model):
    """``{name: (in_channels, out_channels)}`` for every convolution, in module order."""
    return {name: (m.in_channels, m.out_channels) for name, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd)}


def summary(model, input_sizes):
    """Parameters and MACs at each ``(height, width)`` in ``input_sizes``."""
    return {"params": count_params(model),
            "macs": {f"{h}x{w}": count_macs(model, (h, w)) for h, w in input_sizes}}
