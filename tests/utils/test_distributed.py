import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from utils import distributed as du
from utils.errors import DeviceError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run as one process of a 2-process gloo group; prints one JSON line.
WORKER = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["REPO"])
import torch
from utils import distributed as du

mode = sys.argv[1]
info = du.init_distributed("cpu", timeout_s=float(os.environ.get("TIMEOUT", "20")))
out = {"rank": info.rank, "world": info.world_size, "is_dist": du.is_dist(), "device": str(info.device)}
if mode == "collectives":
    out["any"] = du.any_rank([info.rank == 1, False], info.device)
    out["mean"] = du.mean_over_ranks([info.rank * 2.0], info.device)
    out["gathered"] = du.gather_objects({"r": info.rank})
    du.barrier()
elif mode == "peer_dies":
    if info.rank == 1:
        os._exit(3)  # dies without leaving the group
    start = time.monotonic()
    try:
        du.any_rank([False], info.device)
        out["raised"] = None
    except Exception as exc:
        out["raised"] = type(exc).__name__
        out["message"] = str(exc)
    out["seconds"] = time.monotonic() - start
du.cleanup()
print(json.dumps(out), flush=True)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(tmp_path, mode, timeout_s=20, limit=120):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, REPO=ROOT, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TIMEOUT=str(timeout_s), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), mode], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=limit)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def test_single_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = du.init_distributed("cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    assert info.device == torch.device("cpu") and not du.is_dist()
    assert du.any_rank([True, False], info.device) == [True, False]
    assert du.mean_over_ranks([3.0], info.device) == [3.0]
    assert du.gather_objects("x") == ["x"]
    du.barrier()
    du.cleanup()


def test_bad_torchrun_environment_is_a_device_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DeviceError, match="WORLD_SIZE='two'"):
        du.init_distributed("cpu")


@pytest.mark.slow
def test_two_process_gloo_collectives(tmp_path):
    results = run_group(tmp_path, "collectives")
    for rank, (code, out, err) in enumerate(results):
        assert code == 0, err
        got = json.loads(out.strip().splitlines()[-1])
        assert (got["rank"], got["world"], got["is_dist"], got["device"]) == (rank, 2, True, "cpu")
        assert got["any"] == [True, False]
        assert got["mean"] == [1.0]
        assert got["gathered"] == [{"r": 0}, {"r": 1}]


@pytest.mark.slow
def test_dead_peer_makes_a_collective_fail_within_the_timeout(tmp_path):
    # Hang guard, not a speed bound: without the 10 s collective timeout rank 0 would wait for the
    # default 30 minutes, far past run_group's limit (which then fails the test).
    results = run_group(tmp_path, "peer_dies", timeout_s=10)
    code0, out0, err0 = results[0]
    assert results[1][0] == 3
    got = json.loads(out0.strip().splitlines()[-1])
    assert got["raised"] == "TrainingError", got
    assert "another process probably died or timed out" in got["message"]
