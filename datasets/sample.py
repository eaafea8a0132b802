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
per dataset and process; :func:`datasets.base_dataset.seed_worker` reseeds it in every DataLoader worker so runs
are reproducible under ``torch.manual_seed``.
"""
import functools

import cv2
import numpy as np

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The official code zeroes this many boundary pixels along each side of Cityscapes labels.
CITYSCAPES_EDGE_BORDER = 6


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
