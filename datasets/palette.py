"""The one class palette: which RGB colour each class index gets, for every tool.

``eval --save-color``, ``tools/custom.py``, the demo's prediction grid and the report's
per-class swatches all colour class ``i`` with ``palette_for(num_classes, colors)[i]``, so the
same checkpoint on the same data looks the same everywhere. The colours are the datasets':
19 classes are Cityscapes' train IDs, 11 are CamVid's (the official ``save_pred`` colours);
``DATASET.CLASS_COLORS`` wins when a custom config gives it; any other count gets the
Cityscapes colours first and then distinct generated ones.
"""
import numpy as np

from datasets.camvid import CLASS_NAMES as CAMVID_CLASSES
from datasets.camvid import PALETTE as CAMVID_PALETTE
from datasets.cityscapes import CLASS_NAMES as CITYSCAPES_CLASSES
from datasets.cityscapes import PALETTE as CITYSCAPES_PALETTE

# Class counts that are an official dataset: their colours and names.
OFFICIAL = {
    len(CITYSCAPES_PALETTE): (tuple(CITYSCAPES_PALETTE), tuple(CITYSCAPES_CLASSES)),
    len(CAMVID_PALETTE): (tuple(CAMVID_PALETTE), tuple(CAMVID_CLASSES)),
}


def _bit_interleaved(value):
    # PASCAL VOC's colour map: distinct for every value, spread over the RGB cube.
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((value >> 0) & 1) << shift
        g |= ((value >> 1) & 1) << shift
        b |= ((value >> 2) & 1) << shift
        value >>= 3
    return (r, g, b)


def default_colors(num_classes):
    """Colours (list of ``(R, G, B)`` ints) when the config gives none: see the module doc."""
    if num_classes in OFFICIAL:
        return list(OFFICIAL[num_classes][0])
    colors = list(CITYSCAPES_PALETTE[:num_classes])
    used = set(colors)
    value = len(colors) + 1
    while len(colors) < num_classes:
        color = _bit_interleaved(value)
        if color not in used:
            colors.append(color)
            used.add(color)
        value += 1
    return colors


def palette_for(num_classes, colors=None):
    """``(num_classes, 3)`` uint8 RGB palette: ``colors`` (``DATASET.CLASS_COLORS``) if given,
    else :func:`default_colors`.

    Raises:
        ValueError: ``num_classes < 1``, or ``colors`` has the wrong length or values outside 0..255.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if colors is not None and len(colors):
        array = np.asarray(colors, dtype=np.int64)
        if array.shape != (num_classes, 3) or array.min() < 0 or array.max() > 255:
            raise ValueError(f"expected {num_classes} colours as [R, G, B] in 0..255, got shape "
                             f"{array.shape}")
        return array.astype(np.uint8)
    return np.asarray(default_colors(num_classes), dtype=np.uint8)


def class_names_for(num_classes):
    """Official class names for 19 (Cityscapes) or 11 (CamVid) classes, else ``class_0..``."""
    if num_classes in OFFICIAL:
        return list(OFFICIAL[num_classes][1])
    return [f"class_{i}" for i in range(num_classes)]
