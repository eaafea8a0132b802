"""tools/custom.py for any class count, coloured as tools/eval.py --save-color colours it."""
import json

import cv2
import numpy as np
import pytest
import torch

import tools.custom as custom
import tools.eval as eval_tool
from datasets.camvid import PALETTE as CAMVID_PALETTE
from datasets.cityscapes import PALETTE as CITYSCAPES_PALETTE
from models.calibration import randomize_bn
from models.checkpoint import official_state_dict, read_num_classes
from models.pidnet import build_pidnet
from utils.errors import CheckpointError, ConfigError, ModelError, UsageError

CFG = "configs/cityscapes/pidnet_small_cityscapes.yaml"
HEIGHT, WIDTH = 64, 96


def _checkpoint(directory, num_classes):
    torch.manual_seed(num_classes)
    model = build_pidnet("pidnet_s", num_classes, augment=True)
    randomize_bn(model, seed=num_classes, calibrate=None)  # predictions vary over the image
    path = directory / f"s{num_classes}.pt"
    torch.save(official_state_dict(model), path)
    return str(path)


@pytest.fixture(scope="module")
def custom_root(tmp_path_factory):
    """A custom dataset of two images (labels all class 0: only the predictions matter here)."""
    root = tmp_path_factory.mktemp("custom")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for stem in ("a", "b"):
        cv2.imwrite(str(root / "images" / f"{stem}.png"), rng.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8))
        cv2.imwrite(str(root / "labels" / f"{stem}.png"), np.zeros((HEIGHT, WIDTH), np.uint8))
        lines.append(f"images/{stem}.png labels/{stem}.png")
    (root / "val.lst").write_text("\n".join(lines) + "\n")
    return root


def _overrides(root, num_classes, model_file, *extra):
    return ["DATASET.DATASET", "custom", "DATASET.ROOT", str(root), "DATASET.TEST_SET", "val.lst",
            "DATASET.NUM_CLASSES", str(num_classes), "TEST.MODEL_FILE", model_file, "WORKERS", "0", *extra]


@pytest.mark.parametrize("num_classes,official", [(11, CAMVID_PALETTE), (19, CITYSCAPES_PALETTE), (5, None)])
def test_eval_save_color_and_custom_colour_classes_alike(custom_root, tmp_path, num_classes, official):
    ckpt = _checkpoint(tmp_path, num_classes)
    opts = _overrides(custom_root, num_classes, ckpt)
    pred = tmp_path / "eval"
    assert eval_tool.main(eval_tool.parse_args(["--cfg", CFG, *opts, "--device", "cpu", "--no-progress",
                                                "--save-pred", str(pred), "--save-color"])) == 0
    out = tmp_path / "custom"
    assert custom.main(custom.parse_args(["--a", "pidnet-s", "--p", ckpt, "--r", str(custom_root / "images"),
                                          "--o", str(out), "--label-ids", "--device", "cpu",
                                          "--cfg", CFG, *opts])) == 0
    mapping = {}
    for stem in ("a", "b"):
        eval_ids = cv2.imread(str(pred / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        eval_rgb = cv2.imread(str(pred / "color" / f"{stem}.png"))[..., ::-1]
        ours_ids = cv2.imread(str(out / f"{stem}_label.png"), cv2.IMREAD_UNCHANGED)
        ours_rgb = cv2.imread(str(out / f"{stem}.png"))[..., ::-1]
        same = eval_ids == ours_ids
        assert same.mean() > 0.99
        np.testing.assert_array_equal(eval_rgb[same], ours_rgb[same])
        for cls, rgb in zip(eval_ids[same], eval_rgb[same]):
            mapping.setdefault(int(cls), set()).add(tuple(int(v) for v in rgb))
    assert len(mapping) >= 2, "the model predicts one class: the comparison would be vacuous"
    assert all(len(colours) == 1 for colours in mapping.values())  # one colour per class
    if official is not None:
        assert all(colours == {tuple(official[cls])} for cls, colours in mapping.items())


def test_five_classes_without_c_and_with_cfg_colours(custom_root, tmp_path):
    ckpt = _checkpoint(tmp_path, 5)
    assert read_num_classes(ckpt) == 5
    image = str(custom_root / "images" / "a.png")
    base = ["--a", "pidnet-s", "--p", ckpt, "--r", image, "--label-ids", "--device", "cpu"]
    # No --c and no --cfg: the count comes from the checkpoint (the official script refused it).
    assert custom.main(custom.parse_args(base + ["--o", str(tmp_path / "plain")])) == 0
    colors = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150]]
    cfg = tmp_path / "five.yaml"
    cfg.write_text("DATASET:\n  DATASET: custom\n  NUM_CLASSES: 5\n"
                   f"  CLASS_NAMES: {json.dumps(['a', 'b', 'c', 'd', 'e'])}\n  CLASS_COLORS: {json.dumps(colors)}\n")
    out = tmp_path / "cfg"
    assert custom.main(custom.parse_args(base + ["--o", str(out), "--cfg", str(cfg)])) == 0
    label = cv2.imread(str(out / "a_label.png"), cv2.IMREAD_UNCHANGED)
    assert len(np.unique(label)) > 1 and label.max() < 5
    np.testing.assert_array_equal(cv2.imread(str(out / "a.png"))[..., ::-1], np.asarray(colors, np.uint8)[label])
    np.testing.assert_array_equal(label, cv2.imread(str(tmp_path / "plain" / "a_label.png"), cv2.IMREAD_UNCHANGED))


