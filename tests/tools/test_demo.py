import json
import os
import re
import subprocess
import sys

import pytest

import tools.demo as demo
from utils.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(argv):
    return demo.get_args_parser().parse_args(argv)


def test_plan_quick_and_bad_values(tmp_path):
    plan = demo.plan(parse(["--quick", "--workdir", str(tmp_path)]))
    assert plan["synthetic"] and plan["epochs"] == 1 and plan["finetune_epochs"] == 1
    assert plan["cfg"].DATASET.ROOT == os.path.join(str(tmp_path), "data") + os.sep
    assert list(plan["cfg"].TEST.IMAGE_SIZE) == [128, 64]
    full = demo.plan(parse(["--workdir", str(tmp_path), "--epochs", "8"]))
    assert full["finetune_epochs"] == 2 and full["cfg"].OUTPUT_DIR == f"{tmp_path}/output"
    with pytest.raises(UsageError, match="--ratio"):
        demo.plan(parse(["--ratio", "1.5"]))
    with pytest.raises(UsageError, match="--epochs"):
        demo.plan(parse(["--epochs", "0"]))


def test_parse_speed_line():
    text = "...\nbackend: fused | iterations: 12 | latency: 31.25 ms | FPS: 32.00\n"
    assert demo.parse_speed(text) == {"backend": "fused", "latency_ms": 31.25, "fps": 32.0}
    assert demo.parse_speed("no result") == {}


def run_demo(args, timeout):
    return subprocess.run([sys.executable, "tools/demo.py", "--device", "cpu"] + args, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_failing_step_stops_with_one_line_naming_step_and_log(tmp_path):
    proc = run_demo(["--quick", "--workdir", str(tmp_path), "--report-dir", str(tmp_path / "report"),
                     "--checkpoint", str(tmp_path / "missing.pt")], timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"error: demo stopped: step 3 'eval' failed with exit code 2; see its log .*03_eval\.log$", last)
    assert "Traceback" not in proc.stderr
    assert "missing.pt" in open(last.rsplit(" ", 1)[-1]).read()
    assert not (tmp_path / "report").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)  # the subprocess's own limit: 17 steps on a shared 2-core box
def test_quick_demo_writes_filled_report(tmp_path):
    report = tmp_path / "report"
    proc = run_demo(["--quick", "--workdir", str(tmp_path / "work"), "--report-dir", str(report)], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Report:  {report / 'index.html'}" in proc.stdout
    html = (report / "index.html").read_text()
    md = (report / "report.md").read_text()
    for name in ("loss.png", "miou.png", "sample00_input.png", "sample00_ground_truth.png",
                 "sample00_trained_model.png", "sample00_compressed___fine_tuned.png", "custom00_input.png"):
        assert (report / "img" / name).stat().st_size > 200, name
    # Both runs have a real mIoU, per-class rows, params/MACs/latency before and after.
    original = json.loads((tmp_path / "work" / "metrics" / "original.json").read_text())
    compressed = json.loads((tmp_path / "work" / "metrics" / "compressed.json").read_text())
    mean_row = [line for line in md.splitlines() if line.startswith("| **mean IoU**")][0]
    assert f"**{100 * original['mean_iou']:.1f}%**" in mean_row
    assert f"**{100 * compressed['mean_iou']:.1f}%**" in mean_row
    assert md.count("\n| road |") == 1 and "| bicycle |" in md
    for label in ("Parameters", "MACs (per image)", "Latency (batch 1)"):
        row = [line for line in md.splitlines() if line.startswith(f"| {label} |")][0]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4 and "-" not in cells[1:3] and cells[3].endswith(("smaller", "faster")), row
    assert html.count('src="data:image/png;base64,') >= 2 + 2 * 4
    steps = json.loads((tmp_path / "work" / "logs" / "steps.json").read_text())
    assert [s["status"] for s in steps] == ["ok"] * 17
    # Accuracy vs latency: all six models with a latency and an mIoU, and the chart.
    assert (report / "img" / "tradeoff.png").stat().st_size > 200
    section = md.split("## Accuracy vs latency", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Model")]
    assert [r.split("|")[1].strip() for r in rows] == ["fp32 eager", "fp32 fused", "fp32 onnxruntime", "pruned 50%",
                                                       "int8", "pruned 50% + int8"]
    assert all(" ms |" in r and "%" in r.split("|")[3] for r in rows), rows
    assert any(r.rstrip().endswith("| yes |") for r in rows)
    # The report can be rebuilt from the run without running anything.
    os.remove(report / "index.html")
    proc = run_demo(["--quick", "--workdir", str(tmp_path / "work"), "--report-dir", str(report), "--report-only"],
                    timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (report / "index.html").read_text().count("Per-class IoU") == 1
