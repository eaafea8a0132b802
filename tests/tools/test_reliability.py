"""Bad inputs and faults across the tools: one ``error:`` line naming the path, exit 2, no traceback,
no output written and no empty folder left behind.

One case per class goes through a real process (the CLI as a user runs it); the variants run the
same ``main`` in this process. Every case fails before a dataset is read or a model is run.
"""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from models.netspresso import export_pidnet
from models.pidnet import PIDNet
from utils.cli import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = "configs/cityscapes/pidnet_small_cityscapes.yaml"
SAMPLE = os.path.join(ROOT, "samples", "synthetic_000.png")


def cli(tool, *argv, timeout=180):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, f"tools/{tool}.py", *argv], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def tool_main(name):
    spec = importlib.util.spec_from_file_location(f"_reliability_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_process(name, argv, capsys):
    module = tool_main(name)
    parser = module.get_args_parser()
    args = parser.parse_intermixed_args(argv) if name in ("eval", "export_netspresso") else parser.parse_args(argv)
    assert run_main(module.main, args) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def fx_files(tmp_path_factory):
    """A tiny PIDNet exported as body/head files, plus a copy of the body with one NaN weight."""
    base = tmp_path_factory.mktemp("fx")
    torch.manual_seed(0)
    body, head = export_pidnet(PIDNet(m=2, n=3, num_classes=19, planes=8, ppm_planes=16, head_planes=16))
    torch.save(body, base / "model_modelfx.pt")
    torch.save(head, base / "model_headfx.pt")
    with torch.no_grad():
        body.get_submodule("layer2.0.conv1").weight.view(-1)[5] = float("nan")
    torch.save(body, base / "nan_modelfx.pt")
    return base


# 1. Any file-system error, checked before the work starts.

def test_eval_json_into_a_folder_fails_before_evaluating(tmp_path):
    last = cli("eval", "--cfg", CFG, "--device", "cpu", "--json", str(tmp_path),
               "DATASET.ROOT", str(tmp_path / "no_data") + "/", "TEST.MODEL_FILE", str(tmp_path / "none.pt"))
    assert f"--json {tmp_path} is a directory" in last


@pytest.mark.parametrize("tool, argv, message", [
    ("export_onnx", ["--a", "pidnet-s", "--output", "{blocker}/sub/m.onnx"], "{blocker} is a file, not a folder"),
    ("compress", ["--model", "{fx}/model_modelfx.pt", "--ratio", "0.5", "--output", "{blocker}/c.pt"],
     "--output {blocker}/c.pt cannot be created"),
    ("export_netspresso", ["--cfg", CFG, "TEST.MODEL_FILE", "x.pt", "--output-dir", "{blocker}"],
     "--output-dir {blocker} is a file, not a folder"),
    ("custom", ["--r", SAMPLE, "--o", "{blocker}"], "--output {blocker} is a file, not a folder"),
    ("make_lists", ["--root", "{tmp}", "--out", "{blocker}/lists"], "{blocker} is a file, not a folder"),
])
def test_output_locations_are_checked_up_front(tmp_path, fx_files, capsys, tool, argv, message):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    fill = dict(blocker=blocker, fx=fx_files, tmp=tmp_path)
    last = in_process(tool, [a.format(**fill) for a in argv], capsys)
    assert message.format(**fill) in last


# 3. Non-finite weights (every state-dict format: tests/models/test_checkpoint.py).

def test_custom_refuses_a_nan_module_and_writes_no_folder(tmp_path, fx_files):
    out = tmp_path / "outputs"
    last = cli("custom", "--netspresso", "--model", str(fx_files / "nan_modelfx.pt"), "--r", SAMPLE,
               "--o", str(out), "--device", "cpu")
    assert f"{fx_files / 'nan_modelfx.pt'} holds non-finite weights: tensor 'layer2.0.conv1.weight'" in last
    assert not out.exists()


def test_export_onnx_refuses_a_nan_state_dict(tmp_path, capsys):
    from models.checkpoint import official_state_dict
    from models.pidnet import build_pidnet

    state = official_state_dict(build_pidnet("pidnet_s", 19, augment=False))
    state["model.final_layer.conv2.bias"][0] = float("inf")
    torch.save(state, tmp_path / "inf.pt")
    last = in_process("export_onnx", ["--a", "pidnet-s", "--p", str(tmp_path / "inf.pt"),
                                      "--output", str(tmp_path / "m.onnx")], capsys)
    assert f"{tmp_path / 'inf.pt'} holds non-finite weights: tensor 'model.final_layer.conv2.bias'" in last
    assert os.listdir(tmp_path) == ["inf.pt"]


# 4. Config shapes and ranges, at load time.

def test_eval_refuses_a_one_element_image_size(tmp_path):
    last = cli("eval", "--cfg", CFG, "--device", "cpu", "TEST.IMAGE_SIZE", "[1024]")
    assert "TEST.IMAGE_SIZE [1024]" in last and CFG in last and "two positive integers" in last


@pytest.mark.parametrize("text, message", [("", "is empty"), ("- TRAIN\n- LR\n", "holds a YAML list")])
def test_train_refuses_an_empty_or_list_yaml(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    last = in_process("train", ["--cfg", str(bad), "--device", "cpu", "OUTPUT_DIR", str(tmp_path / "out")], capsys)
    assert f"config file {bad} {message}" in last
    assert os.listdir(tmp_path) == ["bad.yaml"]


def test_folder_as_cfg_and_as_checkpoint(tmp_path, capsys):
    assert f"--cfg {tmp_path} is a folder" in in_process("eval", ["--cfg", str(tmp_path)], capsys)
    last = in_process("export_netspresso", ["--cfg", CFG, "TEST.MODEL_FILE", str(tmp_path), "--device", "cpu",
                                            "--output-dir", str(tmp_path / "export")], capsys)
    assert f"checkpoint {tmp_path} is a folder" in last
    assert not (tmp_path / "export").exists()


# 5. The heads file where the body goes (or the two swapped): one check in the loader
#    (models.netspresso.load_netspresso, also behind train and eval: tests/models/test_netspresso.py).

def test_compress_given_the_head_names_its_own_options(tmp_path, fx_files):
    last = cli("compress", "--model", str(fx_files / "model_headfx.pt"), "--ratio", "0.5",
               "--output", str(tmp_path / "c.pt"))
    assert f"{fx_files / 'model_headfx.pt'} holds the auxiliary heads" in last and "as --model" in last
    assert not os.listdir(tmp_path)


def test_compress_given_a_state_dict_is_told_to_export_it(tmp_path, capsys):
    torch.save({"model.conv1.0.weight": torch.zeros(1)}, tmp_path / "best.pt")
    last = in_process("compress", ["--model", str(tmp_path / "best.pt"), "--ratio", "0.5",
                                   "--output", str(tmp_path / "c.pt")], capsys)
    assert "run tools/export_netspresso.py" in last and "--p" not in last and "TEST.MODEL_FILE" not in last


@pytest.mark.parametrize("tool, argv, message", [
    ("custom", ["--netspresso", "--model", "{fx}/model_headfx.pt", "--r", SAMPLE, "--o", "{tmp}/outputs"],
     "{fx}/model_headfx.pt holds the auxiliary heads"),
    ("export_onnx", ["--netspresso", "--model", "{fx}/model_headfx.pt", "--output", "{tmp}/m.onnx"],
     "{fx}/model_headfx.pt holds the auxiliary heads"),
])
def test_head_as_model_or_swapped(tmp_path, fx_files, capsys, tool, argv, message):
    fill = dict(fx=fx_files, tmp=tmp_path)
    last = in_process(tool, [a.format(**fill) for a in argv], capsys)
    assert message.format(**fill) in last
    assert not (tmp_path / "outputs").exists()


# 6. export_onnx reports the opset it wrote.

def test_export_onnx_opset_out_of_range():
    last = cli("export_onnx", "--a", "pidnet-s", "--opset", "3", "--output", "never.onnx")
    assert "--opset 3 is not supported: use 11.." in last
    assert not os.path.exists(os.path.join(ROOT, "never.onnx"))


def test_export_onnx_reports_the_opset_written(tmp_path, fx_files, capsys):
    import onnx

    output = tmp_path / "m.onnx"
    module = tool_main("export_onnx")
    args = module.get_args_parser().parse_args(["--netspresso", "--model", str(fx_files / "model_modelfx.pt"),
                                                "--opset", "13", "--r", "64", "64", "--output", str(output),
                                                "--device", "cpu"])
    assert module.main(args) == 0
    assert "opset 13" in capsys.readouterr().out
    assert [o.version for o in onnx.load(str(output)).opset_import if o.domain in ("", "ai.onnx")] == [13]


# 7. No empty folders from failed runs (train: tests/tools/test_train_output.py).

def test_demo_report_only_without_a_demo_creates_nothing(tmp_path, capsys):
    last = in_process("demo", ["--report-only", "--workdir", str(tmp_path / "work"),
                               "--report-dir", str(tmp_path / "report")], capsys)
    assert "--report-only needs a finished demo" in last
    assert os.listdir(tmp_path) == []
