"""A lock file that keeps two runs from writing into the same output folder at once.

The lock is ``<folder>/.pidnet.lock`` holding ``<pid> <host>``; it is created atomically (a hard
link of a fully written temp file), so a reader never sees half of it. A lock left behind by a
killed run (SIGKILL, power loss) is *stale* when its process no longer exists on this host: it is
then taken over with a warning. A lock from another host cannot be checked and is respected.
"""
import errno
import logging
import os
import socket
import tempfile

from utils.errors import OutputError

logger = logging.getLogger(__name__)

LOCK_NAME = ".pidnet.lock"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_owner(path):
    try:
        with open(path) as handle:
            pid_text, _, host = handle.read().strip().partition(" ")
        return int(pid_text), host
    except (OSError, ValueError):
        return None, ""


class RunLock:
    """``with RunLock(folder, what='OUTPUT_DIR'):`` holds the folder's lock for the block."""

    def __init__(self, folder, what="OUTPUT_DIR"):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.what = what
        self.held = False

    def acquire(self):
        host = socket.gethostname()
        fd, tmp = tempfile.mkstemp(prefix=".pidnet.lock.", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()} {host}\n")
            for _ in range(2):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    pid, owner_host = _read_owner(self.path)
                    if pid is not None and owner_host == host and not _pid_alive(pid):
                        logger.warning("taking over the stale lock %s of process %d, which no longer runs",
                                       self.path, pid)
                        try:
                            os.remove(self.path)
                        except FileNotFoundError:
                            pass
                        continue
                    owner = f"process {pid} on {owner_host}" if pid is not None else "an unknown process"
                    raise OutputError(
                        f"{self.what} {self.folder} is in use by another run ({owner}, lock file {self.path}): "
                        f"wait for it to finish or choose another {self.what}; if no such run exists, "
                        f"delete {self.path}") from None
            raise OutputError(f"could not take the lock {self.path} (another run keeps replacing it): "
                              f"choose another {self.what}")
        finally:
            os.remove(tmp)

    def release(self):
        if not self.held:
            return
        self.held = False
        pid, _ = _read_owner(self.path)
        if pid == os.getpid():
            try:
                os.remove(self.path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    logger.warning("could not remove the lock %s (%s): delete it by hand", self.path, exc)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
