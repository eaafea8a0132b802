"""Shared entry-point plumbing for the scripts in ``tools/``.

``run_main(main, args)`` turns the toolkit's expected errors into one clear line on
stderr and a non-zero exit code, instead of a traceback; ``setup_logging`` configures
handlers once, in the entry point, and only on rank 0.
"""
import errno
import logging
import os
import sys

from utils.errors import PIDNetError

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def is_main_process():
    """Whether this process is rank 0 of its job (True outside torchrun).

    The process group's rank once one is joined; before that (logging is set up first) the
    ``RANK`` torchrun exports. The one definition: ``utils.distributed`` re-exports it.
    """
    import torch.distributed as dist  # here, so that importing utils.cli does not load torch

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    try:
        return int(os.environ.get("RANK") or 0) == 0
    except ValueError:  # a malformed RANK is reported where the job starts (init_distributed)
        return True


def setup_logging(log_file=None, level=logging.INFO):
    """Configure root logging once: console (+ optional file) on rank 0, warnings only elsewhere."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not is_main_process():
        level = logging.WARNING
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if log_file and is_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)
    root.setLevel(level)


def first_line(exc, limit=None):
    """The first non-empty line of an exception's message (its type name when it has none),
    cut to ``limit`` characters: for quoting a library's error inside one of ours."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line[:limit] if limit else line


def one_line(exc):
    """The user-facing line of an error, also when a DataLoader worker re-raised it.

    A worker's exception reaches the main process as "Caught X in DataLoader worker ...
    Original Traceback ... X: message": keep only the final message.
    """
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and "Original Traceback" in str(exc):
        last = lines[-1]
        name = type(exc).__name__
        marker = f"{name}: "
        return last.split(marker, 1)[1] if marker in last else last
    return " ".join(line.strip() for line in lines)


_FIXES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "choose a location you can write to, or fix its permissions",
    errno.EPERM: "choose a location you can write to, or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENOSPC: "the disk is full: free some space or choose another location",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EEXIST: "it already exists: remove it or choose another path",
    errno.ENAMETOOLONG: "shorten the path",
    errno.EMFILE: "too many open files: lower WORKERS or raise the limit (ulimit -n)",
    errno.EIO: "the storage reported an I/O error: check the disk",
}


def describe_os_error(exc):
    """One line for any ``OSError``: the path(s), the reason and a fix."""
    where = exc.filename if exc.filename is not None else None
    if where is not None and exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}"
    # No strerror: raised with a message (e.g. re-raised from a DataLoader worker): keep one line of it.
    reason = exc.strerror or one_line(exc)
    fix = _FIXES.get(exc.errno, "check the path and the storage it is on")
    return f"{where}: {reason}; {fix}" if where is not None else f"{reason}; {fix}"


def run_main(main, args):
    """Call ``main(args)``; expected failures become ``error: <message>`` and exit code 2.

    Expected failures are :class:`~utils.errors.PIDNetError` and every ``OSError``.
    """
    try:
        result = main(args)
    except PIDNetError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # Any file-system failure (a file where a folder should be, a full disk, ...) is the
        # user's to fix: one line naming the path, the reason and what to do.
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)
