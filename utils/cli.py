"""Shared entry-point plumbing for the scripts in ``tools/``.

``run_main(main, args)`` turns the toolkit's expected errors into one clear line on
stderr and a non-zero exit code, instead of a traceback; ``setup_logging`` configures
handlers once, in the entry point, and only on rank 0.
"""
import logging
import os
import sys

from utils.errors import PIDNetError

logger = logging.getLogger(__name__)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def is_main_process():
    return int(os.environ.get("RANK", "0")) == 0


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


def run_main(main, args):
    """Call ``main(args)``; expected failures become ``error: <message>`` and exit code 2."""
    try:
        result = main(args)
    except PIDNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename or exc}. Check the path.", file=sys.stderr)
        return EXIT_USER_ERROR
    except PermissionError as exc:
        print(f"error: permission denied: {exc.filename or exc}. Choose a writable location.",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)
