"""Training state: optimizer, poly LR schedule, seeding, RNG state, checkpoints, stop signals.

Everything needed to continue a run *exactly* lives in one checkpoint dict (see
:func:`make_checkpoint`), written atomically every epoch and on SIGINT/SIGTERM, and loadable
with ``torch.load(weights_only=True)`` (RNG states are stored as tensors, lists and ints).

Randomness of the data pipeline is a function of ``(seed, rank, epoch)`` (:func:`epoch_seed`):
the shuffling order comes from :class:`TrainSampler` (``DistributedSampler`` semantics for any
world size, including 1) and the augmentation / worker seeds are reset at every epoch start.
Resuming at an epoch boundary is therefore exact with any ``WORKERS``; a mid-epoch resume
(after SIGINT/SIGTERM) skips the batches already trained on and is exact with ``WORKERS 0``
(the dataset's augmentation RNG state is saved too), otherwise the remaining batches get
different random augmentations.
"""
import logging
import math
import random
import signal
import time

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DistributedSampler

from models.checkpoint import read_checkpoint
from utils.cli import first_line
from utils.errors import CheckpointError, ConfigError
from utils.io import atomic_save

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
POLY_POWER = 0.9


# ---------------------------------------------------------------------------
# Optimizer and LR schedule.
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Seeding and RNG state.
# ---------------------------------------------------------------------------

def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and torch (all devices); optionally ask torch for deterministic kernels.

    ``deterministic`` (``CUDNN.DETERMINISTIC``) also calls ``torch.use_deterministic_algorithms``
    (warn-only: ops without a deterministic kernel warn instead of failing).
    """
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_seed(seed, rank, epoch):
    """A well-mixed 63-bit seed for the data pipeline of ``rank`` in ``epoch``."""
    return int(np.random.SeedSequence([int(seed) % 2 ** 63, int(rank), int(epoch)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def data_rng_states(dataset):
    """The augmentation RNG states of ``dataset`` (a :class:`datasets.base_dataset.BaseDataset` or
    wrapper) in this process: what the next sample drawn with ``WORKERS 0`` will use."""
    return [dict(rng.bit_generator.state) for rng in _dataset_rngs(dataset)]


def capture_rng_state(dataset=None):
    """Python, NumPy, torch (CPU and CUDA) RNG states, plus the augmentation RNG of ``dataset``
    (see :func:`data_rng_states`), as weights-only-loadable values."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    data = data_rng_states(dataset)
    if data:
        state["data"] = list(data)
    return state


