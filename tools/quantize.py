"""Offline quantizer: a PIDNet (checkpoint, NetsPresso module or ONNX file) -> int8 / fp16 ONNX.

Examples (from the repository root)::

    # int8, 100 calibration images from DATASET.TRAIN_SET, onnxruntime QDQ, and both mIoU
    python tools/quantize.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        TEST.MODEL_FILE best.pt --output-dir quantized/ --eval

    # OpenVINO's NNCF as the engine, calibration images from a folder, 512x1024 input
    python tools/quantize.py --onnx pidnet_s.onnx --calib-dir samples/ --input-size 512 1024 \\
        --engine openvino --output-dir quantized_ov/

    # a pruned NetsPresso body; keep the most sensitive layers in float until 30 dB logits SNR
    python tools/quantize.py --cfg configs/synthetic/pidnet_small_synthetic.yaml \\
        --netspresso --model output/.../best_model_model.pt --mixed --min-snr 30 --output-dir q_mixed/

The output folder holds ``model_int8.onnx`` (or ``model_fp16.onnx``), a QDQ ONNX that both
onnxruntime and OpenVINO run (``tools/eval.py --onnx``, ``models/speed/pidnet_speed.py --onnx``),
and ``quantize_report.json``: the calibration set, the logits SNR against fp32 under both
runtimes, the per-layer sensitivity and the layers kept in float (``--mixed``), file sizes and,
with ``--eval``, both mIoU. It is written in a temporary folder and renamed at the end, so a
failed run leaves nothing behind.
"""
import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from configs import build  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import ConfigError, DatasetError, DeviceError, UsageError  # noqa: E402
from utils.layout import QUANTIZE_REPORT  # noqa: E402

logger = logging.getLogger("tools.quantize")

MODEL_FILES = {"int8": "model_int8.onnx", "fp16": "model_fp16.onnx"}


