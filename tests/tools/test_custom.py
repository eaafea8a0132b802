import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.calibration import randomize_bn
from models.checkpoint import official_state_dict
from models.pidnet import get_pred_model
from utils.errors import CheckpointError, DatasetError
from utils.visualize import palette_for

import tools.custom as custom


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = get_pred_model("pidnet_s", 19)
    randomize_bn(model, seed=0, calibrate=None)  # so that the prediction is not constant
    path = tmp_path_factory.mktemp("ckpt") / "s19.pt"
    torch.save(official_state_dict(model), path)
    return str(path), model.eval()


def run(argv):
    return custom.main(custom.get_args_parser().parse_args(argv))


def official_prediction(model, bgr):
    """The official tools/custom.py pipeline, written out independently."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    image = bgr.astype(np.float32)[:, :, ::-1] / 255.0
    image = (image - mean) / std
    tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None]
    with torch.no_grad():
        pred = F.interpolate(model(tensor), size=tensor.shape[-2:], mode="bilinear", align_corners=True)
    return pred.argmax(1)[0].numpy()


@pytest.mark.parametrize("text,value", [("True", True), ("true", True), ("1", True), ("yes", True), ("y", True),
                                        ("t", True), ("False", False), ("0", False), ("no", False), ("N", False)])
def test_c_flag_accepts_common_spellings(text, value):
    assert custom.get_args_parser().parse_args(["--c", text]).cityscapes is value


def test_c_flag_rejects_garbage():
    with pytest.raises(SystemExit):
        custom.get_args_parser().parse_args(["--c", "maybe"])


def test_official_flags_and_long_aliases_parse():
    args = custom.get_args_parser().parse_args(["--a", "pidnet-m", "--c", "False", "--p", "x.pt", "--r", "d/",
                                                "--t", ".jpg"])
    assert (args.arch, args.cityscapes, args.checkpoint, args.input, args.ext) == ("pidnet-m", False, "x.pt",
                                                                                    "d/", ".jpg")
    args = custom.get_args_parser().parse_args(["--arch", "pidnet-s", "--checkpoint", "y.pt", "--input", "e",
                                                "--output", "o", "--batch-size", "2", "--backend", "fused"])
    assert (args.arch, args.checkpoint, args.input, args.output, args.batch_size) == ("pidnet-s", "y.pt", "e",
                                                                                      "o", 2)


def test_folder_matches_official_pipeline_at_input_size(tmp_path, checkpoint):
    path, model = checkpoint
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    odd = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    cv2.imwrite(str(inputs / "odd.png"), odd)
    cv2.imwrite(str(inputs / "gray.png"), rng.integers(0, 256, (40, 56), dtype=np.uint8))
    cv2.imwrite(str(inputs / "rgba.png"), rng.integers(0, 256, (40, 56, 4), dtype=np.uint8))
    cv2.imwrite(str(inputs / "deep.png"), rng.integers(0, 65536, (40, 56, 3), dtype=np.uint16))
    cv2.imwrite(str(inputs / "photo.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    assert run(["--a", "pidnet-s", "--c", "true", "--p", path, "--r", str(inputs), "--device", "cpu",
                "--overlay", "--label-ids"]) == 0
    out = inputs / "outputs"
    for stem, shape in (("odd", (100, 150)), ("gray", (40, 56)), ("rgba", (40, 56)), ("deep", (40, 56)),
                        ("photo", (48, 64))):
        color = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        label = cv2.imread(str(out / f"{stem}_label.png"), cv2.IMREAD_UNCHANGED)
        blend = cv2.imread(str(out / f"{stem}_overlay.png"), cv2.IMREAD_UNCHANGED)
        assert color.shape == shape + (3,) and label.shape == shape and blend.shape == shape + (3,)
        # The colour PNG is the palette applied to the label PNG (RGB palette, stored as BGR).
        np.testing.assert_array_equal(color[:, :, ::-1], palette_for(19)[label])
    expected = official_prediction(model, odd)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(cv2.imread(str(out / "odd_label.png"), cv2.IMREAD_UNCHANGED), expected)
    assert not (out / "broken.png").exists() and not (out / "notes.png").exists()
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temp files left


def test_single_image_ext_filter_output_dir_and_batching(tmp_path, checkpoint):
    path, model = checkpoint
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "skip.jpg"), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    one, two = tmp_path / "b1", tmp_path / "b2"
    run(["--a", "pidnet-s", "--p", path, "--r", str(tmp_path), "--t", ".png", "--o", str(one), "--device", "cpu",
         "--label-ids"])
    run(["--a", "pidnet-s", "--p", path, "--r", str(tmp_path), "--t", "png", "--o", str(two), "--device", "cpu",
         "--label-ids", "--batch-size", "2"])
    assert sorted(os.listdir(one)) == sorted(f"im{i}{s}.png" for i in range(3) for s in ("", "_label"))
    for i in range(3):
        np.testing.assert_array_equal(cv2.imread(str(one / f"im{i}_label.png"), -1),
                                      cv2.imread(str(two / f"im{i}_label.png"), -1))
    run(["--a", "pidnet-s", "--p", path, "--r", str(tmp_path / "skip.jpg"), "--device", "cpu"])
    assert (tmp_path / "outputs" / "skip.png").is_file()


def test_video_frame_by_frame(tmp_path, checkpoint):
    path, _ = checkpoint
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    rng = np.random.default_rng(2)
    for _ in range(4):
        writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    writer.release()
    assert run(["--a", "pidnet-s", "--p", path, "--r", str(video), "--device", "cpu", "--overlay"]) == 0
    capture = cv2.VideoCapture(str(tmp_path / "outputs" / "clip.avi"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 4 and frames[0].shape == (48, 64, 3)


def test_empty_folder_is_one_clear_error(tmp_path, checkpoint):
    with pytest.raises(DatasetError, match="no images or videos found"):
        run(["--p", checkpoint[0], "--r", str(tmp_path)])
    proc = subprocess.run([sys.executable, "tools/custom.py", "--a", "pidnet-s", "--p", checkpoint[0],
                           "--r", str(tmp_path)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no images or videos found")
    assert "Traceback" not in proc.stderr


def test_corrupt_only_strict_and_missing_inputs(tmp_path, checkpoint):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="none of the 1 input"):
        run(["--a", "pidnet-s", "--p", checkpoint[0], "--r", str(tmp_path), "--device", "cpu"])
    with pytest.raises(DatasetError, match="cannot decode image .*bad.png"):
        run(["--a", "pidnet-s", "--p", checkpoint[0], "--r", str(tmp_path), "--device", "cpu", "--strict"])
    with pytest.raises(DatasetError, match="input not found"):
        run(["--a", "pidnet-s", "--p", checkpoint[0], "--r", str(tmp_path / "missing")])
    assert not (tmp_path / "outputs" / "bad.png").exists()


def test_checkpoint_errors(tmp_path, checkpoint):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(CheckpointError, match="19 classes"):
        run(["--a", "pidnet-s", "--c", "false", "--p", checkpoint[0], "--r", str(tmp_path)])
    with pytest.raises(CheckpointError, match="another PIDNet variant|another variant"):
        run(["--a", "pidnet-m", "--p", checkpoint[0], "--r", str(tmp_path)])
    with pytest.raises(CheckpointError, match="not found"):
        run(["--a", "pidnet-s", "--p", str(tmp_path / "none.pt"), "--r", str(tmp_path)])
    assert not (tmp_path / "outputs").exists()  # a failed run leaves no empty folder


def test_fused_backend_matches_eager(tmp_path, checkpoint):
    cv2.imwrite(str(tmp_path / "x.png"), np.random.default_rng(3).integers(0, 256, (40, 72, 3), dtype=np.uint8))
    for backend in ("eager", "fused"):
        run(["--a", "pidnet-s", "--p", checkpoint[0], "--r", str(tmp_path / "x.png"), "--o", str(tmp_path / backend),
             "--device", "cpu", "--backend", backend, "--label-ids"])
    eager = cv2.imread(str(tmp_path / "eager" / "x_label.png"), -1)
    fused = cv2.imread(str(tmp_path / "fused" / "x_label.png"), -1)
    assert (eager == fused).mean() > 0.99


# ----------------------------------------------------------------------------- --onnx FILE

@pytest.fixture(scope="module")
def onnx_file(checkpoint, tmp_path_factory):
    from models.deploy import export_onnx, fold_batchnorm

    path = tmp_path_factory.mktemp("onnx") / "s19.onnx"
    return export_onnx(fold_batchnorm(checkpoint[1]), path, torch.randn(1, 3, 64, 96))


@pytest.mark.slow
def test_onnx_file_writes_the_checkpoint_masks(tmp_path, checkpoint, onnx_file, capsys):
    rng = np.random.default_rng(4)
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "a.png"), rng.integers(0, 256, (100, 150, 3), dtype=np.uint8))
    cv2.imwrite(str(inputs / "b.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    common = ["--r", str(inputs), "--device", "cpu", "--label-ids"]
    assert run(["--a", "pidnet-s", "--p", checkpoint[0], "--o", str(tmp_path / "ckpt")] + common) == 0
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / runtime
        assert run(["--onnx", onnx_file, "--runtime", runtime, "--o", str(out)] + common) == 0
        for stem in ("a", "b"):
            expected = cv2.imread(str(tmp_path / "ckpt" / f"{stem}_label.png"), cv2.IMREAD_UNCHANGED)
            got = cv2.imread(str(out / f"{stem}_label.png"), cv2.IMREAD_UNCHANGED)
            assert len(np.unique(expected)) > 1 and got.shape == expected.shape
            assert (got == expected).mean() > 0.999, (runtime, stem)
            color = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(color[:, :, ::-1], palette_for(19)[got])
    assert "segmented 2 image(s)" in capsys.readouterr().out


def test_onnx_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, checkpoint, onnx_file):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "out"
    base = ["--r", str(tmp_path / "x.png"), "--o", str(out), "--device", "cpu"]
    from utils.errors import ModelError

    with pytest.raises(ModelError, match="predicts 19 classes, but 11 are expected"):
        run(["--onnx", onnx_file, "--c", "false"] + base)
    with pytest.raises(CheckpointError, match="ONNX file not found"):
        run(["--onnx", str(tmp_path / "missing.onnx")] + base)
    (tmp_path / "bad.onnx").write_bytes(b"\x00\x01garbage" * 20)
    with pytest.raises(CheckpointError, match="not a (readable|valid) ONNX model"):
        run(["--onnx", str(tmp_path / "bad.onnx")] + base)
    with pytest.raises(ModelError, match="unknown runtime 'tvm'"):
        run(["--onnx", onnx_file, "--runtime", "tvm"] + base)
    with pytest.raises(ModelError, match="--onnx FILE runs the file itself"):
        run(["--onnx", onnx_file, "--p", checkpoint[0]] + base)
    with pytest.raises(ModelError, match="--runtime openvino is for --onnx FILE"):
        run(["--a", "pidnet-s", "--p", checkpoint[0], "--runtime", "openvino"] + base)
    assert not out.exists()
