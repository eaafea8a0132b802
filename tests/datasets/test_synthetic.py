"""The synthetic street-scene generator and tools/make_synthetic.py."""
import hashlib
import os

import cv2
import numpy as np
import pytest

from datasets import build_dataset
from datasets.camvid import PALETTE as CAMVID_PALETTE
from datasets.cityscapes import label_lut
from datasets.synthetic import camvid_color_lut, generate, scene, write_samples
from tools import make_synthetic
from utils.cli import run_main
from utils.errors import DatasetError

PINNED_DIGEST = "e343ea71f5c1dd8bcf0028dcf0c02257d36f419ffca7d4b39f6b3add6e6467bf"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic")) + "/"
    generate(root, num_train=4, num_val=2, num_test=2, size=(128, 64), seed=3,
             layouts=("cityscapes", "camvid", "custom"))
    return root


def test_scenes_are_deterministic():
    a_img, a_lab = scene(1, "train", 5, (96, 48))
    b_img, b_lab = scene(1, "train", 5, (96, 48))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, _ = scene(2, "train", 5, (96, 48))
    d_img, _ = scene(1, "val", 5, (96, 48))
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_img, d_img)
    assert a_img.shape == (48, 96, 3) and a_img.dtype == np.uint8 and a_lab.shape == (48, 96)


def test_scenes_cover_the_classes_and_void_ids():
    labels = [scene(0, "train", i, (256, 128))[1] for i in range(12)]
    ids = set(np.unique(np.concatenate([lab.ravel() for lab in labels])).tolist())
    assert ids <= set(range(34))
    train_ids = set(label_lut()[sorted(ids)].tolist()) - {255}
    assert len(train_ids) >= 14, sorted(train_ids)
    assert {0, 1, 2, 5, 8, 10, 11, 13} <= train_ids  # road sidewalk building pole veg sky person car
    assert len(ids & {0, 1, 3, 4, 6}) >= 3  # void IDs that the 19-class mapping must ignore
    assert all(len(np.unique(label_lut()[lab])) >= 5 for lab in labels)


def test_scene_colours_follow_classes():
    """Learnable: classes differ in colour on average, and images are textured, not flat."""
    scenes = [scene(4, "train", i, (128, 64)) for i in range(6)]
    pixels = {k: np.concatenate([img[lab == k] for img, lab in scenes]) for k in (7, 21, 23)}
    means = {k: v.mean(axis=0) for k, v in pixels.items()}
    for a, b in ((7, 21), (7, 23), (21, 23)):
        assert np.abs(means[a] - means[b]).max() > 20, (a, b, means)
    road = scenes[0][0][scenes[0][1] == 7].astype(float)
    assert road.std(axis=0).min() > 3  # textured asphalt, lane paint and noise


def test_generate_writes_loadable_layouts(synthetic_root):
    root = synthetic_root
    assert os.path.isfile(root + "SYNTHETIC.txt")
    for name, classes, lists in (("cityscapes", 19, ("train", "val", "trainval", "test")),
                                 ("camvid", 11, ("train", "val", "trainval", "test")),
                                 ("custom", 19, ("train", "val", "trainval", "test"))):
        for split in lists:
            rel = f"list/{name}/{split}.lst"
            expected = {"train": 4, "val": 2, "trainval": 6, "test": 2}[split]
            dataset = build_dataset(name, root, rel, num_classes=classes, is_train=False)
            assert len(dataset) == expected
            image, label, edge, size, _ = dataset[0]
            assert image.shape == (3, 64, 128) and size.tolist() == [64, 128]
            if name == "cityscapes" and split == "test":
                assert (label == 255).all()  # official test lists: images only
            else:
                assert (label != 255).float().mean() > 0.5 and edge.any()
        train = build_dataset(name, root, f"list/{name}/train.lst", num_classes=classes, is_train=True,
                              crop_size=(32, 64), base_size=128, seed=0)
        assert train[0][1].shape == (32, 64)


def test_layouts_hold_the_same_scene(synthetic_root):
    root = synthetic_root
    city = cv2.imread(root + "cityscapes/leftImg8bit/train/synth/synth0_000001_000019_leftImg8bit.png")
    ids = cv2.imread(root + "cityscapes/gtFine/train/synth/synth0_000001_000019_gtFine_labelIds.png", 0)
    camvid = cv2.imread(root + "camvid/images/train_000001.png")
    color = cv2.imread(root + "camvid/labels/train_000001_L.png")[:, :, ::-1]
    custom = cv2.imread(root + "custom/labels/train_000001.png", cv2.IMREAD_UNCHANGED)
    image, label = scene(3, "train", 1, (128, 64))
    assert np.array_equal(city, image[:, :, ::-1]) and np.array_equal(camvid, city)
    assert np.array_equal(ids, label)
    assert np.array_equal(color, camvid_color_lut()[label])
    assert np.array_equal(custom, label_lut()[label])
    allowed = {tuple(c) for c in CAMVID_PALETTE} | {(0, 0, 0)}
    assert {tuple(c) for c in np.unique(color.reshape(-1, 3), axis=0)} <= allowed


