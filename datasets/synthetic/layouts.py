"""Writing synthetic scenes in the official Cityscapes and CamVid layouts (and a custom one).

``generate`` writes ``root/{cityscapes,camvid,custom}/...`` and ``root/list/<layout>/<split>.lst``
so every official config runs with ``DATASET.ROOT root/``; the CamVid layout gets the same scenes
with labels in the CamVid colour coding. Drawing the scenes is ``datasets/synthetic/scenes.py``.
"""
import logging
import os

import cv2
import numpy as np

from datasets.camvid import PALETTE as CAMVID_PALETTE
from datasets.cityscapes import label_lut
from datasets.synthetic.scenes import (BICYCLE, BUILDING, BUS, CAR, FENCE, LIGHT, MOTORCYCLE, PERSON,
                                       POLE, RIDER, ROAD, SIDEWALK, SIGN, SKY, SPLIT_CODE, TERRAIN,
                                       TRUCK, VEGETATION, WALL, scene)
from utils.errors import DatasetError

logger = logging.getLogger(__name__)

# Cityscapes label ID -> CamVid class index; IDs not listed are void (black in CamVid).
_TO_CAMVID = {ROAD: 6, 9: 6, SIDEWALK: 7, BUILDING: 1, WALL: 1, FENCE: 4, POLE: 3, LIGHT: 8,
              SIGN: 8, VEGETATION: 10, TERRAIN: 10, SKY: 9, PERSON: 5, RIDER: 0, CAR: 2,
              TRUCK: 2, BUS: 2, MOTORCYCLE: 0, BICYCLE: 0}
SPLITS = ("train", "val", "test")


def camvid_color_lut():
    """256x3 table: Cityscapes label ID -> CamVid RGB colour (void black)."""
    lut = np.zeros((256, 3), np.uint8)
    for label_id, index in _TO_CAMVID.items():
        lut[label_id] = CAMVID_PALETTE[index]
    return lut


def _write_bytes(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "wb") as handle:
            handle.write(payload)
    except OSError as exc:
        raise DatasetError(f"could not write {path}: {exc.strerror}; choose a writable --root") from None


def _png(array):
    ok, payload = cv2.imencode(".png", array)
    if not ok:
        raise DatasetError(f"PNG encoding failed for an array of shape {array.shape}")
    return payload.tobytes()


