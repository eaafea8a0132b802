"""Atomic file writes: a crash or kill mid-write never replaces a good file."""
import os
import tempfile

import torch


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic(path, write):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path):
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    _atomic(path, lambda handle: torch.save(obj, handle))


def atomic_write_bytes(data, path):
    _atomic(path, lambda handle: handle.write(data))


def atomic_write_text(text, path):
    atomic_write_bytes(text.encode("utf-8"), path)
