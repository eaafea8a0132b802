"""Cityscapes (fine annotations): label IDs -> 19 train IDs, official class weights.

Layout under ``root``: ``cityscapes/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
``cityscapes/gtFine/<split>/<city>/*_gtFine_labelIds.png``; lists in ``root/list/cityscapes/``
hold ``image<TAB>label`` lines (test: image only).
"""
import os

import cv2
import numpy as np
import torch

from datasets.base_dataset import CITYSCAPES_EDGE_BORDER, BaseDataset, read_image_file
from utils.errors import DatasetError

# Cityscapes label ID -> train ID (the 19 evaluated classes); every other ID is ignored.
LABEL_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                     24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# IDs the official mapping lists as ignore (the void/rare classes 0..33); values above are
# not Cityscapes IDs at all, so they are ignored *and* reported.
NUM_LABEL_IDS = 34

CLASS_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle"]
PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
           (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
           (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
           (0, 80, 100), (0, 0, 230), (119, 11, 32)]
CLASS_WEIGHTS = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
                 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507]


def label_lut(ignore_label=255):
    """256-entry uint8 table: label ID -> train ID (ignore elsewhere)."""
    lut = np.full(256, ignore_label, np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def inverse_lut():
    """256-entry table: train ID -> label ID; anything else -> 0 ('unlabeled')."""
    lut = np.zeros(256, np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN_ID.items():
        lut[train_id] = label_id
    return lut


class Cityscapes(BaseDataset):
    """Cityscapes with the official 19-class mapping, weights and 6-pixel edge border."""

    name = "cityscapes"
    edge_border = CITYSCAPES_EDGE_BORDER

    def __init__(self, root, list_path, *, num_classes=19, ignore_label=255, **kwargs):
        if int(num_classes) != len(CLASS_NAMES):
            raise DatasetError(f"cityscapes has {len(CLASS_NAMES)} train classes but "
                               f"DATASET.NUM_CLASSES is {num_classes}; set DATASET.NUM_CLASSES 19")
        super().__init__(root, list_path, os.path.join(root, "cityscapes"),
                         num_classes=num_classes, ignore_label=ignore_label, **kwargs)
        self.class_names = list(CLASS_NAMES)
        self.palette = list(PALETTE)
        self.class_weights = torch.FloatTensor(CLASS_WEIGHTS)
        self._lut = label_lut(self.ignore_label)
        self._inverse = inverse_lut()

    def _read_image(self, path):
        # Official: cv2 (BGR) read, channels reversed to RGB before normalisation.
        return cv2.cvtColor(read_image_file(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def _read_label(self, path):
        ids = read_image_file(path, cv2.IMREAD_GRAYSCALE)
        if ids.max() >= NUM_LABEL_IDS:
            unknown = ids >= NUM_LABEL_IDS
            self._note_unknown(path, np.unique(ids[unknown]), np.count_nonzero(unknown))
        return cv2.LUT(ids, self._lut)

    def convert_label(self, ids):
        """Raw label IDs (uint8 array) -> train IDs."""
        return self._lut[np.asarray(ids, dtype=np.uint8)]

    def train_id_to_label_id(self, label):
        """Train IDs (e.g. an argmax prediction) -> Cityscapes label IDs for submission."""
        return self._inverse[np.asarray(label).astype(np.uint8)]
