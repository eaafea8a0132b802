"""Fault injection for the reliability tests, attached to the training loop as a step hook.

``PIDNET_TEST_FAULT=<kind>:<epoch>:<iteration>[:<rank>]`` (``kind`` is ``sigkill``, ``sigterm``,
``sigint`` or ``nan``) makes the training loop kill itself, signal itself or produce a NaN loss at
that step. ``tools/train.py`` passes :func:`fault_hooks_from_env` as the trainer's ``step_hooks``
(an empty list when the variable is unset). It exists for the reliability tests
(``tests/tools/test_train.py``, which run ``tools/train.py`` in subprocesses) and is never set in
normal use.
"""
import logging
import os
import signal

from utils import distributed as du

logger = logging.getLogger(__name__)

FAULT_ENV = "PIDNET_TEST_FAULT"
_FAULT_KINDS = ("sigkill", "sigterm", "sigint", "nan")


class FaultInjector:
    """A step hook (``hook(epoch, iteration, loss) -> loss``) that injects ``kind`` at one step."""

    def __init__(self, kind=None, epoch=-1, iteration=-1, rank=None):
        self.kind, self.epoch, self.iteration, self.rank = kind, epoch, iteration, rank

    @classmethod
    def from_env(cls, environ=None):
        """The injector described by ``PIDNET_TEST_FAULT``; inert (``kind`` None) when it is unset.

        Raises:
            ValueError: a malformed value (names the variable and the expected form).
        """
        spec = (environ if environ is not None else os.environ).get(FAULT_ENV, "")
        if not spec:
            return cls()
        parts = spec.split(":")
        if parts[0] not in _FAULT_KINDS or len(parts) not in (3, 4):
            raise ValueError(f"{FAULT_ENV}={spec!r}: expected <{'|'.join(_FAULT_KINDS)}>:<epoch>:<iter>[:<rank>]")
        rank = int(parts[3]) if len(parts) == 4 else None
        return cls(parts[0], int(parts[1]), int(parts[2]), rank)

    def _hit(self, epoch, iteration):
        return (self.kind is not None and epoch == self.epoch and iteration == self.iteration
                and (self.rank is None or self.rank == du.get_rank()))

    def __call__(self, epoch, iteration, loss):
        if not self._hit(epoch, iteration):
            return loss
        logger.warning("%s: injecting %s at epoch %d iteration %d", FAULT_ENV, self.kind, epoch, iteration)
        if self.kind == "nan":
            return loss * float("nan")
        sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[self.kind]
        os.kill(os.getpid(), sig)
        return loss


def fault_hooks_from_env(environ=None):
    """``[FaultInjector]`` when ``PIDNET_TEST_FAULT`` is set, else ``[]`` (the trainer's ``step_hooks``)."""
    injector = FaultInjector.from_env(environ)
    return [injector] if injector.kind is not None else []