def get_args_parser():
    from models.deploy.quantize import CALIBRATIONS, DEFAULT_CALIBRATION, ENGINES, PRECISIONS

    parser = argparse.ArgumentParser(description="Quantize PIDNet to an int8 (calibrated) or fp16 ONNX model",
                                     allow_abbrev=False)
    parser.add_argument("--cfg", default=None,
                        help="experiment YAML: the model (MODEL.NAME + TEST.MODEL_FILE), DATASET.TRAIN_SET for "
                             "calibration, DATASET.TEST_SET for --eval, TEST.IMAGE_SIZE")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides KEY VALUE (with --cfg)")
    parser.add_argument("--onnx", default=None, help="quantize this fp32 ONNX file (main logits as first output)")
    parser.add_argument("--netspresso", action="store_true", help="quantize a compressed whole-module file (--model)")
    parser.add_argument("--model", default=None, help="with --netspresso: the compressed body (*_model.pt)")
    parser.add_argument("--engine", default="onnxruntime",
                        help=f"int8 engine: {' or '.join(ENGINES)} (NNCF) (default onnxruntime)")
    parser.add_argument("--precision", default="int8", help=f"{' or '.join(PRECISIONS)} (default int8)")
    parser.add_argument("--calib-images", type=int, default=100,
                        help="calibration images drawn from DATASET.TRAIN_SET (default 100)")
    parser.add_argument("--calib-dir", default=None,
                        help="calibrate on the images of this folder instead (preprocessed as tools/custom.py)")
    parser.add_argument("--calibration", default=DEFAULT_CALIBRATION, choices=sorted(CALIBRATIONS),
                        help="how onnxruntime turns the calibration images into ranges (default "
                             f"{DEFAULT_CALIBRATION}; NNCF, --engine openvino, has its own)")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images are drawn (default 0)")
    parser.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="calibration image size (default: TEST.IMAGE_SIZE)")
    parser.add_argument("--mixed", action="store_true",
                        help="measure each layer's sensitivity and keep the most sensitive in float until the "
                             "logits SNR reaches --min-snr")
    parser.add_argument("--min-snr", type=float, default=30.0, help="target logits SNR in dB for --mixed (default 30)")
    parser.add_argument("--snr-images", type=int, default=8,
                        help="calibration images on which SNRs are measured (default 8)")
    parser.add_argument("--output-dir", required=True, help="folder to write (model + quantize_report.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--eval", action="store_true", help="also evaluate fp32 and quantized on DATASET.TEST_SET")
    parser.add_argument("--device", default="cpu",
                        help="where the quantized model is meant to run: cpu (default) or cuda (fp16 needs a "
                             "device that computes in fp16)")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (default: torch's)")
    return parser


def parse_args(argv=None):
    return get_args_parser().parse_intermixed_args(argv)


# --------------------------------------------------------------------------- checks

def check_args(args):
    from models.deploy.mixed_precision import check_min_snr
    from models.deploy.quantize import ENGINES, PRECISIONS

    if args.engine not in ENGINES:
        hint = (" (TensorRT is a runtime, not a quantizer: the int8 QDQ file runs on it with "
                "onnxruntime-gpu's TensorRT provider on CUDA, e.g. models/speed/pidnet_speed.py --onnx FILE "
                "--device cuda)") if args.engine.lower() == "tensorrt" else ""
        raise UsageError(f"unknown --engine '{args.engine}': use {' or '.join(ENGINES)}{hint}")
    if args.precision not in PRECISIONS:
        raise UsageError(f"unknown --precision '{args.precision}': use {' or '.join(PRECISIONS)}")
    if args.mixed:
        check_min_snr(args.min_snr)
        if args.precision != "int8":
            raise UsageError("--mixed chooses which layers stay float in an int8 model: use it with --precision int8")
    if args.calib_images < 1:
        raise UsageError(f"--calib-images must be >= 1 (got {args.calib_images})")
    if args.snr_images < 1:
        raise UsageError(f"--snr-images must be >= 1 (got {args.snr_images})")
    if args.input_size is not None and min(args.input_size) < 32:
        raise UsageError(f"--input-size {args.input_size[0]} {args.input_size[1]} is too small: "
                          "PIDNet needs H and W >= 32 (e.g. 512 1024)")
    sources = sum([bool(args.onnx), bool(args.netspresso)])
    if sources > 1:
        raise ConfigError("give one model: --onnx FILE, --netspresso --model FILE, or --cfg ... TEST.MODEL_FILE ckpt")
    if args.model and not args.netspresso:
        raise UsageError("--model is the compressed module of --netspresso: add --netspresso")
    if args.netspresso and not args.model:
        raise UsageError("--netspresso needs --model FILE (a *_model.pt from tools/compress.py or tools/train.py)")
    if not args.cfg:
        if args.opts:
            raise ConfigError(f"config overrides {' '.join(args.opts)} need --cfg")
        if not args.onnx and not args.netspresso:
            raise ConfigError("nothing to quantize: give --cfg CFG TEST.MODEL_FILE ckpt, --netspresso --model FILE "
                              "or --onnx FILE")
        if not args.calib_dir:
            raise ConfigError("without --cfg there is no DATASET.TRAIN_SET to calibrate on: add --cfg or "
                              "--calib-dir DIR")
        if args.eval:
            raise ConfigError("--eval needs --cfg (its DATASET.TEST_SET)")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1 (got {args.threads})")
    check_precision_device(args.precision, args.device)


def check_precision_device(precision, device_name):
    from models.deploy import quantize as q
    from utils.device import resolve_device

    device = resolve_device(device_name)
    if precision == "fp16":
        reason = q.fp16_unsupported_reason(device)
        if reason:
            raise DeviceError(f"--precision fp16: {reason}")
    return device


# --------------------------------------------------------------------------- calibration data

def _resize(image, size):
    import cv2

    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _draw(count, total, seed):
    """``count`` sorted indices out of ``total``, the same for the same seed."""
    if count >= total:
        return list(range(total))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(total, size=count, replace=False))


def calibration_from_dataset(dataset, count, seed, size):
    """``(N x 3 x H x W float32, names)``: ``count`` images of ``dataset`` drawn with ``seed``,
    resized to ``size`` (H, W) and normalised as the dataset does at test time (no augmentation)."""
    from datasets.base_dataset import normalize

    if len(dataset) == 0:
        raise DatasetError(f"the calibration list {dataset.list_file} is empty: point DATASET.TRAIN_SET at a list "
                           "with images, or use --calib-dir DIR")
    indices = _draw(count, len(dataset), seed)
    images = np.empty((len(indices), 3) + tuple(size), dtype=np.float32)
    names = []
    for row, index in enumerate(indices):
        rgb, _ = dataset.load_pair(index)
        images[row] = normalize(_resize(rgb, size), dataset.mean, dataset.std)
        names.append(dataset.files[index]["name"])
    return images, names


