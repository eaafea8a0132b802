"""tools/export_onnx.py: verified, atomic ONNX export of PIDNet and of compressed modules."""
import os
import subprocess
import sys

import pytest
import torch
import torch.fx

from models.calibration import realistic_random_weights
from models.checkpoint import official_state_dict
from models.pidnet import PIDNet, pidnet_s

TOOL = "tools/export_onnx.py"


def _load_tool(repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_onnx_tool", os.path.join(repo_root, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conditioned(model, seed=0):
    return realistic_random_weights(model, seed)


def ort_logits(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def test_cfg_export_verifies_and_is_dynamic(repo_root, tmp_path, capsys):
    torch.manual_seed(0)
    model = conditioned(pidnet_s(19, augment=True))
    checkpoint = tmp_path / "best.pt"
    torch.save(official_state_dict(model), checkpoint)
    tool = _load_tool(repo_root)
    output = tmp_path / "out" / "pidnet_s.onnx"
    cfg = os.path.join(repo_root, "configs/cityscapes/pidnet_small_cityscapes.yaml")
    args = tool.get_args_parser().parse_args(
        ["--cfg", cfg, "TEST.MODEL_FILE", str(checkpoint), "--r", "64", "96", "--output", str(output),
         "--device", "cpu"])
    assert tool.main(args) == 0
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and f"wrote {output}" in printed
    assert os.listdir(output.parent) == ["pidnet_s.onnx"]
    images = torch.randn(1, 3, 72, 120)  # another size than the export's
    with torch.inference_mode():
        expected = model(images)[1]
    assert (ort_logits(str(output), images) - expected).abs().max().item() < 1e-3


def test_netspresso_module_export(repo_root, tmp_path, capsys):
    torch.manual_seed(0)
    net = conditioned(PIDNet(m=2, n=3, num_classes=4, planes=8, ppm_planes=16, head_planes=16, augment=True))
    module_file = tmp_path / "best_model_model.pt"
    torch.save(torch.fx.symbolic_trace(net), module_file)
    tool = _load_tool(repo_root)
    output = tmp_path / "small.onnx"
    args = tool.get_args_parser().parse_args(
        ["--netspresso", "--model", str(module_file), "--r", "100", "150", "--output", str(output),
         "--device", "cpu"])
    assert tool.main(args) == 0
    images = torch.randn(2, 3, 100, 150)
    with torch.inference_mode():
        expected = net(images)[1]
    assert (ort_logits(str(output), images) - expected).abs().max().item() < 1e-3


def test_failed_verification_writes_nothing(repo_root, tmp_path):
    from utils.errors import ModelError

    torch.manual_seed(0)
    net = conditioned(PIDNet(m=2, n=3, num_classes=4, planes=8, ppm_planes=16, head_planes=16, augment=False))
    module_file = tmp_path / "m.pt"
    torch.save(net, module_file)
    tool = _load_tool(repo_root)
    output = tmp_path / "out" / "m.onnx"
    args = tool.get_args_parser().parse_args(
        ["--netspresso", "--model", str(module_file), "--r", "64", "64", "--output", str(output),
         "--tolerance", "1e-30", "--device", "cpu"])
    with pytest.raises(ModelError, match="nothing written"):
        tool.main(args)
    assert not output.parent.exists()  # nor the folder it would have created


@pytest.mark.parametrize("argv,message", [
    ([], "nothing to export"),
    (["--netspresso"], "--netspresso needs --model"),
    (["--a", "pidnet-s", "--model", "x.pt"], "needs --netspresso"),
    (["--a", "pidnet-q"], "unknown model name 'pidnet-q'"),
    (["--a", "pidnet-s", "--p", "missing.pt"], "checkpoint not found: missing.pt"),
    (["--cfg", "configs/cityscapes/pidnet_small_cityscapes.yaml"], "TEST.MODEL_FILE"),
])
def test_bad_input_is_one_clear_line(repo_root, tmp_path, capsys, argv, message):
    from utils.cli import run_main

    tool = _load_tool(repo_root)
    args = tool.get_args_parser().parse_args([*argv, "--output", str(tmp_path / "m.onnx")])
    assert run_main(tool.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not os.path.exists(tmp_path / "m.onnx")


def test_cli_error_has_no_traceback(repo_root, tmp_path):
    result = subprocess.run([sys.executable, TOOL, "--netspresso", "--model", str(tmp_path / "none.pt")],
                            cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model file not found")
    assert "Traceback" not in result.stderr
