import numpy as np
import pytest

from datasets.camvid import PALETTE as CAMVID_PALETTE
from datasets.cityscapes import PALETTE as CITYSCAPES_PALETTE
from datasets.palette import default_colors
from utils.visualize import class_names_for, colorize, denormalize, image_grid, overlay, palette_for


def test_official_palettes():
    assert len(CITYSCAPES_PALETTE) == 19 and len(CAMVID_PALETTE) == 11
    assert CITYSCAPES_PALETTE[0] == (128, 64, 128) and CITYSCAPES_PALETTE[-1] == (119, 11, 32)
    assert CAMVID_PALETTE[0] == (0, 128, 192) and CAMVID_PALETTE[-1] == (128, 128, 0)
    np.testing.assert_array_equal(palette_for(19), np.array(CITYSCAPES_PALETTE, np.uint8))
    np.testing.assert_array_equal(palette_for(11), np.array(CAMVID_PALETTE, np.uint8))
    assert class_names_for(19)[0] == "road" and class_names_for(11)[-1] == "tree"
    assert class_names_for(3) == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize("n", [1, 5, 40, 255])
def test_generated_palette_distinct(n):
    palette = palette_for(n)
    assert palette.shape == (n, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == n
    np.testing.assert_array_equal(palette, np.asarray(default_colors(n), np.uint8))
    # Cityscapes colours first, so a 5-class model's classes look like Cityscapes' first five.
    np.testing.assert_array_equal(palette[:min(n, 19)], np.asarray(CITYSCAPES_PALETTE[:n], np.uint8))


def test_custom_colors_and_validation():
    np.testing.assert_array_equal(palette_for(2, [[1, 2, 3], [4, 5, 6]]), [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="2 colours"):
        palette_for(2, [[1, 2, 3]])
    with pytest.raises(ValueError, match="num_classes"):
        palette_for(0)


def test_colorize_maps_classes_and_ignore():
    label = np.array([[0, 1], [18, 255]], dtype=np.uint8)
    out = colorize(label, palette_for(19))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (128, 64, 128)
    assert tuple(out[0, 1]) == (244, 35, 232)
    assert tuple(out[1, 0]) == (119, 11, 32)
    assert tuple(out[1, 1]) == (0, 0, 0)
    neg = colorize(np.array([[-1, 2]]), palette_for(3), ignore_color=(9, 9, 9))
    assert tuple(neg[0, 0]) == (9, 9, 9)
    with pytest.raises(ValueError, match="HxW"):
        colorize(np.zeros((2, 2, 1)), palette_for(19))


def test_overlay_blend():
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.full((2, 3, 3), 200, np.uint8)
    assert overlay(image, mask, 0.25)[0, 0, 0] == 125
    np.testing.assert_array_equal(overlay(image, mask, 0.0), image)
    np.testing.assert_array_equal(overlay(image, mask, 1.0), mask)
    with pytest.raises(ValueError, match="same shape"):
        overlay(image, mask[:1])
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, mask, 1.5)


def test_denormalize_inverts_imagenet_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    chw = ((rgb / 255.0 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_array_equal(denormalize(chw), rgb)


def test_image_grid_layout():
    a = np.zeros((4, 5, 3), np.uint8)
    b = np.full((3, 2, 3), 7, np.uint8)
    grid = image_grid([[a, b], [b]], pad=1)
    assert grid.shape == (4 + 1 + 3, 5 + 1 + 2, 3)
    assert grid[0, 6, 0] == 7 and grid[3, 6, 0] == 255  # b padded below to the row height
    with pytest.raises(ValueError):
        image_grid([])
