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
    (["--recommendation", "manual", "--layer-ratios", "missing.json"], r"file not found: missing\.json\. Pass an existing"),
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
    assert code == 2 and f"{tmp_path / 'none.pt'}" in io.err and "not found" in io.err
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


# --------------------------------------------------------------------------- filter decomposition


def test_fd_tk_vbmf_writes_module_and_report(tiny_body, tmp_path, capsys):
    output = tmp_path / "tk.pt"
    code, io = _cli(compress, ["--model", tiny_body[0], "--method", "FD_TK", "--recommendation", "vbmf",
                               "--ratio", "0.5", "--output", str(output), "--device", "cpu"] + FAST, capsys)
    assert code == 0, io.err
    assert "layers decomposed" in io.out
    report = json.loads((tmp_path / "tk.json").read_text())
    assert (report["method"], report["recommendation"], report["ratio_requested"]) == ("FD_TK", "vbmf", 0.5)
    assert report["backend"] == "offline" and report["after"]["macs"]["64x128"] < report["before"]["macs"]["64x128"]
    done = [e for e in report["layers"].values() if e["decomposed"]]
    assert done and all(len(e["ranks"]) == 2 and e["params"][1] < e["params"][0] for e in done)
    module = load_netspresso(output, tiny_body[1]).eval()
    assert [o.shape[1] for o in module(torch.zeros(1, 3, 64, 64))] == [5, 5, 1]


