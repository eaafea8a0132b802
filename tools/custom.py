"""Segment your own images, folders or videos with a trained PIDNet.

The official flags keep working (``--a --c --p --r --t``)::

    python tools/custom.py --a pidnet-s --c True --p pretrained_models/cityscapes/PIDNet_S_Cityscapes_test.pt --r samples/ --t .png
    python tools/custom.py --arch pidnet-l --input street.jpg --overlay --label-ids
    python tools/custom.py --a pidnet-s --p output/.../best.pt --r drive.mp4 --overlay   # video -> video
    python tools/custom.py --netspresso --model output/.../compressed/best_model_model.pt --r samples/
    python tools/custom.py --onnx pidnet_s_int8.onnx --runtime openvino --r samples/   # any ONNX export
    python tools/custom.py --a pidnet-s --p output/custom/.../best.pt --cfg configs/custom/my.yaml --r samples/

Preprocessing is the official one (BGR -> RGB, /255, ImageNet mean/std); the logits are
upsampled to the input's size (bilinear, ``align_corners=True``) and argmax-ed. The class count
is the checkpoint's (its final classifier) or the ONNX file's output; ``--c`` only picks the
official pretrained file when ``--p`` is not given. Colours are ``datasets/palette.py``'s, the ones
``tools/eval.py --save-color`` uses: 19 classes Cityscapes', 11 CamVid's, or the
``DATASET.CLASS_COLORS`` (and ``CLASS_NAMES``) of ``--cfg CFG [KEY VALUE ...]``. For each input
``NAME.EXT`` the tool writes ``<input folder>/outputs/NAME.png`` (``--output`` to choose the folder), plus
``NAME_overlay.png`` (``--overlay``) and ``NAME_label.png`` (``--label-ids``: the predicted
class index, i.e. the train ID, per pixel). Videos (``.mp4 .avi .mov .mkv``) become
``outputs/NAME.<same ext>`` (colour masks, or overlays with ``--overlay``).

Inputs are read with ``cv2.IMREAD_UNCHANGED`` and converted to 8-bit BGR, so grayscale,
RGBA and 16-bit images work. Files that are not images are skipped with a warning; a file
with an image extension that cannot be decoded is skipped with a warning too (``--strict``
makes it an error), and the run fails only when no input at all could be segmented. Every
output is written atomically (temp file + rename).
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from configs import build  # noqa: E402
from configs.default import load_config  # noqa: E402
from models.checkpoint import read_num_classes  # noqa: E402
from models.pidnet import canonical_name  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.errors import CheckpointError, ConfigError, DatasetError, ModelError, UsageError  # noqa: E402
from utils.images import (VideoOutput, VideoReader, collect_inputs, default_output_dir, input_transform,  # noqa: E402
                          output_stems, read_input_image, save_image_outputs, unreadable_input)
from utils.io import check_writable  # noqa: E402
from utils.layout import official_weights  # noqa: E402
from utils.visualize import class_names_for, colorize, overlay, palette_for  # noqa: E402

logger = logging.getLogger("tools.custom")

_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}


def str2bool(text):
    """``True/true/1/yes/y/t/on`` or ``False/false/0/no/n/f/off`` (the official ``type=bool`` took
    any non-empty string as True, so ``--c False`` silently meant Cityscapes)."""
    if isinstance(text, bool):
        return text
    key = str(text).strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false (yes/no, 1/0), got '{text}'")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Segment custom images, folders or videos with PIDNet",
                                     allow_abbrev=False)
    parser.add_argument("--a", "--arch", dest="arch", default="pidnet-l",
                        help="pidnet-s, pidnet-m or pidnet-l (default pidnet-l, as the official script)")
    parser.add_argument("--c", "--cityscapes", dest="cityscapes", type=str2bool, nargs="?", const=True,
                        default=None, help="Cityscapes-trained (19 classes, the default) or not (CamVid, 11 "
                                           "classes): picks the official file when --p is not given, and "
                                           "when given the checkpoint must have that class count")
    parser.add_argument("--cfg", default=None,
                        help="experiment YAML whose DATASET.CLASS_NAMES / CLASS_COLORS name and colour the "
                             "classes (any class count; DATASET.NUM_CLASSES must be the checkpoint's)")
    parser.add_argument("opts", nargs="*", default=[],
                        help="with --cfg: config overrides as KEY VALUE pairs, e.g. DATASET.NUM_CLASSES 5")
    parser.add_argument("--p", "--checkpoint", dest="checkpoint", default=None,
                        help="weights file (default: the official pretrained file for --a/--c "
                             "under pretrained_models/)")
    parser.add_argument("--r", "--input", dest="input", default="samples/",
                        help="an image, a video or a folder of them (default samples/)")
    parser.add_argument("--t", "--ext", dest="ext", default=None,
                        help="only this extension in a folder, e.g. .png (default: every image/video type)")
    parser.add_argument("--o", "--output", dest="output", default=None,
                        help="output folder (default <input folder>/outputs)")
    parser.add_argument("--netspresso", action="store_true",
                        help="run a NetsPresso/compressed whole-module file given by --model")
    parser.add_argument("--model", default=None, help="with --netspresso: the model file (*_model.pt)")
    parser.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png (videos: overlay frames)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask weight of the overlay (default 0.5)")
    parser.add_argument("--label-ids", action="store_true",
                        help="also write NAME_label.png: the predicted class index (train ID) per pixel")
    parser.add_argument("--strict", action="store_true", help="fail on an unreadable image instead of skipping it")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images)")
    parser.add_argument("--onnx", default=None, metavar="FILE",
                        help="run an ONNX file (fp32, fp16 or int8, from tools/export_onnx.py or tools/quantize.py) "
                             "instead of a checkpoint; the class count is the file's output")
    parser.add_argument("--runtime", default=None, help="with --onnx: onnxruntime (default) or openvino")
    parser.add_argument("--backend", default="eager",
                        help="inference backend of models/deploy.py: eager, fused, onnxruntime, compile, auto")
    return parser


def parse_args(argv=None):
    # Intermixed parsing lets options follow the --cfg KEY VALUE overrides.
    return get_args_parser().parse_intermixed_args(argv)


# --------------------------------------------------------------------------- model

def build_model(args):
    """The network and a short description, from ``--netspresso --model`` or ``--a/--c/--p``."""
    if args.netspresso:
        if not args.model:
            raise ModelError("--netspresso needs --model FILE (a *_model.pt written by tools/compress.py "
                             "or tools/export_netspresso.py)")
        return build.load_netspresso(args.model), f"NetsPresso model {args.model}"
    if args.model:
        raise ModelError("--model is only used with --netspresso; for a weights file use --p/--checkpoint")
    arch = canonical_name(args.arch)
    cityscapes = args.cityscapes is None or args.cityscapes
    checkpoint = args.checkpoint or official_weights(arch, cityscapes)
    if not os.path.isfile(checkpoint):
        raise CheckpointError(f"checkpoint not found: {checkpoint}. Pass --p/--checkpoint FILE "
                              "(official pretrained weights go under pretrained_models/)")
    num_classes = read_num_classes(checkpoint)
    check_c_flag(args.cityscapes, num_classes, checkpoint)
    model = build.load_pidnet(arch, num_classes, checkpoint, augment=False,
                              variant_fix="set --a to the checkpoint's variant (pidnet-s, pidnet-m or pidnet-l)")
    return model, f"{arch} ({num_classes} classes) from {checkpoint}"


def check_c_flag(cityscapes, num_classes, source, error=CheckpointError):
    """An explicit ``--c`` promises 19 (True) or 11 (False) classes; the weights must agree."""
    if cityscapes is None:
        return
    expected = 19 if cityscapes else 11
    if num_classes != expected:
        raise error(f"{source} predicts {num_classes} classes, but {expected} are expected (--c {cityscapes}): "
                    "drop --c, the class count is read from the file")


def build_onnx_runner(args, device):
    """The ``--onnx`` file as a runner; its output gives the class count (checked against ``--c``
    when given)."""
    if args.netspresso or args.model or args.checkpoint or args.backend != "eager":
        raise ModelError("--onnx FILE runs the file itself: drop --netspresso/--model/--p/--backend "
                         "(choose the runtime with --runtime onnxruntime|openvino)")
    from models.deploy import prepare_onnx_file

    runner = prepare_onnx_file(args.onnx, args.runtime or "onnxruntime", device)
    num_classes = runner.onnx_info.num_classes  # None when the file's class axis is symbolic
    if num_classes is not None:
        check_c_flag(args.cityscapes, num_classes, args.onnx, ModelError)
    return runner, f"ONNX file {args.onnx} ({runner.onnx_info.precision}, {runner.backend})"


class Segmenter:
    """images (NCHW, normalised) -> label maps at the input size, through the chosen backend
    (or through ``runner``, an already prepared ``images -> logits`` callable)."""

    def __init__(self, model, device, backend="eager", runner=None):
        self.model = model.to(device).eval() if model is not None else None
        self.device = device
        self.backend = backend
        self._run = runner
        self.num_classes = None

    def _prepare(self, example):
        if self.backend == "eager":
            from models.deploy import select_output

            def run(images):
                with torch.inference_mode():
                    return select_output(self.model(images))
            return run
        try:
            from models.deploy import prepare_inference
        except ImportError as exc:
            raise ModelError(f"--backend {self.backend} needs models/deploy.py ({exc}); use --backend eager") from None
        return prepare_inference(self.model, backend=self.backend, device=self.device, example_input=example)

    def __call__(self, batch):
        batch = batch.to(self.device)
        if self._run is None:
            self._run = self._prepare(batch)
        with torch.inference_mode():
            logits = self._run(batch)
            logits = F.interpolate(logits.float(), size=batch.shape[-2:], mode="bilinear", align_corners=True)
            self.num_classes = logits.shape[1]
            return logits.argmax(dim=1).to(torch.uint8 if logits.shape[1] <= 256 else torch.int32).cpu().numpy()


# --------------------------------------------------------------------------- outputs

class ClassColours:
    """Class count -> palette, from ``--cfg`` when given, as ``tools/eval.py`` colours that config's
    dataset; the count is known only once the model has run (NetsPresso, symbolic ONNX axes)."""

    def __init__(self, cfg=None, cfg_file=None):
        self.cfg = cfg
        self.cfg_file = cfg_file
        self._cache = {}

    def __call__(self, num_classes):
        if num_classes not in self._cache:
            names, colors = self._resolve(num_classes)
            logger.info("%d classes: %s", num_classes, ", ".join(names))
            self._cache[num_classes] = palette_for(num_classes, colors)
        return self._cache[num_classes]

    def _resolve(self, num_classes):
        if self.cfg is None:
            return class_names_for(num_classes), None
        dataset = self.cfg.DATASET
        if dataset.NUM_CLASSES != num_classes:
            raise ConfigError(f"{self.cfg_file} has DATASET.NUM_CLASSES {dataset.NUM_CLASSES} but the model "
                              f"predicts {num_classes} classes: add DATASET.NUM_CLASSES {num_classes} after "
                              "--cfg, or use the config the model was trained with")
        if str(dataset.DATASET).lower() != "custom":
            return class_names_for(num_classes), None  # the official datasets' own names and colours
        from datasets.custom import check_class_info

        names, colors, _ = check_class_info(num_classes, dataset.CLASS_NAMES, dataset.CLASS_COLORS, None,
                                            self.cfg.TRAIN.IGNORE_LABEL)
        return names, colors


def load_class_config(args):
    """The frozen ``--cfg`` config (with its KEY VALUE overrides), or None without ``--cfg``."""
    if not args.cfg:
        if args.opts:
            raise UsageError(f"unexpected arguments {' '.join(args.opts)}: KEY VALUE overrides need --cfg CFG, "
                             "and inputs go after --r/--input")
        return None
    return load_config(args.cfg, args.opts)


def segment_images(segmenter, items, out_dir, args, progress, colours=None):
    """Segment ``[(path, stem), ...]``; batches consecutive same-size images. Returns (done, skipped)."""
    done, skipped, batch = 0, [], []

    def flush():
        nonlocal done
        if not batch:
            return
        labels = segmenter(torch.stack([input_transform(bgr) for bgr, _ in batch]))
        palette = (colours or ClassColours())(segmenter.num_classes)
        for (bgr, stem), label in zip(batch, labels):
            save_image_outputs(bgr, label, stem, out_dir, palette, args.alpha if args.overlay else None,
                               args.label_ids)
            done += 1
        progress.update(len(batch))
        batch.clear()

    for path, stem in items:
        bgr = read_input_image(path, args.strict)
        if bgr is None:
            skipped.append(path)
            progress.update(1)
            continue
        if batch and (batch[0][0].shape != bgr.shape or len(batch) >= args.batch_size):
            flush()
        batch.append((bgr, stem))
    flush()
    return done, skipped


def segment_video(segmenter, path, stem, out_dir, args, colours=None):
    """Segment a video frame by frame into ``out_dir/stem<ext>``. Returns the number of frames."""
    frames = 0
    with VideoReader(path) as video:
        if not video.opened:
            return 0
        with VideoOutput(os.path.join(out_dir, stem + video.ext), video.fps) as output, \
                tqdm(total=video.total, desc=os.path.basename(path), unit="frame", leave=False) as bar:
            for frame in video:
                label = segmenter(input_transform(frame)[None])[0]
                rgb = colorize(label, (colours or ClassColours())(segmenter.num_classes))
                if args.overlay:
                    rgb = overlay(frame[:, :, ::-1], rgb, args.alpha)
                output.write(rgb)
                frames += 1
                bar.update(1)
    return frames


def main(args):
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {args.alpha}")
    colours = ClassColours(load_class_config(args), args.cfg)
    inputs = collect_inputs(args.input, args.ext)
    out_dir = args.output or default_output_dir(args.input)
    # Checked before the model is built; the folder itself appears with the first output written,
    # so a run that fails writes no empty folder.
    check_writable(out_dir, "--output", is_dir=True)
    device = resolve_device(args.device)
    if args.onnx:
        runner, description = build_onnx_runner(args, device)
        segmenter = Segmenter(None, device, runner=runner)
        known = runner.onnx_info.num_classes
    else:
        if args.runtime:
            raise ModelError(f"--runtime {args.runtime} is for --onnx FILE; a checkpoint takes --backend")
        model, description = build_model(args)
        segmenter = Segmenter(model, device, args.backend)
        # A PIDNet's classifier tells the count now; a NetsPresso module tells it on its first output.
        head = getattr(getattr(model, "final_layer", None), "conv2", None)
        known = getattr(head, "out_channels", None)
    if known:
        colours(known)  # a config that does not fit fails before any input is read
    logger.info("segmenting %d input(s) from %s with %s on %s -> %s",
                len(inputs), args.input, description, device, out_dir)

    stems = output_stems(inputs)
    images = [(p, s) for (p, k), s in zip(inputs, stems) if k == "image"]
    videos = [(p, s) for (p, k), s in zip(inputs, stems) if k == "video"]
    start = time.perf_counter()
    done, skipped, frames = 0, [], 0
    if images:
        with tqdm(total=len(images), desc="images", unit="img") as progress:
            done, skipped = segment_images(segmenter, images, out_dir, args, progress, colours)
    for path, stem in videos:
        count = segment_video(segmenter, path, stem, out_dir, args, colours)
        if count == 0:
            unreadable_input(path, "video", args.strict)
            skipped.append(path)
        frames += count
    elapsed = max(time.perf_counter() - start, 1e-9)
    if done + frames == 0:
        raise DatasetError(f"none of the {len(inputs)} input(s) in {args.input} could be read: "
                           "they are corrupt or not images/videos")
    summary = f"segmented {done} image(s)"
    if videos:
        summary += f" and {frames} video frame(s)"
    summary += f" in {elapsed:.2f} s ({(done + frames) / elapsed:.2f} images/s); outputs in {out_dir}"
    if skipped:
        summary += f"; skipped {len(skipped)} unreadable file(s)"
    print(summary)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, parse_args()))