def calibration_from_dir(folder, count, seed, size):
    """``(N x 3 x H x W float32, names)`` from the images of ``folder`` (top level, sorted, then
    ``count`` drawn with ``seed``), decoded and normalised as tools/custom.py does."""
    from utils.images import IMAGE_EXTS, input_transform, read_image

    if not os.path.isdir(folder):
        raise DatasetError(f"--calib-dir {folder} is not a folder: give a folder of calibration images")
    files = sorted(name for name in os.listdir(folder)
                   if name.lower().endswith(IMAGE_EXTS) and not name.startswith(".")
                   and os.path.isfile(os.path.join(folder, name)))
    if not files:
        raise DatasetError(f"--calib-dir {folder} holds no images ({', '.join(IMAGE_EXTS)}): put calibration "
                           "images there or calibrate on DATASET.TRAIN_SET (--cfg, --calib-images N)")
    chosen = [files[i] for i in _draw(count, len(files), seed)]
    images, names = [], []
    for name in chosen:
        bgr = read_image(os.path.join(folder, name))
        if bgr is None:
            logger.warning("skipping %s: cannot decode it as an image", os.path.join(folder, name))
            continue
        images.append(input_transform(_resize(bgr, size)).numpy())
        names.append(name)
    if not images:
        raise DatasetError(f"none of the {len(chosen)} image(s) in --calib-dir {folder} could be decoded: "
                           "they are corrupt or not images")
    return np.stack(images), names


# --------------------------------------------------------------------------- model -> fp32 ONNX

def export_fp32(args, cfg, path, size):
    """Write the fp32 ONNX of the model to quantize at ``path``; returns ``(description, num_classes)``."""
    from models.deploy import export_onnx, fold_batchnorm
    from models.deploy.quantize import load_segmenter_onnx

    num_classes = cfg.DATASET.NUM_CLASSES if cfg is not None else None
    if args.onnx:
        load_segmenter_onnx(args.onnx, num_classes)
        shutil.copyfile(args.onnx, path)
        return args.onnx, num_classes
    example = torch.randn((1, 3) + tuple(size), generator=torch.Generator().manual_seed(0))
    if args.netspresso:
        model = build.load_netspresso(args.model)  # without its head: the main logits only
        description = args.model
    else:
        if not cfg.TEST.MODEL_FILE:
            raise ConfigError("--cfg needs the weights to quantize: add TEST.MODEL_FILE path/to/checkpoint.pt "
                              "(or use --onnx / --netspresso --model)")
        model = build.build_model(cfg, cfg.TEST.MODEL_FILE, augment=False)
        description = f"{cfg.MODEL.NAME} + {cfg.TEST.MODEL_FILE}"
    export_onnx(fold_batchnorm(model.eval()), path, example, output_index=1)
    load_segmenter_onnx(path, num_classes)  # a NetsPresso body with the wrong head fails here
    return description, num_classes


def default_input_size(args, cfg):
    if args.input_size is not None:
        return tuple(args.input_size)
    if cfg is not None:
        return build.image_hw(cfg.TEST.IMAGE_SIZE)
    if args.onnx:
        from models.deploy.onnx_file import describe_onnx

        shape = describe_onnx(args.onnx).input_shape
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            return shape[2], shape[3]
    raise ConfigError("no input size: pass --input-size H W (or --cfg for TEST.IMAGE_SIZE)")


# --------------------------------------------------------------------------- evaluation

def evaluate_onnx(cfg, path, threads):
    from torch.utils.data import DataLoader

    from utils.evaluate import evaluate

    dataset = build.build_test_dataset(cfg)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
    from models.deploy.onnx_file import prepare_onnx_file

    runner = prepare_onnx_file(path, "onnxruntime", torch.device("cpu"), threads=threads,
                               num_classes=cfg.DATASET.NUM_CLASSES)
    result = evaluate(runner, loader, cfg.DATASET.NUM_CLASSES,
                      ignore_label=cfg.TRAIN.IGNORE_LABEL, device=torch.device("cpu"),
                      align_corners=cfg.MODEL.ALIGN_CORNERS, progress=False, desc=os.path.basename(path))
    return result["mean_iou"]


# --------------------------------------------------------------------------- main

