"""Sample generation shared by every dataset: the official PIDNet recipe.

The official ``gen_sample`` (HRNet lineage) does, in this order:

1. boundary target from the *train-ID* label at full resolution:
   ``cv2.Canny(label, 0.1, 0.2)``, a 6-pixel border zeroed (Cityscapes only),
   ``cv2.dilate`` with a ``bd_dilate_size`` x ``bd_dilate_size`` kernel of ones, ``> 50``;
2. multi-scale (training): long side = ``int(base_size * s + 0.5)`` with
   ``s = 0.5 + randint(0, scale_factor) / 10`` (both ends included), the short side
   ``int(short * long / long_old + 0.5)``; image linear, label and edge nearest; then pad
   (image 0, label ignore, edge 0) up to the crop and crop at ``x = randint(0, W - cw)``,
   ``y = randint(0, H - ch)``;
3. normalisation ``(rgb / 255 - mean) / std`` and HWC -> CHW;
4. random horizontal flip of image, label and edge together.

Random draws happen in that order (scale, x, y, flip) from one ``numpy.random.Generator``
per dataset and process; :func:`seed_worker` reseeds it in every DataLoader worker so runs
are reproducible under ``torch.manual_seed``.
"""
import functools
import logging
import os
import random

import cv2
import numpy as np
import torch
from torch.utils import data

from utils.errors import DatasetError

logger = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The official code zeroes this many boundary pixels along each side of Cityscapes labels.
CITYSCAPES_EDGE_BORDER = 6
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
_MISSING_SHOWN = 5


# ---------------------------------------------------------------------------
# Pure functions of the recipe (unit-tested on their own).
# ---------------------------------------------------------------------------

def boundary_target(label, dilate_size=4, border=0):
    """The official boundary target of a uint8 label: uint8 {0, 1}, same size."""
    edge = cv2.Canny(np.ascontiguousarray(label, dtype=np.uint8), 0.1, 0.2)
    if border > 0:
        # Official: crop the border off and pad it back with zeros (images smaller than
        # two borders end up all zero, as there).
        kept = edge[border:-border, border:-border]
        edge = np.zeros_like(edge)
        if kept.size:
            edge[border:-border, border:-border] = kept
    kernel = np.ones((dilate_size, dilate_size), np.uint8)
    return (cv2.dilate(edge, kernel, iterations=1) > 50).astype(np.uint8)


def scaled_size(height, width, base_size, rand_scale):
    """(new_h, new_w) of the official ``multi_scale_aug``: the long side becomes base*scale."""
    long_size = max(int(base_size * rand_scale + 0.5), 1)
    # max(.., 1): very elongated images would otherwise get a zero side (a cv2 error).
    if height > width:
        return long_size, max(int(width * long_size / height + 0.5), 1)
    return max(int(height * long_size / width + 0.5), 1), long_size


def pad_to(array, crop_size, value):
    """Pad bottom/right with ``value`` up to ``crop_size`` (h, w); unchanged when big enough."""
    h, w = array.shape[:2]
    pad_h, pad_w = max(crop_size[0] - h, 0), max(crop_size[1] - w, 0)
    if pad_h == 0 and pad_w == 0:
        return array
    widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, widths, mode="constant", constant_values=value)


@functools.lru_cache(maxsize=8)
def _normalize_tables(mean, std):
    """Per-channel 256-entry float32 tables of the official ``(v / 255 - mean) / std``."""
    values = np.arange(256, dtype=np.float32)[:, None] / 255.0
    # As the official code: float32 division, then float64 maths stored in float32.
    table = np.empty((256, 3), np.float32)
    table[...] = values - np.asarray(mean, dtype=np.float64)
    table /= np.asarray(std, dtype=np.float64)
    return tuple(np.ascontiguousarray(table[:, c]) for c in range(3))


