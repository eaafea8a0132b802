"""CamVid (11 classes, SegNet split): RGB colour labels -> class indices.

Layout under ``root``: ``camvid/images/<name>.png`` and ``camvid/labels/<name>_L.png`` (the
32-class colour coding); lists in ``root/list/camvid/`` hold ``image label`` lines.
"""
import os

import cv2
import numpy as np

from datasets.base_dataset import BaseDataset, colors_to_index, index_to_colors, read_image_file
from utils.errors import DatasetError

# The official colour order defines the class indices (the 11 classes, alphabetical).
PALETTE = [(0, 128, 192), (128, 0, 0), (64, 0, 128), (192, 192, 128), (64, 64, 128), (64, 64, 0),
           (128, 64, 128), (0, 0, 192), (192, 128, 128), (128, 128, 128), (128, 128, 0)]
CLASS_NAMES = ["bicyclist", "building", "car", "pole", "fence", "pedestrian", "road", "sidewalk",
               "sign", "sky", "tree"]
VOID = (0, 0, 0)


class CamVid(BaseDataset):
    """CamVid with the official 11-colour mapping; no class weights, no edge border."""

    name = "camvid"
    edge_border = 0

    def __init__(self, root, list_path, *, num_classes=11, **kwargs):
        if int(num_classes) != len(CLASS_NAMES):
            raise DatasetError(f"camvid has {len(CLASS_NAMES)} classes but DATASET.NUM_CLASSES is "
                               f"{num_classes}; set DATASET.NUM_CLASSES 11")
        super().__init__(root, list_path, os.path.join(root, "camvid"), num_classes=num_classes,
                         **kwargs)
        self.class_names = list(CLASS_NAMES)
        self.palette = list(PALETTE)
        self.class_weights = None

    def _read_label(self, path):
        color_map = cv2.cvtColor(read_image_file(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return self.color_to_label(color_map, path)

    def color_to_label(self, color_map, path="<array>"):
        """RGB colour label -> indices; void (black) and unknown colours -> ignore."""
        label, unmatched = colors_to_index(color_map, PALETTE, self.ignore_label)
        if unmatched.any():
            # Black is CamVid's void; anything else is a colour the mapping does not know.
            odd = unmatched & np.any(color_map != np.array(VOID, np.uint8), axis=-1)
            if odd.any():
                colours = np.unique(color_map[odd].reshape(-1, 3), axis=0)
                self._note_unknown(path, [tuple(int(v) for v in c) for c in colours[:10]],
                                   np.count_nonzero(odd))
        return label

    def label_to_color(self, label):
        """Class indices -> the CamVid colour image (as the official ``save_pred``)."""
        return index_to_colors(label, PALETTE)
