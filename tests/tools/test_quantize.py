"""tools/quantize.py: the offline quantizer's CLI (calibration sets, outputs, bad input).

The model is the ``trained_tiny`` fixture's ONNX export (tests/conftest.py); the config is the
synthetic one pointed at the fixture's scenes, at 64x128.
"""
import json
import os

import cv2
import numpy as np
import pytest

import tools.quantize as quantize
from utils.cli import run_main

CFG = "configs/synthetic/pidnet_small_synthetic.yaml"


@pytest.fixture(autouse=True)
def _cwd(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


def cli(argv, capsys):
    """``(exit code, stdout, stderr)`` of the tool run in-process."""
    code = run_main(quantize.main, quantize.parse_args([str(a) for a in argv]))
    out, err = capsys.readouterr()
    return code, out, err


def base(trained_tiny, out_dir, *extra):
    return (["--cfg", CFG, "--onnx", trained_tiny["onnx"], "--output-dir", out_dir, "--calib-images", 4,
             "--snr-images", 2, "--threads", 1, "--input-size", 64, 128]
            + list(extra) + ["DATASET.ROOT", trained_tiny["root"], "TEST.IMAGE_SIZE", "[128,64]"])


def test_int8_from_train_set_with_eval_and_report(trained_tiny, tmp_path, capsys):
    out_dir = tmp_path / "q"
    code, out, err = cli(base(trained_tiny, out_dir, "--eval", "--seed", 3), capsys)
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == ["model_int8.onnx", "quantize_report.json"]
    assert os.listdir(tmp_path) == ["q"]  # no temporary folder left
    report = json.loads((out_dir / "quantize_report.json").read_text())
    assert report["calibration"]["images"] == 4 and report["calibration"]["seed"] == 3
    assert report["calibration"]["input_size"] == [64, 128]
    assert report["calibration"]["source"].endswith("list/cityscapes/train.lst")
    assert report["sizes_bytes"]["int8"] < report["sizes_bytes"]["fp32"]
    assert set(report["logits_snr_db"]) == {"onnxruntime", "openvino"}
    # The default (moving-average) calibration of 4 images gives ~7 dB on this tiny model (its
    # mIoU effect is what matters; benchmarks/RESULTS.md); a wrong scale or zero point gives < 1 dB.
    assert min(report["logits_snr_db"].values()) > 4.0
    assert report["float_layers"] == [] and report["mixed"] is None
    assert 0.0 <= report["eval"]["int8_miou"] <= 1.0 and report["eval"]["fp32_miou"] > 0.0
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out_dir / 'model_int8.onnx'} (int8, onnxruntime, 4 ")
    assert "mIoU fp32" in lines[0]


def test_same_seed_same_model_other_seed_other_images(trained_tiny, tmp_path, capsys):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        code, _, err = cli(base(trained_tiny, tmp_path / name, "--seed", seed), capsys)
        assert code == 0, err
        runs[name] = ((tmp_path / name / "model_int8.onnx").read_bytes(),
                      json.loads((tmp_path / name / "quantize_report.json").read_text())["calibration"]["names"])
    assert runs["a"] == runs["b"]
    assert runs["a"][1] != runs["c"][1] and runs["a"][0] != runs["c"][0]


def test_calib_dir_and_openvino_engine(trained_tiny, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(trained_tiny["images"][:3]):
        bgr = np.clip(image.transpose(1, 2, 0)[:, :, ::-1] * 60 + 120, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"img{i}.png"), bgr)
    (folder / "notes.txt").write_text("not an image")
    code, out, err = cli(["--onnx", trained_tiny["onnx"], "--calib-dir", folder, "--input-size", 64, 128,
                          "--engine", "openvino", "--output-dir", tmp_path / "q", "--snr-images", 2,
                          "--threads", 1], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "q" / "quantize_report.json").read_text())
    assert report["engine"] == "openvino" and report["calibration"]["names"] == ["img0.png", "img1.png", "img2.png"]
    assert "(int8, openvino, 3 calibration images at 64x128" in out


@pytest.mark.slow
def test_mixed_keeps_layers_in_float_and_reaches_target(trained_tiny, tmp_path, capsys, monkeypatch):
    from models.deploy import mixed_precision as mp

    # The sensitivity of every node takes minutes on CI: measure a dozen (first and last ones).
    real = mp.quantizable_layers
    monkeypatch.setattr(mp, "quantizable_layers", lambda model, calibrated=None: (
        lambda names: names[:6] + names[-6:])(real(model, calibrated)))
    code, _, err = cli(base(trained_tiny, tmp_path / "plain", "--calibration", "minmax"), capsys)
    assert code == 0, err
    plain = json.loads((tmp_path / "plain" / "quantize_report.json").read_text())["logits_snr_db"]["onnxruntime"]
    # +0.4 dB: reachable with a dozen layers in float (they give ~+0.9 dB on this model).
    code, out, err = cli(base(trained_tiny, tmp_path / "mixed", "--calibration", "minmax", "--mixed", "--min-snr",
                              round(plain + 0.4, 2)), capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "mixed" / "quantize_report.json").read_text())
    assert len(report["float_layers"]) >= 1 and len(report["layer_snr_db"]) == 12
    assert report["logits_snr_db"]["onnxruntime"] >= round(plain + 0.4, 2) > plain
    assert report["mixed"]["reached_snr_db"] == pytest.approx(report["logits_snr_db"]["onnxruntime"], abs=1e-3)


