"""Your own data: a list of ``image label`` paths relative to ``DATASET.ROOT``.

Labels are single-channel PNGs holding class indices ``0..NUM_CLASSES-1`` (255 = ignore).
RGB colour labels are accepted too when ``DATASET.CLASS_COLORS`` gives one colour per class.
Images are read as RGB; the sample recipe is the official one without the Cityscapes edge
border. Write the list with ``tools/make_lists.py --layout pairs`` (images/ + labels/).
"""
import cv2
import numpy as np
import torch

from datasets.base_dataset import BaseDataset, colors_to_index, index_to_colors, read_image_file
from datasets.palette import default_colors
from utils.errors import DatasetError


def check_class_info(num_classes, class_names, class_colors, class_weights, ignore_label=255):
    """Validate the YAML class lists; returns (names, colours, weights tensor or None)."""
    if not 1 <= num_classes <= 255 or num_classes > ignore_label:
        raise DatasetError(f"DATASET.NUM_CLASSES {num_classes} must be in 1..{min(255, ignore_label)} "
                           f"(labels are uint8 and {ignore_label} means ignore)")
    names = list(class_names or [])
    if names and len(names) != num_classes:
        raise DatasetError(f"DATASET.CLASS_NAMES has {len(names)} names but DATASET.NUM_CLASSES is "
                           f"{num_classes}; give one name per class")
    names = [str(n) for n in names] or [f"class_{i}" for i in range(num_classes)]
    colors = list(class_colors or [])
    if colors:
        if len(colors) != num_classes:
            raise DatasetError(f"DATASET.CLASS_COLORS has {len(colors)} colours but "
                               f"DATASET.NUM_CLASSES is {num_classes}; give one [R, G, B] per class")
        checked = []
        for i, color in enumerate(colors):
            values = list(color) if isinstance(color, (list, tuple)) else []
            if len(values) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
                raise DatasetError(f"DATASET.CLASS_COLORS[{i}] = {color!r} is not [R, G, B] with "
                                   "integers 0..255")
            checked.append(tuple(values))
        if len(set(checked)) != len(checked):
            raise DatasetError("DATASET.CLASS_COLORS has duplicate colours; colour labels need "
                               "one distinct colour per class")
        colors = checked
    else:
        colors = default_colors(num_classes)
    weights = None
    if class_weights is not None and len(class_weights):
        if len(class_weights) != num_classes:
            raise DatasetError(f"DATASET.CLASS_WEIGHTS has {len(class_weights)} values but "
                               f"DATASET.NUM_CLASSES is {num_classes}; give one weight per class "
                               "or leave it empty")
        weights = torch.as_tensor([float(w) for w in class_weights], dtype=torch.float32)
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise DatasetError(f"DATASET.CLASS_WEIGHTS must be finite and >= 0, got {list(class_weights)}")
    return names, colors, weights


class CustomDataset(BaseDataset):
    """Class-index (or colour) labels, classes described in the YAML."""

    name = "custom"
    edge_border = 0
    # Custom images may differ in size, so training always crops (batches need one size).
    crop_without_scale = True
    # Predictions are saved under the image's name (labels may carry suffixes or not exist).
    name_from_label = False

    def __init__(self, root, list_path, *, num_classes, ignore_label=255, class_names=None,
                 class_colors=None, class_weights=None, **kwargs):
        self.class_names, self.palette, self.class_weights = check_class_info(
            int(num_classes), class_names, class_colors, class_weights, int(ignore_label))
        self._colour_labels_allowed = bool(class_colors)
        super().__init__(root, list_path, root, num_classes=num_classes, ignore_label=ignore_label,
                         **kwargs)

    def _read_label(self, path):
        raw = read_image_file(path, cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3:
            channels = raw[:, :, :3]
            if raw.shape[2] >= 3 and not (np.array_equal(channels[:, :, 0], channels[:, :, 1])
                                          and np.array_equal(channels[:, :, 1], channels[:, :, 2])):
                if not self._colour_labels_allowed:
                    raise DatasetError(f"label {path} is a colour image; write single-channel class "
                                       "index PNGs, or set DATASET.CLASS_COLORS so colours can be "
                                       "mapped to classes")
                label, unmatched = colors_to_index(channels[:, :, ::-1], self.palette, self.ignore_label)
                # Black is the usual 'void' colour: ignored without a warning.
                odd = unmatched & channels.any(axis=-1)
                if odd.any():
                    colours = np.unique(channels[:, :, ::-1][odd].reshape(-1, 3), axis=0)
                    self._note_unknown(path, [tuple(int(v) for v in c) for c in colours[:10]],
                                       np.count_nonzero(odd))
                return label
            raw = raw[:, :, 0]
        unknown = (raw >= self.num_classes) & (raw != self.ignore_label)
        if unknown.any():
            self._note_unknown(path, np.unique(raw[unknown]), np.count_nonzero(unknown))
            raw = np.where(unknown, self.ignore_label, raw)
        return raw.astype(np.uint8)

    def label_to_color(self, label):
        return index_to_colors(label, self.palette)
