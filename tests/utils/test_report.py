import os
import re

import numpy as np

from utils.report import build_report
from utils.report.summary import fmt_count, headline, pareto_front, stats_rows

NAMES = ["road", "car", "sky"]


def fake_runs():
    before = {"mean_iou": 0.6, "iou": dict(zip(NAMES, [0.9, 0.5, 0.4])), "pixel_acc": 0.9, "mean_acc": 0.7}
    after = {"mean_iou": 0.55, "iou": [0.85, 0.45, 0.35], "pixel_acc": 0.88, "mean_acc": 0.66}
    return [
        {"label": "PIDNet-S", "metrics": before, "stats": {"params": 7_600_000, "macs": 6.0e9, "latency_ms": 40.0}},
        {"label": "Compressed", "metrics": after, "stats": {"params": 3_800_000, "macs": 3.0e9, "latency_ms": 25.0}},
    ]


def test_formatting_and_headline():
    assert fmt_count(7_620_000) == "7.62 M" and fmt_count(6.3e9) == "6.30 G" and fmt_count(None) == "-"
    cards = dict((k, (v, d)) for k, v, d in headline(fake_runs(), total_seconds=300))
    assert cards["mIoU - PIDNet-S"][0] == "60.0%" and cards["mIoU - Compressed"][0] == "55.0%"
    assert cards["Parameters"][1].startswith("2.00")
    assert cards["Latency"][1].startswith("1.60")
    rows = {label: (values, change) for label, values, change in stats_rows(fake_runs())}
    assert rows["MACs (per image)"] == (["6.00 G", "3.00 G"], "2.00x smaller")
    assert rows["Mean IoU"][1] == "-5.0 pts"


def test_build_report_writes_filled_html_and_markdown(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 48, 3), dtype=np.uint8)
    curves = {"loss": {"training": [(0, 2.0), (1, 1.0)], "fine-tuning": [(0, 1.2), (1, 0.9)]},
              "mIoU": {"training": [(0, 0.2), (1, 0.6)], "fine-tuning": []}}
    samples = [{"name": "val_0", "images": [("Input", image), ("Prediction", image), ("Ground truth", image)]}]
    html_path = build_report(str(tmp_path / "report"), title="Demo <run>", subtitle="synthetic", runs=fake_runs(),
                             class_names=NAMES, curves=curves, samples=samples, gallery=samples,
                             steps=[{"name": "train", "status": "ok", "seconds": 12.0, "log": "logs/train.log"}],
                             settings=[("epochs", 3)], outputs=[("report", "report/index.html")],
                             total_seconds=95.0, speed_note="CPU, 2 threads")
    html = open(html_path, encoding="utf-8").read()
    md = open(tmp_path / "report" / "report.md", encoding="utf-8").read()
    assert "Demo &lt;run&gt;" in html  # escaped
    assert "http://" not in html and "https://" not in html and "<link" not in html  # self-contained
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2 + 3 + 3  # 2 plots + 2 grids
    for text in ("road", "90.0%", "85.0%", "-5.0", "7.60 M", "3.80 M", "40.0 ms", "logs/train.log", "CPU, 2 threads"):
        assert text in html, text
    for text in ("| road | 90.0% | 85.0% | -5.0 |", "**60.0%**", "![loss](img/loss.png)", "![mIoU](img/miou.png)",
                 "img/sample00_input.png", "report/index.html"):
        assert text in md, text
    for name in ("loss.png", "miou.png", "sample00_input.png", "custom00_ground_truth.png"):
        assert os.path.getsize(tmp_path / "report" / "img" / name) > 100


def test_build_report_without_history_or_second_run(tmp_path):
    run = fake_runs()[:1]
    run[0]["stats"] = {}
    html_path = build_report(str(tmp_path), title="t", runs=run, class_names=NAMES, curves={})
    html = open(html_path, encoding="utf-8").read()
    assert "Training curves" not in html and "Per-class IoU" in html and "&Delta;" not in html
    assert not os.path.exists(tmp_path / "img" / "loss.png")


def test_pareto_front_and_tradeoff_chart(tmp_path):
    points = [{"label": "fp32", "latency_ms": 100.0, "miou": 0.30}, {"label": "fused", "latency_ms": 80.0, "miou": 0.30},
              {"label": "int8", "latency_ms": 40.0, "miou": 0.295}, {"label": "slow", "latency_ms": 120.0, "miou": 0.20},
              {"label": "pruned+int8", "latency_ms": 20.0, "miou": 0.25}, {"label": "no eval", "latency_ms": 5.0, "miou": None}]
    assert [p["label"] for p in pareto_front(points)] == ["pruned+int8", "int8", "fused"]
    build_report(str(tmp_path), title="t", runs=[], class_names=[], tradeoff=points, tradeoff_note="note")
    assert (tmp_path / "img" / "tradeoff.png").stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    assert "| int8 | 40.0 ms | 29.50% | yes |" in md and "| slow | 120.0 ms | 20.00% |  |" in md
    assert "| no eval | 5.0 ms | - |  |" in md
    assert "Accuracy vs latency" in (tmp_path / "index.html").read_text()


def test_iou_swatches_are_the_palette_of_eval_save_color(tmp_path):
    from datasets.palette import palette_for

    def swatches(html):
        return re.findall(r'class="sw" style="background:rgb\((\d+),(\d+),(\d+)\)"', html)

    run = fake_runs()[:1]
    html = open(build_report(str(tmp_path / "a"), title="t", runs=run, class_names=NAMES), encoding="utf-8").read()
    assert [tuple(map(int, s)) for s in swatches(html)] == [tuple(int(v) for v in c) for c in palette_for(3)]
    colors = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    html = open(build_report(str(tmp_path / "b"), title="t", runs=run, class_names=NAMES, class_colors=colors),
                encoding="utf-8").read()
    assert [list(map(int, s)) for s in swatches(html)] == colors


def test_tradeoff_labels_of_close_points_are_stacked():
    from utils.report.charts import label_offsets

    # the demo's case: fp32 eager / fused / onnxruntime share the mIoU and nearly the latency
    points = [{"label": "fp32 eager", "latency_ms": 112.7, "miou": 0.238},
              {"label": "fp32 fused", "latency_ms": 95.0, "miou": 0.238},
              {"label": "onnxruntime", "latency_ms": 80.0, "miou": 0.238},
              {"label": "int8", "latency_ms": 20.0, "miou": 0.237},
              {"label": "pruned", "latency_ms": 60.0, "miou": 0.256}]
    offsets = label_offsets(points)
    assert len({offsets[i] for i in range(3)}) == 3  # three distinct heights: none overlaps
    assert offsets[3] == offsets[4] == (5, 4)  # far from the others: the plain offset
