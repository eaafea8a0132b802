"""Optimizer and LR schedule of the PIDNet recipe: one SGD group, per-iteration poly decay.

:class:`PolyLR` is timed as the official ``adjust_learning_rate`` (see its docstring);
:func:`iterations_per_epoch` is the schedule's unit (full batches per rank and epoch).
"""
import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from utils.errors import ConfigError

POLY_POWER = 0.9


def build_optimizer(model, name="sgd", lr=0.01, momentum=0.9, weight_decay=0.0005, nesterov=False):
    """SGD over all parameters in one group, as the official ``train.py``.

    Raises:
        ConfigError: an optimizer other than ``sgd`` (the official code supports only SGD).
    """
    if str(name).lower() != "sgd":
        raise ConfigError(f"TRAIN.OPTIMIZER '{name}' is not supported: the PIDNet recipe uses 'sgd'")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    return torch.optim.SGD([{"params": params, "lr": lr}], lr=lr, momentum=momentum,
                           weight_decay=weight_decay, nesterov=bool(nesterov) and momentum > 0)


def poly_factor(iteration, max_iters, power=POLY_POWER):
    """``(1 - iteration / max_iters) ** power``, clamped at 0 past the end."""
    return max(0.0, 1.0 - float(iteration) / float(max_iters)) ** power


class PolyLR(LRScheduler):
    """Per-iteration poly decay, timed as the official ``adjust_learning_rate``.

    The official loop sets ``lr = base * (1 - cur / max_iters) ** 0.9`` *after* the optimizer step of
    global iteration ``cur``, so iteration 0 and 1 use the base LR and iteration ``k >= 1`` uses the
    factor of ``k - 1``. Call :meth:`step` once after every optimizer step.

    Args:
        optimizer: the optimizer.
        max_iters: ``END_EPOCH * iterations_per_epoch``.
        power: the poly exponent (0.9).
    """

    def __init__(self, optimizer, max_iters, power=POLY_POWER, last_epoch=-1):
        if max_iters <= 0:
            raise ConfigError(f"the poly schedule needs at least one iteration (got {max_iters})")
        self.max_iters = int(max_iters)
        self.power = float(power)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = poly_factor(max(self.last_epoch - 1, 0), self.max_iters, self.power)
        return [base * factor for base in self.base_lrs]

    def set_max_iters(self, max_iters):
        """Change the schedule's length (e.g. ``END_EPOCH`` raised on resume, as the official code
        recomputes it from the config) and apply the resulting LR to the optimizer now."""
        if max_iters <= 0:
            raise ConfigError(f"the poly schedule needs at least one iteration (got {max_iters})")
        self.max_iters = int(max_iters)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


def iterations_per_epoch(num_samples, world_size, batch_size):
    """Iterations of one epoch with ``drop_last``: each rank gets ``ceil(num_samples / world_size)``
    samples (``DistributedSampler`` pads), in full batches of ``batch_size``."""
    per_rank = math.ceil(num_samples / world_size)
    return per_rank // batch_size
