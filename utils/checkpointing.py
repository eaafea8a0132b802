"""The resumable training checkpoint (``checkpoint.pth.tar``): make, save, load, restore.

Everything needed to continue a run *exactly* lives in one dict (see :func:`make_checkpoint`):
model, optimizer, scheduler, AMP scaler, epoch/iteration, best mIoU, the config and every rank's
RNG states (:mod:`utils.seeding`). It is written atomically every epoch and on SIGINT/SIGTERM,
and loads with ``torch.load(weights_only=True)``.
"""
import logging

from models.checkpoint import read_checkpoint
from utils.cli import first_line
from utils.errors import CheckpointError
from utils.io import atomic_save

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


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
