"""The output-folder lock: one holder at a time, a dead holder's lock is taken over."""
import os
import socket
import subprocess
import sys

import pytest

from utils.errors import OutputError
from utils.runlock import LOCK_NAME, RunLock


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_holder_is_refused_and_release_frees_it(tmp_path):
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(OutputError, match=f"in use by another run \\(process {os.getpid()}.*{LOCK_NAME}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    (tmp_path / LOCK_NAME).write_text(f"{dead_pid()} {socket.gethostname()}\n")
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert "stale lock" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_from_another_host_is_respected(tmp_path):
    (tmp_path / LOCK_NAME).write_text(f"{dead_pid()} some-other-host\n")
    with pytest.raises(OutputError, match="some-other-host"):
        RunLock(tmp_path).acquire()
    assert not [name for name in os.listdir(tmp_path) if name != LOCK_NAME]  # no temp file left
