"""Evaluate a PIDNet checkpoint on ``DATASET.TEST_SET`` (mIoU, pixel/mean accuracy, per-class IoU).

Examples (from the repository root)::

    # an official or our own checkpoint, on the config's test list (Cityscapes val)
    python tools/eval.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        TEST.MODEL_FILE pretrained_models/cityscapes/PIDNet_S_Cityscapes_val.pt

    # flip + multi-scale test-time augmentation, CPU, metrics as JSON
    python tools/eval.py --cfg configs/camvid/pidnet_small_camvid.yaml \\
        TEST.MODEL_FILE output/camvid/pidnet_small_camvid/best.pt \\
        TEST.FLIP_TEST True TEST.MULTI_SCALE True --device cpu --json eval.json

    # Cityscapes test set -> label-ID PNGs for the benchmark server (+ colour images)
    python tools/eval.py --cfg configs/cityscapes/pidnet_small_cityscapes_trainval.yaml \\
        DATASET.TEST_SET list/cityscapes/test.lst TEST.MODEL_FILE best.pt \\
        --save-pred output/test_pred --save-color

    # faster: BN-folded channels_last model, main output only (see --backend)
    python tools/eval.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        TEST.MODEL_FILE best.pt --backend fused --device cpu

    # an ONNX file (fp32, fp16 or int8 QDQ: tools/export_onnx.py, tools/quantize.py), onnxruntime or OpenVINO
    python tools/eval.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        --onnx pidnet_s_int8.onnx --runtime openvino --device cpu

    # a compressed NetsPresso model (+ its auxiliary head)
    python tools/eval.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        --netspresso --model output/compressed/best_model_model.pt --head output/compressed/best_model_head.pt

Without ``TEST.MODEL_FILE`` the official location ``OUTPUT_DIR/<dataset>/<cfg name>/best.pt`` is
used. For an image-only list (no labels) no metric can be computed; the predictions are then
written (by default to ``OUTPUT_DIR/<dataset>/<cfg name>/test_results``, as the official code).
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch.utils.data import DataLoader  # noqa: E402

from configs import build  # noqa: E402
from configs.default import load_config  # noqa: E402
from models.deploy import BACKENDS  # noqa: E402
from utils.cli import is_main_process, run_main, setup_logging  # noqa: E402
from utils.errors import CheckpointError, ConfigError, UsageError  # noqa: E402
from utils.evaluate import eval_sampler, evaluate  # noqa: E402
from utils.io import atomic_write_text, check_writable  # noqa: E402

logger = logging.getLogger("tools.eval")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Evaluate a PIDNet model on DATASET.TEST_SET.")
    parser.add_argument("--cfg", required=True, help="experiment YAML, e.g. configs/cityscapes/pidnet_small_cityscapes.yaml")
    parser.add_argument("opts", nargs="*", default=[],
                        help="config overrides as KEY VALUE pairs, e.g. TEST.MODEL_FILE best.pt TEST.FLIP_TEST True")
    parser.add_argument("--device", default=None, help="auto (default: the config's DEVICE), cpu, cuda or cuda:N")
    parser.add_argument("--save-pred", default=None, metavar="DIR",
                        help="write label-ID PNGs (Cityscapes benchmark format) of the predictions to DIR")
    parser.add_argument("--save-color", action="store_true",
                        help="also write colourised predictions to DIR/color/ (needs --save-pred, "
                             "or the default test_results folder for image-only lists)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the metrics as JSON to PATH")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per batch (default 1, as the official evaluation; images of "
                             "different sizes need 1)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: WORKERS)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--backend", default="eager", choices=BACKENDS,
                        help="inference backend of models/deploy.py for a PIDNet checkpoint (default eager: "
                             "the augment=True model, metrics for the P head and the main output). Any other "
                             "backend evaluates the main output only (TEST.OUTPUT_INDEX), which gives the "
                             "same headline metrics faster: fused (BN folded, channels_last), onnxruntime, "
                             "compile, or auto (times the candidates on the first image and keeps the fastest)")
    parser.add_argument("--netspresso", action="store_true",
                        help="evaluate a compressed NetsPresso/torch.fx model given by --model (and --head)")
    parser.add_argument("--model", default=None, help="with --netspresso: the compressed model file")
    parser.add_argument("--head", default=None, help="with --netspresso: the compressed auxiliary head file")
    parser.add_argument("--onnx", default=None, metavar="FILE",
                        help="evaluate an ONNX file (fp32, fp16 or int8; main logits, as tools/export_onnx.py "
                             "and tools/quantize.py write them) instead of a checkpoint")
    parser.add_argument("--runtime", default=None,
                        help="with --onnx: onnxruntime (default) or openvino")
    return parser


def parse_args(argv=None):
    # Intermixed parsing lets options follow the KEY VALUE overrides (..., TEST.MODEL_FILE x --device cpu).
    return get_args_parser().parse_intermixed_args(argv)


def build_model(cfg, args, device):
    """``(model, source file)``: PIDNet + TEST.MODEL_FILE, a NetsPresso module (``--netspresso``), or
    for ``--onnx`` a runner of the file (see :func:`configs.build.build_eval_model`)."""
    if args.onnx:
        return build.build_eval_model(cfg, device, onnx=args.onnx, runtime=args.runtime), args.onnx
    if args.netspresso:
        if not args.model:
            raise UsageError("--netspresso needs --model FILE (the compressed model, e.g. best_model_model.pt)")
        model = build.build_eval_model(cfg, device, netspresso=(args.model, args.head))
        logger.info("evaluating the compressed model %s%s", args.model, f" + head {args.head}" if args.head else "")
        return model, args.model
    if args.model or args.head:
        raise UsageError("--model/--head are for compressed models and need --netspresso; "
                         "a PIDNet checkpoint goes to TEST.MODEL_FILE")
    model_file = cfg.TEST.MODEL_FILE
    if not model_file:
        model_file = build.run_layout(cfg, args.cfg).best
        if not os.path.isfile(model_file):
            raise CheckpointError(f"TEST.MODEL_FILE is not set and {model_file} does not exist: "
                                  "pass TEST.MODEL_FILE path/to/checkpoint.pt")
        logger.info("TEST.MODEL_FILE not set: using %s", model_file)
    return build.build_eval_model(cfg, device, weights=model_file, backend=args.backend), model_file


def build_runner(model, cfg, args, dataset, device):
    return build.build_eval_runner(model, cfg, device, dataset, onnx=bool(args.onnx), backend=args.backend)


def class_names_of(dataset, num_classes):
    names = list(getattr(dataset, "class_names", None) or [])
    return names if len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]


def format_report(result, class_names):
    """The official summary line plus a per-class IoU table."""
    lines = [f"MeanIU: {result['mean_iou']:.4f}, Pixel_Acc: {result['pixel_acc']:.4f}, "
             f"Mean_Acc: {result['mean_acc']:.4f}"]
    width = max([len("class")] + [len(n) for n in class_names])
    lines.append(f"{'class':<{width}}  IoU")
    lines += [f"{name:<{width}}  {iou:.4f}" for name, iou in zip(class_names, result["iou"])]
    for out in result["outputs"]:
        if out["index"] != result["output_index"]:
            lines.append(f"(output {out['index']}: MeanIU {out['mean_iou']:.4f}, "
                         f"Pixel_Acc {out['pixel_acc']:.4f}, Mean_Acc {out['mean_acc']:.4f})")
    lines.append(f"{result['num_images']} images, {result['images_per_sec']:.2f} images/s")
    return "\n".join(lines)


def main(args):
    setup_logging()
    cfg = load_config(args.cfg, args.opts)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.onnx and (args.netspresso or args.backend != "eager"):
        raise UsageError("--onnx FILE runs the file itself: drop --netspresso/--backend "
                          "(choose the runtime with --runtime onnxruntime|openvino)")
    if args.runtime and not args.onnx:
        raise UsageError(f"--runtime {args.runtime} is for --onnx FILE; a checkpoint takes --backend")
    if args.netspresso and args.backend != "eager":
        raise UsageError(f"--backend {args.backend} is for PIDNet checkpoints: evaluate --netspresso models "
                          "with --backend eager")
    if cfg.TRAIN.IGNORE_LABEL < 0:
        raise ConfigError(f"TRAIN.IGNORE_LABEL {cfg.TRAIN.IGNORE_LABEL} must be 0..255 (labels are uint8); "
                          "the official configs use 255")
    # Output locations are checked before the (possibly long) evaluation, not after it.
    if args.json:
        check_writable(args.json, "--json")
    if args.save_pred:
        check_writable(args.save_pred, "--save-pred", is_dir=True)
    # Under torchrun: cuda:LOCAL_RANK (checked against the visible GPUs) or a gloo CPU process,
    # with the collective timeout of utils/distributed.py; CUDNN.* applied.
    runtime = build.build_runtime(cfg, args.device)
    try:
        return _evaluate_and_report(cfg, args, runtime.device)
    finally:
        runtime.close()


def _evaluate_and_report(cfg, args, device):
    dataset = build.build_test_dataset(cfg)
    model, model_file = build_model(cfg, args, device)
    labelled = dataset.has_labels

    save_dir = args.save_pred
    if save_dir is None and not labelled:
        save_dir = build.run_layout(cfg, args.cfg).test_results
        logger.info("%s has no labels: writing predictions to %s", cfg.DATASET.TEST_SET, save_dir)
        check_writable(save_dir, "OUTPUT_DIR", is_dir=True)
    if args.save_color and save_dir is None:
        raise UsageError("--save-color needs --save-pred DIR (where to write the images)")

    workers = cfg.WORKERS if args.workers is None else args.workers
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=max(0, workers),
                        pin_memory=device.type == "cuda" and cfg.PIN_MEMORY, sampler=eval_sampler(dataset))
    scales = list(cfg.TEST.SCALE_LIST) if cfg.TEST.MULTI_SCALE else [1.0]
    if any(s <= 0 for s in scales):
        raise ConfigError(f"TEST.SCALE_LIST {scales} must hold positive factors, e.g. [0.75, 1.0, 1.25]")
    logger.info("evaluating %s on %s (%d images, flip=%s, scales=%s, device=%s)", model_file,
                cfg.DATASET.TEST_SET, len(dataset), cfg.TEST.FLIP_TEST, scales, device)

    model_fn, runner_index = build_runner(model, cfg, args, dataset, device)
    result = evaluate(model_fn, loader, cfg.DATASET.NUM_CLASSES, ignore_label=cfg.TRAIN.IGNORE_LABEL,
                      device=device, output_index=cfg.TEST.OUTPUT_INDEX, align_corners=cfg.MODEL.ALIGN_CORNERS,
                      flip_test=cfg.TEST.FLIP_TEST, scales=scales, save_dir=save_dir,
                      save_color=args.save_color, dataset=dataset, progress=not args.no_progress)
    if runner_index is not None:
        # The runner returns one tensor: give its metrics the index it has in PIDNet's outputs.
        result["output_index"] = runner_index
        result["outputs"][0]["index"] = runner_index

    names = class_names_of(dataset, cfg.DATASET.NUM_CLASSES)
    if not is_main_process():
        return 0
    if labelled and result["labelled_pixels"] > 0:
        print(format_report(result, names))
    else:
        print(f"{cfg.DATASET.TEST_SET} has no labelled pixels: no metrics; "
              f"{result['num_images']} predictions written to {save_dir}")
    if save_dir and labelled:
        print(f"predictions written to {save_dir}")
    if args.json:
        report = {
            "mean_iou": result["mean_iou"], "pixel_acc": result["pixel_acc"], "mean_acc": result["mean_acc"],
            "iou": dict(zip(names, result["iou"])), "class_names": names, "iou_list": result["iou"],
            "outputs": result["outputs"], "output_index": result["output_index"],
            "num_images": result["num_images"], "labelled_pixels": result["labelled_pixels"],
            "images_per_sec": result["images_per_sec"], "seconds": result["seconds"],
            "model_file": model_file, "cfg": args.cfg, "dataset": cfg.DATASET.DATASET,
            "test_set": cfg.DATASET.TEST_SET, "flip_test": bool(cfg.TEST.FLIP_TEST), "scales": scales,
            "device": str(device), "predictions": save_dir,
        }
        atomic_write_text(json.dumps(report, indent=2) + "\n", args.json)
        logger.info("metrics written to %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, parse_args()))
