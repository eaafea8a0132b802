"""Every console action through its HTTP API (FastAPI TestClient), on a tiny exported PIDNet."""
import copy
import importlib
import importlib.util
import inspect
import io
import json
import os
import re
import shlex
import threading

import pytest
import torch
from fastapi.testclient import TestClient

import tools.compress as compress_cli
from models.checkpoint import load_module_file, official_state_dict
from models.compression import plan as plan_lib
from models.compression import pruner
from models.compression.report import count_macs, count_params
from models.pidnet import PIDNet
from utils.cli import run_main
from utils.console.app import create_app

from .conftest import SIZE, TINY, snapshot

BODY = "tiny/model_modelfx.pt"


@pytest.fixture
def client(workdir):
    app = create_app(workdir)
    with TestClient(app) as test_client:
        yield test_client


def _wait(client, job_id):
    return client.app.state.console.jobs.wait(job_id, timeout=300)


def _load(client, **extra):
    response = client.post("/api/model", json={"model": BODY, "input_size": SIZE, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_catalog_comes_from_the_compression_tables(client):
    data = client.get("/api/catalog").json()
    methods = {m["name"]: m for m in data["methods"]}
    expected = list(pruner.METHODS)
    if importlib.util.find_spec("models.compression.decompose"):
        expected += list(importlib.import_module("models.compression.decompose").METHODS)
    assert list(methods) == expected
    assert [r["name"] for r in methods["PR_L2"]["recommendations"]] == list(pruner.RECOMMENDATIONS)
    assert [r["name"] for r in methods["PR_ID"]["recommendations"]] == ["manual"]
    assert methods["PR_ID"]["manual"] == "layer_indices" and methods["PR_GM"]["manual"] == "layer_ratios"
    assert all(m["preview"] == (name in plan_lib.PREVIEW_METHODS) for name, m in methods.items())
    assert methods["PR_L2"]["family"] == "pruning" and methods["PR_L2"]["preview"]
    assert methods["PR_L2"]["budgets"] == [b for b in ("target_macs", "target_latency")
                                           if b in inspect.signature(pruner.compress_model).parameters]
    assert "eager" in data["runtimes"] and "onnxruntime" in data["runtimes"]
    try:
        quantize = importlib.import_module("models.deploy.quantize")
    except ModuleNotFoundError:
        quantize = None
    if quantize is None:
        assert data["quantization"] is None
    else:
        assert data["quantization"]["precisions"] == list(quantize.PRECISIONS)
    files = client.get("/api/files").json()
    assert {m["name"]: m["kind"] for m in files["models"]} == {BODY: "module", "tiny/model_headfx.pt": "module"}
    assert "builtin:configs/cityscapes/pidnet_small_cityscapes.yaml" in [c["name"] for c in files["configs"]]


def test_layer_table_and_preview_match_the_library(client, tiny_export):
    body = tiny_export[0]
    table = _load(client)
    assert table["source"]["head"] == "tiny/model_headfx.pt"  # found beside the body
    assert table["totals"]["params"] == count_params(body)
    assert table["totals"]["macs"] == count_macs(body, SIZE) == sum(r["macs"] for r in table["layers"])
    rows = {r["name"]: r for r in table["layers"]}
    assert rows["final_layer.conv2"]["prunable"] is False and rows["final_layer.conv2"]["out"] == 5
    assert rows["conv1.0"]["kind"] == "Conv2d 3x3 /2" and rows["conv1.0"]["l2"] > 0 and rows["conv1.0"]["gm"] > 0

    preview = client.post("/api/preview", json={"method": "PR_GM", "ratio": 0.4, "round_to": 2}).json()
    _, report = pruner.compress_model(copy.deepcopy(body), "PR_GM", "slamp", 0.4, round_to=2, trace_size=(64, 128),
                                      report_sizes=[SIZE])
    assert preview["macs"] == [report["before"]["macs"]["64x128"], report["after"]["macs"]["64x128"]]
    assert preview["ratio_achieved"] == pytest.approx(report["ratio_achieved"])
    for name, row in report["layers"].items():
        assert preview["layers"][name]["out"] == row["out"] and preview["layers"][name]["in"] == row["in"]

    manual = client.post("/api/preview", json={"method": "PR_L2", "recommendation": "manual",
                                               "manual": {"layer3.0.conv1": "0.5"}}).json()
    assert manual["layers"]["layer3.0.conv1"]["out"] == [32, 16]
    ids = client.post("/api/preview", json={"method": "PR_ID", "manual": {"layer3.0.conv1": "0, 1, 2"}}).json()
    assert ids["layers"]["layer3.0.conv1"]["out"] == [32, 29]


BAD_REQUESTS = [
    ({"method": "PR_L2", "ratio": 1.5}, r"must be in \(0, 1\)"),
    ({"method": "PR_L2", "ratio": None}, r"must be a number in \(0, 1\)"),
    ({"method": "PR_XX", "ratio": 0.5}, "unknown compression method 'PR_XX': use one of PR_L2, PR_GM"),
    ({"method": "PR_L2", "recommendation": "manual", "manual": {"layer3.0.conv1": "1.2"}},
     "ratio of layer 'layer3.0.conv1'"),
    ({"method": "PR_L2", "recommendation": "manual", "manual": {"layer3.0.conv1": "half"}}, "must be a number"),
    ({"method": "PR_L2", "recommendation": "manual", "manual": {}}, "at least one value"),
    ({"method": "PR_L2", "recommendation": "manual", "manual": {"final_layer.conv2": "0.5"}}, "cannot be pruned"),
    ({"method": "PR_ID", "manual": {"layer3.0.conv1": "0, 99"}}, r"out of range \[0, 32\)"),
    ({"method": "PR_ID", "manual": {"layer3.0.conv1": ", ".join(map(str, range(32)))}}, "keep at least one"),
    ({"method": "PR_L2", "ratio": 0.5, "round_to": 0}, "positive integer"),
    ({"method": "PR_ID", "budget": "target_speed", "budget_value": 0.5}, "takes no target_speed budget"),
]


def test_bad_requests_are_one_clear_line(client):
    _load(client)
    for body, match in BAD_REQUESTS:
        for route in ("/api/preview", "/api/jobs/compress"):
            response = client.post(route, json=body)
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert "\n" not in error and re.search(match, error), error
    assert client.get("/api/jobs").json()["jobs"] == []  # nothing was queued


def test_compress_job_writes_files_report_and_a_reproducing_command(client, workdir, tmp_path):
    _load(client)
    manual = {"layer3.0.conv1": "0.5", "layer4.0.conv1": "0.25"}
    job = client.post("/api/jobs/compress", json={"method": "PR_L2", "recommendation": "manual",
                                                  "manual": manual, "runtime": "fused"}).json()
    done = _wait(client, job["id"])
    assert done["state"] == "done", done
    result = done["result"]
    run = result["run"]
    assert sorted(os.path.basename(f) for f in result["files"]) == [
        "command.sh", "compressed_pidnet.json", "compressed_pidnet.pt", "layer_ratios.json", "model_headfx.pt"]
    assert result["after"]["params"] < result["before"]["params"] and result["after"]["macs"] < result["before"]["macs"]
    assert result["before"]["latency_ms"] > 0 and result["after"]["latency_ms"] > 0 and result["runtime"] == "fused"
    report = client.get(f"/api/download/{result['report']}")
    assert report.status_code == 200
    report = report.json()
    assert report["latency_ms"]["runtime"] == "fused" and report["after"]["params"] == result["after"]["params"]
    compressed = load_module_file(str(workdir / run / "compressed_pidnet.pt"))
    assert count_params(compressed) == result["after"]["params"]

    # The command line reproduces the run: same report figures, same weights.
    (line,) = result["commands"]
    argv = shlex.split(line)
    assert argv[:2] == ["python", "tools/compress.py"]
    out = tmp_path / "again.pt"
    argv = argv[2:]
    argv[argv.index("--output") + 1] = str(out)
    assert run_main(compress_cli.main, compress_cli.get_args_parser().parse_args(argv)) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    for key in ("before", "after", "layers", "ratio_achieved", "method", "recommendation"):
        assert again[key] == report[key], key
    for a, b in zip(load_module_file(str(out)).state_dict().values(), compressed.state_dict().values()):
        assert torch.equal(a, b)

    assert client.get("/api/download/../secret").status_code in (400, 404)
    assert "outside the work directory" in client.get("/api/download/%2E%2E/x.pt").json()["error"]


def test_failed_job_leaves_the_work_directory_as_it_was(client, workdir):
    _load(client)
    os.remove(workdir / "tiny" / "model_modelfx.pt")  # gone between the table and the job
    before = snapshot(workdir)
    job = client.post("/api/jobs/compress", json={"method": "PR_L2", "ratio": 0.5}).json()
    done = _wait(client, job["id"])
    assert done["state"] == "failed" and "does not exist in the work directory" in done["error"]
    assert "\n" not in done["error"]
    assert snapshot(workdir) == before


def test_bad_models_and_no_model(client, workdir):
    response = client.post("/api/preview", json={"method": "PR_L2", "ratio": 0.5})
    assert response.status_code == 400 and "no model loaded" in response.json()["error"]
    (workdir / "junk.pt").write_bytes(b"not a model at all")
    torch.save(official_state_dict(PIDNet(**TINY)), workdir / "tiny_weights.pt")
    cases = [
        ({"model": "junk.pt"}, "not a model file"),
        ({"model": "../outside.pt"}, "outside the work directory"),
        ({"model": "tiny_weights.pt"}, "holds weights only: pick the config"),
        ({"model": "tiny_weights.pt", "config": "builtin:configs/cityscapes/pidnet_small_cityscapes.yaml"},
         "belongs to another PIDNet variant|trained for 5 classes"),
        ({"model": BODY, "config": "builtin:configs/cityscapes/pidnet_small_cityscapes.yaml"}, "needs no config"),
        ({"model": BODY, "input_size": [8, 8]}, "out of range"),
        ({"model": "tiny_weights.pt", "config": "builtin:../README.yaml"}, "not one of the shipped configs"),
        ({"model": "tiny_weights.pt", "config": "builtin:../README.md"}, r"is not a config \(.yaml\)"),
    ]
    for body, match in cases:
        response = client.post("/api/model", json=body)
        assert response.status_code == 400, body
        assert re.search(match, response.json()["error"]), response.json()["error"]


def test_upload_then_load(workdir):
    module_bytes = (workdir / "tiny" / "model_modelfx.pt").read_bytes()
    with TestClient(create_app(workdir)) as strict:
        response = strict.post("/api/upload", files={"file": ("body.pt", io.BytesIO(module_bytes))})
        assert response.status_code == 400 and "--allow-pickle-uploads" in response.json()["error"]
        response = strict.post("/api/upload", files={"file": ("bad.yaml", io.BytesIO(b"MODEL:\n  NAMEX: 1\n"))})
        assert response.status_code == 400 and "unknown config key" in response.json()["error"]
        assert not (workdir / "uploads").exists()
    with TestClient(create_app(workdir, allow_pickle_uploads=True)) as trusting:
        response = trusting.post("/api/upload", files={"file": ("body.pt", io.BytesIO(module_bytes))})
        assert response.json() == {"name": "uploads/body.pt"}
        table = trusting.post("/api/model", json={"model": "uploads/body.pt", "input_size": SIZE}).json()
        assert table["totals"]["layers"] > 10 and table["source"]["head"] == ""


def test_decomposition_preview_and_compress(client):
    pytest.importorskip("models.compression.decompose", reason="filter decomposition not merged")
    _load(client)
    body = {"method": "FD_SVD", "recommendation": "vbmf", "ratio": 0.5}
    preview = client.post("/api/preview", json=body)
    assert preview.status_code == 200, preview.text
    preview = preview.json()
    assert preview["decomposed_layers"] > 0 and preview["macs"][1] < preview["macs"][0]
    done = _wait(client, client.post("/api/jobs/compress", json=body).json()["id"])
    assert done["state"] == "done", done
    assert done["result"]["after"]["macs"] == preview["macs"][1]
    assert "--method FD_SVD --recommendation vbmf --ratio 0.5" in done["result"]["commands"][0]
    bad = client.post("/api/preview", json={"method": "FD_SVD", "recommendation": "vbmf", "ratio": 2})
    assert bad.status_code == 400 and "\n" not in bad.json()["error"]


def test_checkpoint_and_config_are_exported_then_compressed(client, workdir):
    torch.manual_seed(0)
    net = PIDNet(m=2, n=3, planes=32, ppm_planes=96, head_planes=128, num_classes=19)  # PIDNet-S
    torch.save(official_state_dict(net), workdir / "s.pt")
    (workdir / "s.yaml").write_text("MODEL:\n  NAME: pidnet_s\nDATASET:\n  NUM_CLASSES: 19\n"
                                    "TEST:\n  IMAGE_SIZE: [128, 64]\n")
    table = client.post("/api/model", json={"model": "s.pt", "config": "s.yaml"})
    assert table.status_code == 200, table.text
    assert table.json()["input_size"] == [64, 128]  # TEST.IMAGE_SIZE is width, height
    job = client.post("/api/jobs/compress", json={"method": "PR_L2", "ratio": 0.3}).json()
    done = _wait(client, job["id"])
    assert done["state"] == "done", done
    export_line, compress_line = done["result"]["commands"]
    assert export_line.startswith("python tools/export_netspresso.py --cfg ") and "TEST.MODEL_FILE" in export_line
    assert "--model " + str(workdir / done["result"]["run"] / "model_modelfx.pt") in compress_line
    names = sorted(os.path.basename(f) for f in done["result"]["files"])
    assert names == ["command.sh", "compressed_pidnet.json", "compressed_pidnet.pt", "model_headfx.pt", "model_modelfx.pt"]


def test_jobs_queue_behind_each_other_and_cancel_through_the_api(client, workdir):
    _load(client)
    release = threading.Event()
    started = threading.Event()
    blocker = client.app.state.console.jobs.submit("test", "blocker",
                                                   lambda job: started.set() or release.wait(30))
    assert started.wait(30)
    before = snapshot(workdir)
    queued = client.post("/api/jobs/compress", json={"method": "PR_L2", "ratio": 0.5}).json()
    assert queued["state"] == "queued"
    assert [j["state"] for j in client.get("/api/jobs").json()["jobs"]] == ["running", "queued"]
    cancelled = client.post(f"/api/jobs/{queued['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    release.set()
    assert _wait(client, blocker.id)["state"] == "done"
    assert snapshot(workdir) == before
    assert client.get("/api/jobs/999").status_code == 400


def test_mac_budget_through_the_console(client):
    if "target_macs" not in inspect.signature(pruner.compress_model).parameters:
        pytest.skip("compression to a MAC budget not merged")
    _load(client)
    done = _wait(client, client.post("/api/jobs/compress", json={"method": "PR_L2", "budget": "target_macs",
                                                                  "budget_value": 0.7}).json()["id"])
    assert done["state"] == "done", done
    assert done["result"]["after"]["macs"] <= 0.7 * 1.02 * done["result"]["before"]["macs"]
    assert "--target-macs 0.7" in done["result"]["commands"][0] and "--ratio" not in done["result"]["commands"][0]
    # A budget has no preview, so compress_model validates it inside the job: one line there.
    failed = _wait(client, client.post("/api/jobs/compress", json={"method": "PR_L2", "budget": "target_macs",
                                                                   "budget_value": 1.5}).json()["id"])
    assert failed["state"] == "failed" and "\n" not in failed["error"] and "(0, 1)" in failed["error"]


@pytest.mark.slow
def test_quantize_the_compressed_result(client, workdir):
    from utils.console.quantize import quantize_available

    if not quantize_available() or importlib.util.find_spec("models.deploy") is None:
        pytest.skip("tools/quantize.py not merged")
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    (workdir / "calib").mkdir()
    for i in range(3):
        cv2.imwrite(str(workdir / "calib" / f"{i}.png"), rng.integers(0, 255, (64, 128, 3), dtype=np.uint8))
    assert client.get("/api/files").json()["image_folders"] == [{"name": "calib", "images": 3}]
    _load(client)
    run = _wait(client, client.post("/api/jobs/compress", json={"method": "PR_L2", "ratio": 0.5}).json()["id"])
    body = {"run": run["result"]["run"], "calib_dir": "calib", "precision": "int8", "engine": "onnxruntime"}
    bad = client.post("/api/jobs/quantize", json={**body, "calib_dir": "../x"})
    assert bad.status_code == 400 and "outside the work directory" in bad.json()["error"]
    done = _wait(client, client.post("/api/jobs/quantize", json=body).json()["id"])
    assert done["state"] == "done", done
    names = [os.path.basename(f) for f in done["result"]["files"]]
    assert "model_int8.onnx" in names and "quantize_report.json" in names
    assert done["result"]["commands"][0].startswith("python tools/quantize.py --netspresso --model ")
