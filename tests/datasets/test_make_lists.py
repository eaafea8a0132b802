"""tools/make_lists.py: lists for the cityscapes, camvid and images/+labels/ layouts."""
import os

import numpy as np
import pytest

from datasets import build_dataset
from tools import make_lists
from utils.cli import run_main
from utils.errors import DatasetError


def _run(argv):
    return run_main(make_lists.main, make_lists.get_args_parser().parse_args(argv))


def _pairs(root, make, names, size=(24, 32), label_names=None):
    rng = np.random.default_rng(0)
    for name, label_name in zip(names, label_names or names):
        make.png(os.path.join(root, "images", name), rng.integers(0, 256, size + (3,), dtype=np.uint8))
        if label_name:
            make.png(os.path.join(root, "labels", os.path.splitext(label_name)[0] + ".png"),
                     rng.integers(0, 3, size).astype(np.uint8))


def test_pairs_layout_split_and_load(data_root, make):
    names = [f"a{i}.jpg" for i in range(8)] + ["sub/b.png"]
    _pairs(data_root, make, names)
    assert _run(["--root", data_root, "--val-fraction", "0.25", "--seed", "1"]) == 0
    lists = {s: open(f"{data_root}list/custom/{s}.lst").read().splitlines() for s in ("train", "val", "trainval")}
    assert len(lists["val"]) == 2 and len(lists["train"]) == 7
    assert sorted(lists["trainval"]) == sorted(lists["train"] + lists["val"])
    assert "images/sub/b.png labels/sub/b.png" in lists["trainval"]
    assert not os.path.exists(f"{data_root}list/custom/test.lst")
    dataset = build_dataset("custom", data_root, "list/custom/train.lst", num_classes=3, is_train=False)
    assert len(dataset) == 7 and dataset[0][1].shape == (24, 32)
    # Same seed: same lists (rerun without --force succeeds); another seed: refuses to replace.
    assert _run(["--root", data_root, "--val-fraction", "0.25", "--seed", "1"]) == 0
    assert _run(["--root", data_root, "--val-fraction", "0.25", "--seed", "2"]) == 2
    assert _run(["--root", data_root, "--val-fraction", "0.25", "--seed", "2", "--force"]) == 0


def test_pairs_missing_labels(data_root, make, capsys):
    _pairs(data_root, make, ["a.png", "b.png", "c.png"], label_names=["a.png", None, "c.png"])
    assert _run(["--root", data_root]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) have no label" in err and "images/b.png" in err and "--allow-unlabeled" in err
    assert not os.path.exists(f"{data_root}list")
    assert _run(["--root", data_root, "--allow-unlabeled", "--val-fraction", "0"]) == 0
    assert open(f"{data_root}list/custom/test.lst").read() == "images/b.png\n"


def test_pairs_check_finds_size_mismatch(data_root, make, capsys):
    _pairs(data_root, make, ["a.png", "b.png"])
    make.png(os.path.join(data_root, "labels", "b.png"), np.zeros((10, 10), np.uint8))
    assert _run(["--root", data_root, "--check", "--val-fraction", "0"]) == 2
    assert "size mismatch: images/b.png (24, 32) vs labels/b.png (10, 10)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--layout", "pairs"], "image folder not found"),
    (["--layout", "cityscapes"], "Cityscapes image folder not found"),
    (["--layout", "camvid"], "image folder not found"),
    (["--val-fraction", "1.5"], "--val-fraction must be in"),
])
def test_clear_errors(data_root, make, capsys, argv, match):
    if "--val-fraction" in argv:
        _pairs(data_root, make, ["a.png", "b.png"])
    assert _run(["--root", data_root] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and len(err.strip().splitlines()) == 1


def test_missing_root(tmp_path, capsys):
    assert _run(["--root", str(tmp_path / "none")]) == 2
    assert "dataset root not found" in capsys.readouterr().err


def test_cityscapes_layout(data_root, make):
    make.cityscapes(data_root, [make.scene(0), make.scene(1)], split="train")
    make.cityscapes(data_root, [make.scene(2)], split="val")
    make.cityscapes(data_root, [make.scene(3)], split="test", with_labels=False)
    out = data_root + "generated"
    assert _run(["--root", data_root, "--layout", "cityscapes", "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["test.lst", "train.lst", "trainval.lst", "val.lst"]
    for split in ("train", "val", "test"):
        assert open(f"{out}/{split}.lst").read() == open(f"{data_root}list/cityscapes/{split}.lst").read()
    # A label removed: the error lists it.
    os.remove(data_root + "cityscapes/gtFine/train/city/city_000001_000019_gtFine_labelIds.png")
    with pytest.raises(DatasetError, match="1 Cityscapes label"):
        make_lists.cityscapes_lists(data_root)


def test_camvid_layout(data_root, make):
    rng = np.random.default_rng(0)
    samples = [(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                np.zeros((16, 16, 3), np.uint8)) for _ in range(5)]
    make.camvid(data_root, samples)  # also writes list/camvid/val.lst: replacing it needs --force
    argv = ["--root", data_root, "--layout", "camvid", "--val-fraction", "0.2", "--test-fraction", "0.2"]
    assert _run(argv) == 2
    assert _run(argv + ["--force"]) == 0
    lines = {s: open(f"{data_root}list/camvid/{s}.lst").read().splitlines() for s in ("train", "val", "test")}
    assert [len(v) for v in lines.values()] == [3, 1, 1]
    assert all(line.startswith("images/s") and line.endswith("_L.png") for v in lines.values() for line in v)
    dataset = build_dataset("camvid", data_root, "list/camvid/train.lst", num_classes=11, is_train=False)
    assert len(dataset) == 3
