"""Helpers that write tiny datasets in the official layouts into ``tmp_path``."""
import os

import cv2
import numpy as np
import pytest


def write_list(root, dataset, list_name, lines):
    """Write ``root/list/<dataset>/<list_name>.lst``; returns its path relative to ``root``."""
    rel = f"list/{dataset}/{list_name}.lst"
    os.makedirs(os.path.join(root, "list", dataset), exist_ok=True)
    with open(os.path.join(root, rel), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return rel


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)


def write_cityscapes(root, samples, split="val", list_name=None, with_labels=True):
    """``samples``: list of (BGR image, label-ID array). Returns the list path relative to root."""
    lines = []
    for i, (bgr, ids) in enumerate(samples):
        stem = f"city_{i:06d}_000019"
        img_rel = f"leftImg8bit/{split}/city/{stem}_leftImg8bit.png"
        lab_rel = f"gtFine/{split}/city/{stem}_gtFine_labelIds.png"
        write_png(os.path.join(root, "cityscapes", img_rel), bgr)
        if with_labels:
            write_png(os.path.join(root, "cityscapes", lab_rel), ids)
            lines.append(f"{img_rel}\t{lab_rel}")
        else:
            lines.append(img_rel)
    return write_list(root, "cityscapes", list_name or split, lines)


def write_camvid(root, samples, list_name="val"):
    """``samples``: list of (RGB image, RGB colour label)."""
    lines = []
    for i, (rgb, color) in enumerate(samples):
        write_png(os.path.join(root, "camvid", "images", f"s{i}.png"), rgb[:, :, ::-1])
        write_png(os.path.join(root, "camvid", "labels", f"s{i}_L.png"), color[:, :, ::-1])
        lines.append(f"images/s{i}.png labels/s{i}_L.png")
    return write_list(root, "camvid", list_name, lines)


def write_custom(root, samples, list_name="train", ext=".png"):
    """``samples``: list of (RGB image, label array: HxW indices or HxWx3 colours/RGB)."""
    lines = []
    for i, (rgb, label) in enumerate(samples):
        write_png(os.path.join(root, "images", f"im{i}{ext}"), rgb[:, :, ::-1])
        write_png(os.path.join(root, "labels", f"im{i}.png"),
                  label if label.ndim == 2 else label[:, :, ::-1])
        lines.append(f"images/im{i}{ext} labels/im{i}.png")
    return write_list(root, "custom", list_name, lines)


@pytest.fixture
def data_root(tmp_path):
    root = str(tmp_path / "data") + "/"
    os.makedirs(root)
    return root


def random_scene(seed, h=64, w=96):
    """A random BGR image and a blocky Cityscapes label-ID map (valid and void IDs)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ids = np.kron(rng.integers(0, 34, (h // 8, w // 8)), np.ones((8, 8), np.int64)).astype(np.uint8)
    return image, ids


@pytest.fixture
def make():
    """Writers for the test layouts: ``make.cityscapes(root, samples)`` etc."""
    from types import SimpleNamespace

    return SimpleNamespace(cityscapes=write_cityscapes, camvid=write_camvid, custom=write_custom,
                           png=write_png, scene=random_scene)