def test_fp16_where_the_cpu_has_it_and_error_where_not(trained_tiny, tmp_path, capsys, monkeypatch):
    import openvino

    class Core:
        capabilities = ["FP32", "INT8"]

        def get_property(self, device, name):
            return self.capabilities

    monkeypatch.setattr(openvino, "Core", Core)
    code, _, err = cli(base(trained_tiny, tmp_path / "no", "--precision", "fp16"), capsys)
    assert code == 2 and err.startswith("error: --precision fp16: this CPU has no native fp16 arithmetic")
    assert not (tmp_path / "no").exists()
    monkeypatch.setattr(Core, "capabilities", ["FP32", "FP16", "INT8"])
    monkeypatch.undo()  # the real Core is needed below to run the model with OpenVINO
    from models.deploy import quantize as q

    monkeypatch.setattr(q, "fp16_unsupported_reason", lambda device: None)
    code, out, err = cli(base(trained_tiny, tmp_path / "yes", "--precision", "fp16"), capsys)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "yes")) == ["model_fp16.onnx", "quantize_report.json"]
    report = json.loads((tmp_path / "yes" / "quantize_report.json").read_text())
    assert min(report["logits_snr_db"].values()) > 40.0


def test_fp16_capability_check(monkeypatch):
    import openvino

    from utils.errors import DeviceError

    class Core:
        def __init__(self):
            self.capabilities = Core.capabilities

        def get_property(self, device, name):
            return self.capabilities

    monkeypatch.setattr(openvino, "Core", Core)
    Core.capabilities = ["FP32", "FP16"]
    quantize.check_precision_device("fp16", "cpu")
    Core.capabilities = ["FP32", "BF16"]
    with pytest.raises(DeviceError, match="no native fp16"):
        quantize.check_precision_device("fp16", "cpu")
    quantize.check_precision_device("int8", "cpu")


def _corrupt(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x08\x07garbage" * 50)
    return path


@pytest.mark.parametrize("case, pattern", [
    ("missing onnx", r"ONNX file not found: .*missing\.onnx"),
    ("corrupt onnx", r"corrupt\.onnx is not a readable ONNX model"),
    ("not a segmenter", r"vector\.onnx takes input 'x' of shape \[1, 10\]: a segmenter"),
    ("wrong classes", r"predicts 19 classes, but 11 are expected"),
    ("empty calib dir", r"--calib-dir .*empty holds no images"),
    ("empty train list", r"list file is empty: .*empty\.lst"),
    ("unknown engine", r"unknown --engine 'tensorrt': use onnxruntime or openvino"),
    ("unknown precision", r"unknown --precision 'int4'"),
    ("min-snr too low", r"--min-snr 0\.0 is out of range"),
    ("min-snr too high", r"--min-snr 500\.0 is out of range"),
    ("cuda missing", r"CUDA is not available here"),
    ("no model", r"nothing to quantize"),
    ("output exists", r"--output-dir .* already exists"),
])
def test_bad_input_is_one_line_and_leaves_nothing(case, pattern, trained_tiny, tmp_path, capsys, request):
    out_dir = tmp_path / "q"
    args = base(trained_tiny, out_dir)
    onnx_at = args.index("--onnx") + 1
    if case == "missing onnx":
        args[onnx_at] = tmp_path / "missing.onnx"
    elif case == "corrupt onnx":
        args[onnx_at] = _corrupt(tmp_path)
    elif case == "not a segmenter":
        args[onnx_at] = request.getfixturevalue("vector_onnx")
    elif case == "wrong classes":
        args += ["DATASET.NUM_CLASSES", "11"]
    elif case == "empty calib dir":
        (tmp_path / "empty").mkdir()
        args += ["--calib-dir", tmp_path / "empty"]
    elif case == "empty train list":
        lists = tmp_path / "root" / "list" / "cityscapes"
        lists.mkdir(parents=True)
        (tmp_path / "root" / "cityscapes").mkdir()
        (lists / "empty.lst").write_text("")
        args += ["DATASET.ROOT", str(tmp_path / "root") + os.sep, "DATASET.TRAIN_SET", "list/cityscapes/empty.lst"]
    elif case == "unknown engine":
        args += ["--engine", "tensorrt"]
    elif case == "unknown precision":
        args += ["--precision", "int4"]
    elif case == "min-snr too low":
        args += ["--mixed", "--min-snr", "0"]
    elif case == "min-snr too high":
        args += ["--mixed", "--min-snr", "500"]
    elif case == "cuda missing":
        if __import__("torch").cuda.is_available():
            pytest.skip("this machine has CUDA")
        args += ["--precision", "fp16", "--device", "cuda"]
    elif case == "no model":
        args = ["--output-dir", out_dir, "--calib-dir", tmp_path]
    elif case == "output exists":
        out_dir.mkdir()
        (out_dir / "keep.txt").write_text("mine")
    code, out, err = cli(args, capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert __import__("re").search(pattern, lines[0]), lines[0]
    if case == "output exists":
        assert os.listdir(out_dir) == ["keep.txt"]
    else:
        assert not out_dir.exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".q.")] == []