def normalize(image_rgb, mean=MEAN, std=STD):
    """uint8 HxWx3 RGB -> contiguous float32 3xHxW, ``(x / 255 - mean) / std``.

    A table lookup per channel: bit-identical to the official float arithmetic and several
    times faster than broadcasting over the channel axis.
    """
    tables = _normalize_tables(tuple(float(m) for m in mean), tuple(float(v) for v in std))
    if image_rgb.strides[-1] != 1 or image_rgb.strides[-2] != 3:
        image_rgb = np.ascontiguousarray(image_rgb)  # cv2 takes row-strided crops, not others
    planes = cv2.split(image_rgb)
    return np.stack([cv2.LUT(plane, table) for plane, table in zip(planes, tables)])


def gen_sample(image, label, rng=None, *, multi_scale=False, flip=False, base_size=2048,
               crop_size=(512, 1024), scale_factor=16, ignore_label=255, edge_border=0,
               bd_dilate_size=4, crop_without_scale=False, mean=MEAN, std=STD):
    """One training/eval sample from a uint8 RGB image and a uint8 train-ID label.

    Args:
        image: HxWx3 uint8 RGB.
        label: HxW uint8 with train IDs and ``ignore_label``.
        rng: ``numpy.random.Generator``; needed when ``multi_scale`` or ``flip``.
        crop_size: (h, w) of the random crop (only used with ``multi_scale``, as the
            official code, or with ``crop_without_scale``).
        edge_border: pixels of boundary zeroed on each side (6 for Cityscapes, 0 otherwise).

    Returns:
        (image float32 3xhxw, label uint8 hxw, edge uint8 hxw in {0, 1}).
    """
    edge = boundary_target(label, bd_dilate_size, edge_border)
    crop = False
    if multi_scale:
        rand_scale = 0.5 + int(rng.integers(0, scale_factor + 1)) / 10.0
        new_h, new_w = scaled_size(image.shape[0], image.shape[1], base_size, rand_scale)
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        edge = cv2.resize(edge, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        crop = True
    if crop or crop_without_scale:
        image, label, edge = random_crop(image, label, edge, crop_size, ignore_label, rng)
    if flip and int(rng.integers(0, 2)) == 1:
        # Flipping before the (per-pixel) normalisation gives the official result, cheaper.
        image, label, edge = cv2.flip(image, 1), cv2.flip(label, 1), cv2.flip(edge, 1)
    return normalize(image, mean, std), label, edge


def random_crop(image, label, edge, crop_size, ignore_label, rng):
    """Pad (image 0, label ignore, edge 0) to the crop, then crop at a random place (x, then y)."""
    image = pad_to(image, crop_size, 0)
    label = pad_to(label, crop_size, ignore_label)
    edge = pad_to(edge, crop_size, 0)
    h, w = label.shape
    x = int(rng.integers(0, w - crop_size[1] + 1))
    y = int(rng.integers(0, h - crop_size[0] + 1))
    window = (slice(y, y + crop_size[0]), slice(x, x + crop_size[1]))
    return image[window], label[window], edge[window]


def colors_to_index(color_map, colors, ignore_label=255):
    """RGB colour label HxWx3 -> uint8 class indices by exact colour match (vectorised).

    Returns ``(label, unmatched)``: ``label`` holds ``ignore_label`` where no colour of
    ``colors`` matched, ``unmatched`` is that boolean mask.
    """
    rgb = np.asarray(color_map, dtype=np.uint32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.uint32)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    position = np.searchsorted(sorted_keys, codes).clip(max=len(keys) - 1)
    matched = sorted_keys[position] == codes
    label = np.where(matched, order[position], ignore_label).astype(np.uint8)
    return label, ~matched


def index_to_colors(label, colors):
    """uint8 class indices -> RGB uint8 HxWx3 (unknown indices black)."""
    table = np.zeros((256, 3), np.uint8)
    table[:len(colors)] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return table[np.asarray(label).astype(np.uint8)]


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
