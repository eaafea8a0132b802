import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tools.eval as eval_tool
from datasets import build_dataset
from datasets.cityscapes import CLASS_NAMES, LABEL_TO_TRAIN_ID, PALETTE
from models.calibration import randomize_bn
from models.checkpoint import official_state_dict
from models.pidnet import build_pidnet
from utils.metrics import metrics_from_matrix

CFG = "configs/cityscapes/pidnet_small_cityscapes.yaml"
HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny Cityscapes layout: 3 labelled val images (one of them also in one.lst), 2 image-only test images."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    label_ids = np.array(sorted(LABEL_TO_TRAIN_ID) + [0, 1])  # 0/1 are ignored IDs
    lists = {"val": [], "test": []}
    for split, count in (("val", 3), ("test", 2)):
        for i in range(count):
            stem = f"city_{i:06d}_000019"
            image_rel = f"leftImg8bit/{split}/city/{stem}_leftImg8bit.png"
            image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
            os.makedirs(root / "cityscapes" / os.path.dirname(image_rel), exist_ok=True)
            cv2.imwrite(str(root / "cityscapes" / image_rel), image)
            if split == "test":
                lists[split].append(image_rel)
                continue
            label_rel = f"gtFine/{split}/city/{stem}_gtFine_labelIds.png"
            # blocky labels, so the boundary target and predictions are not pure noise
            blocks = rng.choice(label_ids, size=(HEIGHT // 16, WIDTH // 16)).astype(np.uint8)
            label = np.kron(blocks, np.ones((16, 16), np.uint8))
            os.makedirs(root / "cityscapes" / os.path.dirname(label_rel), exist_ok=True)
            cv2.imwrite(str(root / "cityscapes" / label_rel), label)
            lists[split].append(f"{image_rel}\t{label_rel}")
    os.makedirs(root / "list" / "cityscapes")
    lists["one"] = lists["val"][:1]  # for the slower paths (TTA, NetsPresso)
    for split, lines in lists.items():
        (root / "list" / "cityscapes" / f"{split}.lst").write_text("\n".join(lines) + "\n")
    return str(root)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_pidnet("pidnet_s", 19, augment=True)
    randomize_bn(model, seed=0, calibrate=None)  # so that predictions vary over the image
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save(official_state_dict(model), path)
    return str(path), model.eval()


def run(argv):
    return eval_tool.main(eval_tool.parse_args(argv))


def base_args(data_root, *opts):
    return ["--cfg", CFG, "DATASET.ROOT", data_root, "WORKERS", "0", *opts, "--device", "cpu", "--no-progress"]


def direct_metrics(model, data_root, flip=False, scales=(1.0,), test_set="list/cityscapes/val.lst"):
    """Metrics from the definitions, image by image, independent of utils.evaluate."""
    dataset = build_dataset("cityscapes", data_root, test_set, num_classes=19, is_train=False)
    matrix = np.zeros((19, 19), dtype=np.int64)
    with torch.no_grad():
        for image, label, _, _, _ in dataset:
            image = image[None]
            probs = 0
            for s in scales:
                x = image if s == 1.0 else F.interpolate(
                    image, size=(int(HEIGHT * s + 0.5), int(WIDTH * s + 0.5)), mode="bilinear", align_corners=False)
                for flipped in ((False, True) if flip else (False,)):
                    out = model(x.flip(-1) if flipped else x)[1]
                    out = out.flip(-1) if flipped else out
                    out = F.interpolate(out, size=label.shape, mode="bilinear", align_corners=True)
                    probs = probs + F.softmax(out, dim=1)
            pred = probs.argmax(1)[0].numpy()
            lab = label.numpy()
            keep = lab != 255
            np.add.at(matrix, (lab[keep], pred[keep]), 1)
    return metrics_from_matrix(matrix), matrix


def test_metrics_match_direct_computation(data_root, checkpoint, tmp_path, capsys):
    path, model = checkpoint
    out = tmp_path / "metrics.json"
    assert run(base_args(data_root, "TEST.MODEL_FILE", path) + ["--json", str(out)]) == 0
    expected, matrix = direct_metrics(model, data_root)
    assert matrix.sum() > 0
    report = json.loads(out.read_text())
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert report["pixel_acc"] == pytest.approx(expected["pixel_acc"], abs=1e-6)
    assert report["mean_acc"] == pytest.approx(expected["mean_acc"], abs=1e-6)
    assert report["iou_list"] == pytest.approx(expected["iou"], abs=1e-6)
    assert list(report["iou"]) == CLASS_NAMES
    assert report["num_images"] == 3 and report["output_index"] == 1
    assert [o["index"] for o in report["outputs"]] == [0, 1]
    printed = capsys.readouterr().out
    assert f"MeanIU: {expected['mean_iou']:.4f}, Pixel_Acc: {expected['pixel_acc']:.4f}, " \
           f"Mean_Acc: {expected['mean_acc']:.4f}" in printed
    for name, iou in zip(CLASS_NAMES, expected["iou"]):
        assert any(line.split() == name.split() + [f"{iou:.4f}"] for line in printed.splitlines()), name


def test_fused_backend_gives_the_eager_metrics_of_the_main_output(data_root, checkpoint, tmp_path):
    path, _ = checkpoint
    reports = {}
    for backend in ("eager", "fused"):
        out = tmp_path / f"{backend}.json"
        assert run(base_args(data_root, "TEST.MODEL_FILE", path) + ["--backend", backend, "--json", str(out)]) == 0
        reports[backend] = json.loads(out.read_text())
    eager, fused = reports["eager"], reports["fused"]
    assert eager["labelled_pixels"] > 0 and fused["labelled_pixels"] == eager["labelled_pixels"]
    # BN folding changes the logits by float rounding only: the same pixels win.
    assert fused["mean_iou"] == pytest.approx(eager["mean_iou"], abs=1e-6)
    assert fused["iou_list"] == pytest.approx(eager["iou_list"], abs=1e-6)
    assert fused["pixel_acc"] == pytest.approx(eager["pixel_acc"], abs=1e-6)
    # main output only, reported under its index in PIDNet's [p, main, boundary]
    assert fused["output_index"] == 1 and [o["index"] for o in fused["outputs"]] == [1]
    assert [o["index"] for o in eager["outputs"]] == [0, 1]


def test_flip_and_multi_scale_are_applied(data_root, checkpoint, tmp_path):
    path, model = checkpoint
    out = tmp_path / "tta.json"
    one = "list/cityscapes/one.lst"
    assert run(base_args(data_root, "TEST.MODEL_FILE", path, "TEST.FLIP_TEST", "True", "TEST.MULTI_SCALE", "True",
                         "TEST.SCALE_LIST", "[0.75, 1.25]", "DATASET.TEST_SET", one) + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["flip_test"] is True and report["scales"] == [0.75, 1.25]
    expected, _ = direct_metrics(model, data_root, flip=True, scales=(0.75, 1.25), test_set=one)
    plain, _ = direct_metrics(model, data_root, test_set=one)
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert report["iou_list"] == pytest.approx(expected["iou"], abs=1e-6)
    assert report["iou_list"] != pytest.approx(plain["iou"], abs=1e-6)


def test_test_list_writes_label_id_and_colour_pngs(data_root, checkpoint, tmp_path, capsys):
    path, model = checkpoint
    save = tmp_path / "pred"
    assert run(base_args(data_root, "TEST.MODEL_FILE", path, "DATASET.TEST_SET", "list/cityscapes/test.lst")
               + ["--save-pred", str(save), "--save-color"]) == 0
    assert "no labelled pixels" in capsys.readouterr().out
    dataset = build_dataset("cityscapes", data_root, "list/cityscapes/test.lst", num_classes=19, is_train=False)
    for image, _, _, _, name in dataset:
        with torch.no_grad():
            logits = F.interpolate(model(image[None])[1], size=(HEIGHT, WIDTH), mode="bilinear", align_corners=True)
        pred = logits.argmax(1)[0].numpy()
        ids = cv2.imread(str(save / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        inverse = {t: i for i, t in LABEL_TO_TRAIN_ID.items()}
        np.testing.assert_array_equal(ids, np.vectorize(inverse.get)(pred))
        color = cv2.imread(str(save / "color" / f"{name}.png"))[..., ::-1]
        np.testing.assert_array_equal(color, np.asarray(PALETTE, np.uint8)[pred])


def test_test_list_defaults_to_official_test_results_folder(data_root, checkpoint, tmp_path):
    path, _ = checkpoint
    assert run(base_args(data_root, "TEST.MODEL_FILE", path, "DATASET.TEST_SET", "list/cityscapes/test.lst",
                         "OUTPUT_DIR", str(tmp_path))) == 0
    folder = tmp_path / "cityscapes" / "pidnet_small_cityscapes" / "test_results"
    assert len([f for f in os.listdir(folder) if f.endswith(".png")]) == 2


def test_default_model_file_is_the_official_best_pt(data_root, checkpoint, tmp_path):
    path, _ = checkpoint
    folder = tmp_path / "cityscapes" / "pidnet_small_cityscapes"
    folder.mkdir(parents=True)
    os.symlink(path, folder / "best.pt")
    out = tmp_path / "m.json"
    assert run(base_args(data_root, "OUTPUT_DIR", str(tmp_path), "DATASET.TEST_SET", "list/cityscapes/one.lst")
               + ["--json", str(out)]) == 0
    assert json.loads(out.read_text())["model_file"].endswith("best.pt")


def test_netspresso_model_with_head(data_root, checkpoint, tmp_path):
    from models.netspresso import export_pidnet

    path, model = checkpoint
    reference = build_pidnet("pidnet_s", 19, augment=True)
    reference.load_state_dict(model.state_dict())
    body, head = export_pidnet(reference.eval())
    torch.save(body, tmp_path / "best_model_model.pt")
    torch.save(head, tmp_path / "best_model_head.pt")
    out = tmp_path / "np.json"
    one = "list/cityscapes/one.lst"
    assert run(base_args(data_root, "DATASET.TEST_SET", one) + ["--netspresso", "--model", str(tmp_path / "best_model_model.pt"),
                                       "--head", str(tmp_path / "best_model_head.pt"), "--json", str(out)]) == 0
    expected, _ = direct_metrics(model, data_root, test_set=one)
    report = json.loads(out.read_text())
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert len(report["outputs"]) == 2
    # without the head: the main logits only, same headline metrics
    assert run(base_args(data_root, "DATASET.TEST_SET", one) + ["--netspresso", "--model",
                                                                str(tmp_path / "best_model_model.pt"),
                                                                "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert len(report["outputs"]) == 1


@pytest.mark.parametrize("opts,extra,message", [
    (["OUTPUT_DIR", "/nonexistent_out"], [], "TEST.MODEL_FILE is not set"),
    (["TEST.MODEL_FILE", "/nonexistent/best.pt"], [], "checkpoint not found"),
    (["TEST.MODEL_FILE", "GARBAGE"], [], "garbage.pt"),
    (["TEST.MODEL_FILE", "CKPT", "MODEL.NAME", "pidnet_m"], [], "another PIDNet variant|lacks"),
    (["TEST.MODEL_FILE", "CKPT", "TEST.OUTPUT_INDEX", "2"], [], "OUTPUT_INDEX 2"),
    (["TEST.MODEL_FILE", "CKPT", "TEST.OUTPUT_INDEX", "2"], ["--backend", "fused"], "OUTPUT_INDEX 2"),
    (["TEST.MODEL_FILE", "CKPT"], ["--netspresso", "--backend", "fused"], "--backend fused is for PIDNet"),
    (["TEST.MODEL_FILE", "CKPT", "DATASET.ROOT", "/nonexistent_root"], [], "dataset root not found"),
    (["TEST.MODEL_FILE", "CKPT"], ["--netspresso"], "--netspresso needs --model"),
    (["TEST.MODEL_FILE", "CKPT"], ["--save-color"], "--save-color needs --save-pred"),
    (["TEST.MODEL_FILE", "CKPT", "NO.SUCH_KEY", "1"], [], "unknown config key"),
])
def test_bad_input_is_one_clear_error_line(data_root, checkpoint, tmp_path, capsys, opts, extra, message):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    opts = [{"CKPT": checkpoint[0], "GARBAGE": str(garbage)}.get(o, o) for o in opts]
    code = eval_tool.run_main(eval_tool.main, eval_tool.parse_args(base_args(data_root, *opts) + extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ")
    assert re.search(message, err[-1]), err[-1]
    assert "Traceback" not in "\n".join(err)


def test_cli_subprocess_end_to_end(data_root, checkpoint, tmp_path, repo_root):
    path, _ = checkpoint
    out = tmp_path / "cli.json"
    cmd = [sys.executable, "tools/eval.py", "--cfg", CFG, "DATASET.ROOT", data_root, "TEST.MODEL_FILE", path,
           "WORKERS", "0", "--device", "cpu", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MeanIU:" in proc.stdout
    assert json.loads(out.read_text())["num_images"] == 3


def test_options_may_follow_the_overrides():
    args = eval_tool.parse_args(["--cfg", CFG, "TEST.MODEL_FILE", "x.pt", "TEST.OUTPUT_INDEX", "-1",
                                 "--device", "cpu", "--save-color"])
    assert args.opts == ["TEST.MODEL_FILE", "x.pt", "TEST.OUTPUT_INDEX", "-1"]
    assert args.device == "cpu" and args.save_color


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(data_root, checkpoint, tmp_path, repo_root):
    path, model = checkpoint
    out = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/eval.py",
           "--cfg", CFG, "DATASET.ROOT", data_root, "TEST.MODEL_FILE", path, "WORKERS", "0",
           "--device", "cpu", "--no-progress", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("MeanIU:") == 1  # rank 0 only
    expected, _ = direct_metrics(model, data_root)
    report = json.loads(out.read_text())
    assert report["num_images"] == 3  # 2 + 1 images, none repeated
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert report["iou_list"] == pytest.approx(expected["iou"], abs=1e-6)


# ----------------------------------------------------------------------------- --onnx FILE

@pytest.fixture(scope="module")
def onnx_file(checkpoint, tmp_path_factory):
    from models.deploy import export_onnx, fold_batchnorm

    _, model = checkpoint
    path = tmp_path_factory.mktemp("onnx") / "pidnet_s.onnx"
    return export_onnx(fold_batchnorm(model), path, torch.randn(1, 3, HEIGHT, WIDTH), output_index=1)


@pytest.mark.slow
def test_onnx_file_gives_the_eager_metrics(data_root, checkpoint, onnx_file, tmp_path, capsys):
    eager_json = tmp_path / "eager.json"
    assert run(base_args(data_root, "TEST.MODEL_FILE", checkpoint[0]) + ["--json", str(eager_json)]) == 0
    eager = json.loads(eager_json.read_text())
    assert eager["labelled_pixels"] > 0
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / f"{runtime}.json"
        assert run(base_args(data_root) + ["--onnx", onnx_file, "--runtime", runtime, "--json", str(out)]) == 0
        report = json.loads(out.read_text())
        assert report["mean_iou"] == pytest.approx(eager["mean_iou"], abs=1e-3), runtime
        assert report["pixel_acc"] == pytest.approx(eager["pixel_acc"], abs=1e-3), runtime
        assert report["model_file"] == onnx_file and report["output_index"] == 1
        assert report["labelled_pixels"] == eager["labelled_pixels"]
    assert "MeanIU:" in capsys.readouterr().out


def _five_class_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [5, 3, 1, 1], np.ones(15, np.float32))
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5, "h", "w"])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


@pytest.mark.parametrize("extra,message", [
    (["--onnx", "MISSING"], "ONNX file not found"),
    (["--onnx", "CORRUPT"], "is not a (readable|valid) ONNX model"),
    (["--onnx", "FIVE"], "predicts 5 classes, but 19 are expected"),
    (["--onnx", "FIVE", "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
    (["--onnx", "FIVE", "--backend", "fused"], "--onnx FILE runs the file itself"),
    (["--runtime", "openvino"], "--runtime openvino is for --onnx FILE"),
])
def test_bad_onnx_input_is_one_clear_error_line(data_root, tmp_path, capsys, extra, message):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00\x01garbage" * 20)
    files = {"MISSING": str(tmp_path / "missing.onnx"), "CORRUPT": str(corrupt),
             "FIVE": _five_class_onnx(tmp_path / "five.onnx")}
    extra = [files.get(e, e) for e in extra]
    json_out = tmp_path / "metrics.json"
    code = eval_tool.run_main(eval_tool.main, eval_tool.parse_args(base_args(data_root) + extra +
                                                                   ["--json", str(json_out)]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ")
    assert re.search(message, err[-1]), err[-1]
    assert "Traceback" not in "\n".join(err) and not json_out.exists()


def test_runtime_setup_goes_through_init_distributed(data_root, checkpoint, tmp_path, monkeypatch):
    """eval joins torchrun jobs with utils/distributed.py's set-up (timeout, LOCAL_RANK check),
    through configs/build.py's build_runtime."""
    import utils.distributed as du

    calls = []
    real = du.init_distributed

    def spy(device_name=None, timeout_s=du.DEFAULT_TIMEOUT_S):
        calls.append((device_name, timeout_s))
        return real(device_name, timeout_s)

    monkeypatch.setattr(du, "init_distributed", spy)
    path, _ = checkpoint
    assert run(base_args(data_root, "TEST.MODEL_FILE", path, "DATASET.TEST_SET", "list/cityscapes/one.lst")) == 0
    assert calls == [("cpu", du.DEFAULT_TIMEOUT_S)]
