"""The console's evaluate, PR_NN images, VBMF column and quantize report actions, through the HTTP API,
on a tiny 19-class PIDNet and synthetic val scenes (datasets.synthetic, as tools/make_synthetic.py)."""
import json
import math
import os
import re
import shlex
import shutil

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import tools.compress as compress_cli
import tools.eval as eval_cli
from models.checkpoint import load_module_file
from models.compression import decompose_ranks, importance
from utils.cli import run_main
from utils.console.app import create_app
from utils.console.evaluate import run_evaluate
from utils.console.jobs import Cancelled
from utils.console.quantize import quantize_view
from utils.console.workspace import Workspace
from utils.images import load_images

from .conftest import SIZE, SYNTH_CONFIG, VAL_IMAGES, snapshot

BODY = "tiny/model_modelfx.pt"
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture
def synth(synth_base, tmp_path):
    root = tmp_path / "work"
    shutil.copytree(synth_base, root)
    return root


@pytest.fixture
def client(synth):
    with TestClient(create_app(synth)) as test_client:
        yield test_client


def _wait(client, job_id):
    return client.app.state.console.jobs.wait(job_id, timeout=300)


def _ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def _error(response):
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "\n" not in error
    return error


def test_layer_table_has_vbmf_ranks_and_nn_importance_with_images(client, synth):
    plain = _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE}))
    rows = {r["name"]: r for r in plain["layers"]}
    body = load_module_file(str(synth / BODY))
    # VBMF: Tucker-2 ranks for KxK layers, SVD ranks for 1x1 ones, as decompose recommends them.
    assert rows["conv1.0"]["vbmf"] == {"method": "FD_TK", "full": [3, 8],
                                       "rank": decompose_ranks.layer_vbmf_rank(body.get_submodule("conv1.0"), "FD_TK")}
    one_by_one = next(n for n, r in rows.items() if r["kind"] == "Conv2d 1x1" and r["vbmf"])
    assert rows[one_by_one]["vbmf"]["method"] == "FD_SVD"
    assert rows[one_by_one]["vbmf"]["rank"] == decompose_ranks.layer_vbmf_rank(body.get_submodule(one_by_one), "FD_SVD")
    assert plain["totals"]["vbmf_layers"] == sum(r["vbmf"] is not None for r in plain["layers"]) > 20
    assert all(r["nn"] is None for r in plain["layers"]) and plain["totals"]["nn_images"] == 0

    table = _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE, "images": VAL_IMAGES}))
    assert table["totals"]["nn_images"] == 2
    rows = {r["name"]: r for r in table["layers"]}
    assert all((r["nn"] is not None) == r["prunable"] for r in rows.values())
    # A group of one convolution: its NN score is the mean nuclear norm of its feature maps.
    single = next(n for n, r in rows.items() if r["prunable"] and r["root"]
                  and sum(g["group"] == n for g in rows.values()) == 1)
    images = load_images(str(synth / VAL_IMAGES), 32)
    conv = body.get_submodule(single)
    expected = importance.feature_nuclear_norms(body, [conv], images)[conv].mean()
    assert rows[single]["nn"] == pytest.approx(float(expected), rel=1e-4)


def test_pr_nn_compress_uses_the_picked_images_like_the_cli(client, synth, tmp_path):
    _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE}))
    assert "pick an image folder" in _error(client.post("/api/jobs/compress", json={"method": "PR_NN", "ratio": 0.5}))
    (synth / "notimages").mkdir()
    (synth / "notimages" / "a.png").write_bytes(b"this is text, not a png")
    for folder, match in (("notimages", "no readable image in .*notimages"), ("nope", "not a folder"),
                          ("../x", "outside the work directory")):
        assert re.search(match, _error(client.post("/api/jobs/compress", json={
            "method": "PR_NN", "ratio": 0.5, "images": folder})))
        assert re.search(match, _error(client.post("/api/model", json={"model": BODY, "images": folder})))
    assert client.get("/api/jobs").json()["jobs"] == []

    done = _wait(client, _ok(client.post("/api/jobs/compress", json={
        "method": "PR_NN", "ratio": 0.5, "images": VAL_IMAGES, "num_images": 2}))["id"])
    assert done["state"] == "done", done
    (line,) = done["result"]["commands"]
    assert f"--images {synth / VAL_IMAGES} --num-images 2" in line
    report = json.loads((synth / done["result"]["report"]).read_text())
    assert report["images"] == 2 and report["images_dir"] == str(synth / VAL_IMAGES)
    argv = shlex.split(line)[2:]
    argv[argv.index("--output") + 1] = str(tmp_path / "again.pt")
    assert run_main(compress_cli.main, compress_cli.get_args_parser().parse_args(argv)) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["layers"] == report["layers"] and again["after"] == report["after"]

    # the PR_NN preview ranks on the images the table was loaded with, and equals the real run
    pr_nn = {"method": "PR_NN", "ratio": 0.5, "images": VAL_IMAGES, "num_images": 2}
    assert "loaded with (without images)" in _error(client.post("/api/preview", json=pr_nn))
    _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE, "images": VAL_IMAGES, "num_images": 2}))
    preview = _ok(client.post("/api/preview", json=pr_nn))
    assert preview["macs"][1] == report["after"]["macs"][f"{SIZE[0]}x{SIZE[1]}"] < preview["macs"][0]
    assert "press Load again" in _error(client.post("/api/preview", json=dict(pr_nn, num_images=1)))


