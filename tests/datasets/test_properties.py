"""Property tests of the sample recipe over sizes, scales, crops and flips (hypothesis)."""
import os
import tempfile

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets import build_dataset
from datasets.base_dataset import MEAN, STD, gen_sample

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _palette(n):
    # Distinct, never black (black = padding).
    i = np.arange(n)
    return np.stack([4 + 3 * i, 255 - 3 * i, (i * 97) % 256], axis=1).astype(np.uint8)


@st.composite
def labelled_images(draw):
    h = draw(st.integers(16, 72))
    w = draw(st.integers(16, 72))
    cell = draw(st.integers(10, 20))
    cells = (-(-h // cell), -(-w // cell))
    ids = np.random.default_rng(draw(st.integers(0, 2 ** 16))).permutation(cells[0] * cells[1])
    label = np.kron(ids.reshape(cells), np.ones((cell, cell), np.int64))[:h, :w].astype(np.uint8)
    image = _palette(cells[0] * cells[1])[label]  # the image is a function of the label
    return image, label


def _windows_constant(label, radius):
    """True where the (2r+1)^2 window is inside the array and holds one value."""
    size = 2 * radius + 1
    kernel = np.ones((size, size), np.uint8)
    low = cv2.erode(label, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    high = cv2.dilate(label, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=255)
    inside = np.zeros(label.shape, bool)
    inside[radius:label.shape[0] - radius, radius:label.shape[1] - radius] = True
    return (low == high) & inside


@SETTINGS
@given(data=labelled_images(), crop_h=st.integers(8, 64), crop_w=st.integers(8, 64),
       scale_factor=st.integers(0, 16), flip=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_transformed_pair_stays_aligned(data, crop_h, crop_w, scale_factor, flip, seed):
    image, label = data
    base = max(image.shape[:2])  # scales 0.5..2.1 of the long side
    img, lab, edge = gen_sample(image, label, np.random.default_rng(seed), multi_scale=True, flip=flip,
                                base_size=base, crop_size=(crop_h, crop_w), scale_factor=scale_factor)
    assert img.shape == (3, crop_h, crop_w) and img.dtype == np.float32
    assert lab.shape == edge.shape == (crop_h, crop_w)
    assert set(np.unique(edge)) <= {0, 1}
    assert set(np.unique(lab)) <= set(np.unique(label)) | {255}
    rgb = (img.transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)) * 255
    colors = np.vstack([_palette(int(label.max()) + 1), np.zeros((256 - int(label.max()) - 1, 3), np.uint8)])
    # Away from label boundaries the image still shows its label's colour (padding: black, 255).
    calm = _windows_constant(lab, 3)
    np.testing.assert_allclose(rgb[calm], colors[lab[calm]], atol=1e-3)
    # Boundary pixels only near label changes (the edge is ~3 source pixels wide, scale >= 1/2.1).
    far = _windows_constant(lab, 9)
    assert not edge[far].any()
    # Every label change between two real (non-padding) pixels is covered by the boundary target.
    change = (lab[:, 1:] != lab[:, :-1]) & (lab[:, 1:] != 255) & (lab[:, :-1] != 255)
    near = cv2.dilate(edge, np.ones((5, 5), np.uint8))[:, 1:] > 0
    assert near[change].all()


@SETTINGS
@given(h=st.integers(8, 48), w=st.integers(8, 48), crop=st.tuples(st.integers(4, 40), st.integers(4, 40)),
       multi_scale=st.booleans(), flip=st.booleans(), seed=st.integers(0, 1000))
def test_cityscapes_outputs_in_range(h, w, crop, multi_scale, flip, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 256, (h, w)).astype(np.uint8)  # any byte, valid or not
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        root = tmp + "/"
        for rel, array in (("cityscapes/img/a_leftImg8bit.png", image), ("cityscapes/lab/a_labelIds.png", ids)):
            os.makedirs(os.path.dirname(root + rel), exist_ok=True)
            cv2.imwrite(root + rel, array)
        os.makedirs(root + "list")
        open(root + "list/train.lst", "w").write("img/a_leftImg8bit.png lab/a_labelIds.png\n")
        dataset = build_dataset("cityscapes", root, "list/train.lst", num_classes=19, is_train=True,
                                crop_size=crop, base_size=max(h, w), multi_scale=multi_scale, flip=flip,
                                scale_factor=16, seed=seed)
        image_t, label, edge, size, _ = dataset[0]
    expected = crop if multi_scale else (h, w)  # the official code crops only with multi-scale
    assert tuple(label.shape) == tuple(edge.shape) == tuple(expected) and image_t.shape[1:] == label.shape
    values = set(np.unique(label.numpy()).tolist())
    assert values <= set(range(19)) | {255}
    assert set(np.unique(edge.numpy()).tolist()) <= {0.0, 1.0}
    assert size.tolist() == [h, w]
