"""Colour palettes, label colourisation, overlays and image grids.

The palette itself (which colour each class gets) is ``datasets/palette.py``'s, re-exported
here as ``palette_for`` so every tool colours the same classes the same.

Everything here works on RGB ``uint8`` NumPy arrays (``HxWx3``); conversion to OpenCV's BGR
happens only where files are written.
"""
import logging

import numpy as np

from datasets.base_dataset import MEAN, STD
from datasets.palette import class_names_for, palette_for  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

# Pixels whose label has no colour (ignore label 255, out-of-range IDs) stay black, as the
# official script leaves them.
IGNORE_COLOR = (0, 0, 0)


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
