"""CLIs of the NetsPresso workflow: export -> compress (offline / fake cloud) -> load."""
import enum
import json
import os
import re
import subprocess
import sys
import types

import pytest
import torch
import torch.nn as nn

import tools.compress as compress
import tools.export_netspresso as export
from models.checkpoint import official_state_dict
from models.netspresso import export_pidnet, load_netspresso
from models.pidnet import PIDNet, pidnet_s
from utils.cli import run_main
from utils.io import atomic_save

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join(ROOT, "configs", "cityscapes", "pidnet_small_cityscapes.yaml")
FAST = ["--trace-size", "64", "64", "--input-size", "64", "128"]


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def tiny_body(tmp_path_factory):
    torch.manual_seed(0)
    body, head = export_pidnet(PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5).eval())
    folder = tmp_path_factory.mktemp("tiny")
    atomic_save(body, folder / "model_modelfx.pt")
    atomic_save(head, folder / "model_headfx.pt")
    return str(folder / "model_modelfx.pt"), str(folder / "model_headfx.pt")


def _cli(module, argv, capsys):
    code = run_main(module.main, module.get_args_parser().parse_intermixed_args(argv))
    return code, capsys.readouterr()


def test_export_then_compress_full_pidnet_s(tmp_path, capsys):
    torch.manual_seed(0)
    net = pidnet_s(19).eval()
    ckpt = tmp_path / "s.pt"
    torch.save(official_state_dict(net), ckpt)
    out = tmp_path / "export"
    code, io = _cli(export, ["--cfg", CFG, "TEST.MODEL_FILE", str(ckpt), "TEST.IMAGE_SIZE", "[96, 64]",
                             "--output-dir", str(out), "--device", "cpu"], capsys)
    assert code == 0, io.err
    assert 'input_shapes: [{"batch": 1, "channel": 3, "dimension": [64, 96]}]' in io.out
    model_path, head_path = out / "model_modelfx.pt", out / "model_headfx.pt"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = net(x)
        got = load_netspresso(model_path, head_path).eval()(x)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))

    compressed = tmp_path / "compressed_pidnet.pt"
    code, io = _cli(compress, ["--model", str(model_path), "--method", "PR_L2", "--recommendation", "slamp",
                               "--ratio", "0.6", "--output", str(compressed)] + FAST, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "compressed_pidnet.json").read_text())
    assert report["backend"] == "offline" and report["method"] == "PR_L2"
    assert 0.6 <= report["ratio_achieved"] < 0.61
    assert report["after"]["params"] < report["before"]["params"]
    assert set(report["before"]["macs"]) == {"64x128"}
    module = load_netspresso(compressed, head_path).eval()
    with torch.no_grad():
        outputs = module(x)
    assert [o.shape for o in outputs] == [o.shape for o in expected]


def test_manual_pr_id_and_extra_sizes(tiny_body, tmp_path, capsys):
    ratios = tmp_path / "ratios.json"
    ratios.write_text(json.dumps({"layer3.0.conv1": 0.5}))
    code, io = _cli(compress, ["--model", tiny_body[0], "--recommendation", "manual", "--layer-ratios", str(ratios),
                               "--output", str(tmp_path / "m.pt"), "--report", str(tmp_path / "r.json"),
                               "--extra-size", "32", "64"] + FAST, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["layers"]["layer3.0.conv1"]["out"] == [32, 16]
    assert set(report["after"]["macs"]) == {"64x128", "32x64"}
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps({"layer3.0.conv1": [1, 2, 3]}))
    code, io = _cli(compress, ["--model", str(tmp_path / "m.pt"), "--method", "PR_ID", "--indices", str(ids),
                               "--output", str(tmp_path / "m2.pt")] + FAST, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "m2.json").read_text())
    assert report["layers"]["layer3.0.conv1"]["out"] == [16, 13]


