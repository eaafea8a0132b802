"""tools/train.py and its output folder: no silent overwrite, one run at a time, nothing left on failure.

Every run here fails (or is refused) before a dataset or model is built, so each costs one process start.
"""
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = "configs/cityscapes/pidnet_small_cityscapes.yaml"
EXP = os.path.join("cityscapes", "pidnet_small_cityscapes")


def overrides(out, *extra):
    return ["MODEL.PRETRAINED", "", "DATASET.ROOT", str(out) + "_no_data/", "OUTPUT_DIR", str(out),
            "LOG_DIR", str(out) + "_tb", "WORKERS", "0", *extra]


def env():
    environ = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PIDNET_TEST_FAULT"):
        environ.pop(name, None)
    return environ


def train(argv, timeout=120):
    cmd = [sys.executable, "tools/train.py", "--cfg", CFG, "--device", "cpu", "--no-progress", *argv]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def last_error(run):
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), run.stderr[-3000:]
    return last


@pytest.fixture
def previous_run(tmp_path):
    exp = tmp_path / "out" / EXP
    exp.mkdir(parents=True)
    (exp / "checkpoint.pth.tar").write_bytes(b"previous run")
    (exp / "best.pt").write_bytes(b"previous best")
    return tmp_path / "out", exp


def test_fresh_run_into_a_previous_run_is_refused(previous_run):
    out, exp = previous_run
    run = train(overrides(out))
    assert run.returncode == 2
    last = last_error(run)
    assert str(exp) in last and "checkpoint.pth.tar" in last
    assert "TRAIN.RESUME True" in last and "another OUTPUT_DIR" in last and "--overwrite" in last
    assert (exp / "checkpoint.pth.tar").read_bytes() == b"previous run"
    assert sorted(os.listdir(exp)) == ["best.pt", "checkpoint.pth.tar"]  # the lock went with the run


@pytest.fixture
def in_process(in_process):
    """tools/train.py's main in this process with the test config, CPU and no progress bars."""
    return lambda argv: in_process(["--cfg", CFG, "--device", "cpu", "--no-progress", *argv])


def test_second_run_into_a_locked_output_dir_is_refused(tmp_path, in_process, capsys):
    exp = tmp_path / "out" / EXP
    exp.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = exp / ".pidnet.lock"
        lock.write_text(f"{holder.pid} {socket.gethostname()}\n")  # a live process holds it
        assert in_process(overrides(tmp_path / "out")) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "in use by another run" in last and str(lock) in last and f"process {holder.pid}" in last
        assert lock.read_text().split()[0] == str(holder.pid)  # the refused run left the holder's lock alone
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over(tmp_path, in_process, capsys):
    exp = tmp_path / "out" / EXP
    exp.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (exp / ".pidnet.lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    assert in_process(overrides(tmp_path / "out")) == 2  # past the lock, then the (missing) data fails
    err = capsys.readouterr().err
    assert f"stale lock {exp / '.pidnet.lock'} of process {dead.pid}" in err
    assert "dataset" in err.strip().splitlines()[-1].lower()
    assert not (exp / ".pidnet.lock").exists()


def test_overwrite_option_lets_a_fresh_run_start(previous_run, in_process, capsys):
    out, exp = previous_run
    assert in_process([*overrides(out), "--overwrite"]) == 2  # accepted; stops at the missing data
    err = capsys.readouterr().err
    assert "--overwrite: this fresh run replaces checkpoint.pth.tar, best.pt" in err
    assert (exp / "checkpoint.pth.tar").read_bytes() == b"previous run"  # nothing replaced before epoch 1


@pytest.mark.parametrize("extra", [[], ["DATASET.DATASET", "nosuchset"]], ids=["missing_data", "unknown_dataset"])
def test_failed_run_leaves_no_empty_folders(tmp_path, in_process, capsys, extra):
    out = tmp_path / "out"
    assert in_process([*overrides(out), *extra]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


@pytest.mark.slow
def test_torchrun_rank0_refusal_stops_every_rank(previous_run):
    out, exp = previous_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "tools/train.py", "--cfg", CFG, "--device", "cpu", "--no-progress", "--dist-timeout", "60",
           *overrides(out)]
    run = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert run.returncode != 0
    # Each rank prints one error line (torchrun's own summary of the failed workers follows them).
    assert "error: " in run.stderr and "a fresh run would overwrite" in run.stderr
    assert "error: rank 1: rank 0 could not claim" in run.stderr
    assert (exp / "checkpoint.pth.tar").read_bytes() == b"previous run"
    assert not (exp / ".pidnet.lock").exists()
