"""Dataset classes: label mappings, class metadata, custom labels, the registry, speed."""
import logging
import time

import numpy as np
import pytest
import torch

from datasets import DATASETS, build_dataset
from datasets.camvid import CLASS_NAMES as CAMVID_NAMES
from datasets.camvid import PALETTE as CAMVID_PALETTE
from datasets.cityscapes import CLASS_WEIGHTS, LABEL_TO_TRAIN_ID, label_lut
from utils.errors import DatasetError

OFFICIAL_CITYSCAPES = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                       24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _cityscapes(data_root, make, samples, **kwargs):
    rel = make.cityscapes(data_root, samples)
    return build_dataset("cityscapes", data_root, rel, num_classes=19, is_train=False, **kwargs)


def test_cityscapes_lookup_table_is_the_official_mapping():
    lut = label_lut(255)
    for value in range(256):
        assert lut[value] == OFFICIAL_CITYSCAPES.get(value, 255)


def test_cityscapes_metadata_and_inverse(data_root, make):
    dataset = _cityscapes(data_root, make, [make.scene(0)])
    assert dataset.num_classes == 19 and len(dataset.class_names) == 19 and len(dataset.palette) == 19
    assert dataset.class_names[0] == "road" and dataset.palette[0] == (128, 64, 128)
    assert isinstance(dataset.class_weights, torch.Tensor)
    assert dataset.class_weights.dtype == torch.float32
    np.testing.assert_allclose(dataset.class_weights.numpy(), CLASS_WEIGHTS, rtol=0, atol=1e-7)
    assert dataset.class_weights[0].item() == pytest.approx(0.8373)
    train_ids = np.arange(19, dtype=np.uint8).reshape(1, 19)
    label_ids = dataset.train_id_to_label_id(train_ids)
    assert label_ids.tolist()[0] == sorted(LABEL_TO_TRAIN_ID)
    np.testing.assert_array_equal(dataset.convert_label(label_ids), train_ids)


def test_cityscapes_sample_mapping_and_names(data_root, make):
    image, ids = make.scene(1)
    dataset = _cityscapes(data_root, make, [(image, ids)])
    _, label, edge, size, name = dataset[0]
    np.testing.assert_array_equal(label.numpy(), label_lut()[ids])
    assert label.dtype == torch.int64 and edge.dtype == torch.float32
    assert size.tolist() == [64, 96] and name.endswith("_gtFine_labelIds")


def test_unknown_label_ids_ignored_counted_warned_once(data_root, make, caplog):
    samples = []
    for seed in range(3):
        image, ids = make.scene(seed)
        ids[:4, :5] = 200  # not a Cityscapes label ID
        samples.append((image, ids))
    dataset = _cityscapes(data_root, make, samples)
    with caplog.at_level(logging.WARNING, logger="datasets.base_dataset"):
        labels = [dataset[i][1] for i in range(3)]
    assert all((label[:4, :5] == 255).all() for label in labels)
    assert dataset.unknown_label_pixels == 3 * 20
    warnings = [r for r in caplog.records if "outside the cityscapes mapping" in r.getMessage()]
    assert len(warnings) == 1 and "200" in warnings[0].getMessage()


def _camvid_reference(color, ignore=255):
    """The official per-colour loop."""
    label = np.full(color.shape[:2], ignore, np.uint8)
    for i, rgb in enumerate(CAMVID_PALETTE):
        label[(color == rgb).sum(2) == 3] = i
    return label


def test_camvid_colour_mapping(data_root, make, caplog):
    rng = np.random.default_rng(0)
    colors = np.array(list(CAMVID_PALETTE) + [(0, 0, 0), (1, 2, 3)], np.uint8)
    color = colors[rng.integers(0, len(colors), (40, 56))]
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    rel = make.camvid(data_root, [(image, color)])
    dataset = build_dataset("camvid", data_root, rel, num_classes=11, is_train=False)
    with caplog.at_level(logging.WARNING):
        _, label, _, _, name = dataset[0]
    np.testing.assert_array_equal(label.numpy(), _camvid_reference(color))
    assert dataset.class_weights is None and dataset.class_names == CAMVID_NAMES and name == "s0_L"
    # Black is CamVid's void: only the odd colour counts as outside the mapping.
    assert dataset.unknown_label_pixels == int((color == (1, 2, 3)).all(-1).sum())
    np.testing.assert_array_equal(dataset.label_to_color(label.numpy())[label.numpy() < 11],
                                  color[label.numpy() < 11])


def _custom(data_root, make, samples, **kwargs):
    rel = make.custom(data_root, samples)
    kwargs.setdefault("num_classes", 4)
    kwargs.setdefault("is_train", False)
    return build_dataset("custom", data_root, rel, **kwargs)


