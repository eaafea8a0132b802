"""SIGINT / SIGTERM as a stop request the training loop polls once per step."""
import logging
import signal
import time

logger = logging.getLogger(__name__)


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