def restore_rng_state(state, dataset=None):
    """Inverse of :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    rngs = _dataset_rngs(dataset)
    saved = state.get("data") or []
    if rngs and len(saved) == len(rngs):
        for rng, rng_state in zip(rngs, saved):
            rng.bit_generator.state = rng_state


def _dataset_rngs(dataset, found=None):
    """The ``numpy.random.Generator`` of every augmenting dataset inside ``dataset``."""
    found = [] if found is None else found
    if dataset is None:
        return found
    if hasattr(dataset, "reseed") and hasattr(dataset, "rng"):
        found.append(dataset.rng)
    for child in getattr(dataset, "datasets", ()):
        _dataset_rngs(child, found)
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        _dataset_rngs(inner, found)
    return found


def reseed_data(dataset, generator, seed):
    """Reset the data randomness of one epoch: the augmentation RNG used with ``WORKERS 0`` and the
    loader ``generator`` that draws the worker seeds (``seed_worker`` derives worker RNGs from it)."""
    from datasets.base_dataset import reseed_dataset

    reseed_dataset(dataset, seed)
    if generator is not None:
        generator.manual_seed(seed)


class TrainSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled with ``seed + epoch``, rank-sharded) for any world size,
    which can start part-way through an epoch: :meth:`set_epoch` with ``skip`` drops the first
    ``skip`` indices of this rank's share (the batches already trained on before an interruption)."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self):
        return max(0, super().__len__() - self.skip)

    def full_length(self):
        """Indices per rank and epoch, ignoring ``skip``."""
        return super().__len__()


def iterations_per_epoch(num_samples, world_size, batch_size):
    """Iterations of one epoch with ``drop_last``: each rank gets ``ceil(num_samples / world_size)``
    samples (``DistributedSampler`` pads), in full batches of ``batch_size``."""
    per_rank = math.ceil(num_samples / world_size)
    return per_rank // batch_size


# ---------------------------------------------------------------------------
# Checkpoints.
# ---------------------------------------------------------------------------

def make_checkpoint(model, optimizer, scheduler, scaler, *, epoch, iteration=0, best_miou=0.0,
                    config_text="", rng_states=None, world_size=1, extra=None):
    """The resumable checkpoint dict.

    ``epoch`` is the epoch to run next (the number of completed epochs, as the official
    ``checkpoint.pth.tar``), ``iteration`` the batches of that epoch already trained on (non-zero
    only for a checkpoint written on SIGINT/SIGTERM). ``rng_states`` has one entry per rank.
    """
    model = getattr(model, "module", model)
    state = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": int(epoch),
        "iteration": int(iteration),
        "best_mIoU": float(best_miou),
        "config": str(config_text),
        "rng": list(rng_states or []),
        "world_size": int(world_size),
    }
    state.update(extra or {})
    return state


def save_checkpoint(state, path):
    """Atomic write: a kill during the write leaves the previous checkpoint in place."""
    atomic_save(state, path)


def load_checkpoint(path):
    """Read a checkpoint written by :func:`make_checkpoint` (weights-only unpickling).

    Raises:
        CheckpointError: missing, unreadable or not one of our training checkpoints.
    """
    state = read_checkpoint(path)
    required = ("model", "optimizer", "scheduler", "epoch")
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise CheckpointError(f"{path} is not a resumable training checkpoint (it lacks "
                              f"{[k for k in required if not isinstance(state, dict) or k not in state]}): "
                              "move it aside, or start over in another OUTPUT_DIR "
                              "(or drop TRAIN.RESUME True and pass tools/train.py --overwrite, which replaces it)")
    return state


def restore_checkpoint(state, model, optimizer, scheduler, scaler=None, path="checkpoint"):
    """Load model, optimizer, scheduler and scaler state from ``state`` (strict)."""
    model = getattr(model, "module", model)
    try:
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = first_line(exc)
        raise CheckpointError(f"{path} does not fit this model/config ({first}): resume with the "
                              "config it was written with, or start over in another OUTPUT_DIR (or drop "
                              "TRAIN.RESUME True and pass tools/train.py --overwrite, which replaces it)") from None
    if scaler is not None and scaler.is_enabled():
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        else:
            logger.warning("%s was written without AMP: the gradient scaler starts fresh", path)


# ---------------------------------------------------------------------------
# SIGINT / SIGTERM.
# ---------------------------------------------------------------------------

class StopRequest:
    """Context manager turning SIGINT/SIGTERM into a flag the training loop polls once per step.

    The first signal asks for a clean stop (finish the step, save a resumable checkpoint, exit
    ``128 + signal``: 130 for SIGINT, 143 for SIGTERM). Signals within ``duplicate_window_s`` of
    the first are ignored: under torchrun a Ctrl-C reaches each worker twice (from the terminal and
    forwarded by the agent). A signal after that aborts at once (``KeyboardInterrupt``).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, duplicate_window_s=2.0):
        self.signum = None
        self.duplicate_window_s = float(duplicate_window_s)
        self._first_at = None
        self._previous = {}

    @property
    def requested(self):
        return self.signum is not None

    @property
    def exit_code(self):
        return 128 + int(self.signum) if self.signum is not None else 0

    def _handle(self, signum, frame):
        now = time.monotonic()
        if self.signum is not None:
            if now - self._first_at < self.duplicate_window_s:
                return
            raise KeyboardInterrupt
        self.signum, self._first_at = signum, now
        logger.warning("received %s: stopping after the current step and saving a checkpoint "
                       "(send it again to abort at once)", signal.Signals(signum).name)

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the default behaviour
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False
