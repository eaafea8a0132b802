"""Image and video files in and out of the inference tools (``tools/custom.py``, and the
calibration images of ``tools/compress.py`` and ``tools/quantize.py``).

Reading: :func:`collect_inputs` finds the images/videos of a file or folder, :func:`read_image`
decodes any image (gray, RGBA, 16-bit, float) to 8-bit BGR, :func:`read_input_image` adds the
corrupt-file policy (skip with a warning, or fail with ``strict``), :class:`VideoReader` yields
a video's frames, and :func:`input_transform` is the official preprocessing. Writing:
:func:`save_image_outputs` writes the colour mask, the overlay and the label IDs of an image,
:class:`VideoOutput` a video of RGB frames; every file is written atomically (temp + rename).
"""
import logging
import os
import tempfile

import cv2
import numpy as np
import torch

from datasets.base_dataset import MEAN as IMAGENET_MEAN, STD as IMAGENET_STD
from utils.errors import CompressionError, DatasetError
from utils.io import atomic_write_bytes
from utils.visualize import colorize, overlay

logger = logging.getLogger(__name__)

MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
# Container -> codec that the stock OpenCV wheels can write.
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "MJPG"}
# An input that cannot be read: (error with --strict, warning otherwise), by kind.
_UNREADABLE = {
    "image": ("cannot decode image {path}: the file is corrupt or not an image "
              "(remove it, or drop --strict to skip such files)",
              "skipping %s: cannot decode it as an image (corrupt or not an image)"),
    "video": ("cannot read video {path}: corrupt, empty or an unsupported codec",
              "skipping %s: cannot read any frame (corrupt, empty or unsupported codec)"),
}


# --------------------------------------------------------------------------- reading

def kind_of(path):
    """``'image'``, ``'video'`` or None, by the file's extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_CODECS:
        return "video"
    return None


def collect_inputs(path, ext=None):
    """``[(file, 'image'|'video'), ...]`` for a file or the top level of a folder, sorted.

    Raises:
        DatasetError: the path does not exist, or the folder holds no usable input.
    """
    if os.path.isfile(path):
        kind = kind_of(path)
        if kind is None:
            raise DatasetError(f"{path} is not a supported image or video "
                               f"({', '.join(IMAGE_EXTS + tuple(VIDEO_CODECS))})")
        return [(path, kind)]
    if not os.path.isdir(path):
        raise DatasetError(f"input not found: {path}. Pass an image, a video or a folder with --r/--input")
    wanted = None
    if ext:
        wanted = ext.lower() if ext.startswith(".") else "." + ext.lower()
    inputs = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full) or name.startswith("."):
            continue
        if wanted and os.path.splitext(name)[1].lower() != wanted:
            continue
        kind = kind_of(name)
        if kind is None:
            logger.warning("skipping %s: not an image or video file", full)
            continue
        inputs.append((full, kind))
    if not inputs:
        what = f"'{wanted}' files" if wanted else "images or videos"
        raise DatasetError(f"no {what} found in {path}: put inputs there or point --r/--input elsewhere")
    return inputs


def to_bgr8(image):
    """Any decoded image (gray, gray+alpha, BGR, BGRA; 8/16-bit or float) -> ``HxWx3`` uint8 BGR."""
    if image.dtype == np.uint16:
        image = np.rint(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif image.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.rint(np.nan_to_num(image.astype(np.float32) * scale)), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if channels == 4:  # alpha dropped, as cv2.IMREAD_COLOR does
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[:, :, :3])


def read_image(path):
    """Decode ``path`` to uint8 BGR, or ``None`` when it is not a decodable image."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    return to_bgr8(image)


def unreadable_input(path, kind, strict):
    """The policy for an input that cannot be read: ``DatasetError`` when ``strict``, else a
    warning (the caller skips it)."""
    error, warning = _UNREADABLE[kind]
    if strict:
        raise DatasetError(error.format(path=path))
    logger.warning(warning, path)


def read_input_image(path, strict=False):
    """:func:`read_image`, or None after a warning for a corrupt file (``DatasetError`` when ``strict``)."""
    bgr = read_image(path)
    if bgr is None:
        unreadable_input(path, "image", strict)
    return bgr