def _compress_and_quantize(client, synth):
    """A PR_L2 run of the console, then tools/quantize.py on it (in-process, as the console's job runs it)."""
    import tools.quantize as quantize_cli

    _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE}))
    done = _wait(client, _ok(client.post("/api/jobs/compress", json={"method": "PR_L2", "ratio": 0.5}))["id"])
    run = done["result"]["run"]
    argv = ["--netspresso", "--model", str(synth / run / "compressed_pidnet.pt"), "--calib-dir", str(synth / VAL_IMAGES),
            "--input-size", *map(str, SIZE), "--snr-images", "2", "--output-dir", str(synth / run / "quantized_int8")]
    assert run_main(quantize_cli.main, quantize_cli.parse_args(argv)) == 0
    return run


def test_evaluate_fp32_compressed_int8_as_tools_eval_does(client, synth, tmp_path):
    run = _compress_and_quantize(client, synth)
    job = _ok(client.post("/api/jobs/evaluate", json={"run": run, "config": SYNTH_CONFIG, "dataset_root": "data",
                                                      "runtime": "eager"}))
    done = _wait(client, job["id"])
    assert done["state"] == "done", done
    result = done["result"]
    assert [r["label"] for r in result["rows"]] == ["fp32", "PR_L2", "PR_L2 + int8"]
    assert [r["kind"] for r in result["rows"]] == ["body", "body", "onnx"]
    assert result["images"] == 2 and result["input_size"] == [64, 128]
    assert all(0 <= r["miou"] <= 1 and r["latency_ms"] > 0 for r in result["rows"])
    assert any(r["pareto"] for r in result["rows"])
    assert sorted(os.path.basename(f) for f in result["files"]) == ["command.sh", "eval.json", "tradeoff.png"]
    chart = client.get(f"/api/download/{result['chart']}")
    assert chart.status_code == 200 and chart.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((synth / result["report"]).read_text())["rows"] == result["rows"]
    # Every row's command line is tools/eval.py giving the same mIoU.
    for row, line in zip(result["rows"], result["commands"]):
        argv = shlex.split(line)
        assert argv[:2] == ["python", "tools/eval.py"]
        out = tmp_path / f"{row['kind']}_{len(row['label'])}.json"
        assert run_main(eval_cli.main, eval_cli.parse_args(argv[2:] + ["--json", str(out)])) == 0
        assert json.loads(out.read_text())["mean_iou"] == pytest.approx(row["miou"], abs=1e-9), row["label"]
    assert "--onnx" in result["commands"][2] and "--netspresso" in result["commands"][1]


def test_evaluate_bad_input_is_one_line_and_queues_nothing(client, synth):
    _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE}))
    run = _wait(client, _ok(client.post("/api/jobs/compress", json={"method": "PR_L2", "ratio": 0.5}))["id"])
    run = run["result"]["run"]
    (synth / "empty_root").mkdir()
    (synth / "bad.yaml").write_text("MODEL:\n  NAMEX: 1\n")
    before = snapshot(synth)
    cases = [
        ({"config": SYNTH_CONFIG}, r"dataset root 'data/synthetic/' is not a folder of the work directory"),
        ({"config": SYNTH_CONFIG, "dataset_root": "empty_root"}, r"list file not found: .*val\.lst"),
        ({"config": "bad.yaml", "dataset_root": "data"}, "unknown config key in .*MODEL.NAMEX"),
        ({"config": BODY, "dataset_root": "data"}, r"is not a config \(.yaml\)"),
        ({"config": "", "dataset_root": "data"}, "pick the config whose val set"),
        ({"config": SYNTH_CONFIG, "dataset_root": "data", "run": "tiny"}, "'tiny' is not a compress run"),
        ({"config": SYNTH_CONFIG, "dataset_root": "data", "runtime": "tensorflow"}, "unknown runtime 'tensorflow'"),
    ]
    for body, match in cases:
        error = _error(client.post("/api/jobs/evaluate", json={"run": run, **body}))
        assert re.search(match, error), error
    assert len(client.get("/api/jobs").json()["jobs"]) == 1  # the compress job only
    assert snapshot(synth) == before