def quantize(args, work, out_dir, images, reference, snr_images, fp32_path):
    """Make the quantized file in ``out_dir``; returns the report's quantization fields."""
    from models.deploy import quantize as q
    from models.deploy.mixed_precision import choose_float_layers

    path = os.path.join(out_dir, MODEL_FILES[args.precision])
    info = {"float_layers": [], "layer_snr_db": {}, "mixed": None}
    if args.precision == "fp16":
        q.convert_fp16(fp32_path, path)
        return path, info
    if args.mixed:
        info = choose_float_layers(fp32_path, images, snr_images, reference, work, args.engine, args.min_snr,
                                   calibration=args.calibration, threads=args.threads)
    q.quantize_int8(fp32_path, path, images, args.engine, exclude=info["float_layers"], calibration=args.calibration)
    return path, info


def main(args):
    from configs.default import load_config
    from models.deploy import quantize as q

    check_args(args)
    cfg = load_config(args.cfg, args.opts) if args.cfg else None
    size = default_input_size(args, cfg)
    if os.path.exists(args.output_dir) and not args.overwrite:
        raise UsageError(f"--output-dir {args.output_dir} already exists: choose another folder or add --overwrite")
    if args.onnx:  # a bad file fails before the calibration images are read
        q.load_segmenter_onnx(args.onnx, cfg.DATASET.NUM_CLASSES if cfg is not None else None)

    start = time.perf_counter()
    if args.calib_dir:
        images, names = calibration_from_dir(args.calib_dir, args.calib_images, args.seed, size)
        calib_source = os.path.abspath(args.calib_dir)
    else:
        images, names = calibration_from_dataset(build.build_test_dataset(cfg, cfg.DATASET.TRAIN_SET), args.calib_images, args.seed, size)
        calib_source = f"{cfg.DATASET.ROOT.rstrip('/')}/{cfg.DATASET.TRAIN_SET}"
    load_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="pidnet_quantize_") as work, \
            q.AtomicDir(args.output_dir, overwrite=args.overwrite) as out:
        fp32_path = os.path.join(work, "model_fp32.onnx")
        description, _ = export_fp32(args, cfg, fp32_path, size)
        snr_images = images[:args.snr_images]
        reference = q.run_images(q.OnnxModel(fp32_path, threads=args.threads), snr_images)
        start = time.perf_counter()
        path, info = quantize(args, work, out.path, images, reference, snr_images, fp32_path)
        quant_seconds = time.perf_counter() - start
        snr = {runtime: round(q.logits_snr(path, snr_images, reference, runtime, args.threads), 3)
               for runtime in q.RUNTIMES}
        report = {
            "model": description, "precision": args.precision,
            "engine": args.engine if args.precision == "int8" else "onnxruntime.transformers.float16",
            "file": os.path.basename(path),
            "calibration": {"source": calib_source, "images": len(names), "seed": args.seed,
                            "method": args.calibration if args.engine == "onnxruntime" else "nncf",
                            "input_size": list(size), "names": names, "load_seconds": round(load_seconds, 2),
                            "quantize_seconds": round(quant_seconds, 2)},
            "logits_snr_db": snr, "snr_images": len(snr_images),
            "float_layers": info["float_layers"], "layer_snr_db": info["layer_snr_db"], "mixed": info["mixed"],
            "sizes_bytes": {"fp32": os.path.getsize(fp32_path), args.precision: os.path.getsize(path)},
        }
        if args.eval:
            report["eval"] = {"test_set": cfg.DATASET.TEST_SET,
                              "fp32_miou": evaluate_onnx(cfg, fp32_path, args.threads),
                              f"{args.precision}_miou": evaluate_onnx(cfg, path, args.threads)}
        from utils.io import atomic_write_text

        atomic_write_text(json.dumps(report, indent=2) + "\n", os.path.join(out.path, QUANTIZE_REPORT))
        out.commit()

    final = os.path.join(args.output_dir, os.path.basename(path))
    sizes = report["sizes_bytes"]
    line = (f"wrote {final} ({args.precision}, {report['engine']}, {len(names)} calibration images at "
            f"{size[0]}x{size[1]}, logits SNR {snr['onnxruntime']:.1f} dB onnxruntime / {snr['openvino']:.1f} dB "
            f"openvino, {len(report['float_layers'])} layer(s) in float, "
            f"{sizes['fp32'] / 1e6:.1f} MB -> {sizes[args.precision] / 1e6:.1f} MB")
    if args.eval:
        line += (f", mIoU fp32 {100 * report['eval']['fp32_miou']:.2f}% / {args.precision} "
                 f"{100 * report['eval'][f'{args.precision}_miou']:.2f}%")
    print(line + ")")
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, parse_args()))
