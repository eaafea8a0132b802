"""utils/steps.py: the numbered tool steps of tools/demo.py, their logs, and replaying them."""
import json
import sys

import pytest

from utils.steps import ReplayRunner, Runner, StepError, quote, relative


def test_runner_streams_logs_and_records(tmp_path, capsys):
    logs = tmp_path / "logs"
    runner = Runner(str(logs), total=2, root=str(tmp_path))
    text = runner.run("hello", "Say hello", ["-c", "print('hello from a step')"])
    assert "hello from a step" in text and "hello from a step" in capsys.readouterr().out
    assert "hello from a step" in (logs / "01_hello.log").read_text()
    steps = json.loads((logs / "steps.json").read_text())
    assert steps[0]["name"] == "1. Say hello" and steps[0]["status"] == "ok"
    assert steps[0]["log"] == "logs/01_hello.log"  # relative to the root the steps run in
    runner.record("Skipped step", 0.0, "skipped")
    assert [s["status"] for s in json.loads((logs / "steps.json").read_text())] == ["ok", "skipped"]


def test_a_failing_step_stops_with_one_line_naming_it_and_its_log(tmp_path):
    runner = Runner(str(tmp_path / "logs"), total=1, root=str(tmp_path))
    with pytest.raises(StepError, match=r"step 1 'boom' failed with exit code 3; see its log .*01_boom.log"):
        runner.run("boom", "Fail", ["-c", "import sys; sys.exit(3)"])
    assert json.loads((tmp_path / "logs" / "steps.json").read_text())[0]["status"] == "failed (exit 3)"


def test_replay_reads_the_logs_and_runs_nothing(tmp_path):
    logs = tmp_path / "logs"
    Runner(str(logs), total=1, root=str(tmp_path)).run("one", "One", ["-c", "print('first run')"])
    replay = ReplayRunner(str(logs), total=1, root=str(tmp_path))
    assert "first run" in replay.run("one", "One", [sys.executable, "-c", "raise SystemExit(1)"])
    assert replay.steps[0]["status"] == "ok"
    with pytest.raises(StepError, match="--report-only needs a finished demo"):
        ReplayRunner(str(tmp_path / "none"), total=1, root=str(tmp_path))


def test_quote_and_relative():
    assert quote("configs/a.yaml") == "configs/a.yaml"
    assert quote("it's here") == "'it'\\''s here'"
    assert relative("/repo/tools/train.py", "/repo") == "tools/train.py"
    assert relative("/elsewhere/x", "/repo") == "/elsewhere/x"