def test_fd_manual_layer_ranks_and_cp_ratio(tiny_body, tmp_path, capsys):
    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"layer3.0.conv1": 2}))
    code, io = _cli(compress, ["--model", tiny_body[0], "--method", "FD_SVD", "--recommendation", "manual",
                               "--layer-ranks", str(ranks), "--output", str(tmp_path / "s.pt")] + FAST, capsys)
    assert code == 2 and "no 1x1 convolution or linear layer named 'layer3.0.conv1'" in io.err
    code, io = _cli(compress, ["--model", tiny_body[0], "--method", "FD_CP", "--recommendation", "manual",
                               "--layer-ranks", str(ranks), "--output", str(tmp_path / "c.pt")] + FAST, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["decomposed_layers"] == 1 and report["layers"]["layer3.0.conv1"]["ranks"] == 2


@pytest.mark.parametrize("argv, ranks, match", [
    (["--method", "FD_TK", "--ratio", "1.5"], None, r"vbmf must be in \[-1, 1\]"),
    (["--method", "FD_SVD", "--ratio", "-2"], None, r"vbmf must be in \[-1, 1\]"),
    (["--method", "PR_L2", "--recommendation", "vbmf", "--ratio", "0.5"], None, "vbmf recommends decomposition"),
    (["--method", "FD_CP", "--recommendation", "vbmf"], None, "vbmf does not recommend CP ranks"),
    (["--method", "FD_CP"], None, "manual decomposition needs ranks"),
    (["--method", "FD_CP", "--recommendation", "manual", "--ratio", "1.5"], None, r"\(0, 1\]"),
    (["--method", "FD_TK", "--recommendation", "manual"], {"layer3.0.conv1": [1, 999]}, "out of range"),
    (["--method", "FD_TK", "--recommendation", "manual"], {"no.such": [1, 1]}, "no KxK convolution named 'no.such'"),
    (["--method", "FD_TK", "--recommendation", "manual"], {"layer3.0.conv1": 4}, r"\[r_in, r_out\]"),
    (["--method", "FD_TK", "--recommendation", "slamp"], None, "slamp recommends pruning"),
    (["--method", "FD_TK", "--layer-ratios", "r.json"], None, "--layer-ratios is for pruning"),
    (["--method", "FD_TK", "--backend", "netspresso"], None, "runs offline here"),
    (["--method", "PR_L2", "--ratio", "0.5"], {"layer3.0.conv1": 1}, "--layer-ranks is for decomposition"),
])
def test_bad_decomposition_requests_are_one_line(tiny_body, tmp_path, capsys, argv, ranks, match):
    extra = []
    if ranks is not None:
        (tmp_path / "ranks.json").write_text(json.dumps(ranks))
        extra = ["--layer-ranks", str(tmp_path / "ranks.json")]
    output = tmp_path / "out.pt"
    code, io = _cli(compress, ["--model", tiny_body[0], "--output", str(output)] + argv + extra + FAST, capsys)
    assert code == 2
    lines = [line for line in io.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(match, lines[0]), io.err
    assert "Traceback" not in io.err
    assert not output.exists() and not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_decompose_finetune_eval_onnx_custom_end_to_end(tmp_path, capsys):
    """FD_TK (vbmf) -> tools/train.py --netspresso (1 epoch) -> eval, ONNX export, custom images."""
    from datasets.synthetic import generate

    generate(str(tmp_path / "data"), num_train=4, num_val=2, num_test=0, size=(128, 64), seed=0,
             layouts=("cityscapes",))
    torch.manual_seed(0)
    body, head = export_pidnet(PIDNet(m=2, n=3, num_classes=19, planes=8, ppm_planes=16, head_planes=16))
    atomic_save(body, tmp_path / "model_modelfx.pt")
    atomic_save(head, tmp_path / "model_headfx.pt")
    code, io = _cli(compress, ["--model", str(tmp_path / "model_modelfx.pt"), "--method", "FD_TK",
                               "--output", str(tmp_path / "tk.pt"), "--device", "cpu"] + FAST, capsys)
    assert code == 0, io.err
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    overrides = ["DATASET.ROOT", f"{tmp_path / 'data'}/", "MODEL.PRETRAINED", "", "TRAIN.IMAGE_SIZE", "[128,64]",
                 "TRAIN.BASE_SIZE", "128", "TEST.IMAGE_SIZE", "[128,64]", "TEST.BASE_SIZE", "128",
                 "TRAIN.BATCH_SIZE_PER_GPU", "2", "TEST.BATCH_SIZE_PER_GPU", "2", "WORKERS", "0",
                 "OUTPUT_DIR", str(out), "LOG_DIR", str(out) + "_tb", "TRAIN.END_EPOCH", "1"]
    run = subprocess.run([sys.executable, "tools/train.py", "--cfg", CFG, "--device", "cpu", "--no-progress",
                          "--netspresso", "--model", str(tmp_path / "tk.pt"),
                          "--head", str(tmp_path / "model_headfx.pt"),
                          *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    exp = out / "cityscapes" / "pidnet_small_cityscapes"
    tuned = load_netspresso(exp / "final_model_model.pt").model
    assert isinstance(tuned.get_submodule(next(n for n, e in json.loads((tmp_path / "tk.json").read_text())
                                               ["layers"].items() if e["decomposed"])), nn.Sequential)
    metrics = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "tools/eval.py", "--cfg", CFG, "--device", "cpu", "--no-progress",
                          "--netspresso", "--model", str(exp / "final_model_model.pt"),
                          "--head", str(exp / "final_model_head.pt"), "--json", str(metrics), *overrides],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 0.0 <= json.loads(metrics.read_text())["mean_iou"] <= 1.0
    onnx_file = tmp_path / "tk.onnx"
    run = subprocess.run([sys.executable, "tools/export_onnx.py", "--netspresso", "--model",
                          str(exp / "final_model_model.pt"), "--r", "64", "128", "--output", str(onnx_file),
                          "--device", "cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and onnx_file.exists(), run.stderr[-3000:]
    images = tmp_path / "data" / "cityscapes" / "leftImg8bit" / "val"
    run = subprocess.run([sys.executable, "tools/custom.py", "--netspresso", "--model",
                          str(exp / "final_model_model.pt"), "--r", str(next(images.rglob("*.png"))),
                          "--o", str(tmp_path / "seg"), "--device", "cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((tmp_path / "seg").glob("*.png"))
