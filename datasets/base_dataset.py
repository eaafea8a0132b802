"""The dataset base class: list files, image reading with user-facing errors, seeding, and
``__getitem__`` through the official sample recipe of :mod:`datasets.sample` (whose functions and
constants are importable from here too, their long-standing home)."""
import logging
import os
import random

import cv2
import numpy as np
import torch
from torch.utils import data

from datasets.sample import (CITYSCAPES_EDGE_BORDER, MEAN, STD, boundary_target, colors_to_index,  # noqa: F401
                             gen_sample, index_to_colors, normalize, pad_to, random_crop, scaled_size)
from utils.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
_MISSING_SHOWN = 5


# ---------------------------------------------------------------------------
# File reading with user-facing errors.
# ---------------------------------------------------------------------------

def read_image_file(path, flags):
    """``cv2.imdecode`` of a file (works with any path encoding); DatasetError if unreadable."""
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}. It is listed in the dataset list; "
                           "restore it or regenerate the list (tools/make_lists.py)") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}. Check the file and its permissions") from None
    image = None
    if buffer.size:
        try:
            image = cv2.imdecode(buffer, flags)
        except cv2.error:
            image = None
    if image is None:
        raise DatasetError(f"corrupt or unsupported image file: {path}. Re-export it as PNG/JPEG "
                           "or remove it from the list")
    return image