def test_class_count_errors_name_options_custom_has(custom_root, tmp_path):
    ckpt = _checkpoint(tmp_path, 5)
    image = str(custom_root / "images" / "a.png")
    base = ["--a", "pidnet-s", "--p", ckpt, "--r", image, "--o", str(tmp_path / "o"), "--device", "cpu"]
    with pytest.raises(CheckpointError, match=r"predicts 5 classes, but 11 .*drop --c"):
        custom.main(custom.parse_args(base + ["--c", "False"]))
    with pytest.raises(ConfigError, match=r"DATASET.NUM_CLASSES 19 .* add DATASET.NUM_CLASSES 5 after --cfg"):
        custom.main(custom.parse_args(base + ["--cfg", CFG]))
    with pytest.raises(UsageError, match="need --cfg"):
        custom.main(custom.parse_args(base + ["DATASET.NUM_CLASSES", "5"]))
    with pytest.raises(UsageError, match="--alpha"):
        custom.main(custom.parse_args(base + ["--alpha", "2"]))
    with pytest.raises(CheckpointError, match="set --a to the checkpoint's variant"):
        custom.main(custom.parse_args(base[:1] + ["pidnet-m"] + base[2:]))
    assert not (tmp_path / "o").exists()


def test_onnx_class_count_comes_from_the_file(custom_root, tmp_path):
    pytest.importorskip("onnxruntime")
    from models.checkpoint import load_for_eval
    from models.deploy import export_onnx

    model = build_pidnet("pidnet_s", 5, augment=False)
    load_for_eval(model, _checkpoint(tmp_path, 5))
    onnx = export_onnx(model.eval(), tmp_path / "s5.onnx", torch.randn(1, 3, HEIGHT, WIDTH))
    image = str(custom_root / "images" / "a.png")
    out = tmp_path / "onnx"
    assert custom.main(custom.parse_args(["--onnx", str(onnx), "--r", image, "--o", str(out), "--label-ids",
                                          "--device", "cpu"])) == 0
    label = cv2.imread(str(out / "a_label.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (HEIGHT, WIDTH) and label.max() < 5 and len(np.unique(label)) > 1
    with pytest.raises(ModelError, match="predicts 5 classes, but 19 are expected"):
        custom.main(custom.parse_args(["--onnx", str(onnx), "--c", "True", "--r", image, "--o", str(out)]))
