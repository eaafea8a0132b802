"""Datasets by name: ``build_dataset('cityscapes' | 'camvid' | 'custom', root, list_path, ...)``."""
from datasets.base_dataset import BaseDataset, gen_sample, reseed_dataset, seed_worker
from datasets.camvid import CamVid
from datasets.cityscapes import Cityscapes
from datasets.custom import CustomDataset
from utils.errors import DatasetError

DATASETS = {
    "cityscapes": Cityscapes,
    "camvid": CamVid,
    "custom": CustomDataset,
}


def build_dataset(name, root, list_path, *, num_classes, is_train, crop_size=(512, 1024),
                  base_size=2048, multi_scale=True, flip=True, scale_factor=16, ignore_label=255,
                  class_names=None, class_colors=None, class_weights=None, bd_dilate_size=4,
                  seed=None):
    """The dataset ``name`` over ``root/list_path``.

    Args:
        name: ``DATASET.DATASET``: one of ``DATASETS``.
        root: ``DATASET.ROOT``; files live under ``root/<name>/`` (``root`` itself for custom).
        list_path: ``DATASET.TRAIN_SET`` / ``TEST_SET``, relative to ``root``.
        is_train: True applies the configured multi-scale/crop/flip; False gives full images
            without augmentation (``multi_scale``/``flip`` are then ignored).
        crop_size: (h, w) of training crops, i.e. ``TRAIN.IMAGE_SIZE[::-1]``.
        class_names, class_colors, class_weights: ``DATASET.CLASS_*`` (custom only; the
            official datasets have their own).

    Raises:
        DatasetError: unknown name, missing root/list/files, malformed list, class-count mismatch.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}' (DATASET.DATASET); choose one of "
                           f"{', '.join(sorted(DATASETS))}")
    kwargs = dict(num_classes=num_classes, is_train=is_train, crop_size=crop_size,
                  base_size=base_size, multi_scale=multi_scale, flip=flip,
                  scale_factor=scale_factor, ignore_label=ignore_label,
                  bd_dilate_size=bd_dilate_size, seed=seed)
    if key == "custom":
        kwargs.update(class_names=class_names, class_colors=class_colors,
                      class_weights=class_weights)
    return DATASETS[key](root, list_path, **kwargs)


__all__ = ["DATASETS", "BaseDataset", "CamVid", "Cityscapes", "CustomDataset", "build_dataset",
           "gen_sample", "reseed_dataset", "seed_worker"]