def read_rgb(path):
    """uint8 HxWx3 RGB (grey images are expanded to three channels)."""
    return cv2.cvtColor(read_image_file(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_list(list_file):
    """Parse a list file into rows of 1 or 2 fields; DatasetError naming file:line otherwise.

    Fields are tab-separated when a line has a tab (paths may then hold spaces), else
    separated by any whitespace. Every row must have as many fields as the first one.
    """
    rows = []
    expected = None
    with open(list_file, encoding="utf-8-sig") as handle:  # -sig: tolerate a BOM
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "\t" in line:
                fields = [field.strip() for field in line.split("\t") if field.strip()]
            else:
                fields = line.split()
            if expected is None and len(fields) in (1, 2):
                expected = len(fields)
            if len(fields) != expected:
                want = "'image label'" if expected == 2 else "'image'"
                if expected is None:
                    want = "'image label' or 'image'"
                raise DatasetError(f"{list_file}:{number}: expected {want} "
                                   f"({expected or '1 or 2'} field(s)) but found {len(fields)}: "
                                   f"{line!r}. Fix the line or regenerate the list with "
                                   "tools/make_lists.py")
            rows.append(fields)
    if not rows:
        raise DatasetError(f"list file is empty: {list_file}. Regenerate it with tools/make_lists.py")
    return rows


# ---------------------------------------------------------------------------
# Seeding.
# ---------------------------------------------------------------------------

def seed_worker(worker_id):
    """``DataLoader(worker_init_fn=seed_worker)``: per-worker seeds derived from torch's.

    torch gives each worker ``base_seed + worker_id`` (``base_seed`` drawn from the main
    process' torch RNG every epoch), so augmentations differ per worker and per epoch and
    are reproducible under ``torch.manual_seed``.
    """
    info = data.get_worker_info()
    seed = info.seed if info is not None else torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    if info is not None:
        reseed_dataset(info.dataset, seed)


def reseed_dataset(dataset, seed):
    """Reseed every :class:`BaseDataset` inside ``dataset`` (Concat/Subset wrappers included).

    ``seed``: an int or a list of ints; the parts of a ConcatDataset get distinct streams.
    """
    if isinstance(dataset, BaseDataset):
        dataset.reseed(seed)
    parent = list(seed) if isinstance(seed, (list, tuple)) else [int(seed)]
    for index, child in enumerate(getattr(dataset, "datasets", ())):
        reseed_dataset(child, parent + [index])
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        reseed_dataset(inner, seed)


# ---------------------------------------------------------------------------
# The dataset base class.
# ---------------------------------------------------------------------------

class BaseDataset(data.Dataset):
    """A list-file segmentation dataset following the official sample recipe.

    Subclasses set ``name``, ``num_classes``, ``class_names``, ``palette``,
    ``class_weights``, ``edge_border`` and implement ``_read_label`` (file -> uint8 train
    IDs). ``__getitem__`` returns ``(image, label, edge, size, name)``: float32 3xHxW,
    int64 HxW (255 = ignore), float32 HxW in {0, 1}, int64 [H, W] of the original image, str.

    Args:
        root: dataset root (``DATASET.ROOT``); the list is ``root/list_path``.
        list_path: list file relative to ``root`` (or absolute).
        data_dir: folder that the list's paths are relative to.
        is_train: training (augmentation as configured) or evaluation (full image, none).
        crop_size: (h, w) of training crops.
        seed: optional seed of the augmentation RNG (default: derived from torch's seed).
    """

    name = "base"
    edge_border = 0
    # The official code only crops together with multi-scale resizing.
    crop_without_scale = False
    # Sample names (prediction file names) come from the label file, as the official code.
    name_from_label = True

    def __init__(self, root, list_path, data_dir, *, num_classes, is_train, crop_size=(512, 1024),
                 base_size=2048, multi_scale=True, flip=True, scale_factor=16, ignore_label=255,
                 bd_dilate_size=4, mean=MEAN, std=STD, seed=None):
        self.root = root
        self.list_path = list_path
        self.data_dir = data_dir
        self.num_classes = int(num_classes)
        self.is_train = bool(is_train)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.base_size = int(base_size)
        self.multi_scale = bool(multi_scale) and self.is_train
        self.flip = bool(flip) and self.is_train
        self.scale_factor = int(scale_factor)
        self.ignore_label = int(ignore_label)
        self.bd_dilate_size = int(bd_dilate_size)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._rng = None if seed is None else np.random.default_rng(seed)
        self.unknown_label_pixels = 0
        self._warned_unknown = False
        if not 0 <= self.ignore_label <= 255:
            raise DatasetError(f"ignore label {ignore_label} must be in 0..255 (labels are uint8); "
                               "set TRAIN.IGNORE_LABEL 255")
        if self.is_train and (self.crop_size[0] <= 0 or self.crop_size[1] <= 0):
            raise DatasetError(f"crop size {crop_size} must be positive (TRAIN.IMAGE_SIZE is width, height)")
        self.list_file = self._check_paths()
        self.files = self._read_files()

    # -- construction ------------------------------------------------------

    def _check_paths(self):
        if not os.path.isdir(self.root):
            raise DatasetError(f"dataset root not found: {self.root}. Set DATASET.ROOT to the folder "
                               f"holding {self.name}/ and list/ (see data/README.md), or make "
                               "synthetic data with tools/make_synthetic.py")
        list_file = os.path.join(self.root, self.list_path)
        if not os.path.isfile(list_file):
            raise DatasetError(f"list file not found: {list_file}. Check DATASET.TRAIN_SET/TEST_SET "
                               "(relative to DATASET.ROOT) or write it with tools/make_lists.py")
        if not os.path.isdir(self.data_dir):
            raise DatasetError(f"data folder not found: {self.data_dir}. The list's paths are "
                               f"relative to it; put the {self.name} files there (see data/README.md)")
        return list_file

    def _read_files(self):
        rows = read_list(self.list_file)
        has_labels = len(rows[0]) == 2
        if self.is_train and not has_labels:
            raise DatasetError(f"{self.list_file} lists images only (no labels) and cannot be used "
                               "for training; use a list with 'image label' lines")
        files = []
        missing = []
        for fields in rows:
            item = {"img": os.path.join(self.data_dir, fields[0])}
            if has_labels:
                item["label"] = os.path.join(self.data_dir, fields[1])
            named = fields[1] if has_labels and self.name_from_label else fields[0]
            item["name"] = os.path.splitext(os.path.basename(named))[0]
            for key in ("img", "label"):
                if key in item and not os.path.isfile(item[key]):
                    missing.append(item[key])
            files.append(item)
        if missing:
            shown = ", ".join(missing[:_MISSING_SHOWN])
            more = f" (and {len(missing) - _MISSING_SHOWN} more)" if len(missing) > _MISSING_SHOWN else ""
            raise DatasetError(f"{len(missing)} file(s) named in {self.list_file} are missing: "
                               f"{shown}{more}. Check DATASET.ROOT, restore the files or regenerate "
                               "the list with tools/make_lists.py")
        return files

    @property
    def has_labels(self):
        return bool(self.files) and "label" in self.files[0]

    # -- randomness --------------------------------------------------------

    def reseed(self, seed):
        self._rng = np.random.default_rng(seed)

    @property
    def rng(self):
        if self._rng is None:
            self._rng = np.random.default_rng(torch.initial_seed())
        return self._rng

    # -- per-dataset hooks -------------------------------------------------

    def _read_image(self, path):
        return read_rgb(path)

    def _read_label(self, path):
        raise NotImplementedError

    def train_id_to_label_id(self, label):
        """Predicted train IDs -> the dataset's own label encoding (identity here)."""
        return np.asarray(label).astype(np.uint8)

    def _note_unknown(self, path, values, count):
        """Count label values outside the mapping (they became ignore) and warn once."""
        self.unknown_label_pixels += int(count)
        if not self._warned_unknown:
            self._warned_unknown = True
            shown = [v if isinstance(v, tuple) else int(v) for v in list(values)[:10]]
            logger.warning("%s: %d pixel(s) with label value(s) %s outside the %s mapping are "
                           "ignored (%d); further occurrences are counted in "
                           "dataset.unknown_label_pixels without warning", path, count, shown,
                           self.name, self.ignore_label)

    # -- Dataset API -------------------------------------------------------

    def __len__(self):
        return len(self.files)

    def load_pair(self, index):
        """(RGB uint8 image, uint8 train-ID label or None) of sample ``index``."""
        item = self.files[index]
        image = self._read_image(item["img"])
        if "label" not in item:
            return image, None
        label = self._read_label(item["label"])
        if label.shape[:2] != image.shape[:2]:
            raise DatasetError(f"label {item['label']} is {label.shape[1]}x{label.shape[0]} but its "
                               f"image {item['img']} is {image.shape[1]}x{image.shape[0]} (WxH); "
                               "labels must match their images pixel for pixel")
        return image, label

    def __getitem__(self, index):
        item = self.files[index]
        image, label = self.load_pair(index)
        size = torch.tensor(image.shape[:2], dtype=torch.int64)
        if label is None:
            # Image-only (test) lists: the official code just normalises the full image.
            image = normalize(image, self.mean, self.std)
            label = np.full(image.shape[1:], self.ignore_label, np.uint8)
            edge = np.zeros(image.shape[1:], np.uint8)
        else:
            augment = self.multi_scale or self.flip or (self.is_train and self.crop_without_scale)
            image, label, edge = gen_sample(
                image, label, self.rng if augment else None, multi_scale=self.multi_scale,
                flip=self.flip, base_size=self.base_size, crop_size=self.crop_size,
                scale_factor=self.scale_factor, ignore_label=self.ignore_label,
                edge_border=self.edge_border, bd_dilate_size=self.bd_dilate_size,
                crop_without_scale=self.is_train and self.crop_without_scale,
                mean=self.mean, std=self.std)
        return (torch.from_numpy(np.ascontiguousarray(image)),
                torch.from_numpy(label.astype(np.int64)),
                torch.from_numpy(edge.astype(np.float32)),
                size, item["name"])

    def __repr__(self):
        mode = "train" if self.is_train else "eval"
        return (f"{type(self).__name__}({self.list_file}, {len(self)} samples, {mode}, "
                f"{self.num_classes} classes)")
