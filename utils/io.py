"""Atomic file writes (a crash or kill mid-write never replaces a good file) and output checks.

:func:`check_writable` proves an output location can be written *before* a tool does its work;
:func:`made_dirs` creates output folders and removes them again when the work fails before
anything was written into them.
"""
import contextlib
import errno
import os
import tempfile

from utils.errors import OutputError


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class _RecordingWriter:
    """A file proxy remembering the first OSError of a write: ``torch.save`` re-raises it as a
    bare ``RuntimeError`` ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, handle):
        self._handle = handle
        self.error = None

    def write(self, data):
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self):
        return self._handle.flush()


def _atomic(path, write):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    blocker = _first_existing(directory)
    if not os.path.isdir(blocker):
        raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is a file, not a folder", path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    writer = None
    try:
        with os.fdopen(fd, "wb") as handle:
            writer = _RecordingWriter(handle)
            write(writer)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = exc if isinstance(exc, OSError) else (writer.error if writer is not None else None)
        if cause is not None:
            # Name the file the user asked for, not the temp file (or nothing, for a failed write).
            raise OSError(cause.errno, cause.strerror or str(cause), path) from None
        raise


def atomic_save(obj, path):
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    import torch  # here, so that torch-free tools (make_lists) can use the checks below

    _atomic(path, lambda handle: torch.save(obj, handle))


def atomic_write_bytes(data, path):
    _atomic(path, lambda handle: handle.write(data))


def atomic_write_text(text, path):
    atomic_write_bytes(text.encode("utf-8"), path)


def _first_existing(path):
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_writable(path, what, is_dir=False):
    """Raise :class:`OutputError` unless ``path`` (a file, or a folder with ``is_dir``) can be written.

    Nothing is created: the nearest existing folder above ``path`` is probed with a temporary
    file, so a check that fails leaves no folder behind. ``what`` is the option or key the user
    sets to change the location (e.g. ``--json``, ``OUTPUT_DIR``).
    """
    path = os.fspath(path)
    if os.path.isdir(path) and not is_dir:
        raise OutputError(f"{what} {path} is a directory: give a file name, e.g. {os.path.join(path, 'out')}"
                          f"{os.path.splitext(path)[1] or ''}")
    if os.path.lexists(path) and not os.path.isdir(path) and is_dir:
        raise OutputError(f"{what} {path} is a file, not a folder: choose a folder path for {what}")
    base = _first_existing(path if is_dir else os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(base):
        raise OutputError(f"{what} {path} cannot be created: {base} is a file, not a folder; "
                          f"choose another location for {what}")
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".write_test."):
            pass
    except OSError as exc:
        raise OutputError(f"{what} {path} is not writable ({exc.strerror or exc} in {base}): "
                          f"choose a writable location for {what}") from None


@contextlib.contextmanager
def made_dirs(path):
    """``os.makedirs(path)``; if the block raises, remove the folders it created that are still empty."""
    path = os.path.abspath(os.fspath(path))
    created, probe = [], path
    while not os.path.lexists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only succeeds when empty
        raise