def _write_list(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


_TRAIN_IDS = label_lut(255)
_CAMVID_COLORS = camvid_color_lut()


def _make_one(root, seed, split, index, size, layouts):
    """Render scene ``index`` of ``split`` and write it in every layout; returns list lines."""
    image, ids = scene(seed, split, index, size)
    image_png = _png(image[:, :, ::-1])  # encoded once, written to every layout
    lines = {}
    stem = f"synth{SPLIT_CODE[split]}_{index:06d}_000019"
    name = f"{split}_{index:06d}"
    if "cityscapes" in layouts:
        img_rel = f"leftImg8bit/{split}/synth/{stem}_leftImg8bit.png"
        lab_rel = f"gtFine/{split}/synth/{stem}_gtFine_labelIds.png"
        _write_bytes(os.path.join(root, "cityscapes", img_rel), image_png)
        if split == "test":  # official test lists hold images only
            lines["cityscapes"] = img_rel
        else:
            _write_bytes(os.path.join(root, "cityscapes", lab_rel), _png(ids))
            lines["cityscapes"] = f"{img_rel}\t{lab_rel}"
    if "camvid" in layouts:
        _write_bytes(os.path.join(root, "camvid", "images", f"{name}.png"), image_png)
        _write_bytes(os.path.join(root, "camvid", "labels", f"{name}_L.png"),
                     _png(_CAMVID_COLORS[ids][:, :, ::-1]))
        lines["camvid"] = f"images/{name}.png labels/{name}_L.png"
    if "custom" in layouts:
        _write_bytes(os.path.join(root, "custom", "images", f"{name}.png"), image_png)
        _write_bytes(os.path.join(root, "custom", "labels", f"{name}.png"), _png(_TRAIN_IDS[ids]))
        lines["custom"] = f"custom/images/{name}.png custom/labels/{name}.png"
    return split, lines


MARKER = "SYNTHETIC.txt"


def _check_root(root, overwrite):
    """Refuse to write over a real dataset's lists (e.g. ``--root data/``) unless asked to."""
    if overwrite or os.path.isfile(os.path.join(root, MARKER)):
        return
    list_dir = os.path.join(root, "list")
    if os.path.isdir(list_dir) and any(files for _, _, files in os.walk(list_dir)):
        raise DatasetError(f"{root} already holds list files that tools/make_synthetic.py did not write "
                           f"(no {MARKER}); choose another --root (e.g. data/synthetic) or pass "
                           "--overwrite to replace them")


def generate(root, num_train=100, num_val=20, num_test=None, size=(512, 256), seed=0,
             layouts=("cityscapes", "camvid"), workers=0, progress=False, overwrite=False):
    """Write synthetic scenes in the official layouts under ``root``; returns the list paths.

    Args:
        root: output folder (use it as ``DATASET.ROOT``).
        num_train, num_val, num_test: scenes per split (``num_test`` defaults to ``num_val``).
        size: (width, height) of every image.
        seed: scene ``i`` of a split depends only on (seed, split, i, size).
        layouts: any of ``'cityscapes'``, ``'camvid'``, ``'custom'`` (images/ + labels/ with
            the 19 Cityscapes train IDs as class indices, lists in ``list/custom/``).
        workers: threads rendering and encoding in parallel (0: in this thread); the
            output does not depend on it.
        overwrite: allow replacing list files in a ``root`` that this generator did not make.

    Raises:
        DatasetError: bad counts/size/layout, a real dataset's lists in ``root``, unwritable root.
    """
    num_test = num_val if num_test is None else num_test
    counts = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
    if any(n < 0 for n in counts.values()) or counts["train"] + counts["val"] == 0:
        raise DatasetError(f"scene counts must be >= 0 with some train/val scenes, got {counts}")
    layouts = tuple(layouts)
    unknown = set(layouts) - {"cityscapes", "camvid", "custom"}
    if unknown or not layouts:
        raise DatasetError(f"unknown synthetic layout(s) {sorted(unknown)}; use cityscapes, camvid, custom")
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise DatasetError(f"synthetic scenes need at least 16x16 pixels, got {width}x{height}")
    _check_root(root, overwrite)
    try:
        os.makedirs(root, exist_ok=True)
        # The wording (and its old file name) is part of the pinned output: tests/datasets/test_synthetic.py.
        _write_list(os.path.join(root, MARKER), [
            "Synthetic street scenes written by tools/make_synthetic.py (datasets/synthetic.py).",
            f"seed={seed} size={width}x{height} train={counts['train']} val={counts['val']} "
            f"test={counts['test']} layouts={','.join(layouts)}"])
    except OSError as exc:
        raise DatasetError(f"cannot write to {root}: {exc.strerror}; choose a writable --root") from None
    jobs = [(split, i) for split in SPLITS for i in range(counts[split])]
    lists = {layout: {split: [] for split in SPLITS} for layout in layouts}

    def run(job):
        return _make_one(root, seed, job[0], job[1], (width, height), layouts)

    if workers and workers > 1:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=int(workers))
        results = pool.map(run, jobs)
    else:
        pool, results = None, map(run, jobs)
    try:
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(jobs), desc="synthetic scenes", unit="img")
        for split, lines in results:
            for layout, line in lines.items():
                lists[layout][split].append(line)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    # Lists last, atomically: an interrupted run leaves no list pointing at missing files.
    written = []
    for layout, splits in lists.items():
        splits = dict(splits, trainval=splits["train"] + splits["val"])
        for split, lines in splits.items():
            if lines:
                path = os.path.join(root, "list", layout, f"{split}.lst")
                _write_list(path, lines)
                written.append(path)
    logger.info("wrote %d synthetic scenes (%dx%d) to %s", len(jobs), width, height, root)
    return written


def write_samples(out_dir, count=4, size=(512, 256), seed=0):
    """Plain street-scene images (no labels) for trying the custom-image tool; returns paths."""
    paths = []
    for i in range(int(count)):
        image, _ = scene(seed, "samples", i, size)
        path = os.path.join(out_dir, f"synthetic_{i:03d}.png")
        _write_bytes(path, _png(image[:, :, ::-1]))
        paths.append(path)
    return paths
