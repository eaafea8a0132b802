"""Samples equal the official PIDNet pipeline's (tests/data/*_sample.npz, see REFERENCE.md)."""
import numpy as np
import pytest

from datasets import build_dataset


def _check(sample, ref):
    image, label, edge, size, _ = sample
    assert image.dtype.is_floating_point and image.shape == ref["image"].shape
    np.testing.assert_allclose(image.numpy(), ref["image"], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(label.numpy(), ref["label"].astype(np.int64))
    np.testing.assert_array_equal(edge.numpy(), ref["edge"].astype(np.float32))
    assert size.tolist() == list(ref["image"].shape[1:])


def test_cityscapes_matches_official(data_root, ref_data, make):
    ref = np.load(ref_data("cityscapes_sample.npz"))
    rel = make.cityscapes(data_root, [(ref["raw_bgr"], ref["raw_label_ids"])])
    dataset = build_dataset("cityscapes", data_root, rel, num_classes=19, is_train=False)
    sample = dataset[0]
    _check(sample, ref)
    assert sample[4] == "city_000000_000019_gtFine_labelIds"  # official: label file stem
    # The reference must exercise what it pins: ignored pixels and a zeroed edge border.
    assert (ref["label"] == 255).any() and ref["edge"].any()
    assert not ref["edge"][:, :4].any()  # 6-pixel border zeroed, then dilated by 2


def test_camvid_matches_official(data_root, ref_data, make):
    ref = np.load(ref_data("camvid_sample.npz"))
    rel = make.camvid(data_root, [(ref["raw_rgb"], ref["raw_color_label"])])
    dataset = build_dataset("camvid", data_root, rel, num_classes=11, is_train=False)
    _check(dataset[0], ref)


@pytest.mark.parametrize("separator", ["\t", " ", "  \t "])
def test_cityscapes_list_separators(data_root, ref_data, make, separator):
    ref = np.load(ref_data("cityscapes_sample.npz"))
    rel = make.cityscapes(data_root, [(ref["raw_bgr"], ref["raw_label_ids"])])
    path = data_root + rel
    text = open(path).read().replace("\t", separator)
    open(path, "w").write(text)
    dataset = build_dataset("cityscapes", data_root, rel, num_classes=19, is_train=False)
    _check(dataset[0], ref)
