"""benchmarks/quiet_window.sh refuses bad input with one line before it starts any (long) timing."""
import os
import subprocess

import pytest


def _run(repo_root, *args):
    script = os.path.join(repo_root, "benchmarks", "quiet_window.sh")
    return subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [(), ("out.md",), ("out.md", "a.pt", "extra")])
def test_usage(repo_root, args):
    result = _run(repo_root, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: benchmarks/quiet_window.sh OUT.md PRUNED_BODY")
    assert result.stdout == ""


def test_missing_pruned_body(repo_root, tmp_path):
    out = tmp_path / "figures.md"
    result = _run(repo_root, str(out), str(tmp_path / "missing_model.pt"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing_model.pt' not found" in lines[0] and "best_model_model.pt" in lines[0]
    assert not out.exists()