class _CancelAt:
    """A job whose progress() raises Cancelled at its ``n``-th report (mid-evaluation)."""

    def __init__(self, n):
        self.calls, self.n = 0, n

    def progress(self, fraction, message):
        self.calls += 1
        if self.calls >= self.n:
            raise Cancelled()


def test_cancelled_evaluation_leaves_the_run_as_it_was(client, synth):
    _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE}))
    run = _wait(client, _ok(client.post("/api/jobs/compress", json={"method": "PR_L2", "ratio": 0.5}))["id"])
    run = run["result"]["run"]
    before = snapshot(synth)
    job = _CancelAt(5)  # 1 val set, 2 images + 1 timing of fp32, then the first image of the compressed model
    with pytest.raises(Cancelled):
        run_evaluate(job, Workspace(synth), run, SYNTH_CONFIG, "data", "eager")
    assert job.calls == 5 and snapshot(synth) == before


def test_quantize_report_view_of_a_mixed_precision_report():
    report = json.loads(open(os.path.join(DATA, "quantize_report_mixed.json"), encoding="utf-8").read())
    view = quantize_view(report)
    assert view["overall_snr_db"] == report["logits_snr_db"] and set(view["overall_snr_db"]) == {"onnxruntime",
                                                                                                  "openvino"}
    assert [layer["name"] for layer in view["layers"]] == sorted(report["layer_snr_db"],
                                                                key=report["layer_snr_db"].get)
    snr = report["layer_snr_db"]
    assert [layer["snr_db"] for layer in view["layers"]] == [snr[n] if math.isfinite(snr[n]) else None
                                                             for n in sorted(snr, key=snr.get)]
    assert any(layer["snr_db"] is None for layer in view["layers"])  # lossless layers: infinite SNR
    assert {layer["name"] for layer in view["layers"] if layer["float"]} == set(report["float_layers"])
    assert view["float_layers"] == report["float_layers"] and len(view["float_layers"]) > 0
    assert view["mixed"] == {"min_snr_db": 30.0, "reached_snr_db": report["mixed"]["reached_snr_db"],
                             "trials": len(report["mixed"]["trials"])}
    assert view["fields"]["precision"] == "int8" and "calibration" not in view["fields"]
    plain = quantize_view({**report, "layer_snr_db": {}, "float_layers": [], "mixed": None})
    assert plain["layers"] == [] and plain["mixed"] is None and plain["overall_snr_db"] == report["logits_snr_db"]


def test_image_uploads_feed_the_image_picker(client, synth):
    ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8))
    assert _ok(client.post("/api/upload", files={"file": ("s.png", png.tobytes())})) == {"name": "uploads/images/s.png"}
    error = _error(client.post("/api/upload", files={"file": ("t.jpg", b"GIF89a not really")}))
    assert error.startswith("upload 't.jpg' is not an image")
    assert {"name": "uploads/images", "images": 1} in client.get("/api/files").json()["image_folders"]
    assert {"name": "data"} in client.get("/api/files").json()["dataset_roots"]
    table = _ok(client.post("/api/model", json={"model": BODY, "input_size": SIZE, "images": "uploads/images"}))
    assert table["totals"]["nn_images"] == 1
    assert torch.is_tensor(load_images(str(synth / "uploads/images"), 4)[0])


def test_quantize_report_of_the_work_directory_through_the_api(client, synth):
    (synth / "mixed").mkdir()
    shutil.copy(os.path.join(DATA, "quantize_report_mixed.json"), synth / "mixed" / "quantize_report.json")
    (synth / "junk").mkdir()
    (synth / "junk" / "quantize_report.json").write_text("{not json")
    assert client.get("/api/files").json()["quantize_reports"] == [{"name": "junk/quantize_report.json"},
                                                                   {"name": "mixed/quantize_report.json"}]
    view = _ok(client.get("/api/quantize-report/mixed/quantize_report.json"))
    report = json.loads((synth / "mixed" / "quantize_report.json").read_text())
    assert view == json.loads(json.dumps(quantize_view(report)))
    for name, match in (("junk/quantize_report.json", "is not JSON"), (BODY, "is not a quantize_report.json"),
                        ("%2E%2E/quantize_report.json", "outside the work directory")):
        assert re.search(match, _error(client.get(f"/api/quantize-report/{name}")))
