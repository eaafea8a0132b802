"""Issue 7: bad data is reported at start-up or as a DatasetError naming the file."""
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datasets import build_dataset
from utils.errors import DatasetError


def _build(root, rel, **kwargs):
    kwargs.setdefault("is_train", False)
    return build_dataset("cityscapes", root, rel, num_classes=19, **kwargs)


def test_missing_root(tmp_path):
    missing = str(tmp_path / "nowhere") + "/"
    with pytest.raises(DatasetError, match=f"dataset root not found: {missing}.*DATASET.ROOT"):
        _build(missing, "list/cityscapes/val.lst")


def test_missing_list_file(data_root):
    with pytest.raises(DatasetError, match=r"list file not found: .*list/cityscapes/val.lst.*make_lists"):
        _build(data_root, "list/cityscapes/val.lst")


def test_missing_data_folder(data_root):
    os.makedirs(data_root + "list/cityscapes")
    open(data_root + "list/cityscapes/val.lst", "w").write("a.png\tb.png\n")
    with pytest.raises(DatasetError, match=r"data folder not found: .*cityscapes"):
        _build(data_root, "list/cityscapes/val.lst")


@pytest.mark.parametrize("bad_line", ["a.png b.png c.png", "a.png\tb.png\tc.png"])
def test_wrong_number_of_fields_names_file_and_line(data_root, make, bad_line):
    rel = make.cityscapes(data_root, [make.scene(0), make.scene(1)])
    path = data_root + rel
    lines = open(path).read().splitlines()
    lines.insert(1, bad_line)
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{path}:2: expected 'image label' \(2 field\(s\)\) but found 3"):
        _build(data_root, rel)


def test_mixed_field_counts_name_the_line(data_root, make):
    rel = make.cityscapes(data_root, [make.scene(0), make.scene(1)])
    path = data_root + rel
    lines = open(path).read().splitlines()
    lines[1] = lines[1].split("\t")[0]
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{path}:2: expected 'image label'"):
        _build(data_root, rel)


def test_empty_list(data_root, make):
    rel = make.cityscapes(data_root, [make.scene(0)])
    open(data_root + rel, "w").write("\n\n")
    with pytest.raises(DatasetError, match="list file is empty"):
        _build(data_root, rel)


def test_missing_files_reported_at_construction(data_root, make):
    rel = make.cityscapes(data_root, [make.scene(i) for i in range(8)])
    lines = open(data_root + rel).read().splitlines()
    for line in lines[:7]:
        os.remove(os.path.join(data_root, "cityscapes", line.split("\t")[1]))
    with pytest.raises(DatasetError) as info:
        _build(data_root, rel)
    message = str(info.value)
    assert message.startswith("7 file(s) named in") and "(and 2 more)" in message
    assert "city_000000_000019_gtFine_labelIds.png" in message


def _corrupt(path, how):
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2] if how == "truncated" else b"not an image at all")


@pytest.mark.parametrize("which", ["image", "label"])
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_files_raise_dataset_error(data_root, make, which, how):
    rel = make.cityscapes(data_root, [make.scene(0, h=128, w=192)])
    image_rel, label_rel = open(data_root + rel).read().split()
    target = os.path.join(data_root, "cityscapes", image_rel if which == "image" else label_rel)
    _corrupt(target, how)
    dataset = _build(data_root, rel)
    with pytest.raises(DatasetError, match=f"corrupt or unsupported image file: {target}"):
        dataset[0]


def test_corrupt_file_in_worker_surfaces_as_dataset_error(data_root, make):
    rel = make.cityscapes(data_root, [make.scene(0), make.scene(1)])
    image_rel = open(data_root + rel).read().splitlines()[1].split("\t")[0]
    _corrupt(os.path.join(data_root, "cityscapes", image_rel), "garbage")
    loader = DataLoader(_build(data_root, rel), batch_size=1, num_workers=1)
    with pytest.raises(DatasetError, match="city_000001_000019_leftImg8bit.png"):
        list(loader)


def test_file_deleted_after_start(data_root, make):
    rel = make.cityscapes(data_root, [make.scene(0)])
    dataset = _build(data_root, rel)
    image_rel = open(data_root + rel).read().split()[0]
    os.remove(os.path.join(data_root, "cityscapes", image_rel))
    with pytest.raises(DatasetError, match="file not found: .*leftImg8bit.png"):
        dataset[0]


def test_label_size_mismatch(data_root, make):
    image, _ = make.scene(0, h=64, w=96)
    _, ids = make.scene(1, h=48, w=96)
    rel = make.cityscapes(data_root, [(image, ids)])
    with pytest.raises(DatasetError, match=r"label .*gtFine_labelIds.png is 96x48 but its image .* is 96x64"):
        _build(data_root, rel)[0]


def test_image_only_list_eval_and_train(data_root, make):
    rel = make.cityscapes(data_root, [make.scene(0)], split="test", with_labels=False)
    image, label, edge, size, name = _build(data_root, rel)[0]
    assert image.shape == (3, 64, 96) and (label == 255).all() and not edge.any()
    assert name == "city_000000_000019_leftImg8bit" and size.tolist() == [64, 96]
    with pytest.raises(DatasetError, match="images only.*cannot be used for training"):
        _build(data_root, rel, is_train=True, crop_size=(32, 32))


def test_image_smaller_than_crop_is_padded(data_root, make):
    rel = make.cityscapes(data_root, [make.scene(0, h=32, w=48)], split="train")
    dataset = _build(data_root, rel, is_train=True, crop_size=(64, 80), base_size=48,
                     multi_scale=True, flip=True, scale_factor=4, seed=0)
    image, label, edge, size, _ = dataset[0]
    assert image.shape == (3, 64, 80) and label.shape == edge.shape == (64, 80)
    assert (label[-1] == 255).all() and not edge[-1].any() and size.tolist() == [32, 48]
    assert torch.isfinite(image).all()


def test_grey_images_become_rgb(data_root, make):
    image, ids = make.scene(0)
    rel = make.cityscapes(data_root, [(image[:, :, 0], ids)])
    out = _build(data_root, rel)[0][0]
    assert out.shape == (3, 64, 96)
    # The three channels hold the same grey value.
    grey = [out[c] * s + m for c, (s, m) in enumerate(zip((0.229, 0.224, 0.225), (0.485, 0.456, 0.406)))]
    torch.testing.assert_close(grey[0], grey[2], atol=1e-5, rtol=0)
    np.testing.assert_allclose(grey[1].numpy() * 255, image[:, :, 0], atol=1e-3)
