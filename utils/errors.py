"""Exceptions the toolkit raises for problems a user can fix.

Every message names the offending path, key or value *and* the fix, so that the
CLIs can print it as one line (see :func:`utils.cli.run_main`).
"""


class PIDNetError(Exception):
    """Base class: an expected, user-fixable problem (printed as one line by the CLIs)."""


class ConfigError(PIDNetError):
    """Bad ``--cfg`` file, YAML syntax, unknown key or wrong value type."""


class UsageError(PIDNetError, ValueError):
    """A bad command-line value or combination of options (not a config key, not the data)."""


class DatasetError(PIDNetError):
    """Missing dataset root/list/files, malformed list lines, corrupt images or labels."""


class CheckpointError(PIDNetError):
    """Missing, truncated or incompatible checkpoint / model file."""


class ModelError(PIDNetError, ValueError):
    """Unknown model name or inconsistent model arguments."""


class DeviceError(PIDNetError):
    """A device that is not available here (e.g. ``--device cuda`` without CUDA)."""


class CompressionError(PIDNetError):
    """Bad compression request (method, ratio, layer names) or backend failure."""


class TrainingError(PIDNetError):
    """Training cannot continue (e.g. a non-finite loss)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN/inf at ``epoch``/``iteration``; raised before that step's backward pass."""

    def __init__(self, message, epoch, iteration):
        super().__init__(message)
        self.epoch, self.iteration = epoch, iteration


class OutputError(PIDNetError):
    """An output location that cannot be written (a file in the way, no permission, a full disk)
    or that is in use / holds results a fresh run would overwrite."""


class ConsoleError(PIDNetError):
    """A console request the user can fix: a path outside the work directory, a refused or
    oversized upload, a port in use, no model loaded yet, a busy job queue."""
