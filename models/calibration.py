"""Random weights that behave like trained ones, for backend-equality tests and benchmarks.

PIDNet's random initialisation gives logits in the hundreds; there fp32 rounding of any two
computation orders (PyTorch vs onnxruntime, folded vs unfolded BN) already differs by more
than 1e-3. Trained networks keep activations O(1): these helpers give random networks the same
property, with non-trivial BatchNorm statistics so that a wrong fold or wiring cannot hide
behind identity BNs.
"""
import torch
import torch.nn as nn

from models.deploy import select_output


def randomize_bn(model, seed=0, calibrate=(2, 3, 128, 192)):
    """BN statistics of random data (``calibrate`` is the batch shape; falsy skips it), perturbed
    per channel, with random affine parameters. Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if calibrate:
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.momentum = None  # cumulative average: running stats = statistics of this batch
            bn.reset_running_stats()
        model.train()
        with torch.no_grad():
            model(torch.randn(calibrate, generator=generator))
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    with torch.no_grad():
        for bn in bns:
            shape = bn.running_mean.shape
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn(shape, generator=generator) * 0.2 * std)
            # Pooled PPM branches see almost constant maps on random data: floor their variance.
            bn.running_var.clamp_(min=0.25).mul_(torch.rand(shape, generator=generator) * 0.6 + 0.7)
            bn.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(shape, generator=generator) * 0.2)
    return model.eval()


def scale_logits(model, last_conv, example, target_std=2.0):
    """Rescale the classifier so logits have a trained-model magnitude (std 2, max ~10)."""
    model.eval()
    with torch.no_grad():
        factor = target_std / select_output(model(example), 1).std().item()
        last_conv.weight.mul_(factor)
        if last_conv.bias is not None:
            last_conv.bias.mul_(factor)
    return model


def realistic_random_weights(model, seed=0, calibrate=(2, 3, 128, 192), example=(1, 3, 64, 96)):
    """:func:`randomize_bn` then :func:`scale_logits` on a PIDNet's ``final_layer.conv2``."""
    randomize_bn(model, seed, calibrate)
    example = torch.randn(example, generator=torch.Generator().manual_seed(seed + 1))
    return scale_logits(model, model.final_layer.conv2, example)