def input_transform(bgr):
    """The official preprocessing: BGR -> RGB, /255, ImageNet mean/std; returns ``3xHxW`` float32."""
    image = bgr.astype(np.float32)[:, :, ::-1] / 255.0
    image = (image - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class VideoReader:
    """A video's frames as 8-bit BGR; ``opened`` is False for a file OpenCV cannot open."""

    def __init__(self, path):
        self.path = path
        self.ext = os.path.splitext(path)[1].lower()
        self._capture = cv2.VideoCapture(path)
        self.opened = self._capture.isOpened()
        fps = self._capture.get(cv2.CAP_PROP_FPS) if self.opened else 0.0
        self.fps = fps if fps and 0 < fps < 1000 else 25.0
        self.total = (int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None) if self.opened else None

    def __iter__(self):
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            yield to_bgr8(frame)

    def close(self):
        self._capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- writing

def write_png(array_rgb_or_gray, path):
    """Encode a PNG (RGB arrays are converted to OpenCV's BGR) and write it atomically."""
    array = array_rgb_or_gray
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise DatasetError(f"could not encode {path} as PNG")
    atomic_write_bytes(encoded.tobytes(), path)


def save_image_outputs(bgr, label, stem, out_dir, palette, overlay_alpha=None, label_ids=False):
    """``out_dir/stem.png`` (colour mask), ``stem_overlay.png`` when ``overlay_alpha`` is given
    (mask weight), ``stem_label.png`` (class index per pixel) with ``label_ids``."""
    rgb_mask = colorize(label, palette)
    write_png(rgb_mask, os.path.join(out_dir, stem + ".png"))
    if overlay_alpha is not None:
        write_png(overlay(bgr[:, :, ::-1], rgb_mask, overlay_alpha), os.path.join(out_dir, stem + "_overlay.png"))
    if label_ids:
        write_png(label.astype(np.uint8 if label.max(initial=0) < 256 else np.uint16),
                  os.path.join(out_dir, stem + "_label.png"))


class VideoOutput:
    """RGB frames -> ``path`` with its container's codec (:data:`VIDEO_CODECS`). Frames go to a
    temp file in the same folder, renamed to ``path`` when the ``with`` block ends normally after
    at least one frame; otherwise the temp file is removed and ``path`` left as it was."""

    def __init__(self, path, fps):
        self.path, self.fps = path, fps
        self.codec = VIDEO_CODECS[os.path.splitext(path)[1].lower()]
        folder, name = os.path.split(path)
        os.makedirs(folder or ".", exist_ok=True)
        stem, ext = os.path.splitext(name)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=ext, dir=folder or ".")
        os.close(fd)
        self._writer = None

    def write(self, rgb):
        if self._writer is None:
            height, width = rgb.shape[:2]
            self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*self.codec), self.fps, (width, height))
            if not self._writer.isOpened():
                raise DatasetError(f"cannot write video {self.path} with codec {self.codec}: "
                                   "this OpenCV build lacks it; convert the input to .avi")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if self._writer is not None:
                self._writer.release()
                if exc_type is None:
                    os.replace(self._tmp, self.path)
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)


# --------------------------------------------------------------------------- output names

def output_stems(inputs):
    """Output base names: the input's stem, or its full name when two inputs share a stem."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p, _ in inputs]
    return [s if stems.count(s) == 1 else os.path.basename(p).replace(".", "_")
            for s, (p, _) in zip(stems, inputs)]


def default_output_dir(input_path):
    """``<input folder>/outputs`` (the folder itself, or a file's folder)."""
    folder = input_path if os.path.isdir(input_path) else os.path.dirname(os.path.abspath(input_path))
    return os.path.join(folder, "outputs")


def load_images(folder, count):
    """Up to ``count`` images of ``folder`` (sorted by name), preprocessed as tools/custom.py does.

    Raises:
        CompressionError: the folder does not exist or holds no readable image.
    """
    if count < 1:
        raise CompressionError(f"--num-images must be at least 1, got {count}")
    if not os.path.isdir(folder):
        raise CompressionError(f"--images folder not found: {folder}. Pass a folder of images for PR_NN")
    images, skipped = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if len(images) >= count or not os.path.isfile(path) or kind_of(path) != "image":
            continue
        bgr = read_image(path)
        if bgr is None:
            skipped.append(name)
            continue
        images.append(input_transform(bgr))
    if not images:
        raise CompressionError(f"no readable image in {folder}"
                               f"{f' ({len(skipped)} could not be decoded)' if skipped else ''}: "
                               "put .png/.jpg images there or point --images at another folder")
    if skipped:
        logger.warning("skipped %d file(s) of %s that cannot be decoded: %s", len(skipped), folder,
                       ", ".join(skipped[:5]))
    if len(images) < count:
        logger.info("PR_NN uses the %d images found in %s (asked for %d)", len(images), folder, count)
    return images