@pytest.mark.parametrize("argv, match", [
    (["--method", "PR_XX", "--ratio", "0.5"], "unknown compression method 'PR_XX'"),
    (["--ratio", "1.5"], r"\(0, 1\)"),
    (["--ratio", "0"], r"\(0, 1\)"),
    ([], r"\(0, 1\)"),
    (["--ratio", "0.5", "--backend", "cloud9"], "unknown --backend"),
    (["--recommendation", "manual", "--layer-ratios", "missing.json"], "not found"),
])
def test_bad_requests_are_one_line(tiny_body, tmp_path, capsys, argv, match):
    output = tmp_path / "out.pt"
    code, io = _cli(compress, ["--model", tiny_body[0], "--output", str(output)] + argv + FAST, capsys)
    assert code == 2
    lines = [line for line in io.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(match, lines[0])
    assert "Traceback" not in io.err
    assert not output.exists() and not (tmp_path / "out.json").exists()


def test_bad_model_files(tmp_path, capsys):
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    code, io = _cli(compress, ["--model", str(tmp_path / "weights.pt"), "--ratio", "0.5",
                               "--output", str(tmp_path / "o.pt")], capsys)
    assert code == 2 and "not a whole-module file" in io.err
    atomic_save(nn.Linear(3, 3), tmp_path / "linear.pt")
    code, io = _cli(compress, ["--model", str(tmp_path / "linear.pt"), "--ratio", "0.5",
                               "--output", str(tmp_path / "o.pt")] + FAST, capsys)
    assert code == 2 and "does not run" in io.err
    assert not (tmp_path / "o.pt").exists()


def test_missing_model_subprocess_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compress.py"), "--model",
                             str(tmp_path / "nope.pt"), "--ratio", "0.6", "--output", str(tmp_path / "c.pt")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: model file not found: {tmp_path / 'nope.pt'}. "
                                                   "Check the --model path"]


def test_export_bad_inputs(tmp_path, capsys):
    code, io = _cli(export, ["--cfg", CFG, "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "TEST.MODEL_FILE" in io.err
    code, io = _cli(export, ["--cfg", CFG, "TEST.MODEL_FILE", str(tmp_path / "none.pt"),
                             "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "not found" in io.err
    assert not list(tmp_path.iterdir())


def test_netspresso_backend_with_fake_client(tiny_body, tmp_path, capsys, monkeypatch):
    calls = []
    package, enums = types.ModuleType("netspresso"), types.ModuleType("netspresso.enums")
    enums.CompressionMethod = enum.Enum("CompressionMethod", ["PR_L2", "PR_GM", "PR_ID"])
    enums.RecommendationMethod = enum.Enum("RecommendationMethod", ["SLAMP", "VBMF"])

    class Compressor:
        def recommendation_compression(self, **kwargs):
            calls.append(kwargs)
            path = os.path.join(kwargs["output_dir"], "served.pt")
            atomic_save(torch.load(kwargs["input_model_path"], weights_only=False), path)
            return {"status": "completed", "compressed_model_path": path}

    package.NetsPresso = lambda **kw: types.SimpleNamespace(compressor_v2=Compressor)
    monkeypatch.setitem(sys.modules, "netspresso", package)
    monkeypatch.setitem(sys.modules, "netspresso.enums", enums)
    monkeypatch.setenv("NETSPRESSO_API_KEY", "secret-key")
    output = tmp_path / "cloud.pt"
    code, io = _cli(compress, ["--backend", "netspresso", "--model", tiny_body[0], "--ratio", "0.6",
                               "--output", str(output), "--input-size", "64", "128"], capsys)
    assert code == 0, io.err
    assert "secret-key" not in io.out + io.err
    assert calls[0]["input_shapes"] == [{"batch": 1, "channel": 3, "dimension": [64, 128]}]
    assert calls[0]["recommendation_method"] is enums.RecommendationMethod.SLAMP
    report = json.loads((tmp_path / "cloud.json").read_text())
    assert report["backend"] == "netspresso" and report["ratio_requested"] == 0.6
    assert isinstance(torch.load(output, weights_only=False), nn.Module)
    monkeypatch.delenv("NETSPRESSO_API_KEY")
    code, io = _cli(compress, ["--backend", "netspresso", "--model", tiny_body[0], "--ratio", "0.6",
                               "--output", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "NETSPRESSO_API_KEY" in io.err
