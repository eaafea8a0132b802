"""models/speed/pidnet_speed.py: official timing protocol on the BN-folded model."""
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.fx

from models.pidnet import PIDNet

TOOL = "models/speed/pidnet_speed.py"


@pytest.fixture
def speed(repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("pidnet_speed", os.path.join(repo_root, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeClock:
    """perf_counter that only advances when the fake model runs (deterministic timing)."""

    def __init__(self, seconds_per_call):
        self.now = 0.0
        self.step = seconds_per_call
        self.calls = 0

    def perf_counter(self):
        return self.now

    def runner(self, images):
        self.calls += 1
        self.now += self.step
        return images


def test_measure_speed_follows_the_official_protocol(speed, monkeypatch):
    clock = FakeClock(0.01)
    monkeypatch.setattr(speed.time, "perf_counter", clock.perf_counter)
    images = torch.zeros(1, 3, 8, 8)
    latency_ms, fps, iterations = speed.measure_speed(clock.runner, images, warmup=10, calib_seconds=1.0,
                                                      seconds=6.0, start_iters=1)
    assert latency_ms == pytest.approx(10.0) and fps == pytest.approx(100.0)
    assert iterations == 600  # 6 s at the calibrated 100 FPS
    # 10 warm-up + calibration 1+2+...+128 (the first loop lasting >= 1 s) + 600 timed
    assert clock.calls == 10 + 255 + 600


def test_measure_speed_fixed_iterations(speed, monkeypatch):
    clock = FakeClock(0.5)
    monkeypatch.setattr(speed.time, "perf_counter", clock.perf_counter)
    latency_ms, fps, iterations = speed.measure_speed(clock.runner, torch.zeros(1), warmup=2, iters=3)
    assert (latency_ms, iterations, clock.calls) == (pytest.approx(500.0), 3, 5)
    assert fps == pytest.approx(2.0)


def _run_main(speed, argv):
    return speed.main(speed.get_args_parser().parse_args(argv))


def test_main_times_pidnet_and_prints_fps(speed, capsys):
    assert _run_main(speed, ["--a", "pidnet-s", "--c", "5", "--r", "64", "128", "--device", "cpu",
                             "--backend", "fused", "--warmup", "1", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "backend: fused" in out
    latency, fps = re.search(r"latency: ([\d.]+) ms \| FPS: ([\d.]+)", out).groups()
    assert float(fps) > 0 and float(latency) * float(fps) == pytest.approx(1000.0, rel=0.01)
    diff = float(re.search(r"max abs diff vs eager \(unfolded\) model: (\S+)", out).group(1))
    assert diff < 1e-2  # random-init PIDNet-S logits reach ~1e2; the folded model stays within fp32 rounding


def test_main_auto_backend_with_calibration(speed, capsys):
    assert _run_main(speed, ["--a", "pidnet-s", "--r", "64", "64", "--device", "cpu", "--warmup", "1",
                             "--calib-seconds", "0.05", "--seconds", "0.1", "--no-check"]) == 0
    out = capsys.readouterr().out
    backend = re.search(r"^backend: (\w+) \| iterations: (\d+)", out, re.M)
    assert backend.group(1) in ("fused", "onnxruntime", "openvino") and int(backend.group(2)) >= 1


def test_main_times_a_whole_module_file(speed, tmp_path, capsys):
    net = PIDNet(m=2, n=3, num_classes=3, planes=8, ppm_planes=16, head_planes=16, augment=True).eval()
    path = tmp_path / "best_model_model.pt"
    torch.save(torch.fx.symbolic_trace(net), path)
    assert _run_main(speed, ["--model", str(path), "--r", "64", "96", "--device", "cpu", "--backend",
                             "onnxruntime", "--warmup", "0", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "model: best_model_model.pt" in out and "backend: onnxruntime" in out and "FPS:" in out


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    from models.deploy import export_onnx

    net = PIDNet(m=2, n=3, num_classes=3, planes=8, ppm_planes=16, head_planes=16, augment=False).eval()
    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", torch.randn(1, 3, 64, 96))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_main_times_an_onnx_file(speed, onnx_file, capsys, runtime):
    assert _run_main(speed, ["--onnx", onnx_file, "--r", "64", "96", "--device", "cpu", "--runtime", runtime,
                             "--threads", "1", "--warmup", "1", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "model: tiny.onnx" in out and f"backend: {runtime}" in out and "threads=1" in out
    latency, fps = re.search(r"latency: ([\d.]+) ms \| FPS: ([\d.]+)", out).groups()
    assert float(fps) > 0 and float(latency) * float(fps) == pytest.approx(1000.0, rel=0.01)


@pytest.mark.parametrize("argv,message", [
    (["--onnx", "missing.onnx"], "ONNX file not found: missing.onnx"),
    (["--onnx", "ONNX", "--runtime", "tvm"], "unknown runtime 'tvm'"),
    (["--onnx", "ONNX", "--backend", "fused"], "--onnx FILE is timed as it is"),
    (["--onnx", "ONNX", "--precision", "fp16", "--device", "cpu"], "precision fp16 with onnxruntime needs TensorRT"),
    (["--runtime", "openvino"], "--runtime openvino is for --onnx FILE"),
])
def test_bad_onnx_input_is_one_clear_line(speed, onnx_file, capsys, argv, message):
    from utils.cli import run_main

    argv = [onnx_file if a == "ONNX" else a for a in argv]
    assert run_main(speed.main, speed.get_args_parser().parse_args(argv + ["--r", "64", "96"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


@pytest.mark.parametrize("argv,message", [
    (["--r", "128"], "--r expects two positive integers"),
    (["--a", "pidnet-x"], "unknown model name 'pidnet-x'"),
    (["--backend", "fused", "--device", "cuda:7"], "cuda"),
    (["--model", "missing_module.pt"], "model file not found: missing_module.pt"),
    (["--seconds", "0"], "--seconds"),
])
def test_bad_input_is_one_clear_line(speed, capsys, argv, message):
    from utils.cli import run_main

    assert run_main(speed.main, speed.get_args_parser().parse_args(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_cli_runs_from_the_repo_root(repo_root):
    result = subprocess.run([sys.executable, TOOL, "--a", "pidnet-s", "--r", "32", "64", "--device", "cpu",
                             "--backend", "eager", "--warmup", "0", "--iters", "1"],
                            cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "backend: eager" in result.stdout and "FPS:" in result.stdout


@pytest.mark.gpu
def test_cuda_speed_with_cuda_graphs(speed, capsys):
    assert _run_main(speed, ["--a", "pidnet-s", "--r", "256", "512", "--device", "cuda", "--backend", "fused",
                             "--cuda-graphs", "--precision", "fp16", "--warmup", "2", "--seconds", "0.5",
                             "--calib-seconds", "0.2"]) == 0
    assert "FPS:" in capsys.readouterr().out


def test_main_loads_weights_with_p(speed, tmp_path, capsys):
    from models.checkpoint import official_state_dict
    from models.pidnet import pidnet_s
    from utils.cli import run_main

    checkpoint = tmp_path / "best.pt"
    torch.save(official_state_dict(pidnet_s(11, augment=True)), checkpoint)
    argv = ["--a", "pidnet-s", "--p", str(checkpoint), "--r", "64", "64", "--device", "cpu",
            "--backend", "fused", "--warmup", "0", "--iters", "1"]
    assert run_main(speed.main, speed.get_args_parser().parse_args(argv)) == 2
    assert "trained for 11 classes" in capsys.readouterr().err
    assert _run_main(speed, argv + ["--c", "11"]) == 0
    assert "FPS:" in capsys.readouterr().out