def test_generation_independent_of_workers(tmp_path):
    generate(str(tmp_path / "a"), num_train=10, num_val=2, num_test=0, size=(256, 128), seed=1, workers=2)
    generate(str(tmp_path / "b"), num_train=10, num_val=2, num_test=0, size=(256, 128), seed=1, workers=0)
    for sub in ("cityscapes/leftImg8bit/train/synth/synth0_000009_000019_leftImg8bit.png",
                "camvid/labels/val_000001_L.png", "list/camvid/trainval.lst"):
        assert open(tmp_path / "a" / sub, "rb").read() == open(tmp_path / "b" / sub, "rb").read()
    assert not os.path.exists(tmp_path / "a" / "list" / "cityscapes" / "test.lst")


def test_refuses_to_overwrite_real_lists(tmp_path):
    root = tmp_path / "data"
    (root / "list" / "cityscapes").mkdir(parents=True)
    (root / "list" / "cityscapes" / "train.lst").write_text("real.png\treal_label.png\n")
    with pytest.raises(DatasetError, match="did not write.*--overwrite"):
        generate(str(root), num_train=1, num_val=1, size=(32, 32))
    assert (root / "list" / "cityscapes" / "train.lst").read_text() == "real.png\treal_label.png\n"
    generate(str(root), num_train=1, num_val=1, size=(32, 32), overwrite=True)
    generate(str(root), num_train=2, num_val=1, size=(32, 32))  # its own output: fine
    assert len((root / "list" / "cityscapes" / "train.lst").read_text().splitlines()) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_train=0, num_val=0), "counts"),
    (dict(size=(8, 8)), "at least 16x16"),
    (dict(layouts=("kitti",)), "unknown synthetic layout"),
])
def test_generate_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(DatasetError, match=match):
        generate(str(tmp_path / "x"), **kwargs)


def test_write_samples(tmp_path):
    paths = write_samples(str(tmp_path / "samples"), count=2, size=(64, 32), seed=0)
    assert [os.path.basename(p) for p in paths] == ["synthetic_000.png", "synthetic_001.png"]
    image = cv2.imread(paths[0])
    assert image.shape == (32, 64, 3)
    assert np.array_equal(image[:, :, ::-1], scene(0, "samples", 0, (64, 32))[0])


def test_make_synthetic_cli(tmp_path, capsys):
    parser = make_synthetic.get_args_parser()
    args = parser.parse_args(["--root", str(tmp_path / "syn"), "--num-train", "2", "--num-val", "1",
                              "--size", "64", "32", "--samples", str(tmp_path / "s"), "--num-samples", "1",
                              "--no-progress"])
    assert run_main(make_synthetic.main, args) == 0
    assert (tmp_path / "syn" / "list" / "camvid" / "trainval.lst").read_text().count("\n") == 3
    assert (tmp_path / "s" / "synthetic_000.png").is_file()
    args = parser.parse_args(["--root", str(tmp_path / "z"), "--num-train", "0", "--num-val", "0"])
    assert run_main(make_synthetic.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: nothing to do: --num-train and --num-val are 0 and no --samples DIR given"]
    assert not (tmp_path / "z").exists()


def _tree_digest(root):
    """SHA-256 over every file's relative path and content, PNGs by their decoded pixels (so a
    different libpng/zlib build that compresses differently gives the same digest)."""
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            if name.endswith(".png"):
                array = cv2.imread(path, cv2.IMREAD_UNCHANGED)
                digest.update(repr((array.shape, array.dtype.str)).encode() + array.tobytes())
            else:
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()


def test_output_is_pinned_for_a_seed(tmp_path):
    """The scenes, labels, lists and marker for seed 7 are exactly those of the single-file generator
    this package was split from (digest recorded before the split); any change to the drawing or the
    layouts shows up here."""
    root = str(tmp_path / "syn")
    generate(root, num_train=3, num_val=2, num_test=2, size=(96, 48), seed=7,
             layouts=("cityscapes", "camvid", "custom"))
    write_samples(os.path.join(root, "samples"), count=2, size=(64, 32), seed=7)
    assert _tree_digest(root) == PINNED_DIGEST
