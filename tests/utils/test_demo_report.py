"""utils/demo_report.py: the demo's report rows from what its steps wrote."""
import json

from utils import demo_report


def test_read_json_missing_is_none(tmp_path, caplog):
    assert demo_report.read_json(str(tmp_path / "absent.json")) is None
    assert "the report will miss it" in caplog.text


def test_model_stats_merge_compress_report_and_speed():
    report = {"before": {"params": 7.6e6, "macs": {"64x128": 1.5e9}}, "after": {"params": 3.1e6, "macs": {"64x128": 0.6e9}}}
    speed = {"original": {"latency_ms": 10.0}, "compressed": {"latency_ms": 6.0}}
    stats = demo_report.model_stats(report, speed)
    assert stats == {"original": {"latency_ms": 10.0, "params": 7.6e6, "macs": 1.5e9},
                     "compressed": {"latency_ms": 6.0, "params": 3.1e6, "macs": 0.6e9}}
    assert demo_report.model_stats(None, {}) == {"original": {}, "compressed": {}}


def test_tradeoff_points_one_per_model(tmp_path):
    for key, miou in (("original", 0.4), ("compressed", 0.3)):
        (tmp_path / key).mkdir()
        (tmp_path / key / "quantize_report.json").write_text(json.dumps({"eval": {"int8_miou": miou}}))
    speed = {"original_eager": {"latency_ms": 20.0}, "original": {"latency_ms": 12.0},
             "compressed_int8": {"latency_ms": 4.0}}
    points = demo_report.tradeoff_points(speed, str(tmp_path), {"mean_iou": 0.5}, {"mean_iou": 0.45}, 0.5)
    by_label = {p["label"]: p for p in points}
    assert list(by_label) == ["fp32 eager", "fp32 fused", "fp32 onnxruntime", "pruned 50%", "int8",
                              "pruned 50% + int8"]
    assert by_label["fp32 eager"] == {"label": "fp32 eager", "latency_ms": 20.0, "miou": 0.5}
    assert by_label["pruned 50% + int8"] == {"label": "pruned 50% + int8", "latency_ms": 4.0, "miou": 0.3}
    assert by_label["fp32 onnxruntime"]["latency_ms"] is None
