"""Colour palettes, label colourisation, overlays and image grids.

The palettes are the official ones: ``tools/custom.py`` colours Cityscapes' 19 train IDs,
``datasets/camvid.py`` maps CamVid's 11 classes to these RGB colours. Any other class count
gets a fixed, deterministic palette so custom datasets are still readable.

Everything here works on RGB ``uint8`` NumPy arrays (``HxWx3``); conversion to OpenCV's BGR
happens only where files are written.
"""
import logging

import numpy as np

from datasets import camvid, cityscapes
from datasets.base_dataset import MEAN, STD

logger = logging.getLogger(__name__)

# One home for the official palettes and class names: the dataset modules.
CITYSCAPES_PALETTE = tuple(cityscapes.PALETTE)
CITYSCAPES_CLASSES = tuple(cityscapes.CLASS_NAMES)
CAMVID_PALETTE = tuple(camvid.PALETTE)
CAMVID_CLASSES = tuple(camvid.CLASS_NAMES)
# Class counts with an official palette; anything else falls back to a generated one.
_KNOWN = {
    len(CITYSCAPES_PALETTE): (CITYSCAPES_PALETTE, CITYSCAPES_CLASSES),
    len(CAMVID_PALETTE): (CAMVID_PALETTE, CAMVID_CLASSES),
}
# Pixels whose label has no colour (ignore label 255, out-of-range IDs) stay black, as the
# official script leaves them.
IGNORE_COLOR = (0, 0, 0)


def generated_palette(num_classes):
    """A deterministic palette for any class count (the PASCAL VOC bit-interleaving scheme)."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        label, r, g, b = index + 1, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        palette[index] = (r, g, b)
    return palette


def palette_for(num_classes, colors=None):
    """``(num_classes, 3)`` uint8 RGB palette: ``colors`` if given, else official or generated.

    Raises:
        ValueError: ``colors`` has the wrong length or values outside 0..255.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if colors:
        array = np.asarray(colors, dtype=np.int64)
        if array.shape != (num_classes, 3) or array.min() < 0 or array.max() > 255:
            raise ValueError(f"expected {num_classes} colours as [R, G, B] in 0..255, got shape "
                             f"{array.shape}")
        return array.astype(np.uint8)
    if num_classes in _KNOWN:
        return np.asarray(_KNOWN[num_classes][0], dtype=np.uint8)
    return generated_palette(num_classes)


def class_names_for(num_classes):
    """Official class names for 19 (Cityscapes) or 11 (CamVid) classes, else ``class_0..``."""
    if num_classes in _KNOWN:
        return list(_KNOWN[num_classes][1])
    return [f"class_{i}" for i in range(num_classes)]


def colorize(label, palette, ignore_color=IGNORE_COLOR):
    """Map an ``HxW`` integer label map to an ``HxWx3`` uint8 RGB image.

    Labels outside ``0..len(palette)-1`` (e.g. the ignore label 255) get ``ignore_color``.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"colorize expects an HxW label map, got shape {label.shape}")
    palette = np.asarray(palette, dtype=np.uint8)
    out = np.empty(label.shape + (3,), dtype=np.uint8)
    out[:] = ignore_color
    valid = (label >= 0) & (label < len(palette))
    out[valid] = palette[label[valid].astype(np.int64)]
    return out


def overlay(image, color_mask, alpha=0.5):
    """Blend an RGB image with a colourised mask: ``(1 - alpha) * image + alpha * mask``."""
    image = np.asarray(image)
    color_mask = np.asarray(color_mask)
    if image.shape != color_mask.shape:
        raise ValueError(f"image {image.shape} and mask {color_mask.shape} must have the same shape")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * color_mask.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def denormalize(image, mean=MEAN, std=STD):
    """Undo the ImageNet normalisation of a ``3xHxW`` (or ``HxWx3``) float image -> uint8 RGB."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    array = array * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def image_grid(rows, pad=4, background=255):
    """Tile a list of rows (each a list of equally tall RGB images) into one uint8 image."""
    if not rows or not all(rows):
        raise ValueError("image_grid needs at least one non-empty row")
    row_images = []
    for row in rows:
        height = max(img.shape[0] for img in row)
        cells = []
        for img in row:
            cell = np.full((height, img.shape[1], 3), background, dtype=np.uint8)
            cell[:img.shape[0]] = img
            cells.append(cell)
            cells.append(np.full((height, pad, 3), background, dtype=np.uint8))
        row_images.append(np.concatenate(cells[:-1], axis=1))
    width = max(r.shape[1] for r in row_images)
    out = []
    for r in row_images:
        padded = np.full((r.shape[0], width, 3), background, dtype=np.uint8)
        padded[:, :r.shape[1]] = r
        out.append(padded)
        out.append(np.full((pad, width, 3), background, dtype=np.uint8))
    return np.concatenate(out[:-1], axis=0)