def test_custom_index_labels(data_root, make, caplog):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, (30, 40)).astype(np.uint8)
    label[0, :3] = 255
    label[1, :2] = 9  # out of range for 4 classes
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    dataset = _custom(data_root, make, [(image, label)], class_names=["a", "b", "c", "d"],
                      class_weights=[1, 2, 3, 4])
    with caplog.at_level(logging.WARNING):
        img, lab, edge, size, _ = dataset[0]
    expected = label.copy()
    expected[1, :2] = 255
    np.testing.assert_array_equal(lab.numpy(), expected)
    assert dataset.unknown_label_pixels == 2 and "outside the custom mapping" in caplog.text
    assert dataset.class_names == ["a", "b", "c", "d"] and dataset.class_weights.tolist() == [1, 2, 3, 4]
    assert len(dataset.palette) == 4 and dataset.train_id_to_label_id(label).dtype == np.uint8
    # Images are read as RGB (not BGR): compare the de-normalised first pixel.
    rgb = img[:, 0, 0].numpy() * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406])
    np.testing.assert_allclose(rgb * 255, image[0, 0], atol=1e-3)


def test_custom_grey_rgb_and_colour_labels(data_root, make):
    rng = np.random.default_rng(2)
    label = rng.integers(0, 3, (24, 32)).astype(np.uint8)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    grey3 = np.dstack([label] * 3)
    dataset = _custom(data_root, make, [(image, grey3)], num_classes=3)
    np.testing.assert_array_equal(dataset[0][1].numpy(), label)
    colour = np.asarray(colors, np.uint8)[label]
    colour[0, 0] = (0, 0, 0)
    dataset = _custom(data_root, make, [(image, colour)], num_classes=3, class_colors=colors)
    expected = label.copy()
    expected[0, 0] = 255
    np.testing.assert_array_equal(dataset[0][1].numpy(), expected)
    assert dataset.unknown_label_pixels == 0  # black = void, no warning
    dataset = _custom(data_root, make, [(image, colour)], num_classes=3)
    with pytest.raises(DatasetError, match="colour image.*CLASS_COLORS"):
        dataset[0]


def test_custom_training_crops_any_size(data_root, make):
    rng = np.random.default_rng(3)
    samples = [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 4, (h, w)).astype(np.uint8))
               for h, w in ((30, 50), (64, 40))]
    dataset = _custom(data_root, make, samples, is_train=True, crop_size=(32, 32), multi_scale=False,
                      flip=True, base_size=64, seed=0)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch[0].shape == (2, 3, 32, 32) and batch[1].shape == (2, 32, 32)


@pytest.mark.parametrize("kwargs, match", [
    (dict(class_names=["a"]), "CLASS_NAMES has 1 names"),
    (dict(class_colors=[(1, 2, 3)] * 4), "duplicate colours"),
    (dict(class_colors=[(1, 2, 3), (4, 5), (6, 7, 8), (9, 9, 9)]), r"CLASS_COLORS\[1\]"),
    (dict(class_weights=[1, 2]), "CLASS_WEIGHTS has 2 values"),
    (dict(class_weights=[1, 2, -3, 4]), "finite and >= 0"),
    (dict(num_classes=0), "NUM_CLASSES 0"),
])
def test_custom_class_info_errors(data_root, make, kwargs, match):
    label = np.zeros((8, 8), np.uint8)
    with pytest.raises(DatasetError, match=match):
        _custom(data_root, make, [(np.zeros((8, 8, 3), np.uint8), label)], **kwargs)


def test_registry_and_bad_names(data_root, make):
    assert set(DATASETS) == {"cityscapes", "camvid", "custom"}
    rel = make.cityscapes(data_root, [make.scene(0)])
    with pytest.raises(DatasetError, match="unknown dataset 'kitti'.*camvid, cityscapes, custom"):
        build_dataset("kitti", data_root, rel, num_classes=19, is_train=False)
    with pytest.raises(DatasetError, match="cityscapes has 19.*NUM_CLASSES is 11"):
        build_dataset("cityscapes", data_root, rel, num_classes=11, is_train=False)
    with pytest.raises(DatasetError, match="camvid has 11"):
        build_dataset("camvid", data_root, rel, num_classes=19, is_train=False)
    with pytest.raises(DatasetError, match="IGNORE_LABEL 255"):
        build_dataset("cityscapes", data_root, rel, num_classes=19, is_train=False, ignore_label=-1)


def test_getitem_speed_1024x512(data_root, make):
    from datasets.synthetic import scene

    image, ids = scene(0, "train", 0, (1024, 512))
    rel = make.cityscapes(data_root, [(image[:, :, ::-1], ids)], split="train")
    dataset = build_dataset("cityscapes", data_root, rel, num_classes=19, is_train=True,
                            crop_size=(512, 512), base_size=1024, multi_scale=True, flip=True, seed=0)
    dataset[0]
    times = []
    for _ in range(7):
        # CPU time of this process: wall time on a shared 2-core CI machine measures the others.
        start = time.process_time()
        dataset[0]
        times.append(time.process_time() - start)
    assert sorted(times)[len(times) // 2] < 0.05  # ~25 ms here (PNG decoding is about half)
