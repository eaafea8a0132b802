"""utils/images.py: finding and decoding inputs, the corrupt-file policy, atomic image/video outputs."""
import logging
import os

import cv2
import numpy as np
import pytest

from utils.errors import DatasetError
from utils.images import (VideoOutput, VideoReader, collect_inputs, default_output_dir, input_transform,
                          output_stems, read_input_image, save_image_outputs, to_bgr8)
from utils.visualize import palette_for


def test_to_bgr8_handles_gray_rgba_16bit_float():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_bgr8(gray).shape == (3, 4, 3)
    rgba = np.dstack([gray, gray + 1, gray + 2, np.zeros_like(gray)])
    np.testing.assert_array_equal(to_bgr8(rgba), rgba[:, :, :3])
    deep = np.full((3, 4, 3), 65535, np.uint16)
    assert to_bgr8(deep).dtype == np.uint8 and to_bgr8(deep).max() == 255
    assert to_bgr8(np.full((3, 4), 0.5, np.float32)).max() == 128


def test_collect_inputs_kinds_filter_and_names(tmp_path):
    for name in ("b.png", "a.JPG", "c.avi", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [(os.path.basename(p), k) for p, k in collect_inputs(str(tmp_path))] == [
        ("a.JPG", "image"), ("b.png", "image"), ("c.avi", "video")]
    assert [os.path.basename(p) for p, _ in collect_inputs(str(tmp_path), "png")] == ["b.png"]
    with pytest.raises(DatasetError, match="no '.bmp' files found"):
        collect_inputs(str(tmp_path), ".bmp")
    with pytest.raises(DatasetError, match="not a supported image or video"):
        collect_inputs(str(tmp_path / "notes.txt"))
    assert output_stems([("d/x.png", "image"), ("d/x.jpg", "image"), ("d/y.png", "image")]) == ["x_png", "x_jpg", "y"]
    assert default_output_dir(str(tmp_path / "b.png")) == str(tmp_path / "outputs")


def test_read_input_image_skips_or_fails_on_a_corrupt_file(tmp_path, caplog):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with caplog.at_level(logging.WARNING, logger="utils.images"):
        assert read_input_image(str(bad)) is None
    assert "skipping" in caplog.text and "bad.png" in caplog.text
    with pytest.raises(DatasetError, match="cannot decode image .*bad.png.*drop --strict"):
        read_input_image(str(bad), strict=True)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((4, 6), 200, np.uint8))
    assert read_input_image(str(good), strict=True).shape == (4, 6, 3)


def test_input_transform_is_the_official_normalisation():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 2] = 255  # red
    tensor = input_transform(bgr)
    assert tensor.shape == (3, 2, 3)
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                               rtol=1e-6)


def test_save_image_outputs_mask_overlay_and_label_ids(tmp_path):
    label = np.array([[0, 1], [2, 255]], np.uint8)
    bgr = np.full((2, 2, 3), 100, np.uint8)
    save_image_outputs(bgr, label, "x", str(tmp_path), palette_for(19))
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    save_image_outputs(bgr, label, "y", str(tmp_path), palette_for(19), overlay_alpha=1.0, label_ids=True)
    assert sorted(os.listdir(tmp_path)) == ["x.png", "y.png", "y_label.png", "y_overlay.png"]
    mask = cv2.imread(str(tmp_path / "y.png"))[:, :, ::-1]
    np.testing.assert_array_equal(mask[0, 1], palette_for(19)[1])
    np.testing.assert_array_equal(mask[1, 1], [0, 0, 0])  # ignore label stays black
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "y_overlay.png")), cv2.imread(str(tmp_path / "y.png")))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "y_label.png"), cv2.IMREAD_UNCHANGED), label)


def test_video_output_round_trip_and_abandon(tmp_path):
    path = str(tmp_path / "out" / "clip.avi")
    rng = np.random.default_rng(0)
    with VideoOutput(path, 5.0) as output:
        for _ in range(3):
            output.write(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    with VideoReader(path) as video:
        assert video.opened and video.ext == ".avi"
        assert [frame.shape for frame in video] == [(16, 24, 3)] * 3
    before = os.path.getsize(path)
    with pytest.raises(RuntimeError):
        with VideoOutput(path, 5.0) as output:
            output.write(np.zeros((16, 24, 3), np.uint8))
            raise RuntimeError("segmentation failed mid-video")
    assert os.path.getsize(path) == before  # the earlier video is kept
    with VideoOutput(str(tmp_path / "empty.avi"), 5.0):
        pass
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.avi"] and not (tmp_path / "empty.avi").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temp file left
    assert not VideoReader(str(tmp_path / "missing.avi")).opened
