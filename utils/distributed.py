"""torchrun / DistributedDataParallel plumbing: one code path for 1..N processes.

``torchrun`` (or ``python -m torch.distributed.run``) starts one process per GPU and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; a plain
``python tools/train.py`` has none of them and runs as rank 0 of a world of 1, without a
process group. The backend is NCCL on CUDA and gloo on CPU.

Failure handling: every collective runs under the process-group ``timeout`` (``--dist-timeout``),
so a rank whose peer died raises instead of waiting forever; with torchrun's default
``--max-restarts 0`` the agent then tears the whole job down and exits non-zero. The training loop
also all-reduces a small flag tensor every iteration (:func:`any_rank`), so a stop request or a
non-finite loss seen by one rank stops all of them at the same step, instead of leaving the
others blocked in the next gradient all-reduce.
"""
import contextlib
import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.cli import first_line, is_main_process  # noqa: F401 (is_main_process: re-exported)
from utils.device import resolve_device
from utils.errors import DeviceError, TrainingError

logger = logging.getLogger(__name__)

# Collectives that do not complete within this many seconds raise (a peer died or hangs).
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def _env_int(name, default):
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise DeviceError(f"environment variable {name}={value!r} is not an integer: "
                          "start distributed jobs with torchrun, which sets it") from None


def init_distributed(device_name=None, timeout_s=DEFAULT_TIMEOUT_S):
    """Read torchrun's environment, pick this rank's device and join the process group.

    Args:
        device_name: ``--device`` (``auto``/``cpu``/``cuda``/``cuda:N``). Under torchrun a CUDA
            device is always ``cuda:LOCAL_RANK`` (one GPU per process).
        timeout_s: seconds after which a stuck collective raises.

    Returns:
        DistInfo. Without ``WORLD_SIZE > 1`` no process group is created.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_name)
    if world_size <= 1:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return DistInfo(0, 1, 0, device)

    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible: start at most that many processes per node (--nproc_per_node)")
        if device.index not in (None, local_rank):
            logger.warning("--device %s ignored under torchrun: rank %d uses cuda:%d", device, rank, local_rank)
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
        # Fail a collective that times out (instead of hanging) and tear the process down.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    else:
        backend = "gloo"
    timeout = datetime.timedelta(seconds=float(timeout_s))
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    logger.info("distributed: rank %d/%d (local %d) on %s, backend %s, timeout %ss",
                rank, world_size, local_rank, device, backend, timeout_s)
    return DistInfo(rank, world_size, local_rank, device)


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


@contextlib.contextmanager
def _collective(what):
    """Turn the failure of a collective (gloo: ``RuntimeError`` 'Connection closed by peer'; NCCL:
    ``DistBackendError`` after the timeout) into one clear :class:`TrainingError`."""
    try:
        yield
    except RuntimeError as exc:  # DistError subclasses RuntimeError
        first = first_line(exc)
        raise TrainingError(f"rank {get_rank()}: {what} failed ({first}): another process probably died "
                            "or timed out; fix the cause and resume with TRAIN.RESUME True") from None


def barrier():
    if is_dist():
        with _collective("barrier"):
            dist.barrier()


def any_rank(flags, device):
    """Element-wise logical OR of a list of booleans over all ranks (one small all-reduce)."""
    tensor = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    if is_dist():
        with _collective("all-reduce of the step flags"):
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def mean_over_ranks(values, device):
    """Mean of a list of floats over all ranks (for logging)."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if is_dist():
        with _collective("all-reduce of the epoch loss"):
            dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor.tolist()


def average_gradients(parameters):
    """Average the gradients of ``parameters`` over all ranks, for trained modules outside DDP."""
    if not is_dist():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    with _collective("all-reduce of the gradients"):
        for grad in grads:
            dist.all_reduce(grad)
            grad /= dist.get_world_size()


def gather_objects(obj):
    """Every rank's ``obj`` as a list indexed by rank (a list of one without a process group)."""
    if not is_dist():
        return [obj]
    gathered = [None] * dist.get_world_size()
    with _collective("gathering the RNG states"):
        dist.all_gather_object(gathered, obj)
    return gathered


def cleanup():
    """Leave the process group (safe to call when there is none)."""
    if is_dist():
        try:
            dist.destroy_process_group()
        except Exception as exc:  # a broken group (dead peer) may fail to shut down; we are exiting anyway
            logger.debug("destroy_process_group failed: %s", exc)
