"""Export PIDNet's inference output (main logits) to ONNX and verify it with onnxruntime.

The conv -> BatchNorm pairs are folded first (``models.deploy.fold_batchnorm``; ``--no-fold``
keeps them), the batch/height/width axes are dynamic (``--static`` fixes them to ``--r``), and
the file is only written (atomically) after onnxruntime reproduced the PyTorch logits on the
same random input to within ``--tolerance`` (max abs diff, default 1e-3).

Examples::

    python tools/export_onnx.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        TEST.MODEL_FILE pretrained_models/cityscapes/PIDNet_S_Cityscapes_val.pt --output pidnet_s.onnx
    python tools/export_onnx.py --a pidnet-l --c 19 --p PIDNet_L_Cityscapes_test.pt --r 1024 2048
    python tools/export_onnx.py --netspresso --model output/compress/best_model_model.pt --output small.onnx
"""
import argparse
import logging
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from configs import build  # noqa: E402
from models.deploy import create_ort_session, export_onnx, fold_batchnorm, select_output  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import ConfigError, ModelError, UsageError  # noqa: E402
from utils.io import check_writable, made_dirs  # noqa: E402

logger = logging.getLogger(__name__)

# PIDNet's bilinear resize with align_corners needs ONNX Resize from opset 11; the TorchScript
# exporter we use writes up to this opset (a higher one would silently fall back to another exporter).
MIN_OPSET = 11
MAX_OPSET = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Export PIDNet (main logits) to ONNX, verified with onnxruntime")
    parser.add_argument("--cfg", default=None, help="experiment YAML (model from MODEL.NAME, weights from TEST.MODEL_FILE)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides KEY VALUE (with --cfg)")
    parser.add_argument("--a", default=None, help="without --cfg: pidnet-s, pidnet-m or pidnet-l")
    parser.add_argument("--c", type=int, default=19, help="without --cfg: number of classes")
    parser.add_argument("--p", default="", help="without --cfg: weights file (random weights when empty)")
    parser.add_argument("--netspresso", action="store_true", help="export a compressed whole-module file (--model)")
    parser.add_argument("--model", default=None, help="with --netspresso: the compressed model file")
    parser.add_argument("--output-index", type=int, default=None,
                        help="which output is the main logits when the model returns a list "
                             "(default: TEST.OUTPUT_INDEX with --cfg, else 1)")
    parser.add_argument("--output", default="model.onnx", help="ONNX file to write (default model.onnx)")
    parser.add_argument("--r", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="export/verification input size (default: TEST.IMAGE_SIZE with --cfg, else 1024 2048)")
    parser.add_argument("--opset", type=int, default=17, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default 17)")
    parser.add_argument("--static", action="store_true", help="fixed input size instead of dynamic batch/H/W")
    parser.add_argument("--no-fold", action="store_true", help="keep the BatchNorms instead of folding them")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs diff allowed vs PyTorch")
    parser.add_argument("--device", default="auto", help="device of the PyTorch reference and ORT: auto, cpu, cuda")
    return parser


def build_export_model(args):
    """``(model, output_index, (H, W), description)`` from --netspresso, --cfg or --a/--c/--p."""
    if args.netspresso:
        if not args.model:
            raise UsageError("--netspresso needs --model FILE (e.g. output/.../best_model_model.pt)")
        if args.cfg or args.a or args.p:
            raise ConfigError("--netspresso --model FILE exports that module: drop --cfg/--a/--p")
        return build.load_body(args.model), _index(args, 1), tuple(args.r or (1024, 2048)), args.model
    if args.model:
        raise UsageError("--model is for compressed modules and needs --netspresso; "
                          "PIDNet weights go to --p or TEST.MODEL_FILE")
    if args.cfg:
        if args.a or args.p:
            raise ConfigError("give either --cfg (+ TEST.MODEL_FILE) or --a/--c/--p, not both")
        from configs.default import load_config

        cfg = load_config(args.cfg, args.opts)
        if not cfg.TEST.MODEL_FILE:
            raise ConfigError("--cfg export needs weights: add TEST.MODEL_FILE path/to/checkpoint.pt")
        model = build.build_model(cfg, cfg.TEST.MODEL_FILE, augment=False)
        size = tuple(args.r or build.image_hw(cfg.TEST.IMAGE_SIZE))
        return model, _index(args, cfg.TEST.OUTPUT_INDEX), size, f"{cfg.MODEL.NAME} + {cfg.TEST.MODEL_FILE}"
    if args.opts:
        raise ConfigError(f"config overrides {' '.join(args.opts)} need --cfg")
    if not args.a:
        raise ConfigError("nothing to export: give --cfg FILE TEST.MODEL_FILE ckpt, --a NAME [--p ckpt], "
                          "or --netspresso --model FILE")
    if args.c <= 0:
        raise UsageError(f"--c must be a positive number of classes (got {args.c})")
    model = build.load_pidnet(args.a, args.c, args.p, augment=False, classes_fix="pass --c {n}",
                              variant_fix="set --a to the checkpoint's variant")
    if not args.p:
        logger.warning("no --p weights: exporting a randomly initialised %s", args.a)
    return model, _index(args, 1), tuple(args.r or (1024, 2048)), args.a


def _index(args, default):
    return default if args.output_index is None else args.output_index


def verify_onnx(path, model, images, output_index, device):
    """``(max abs difference, max abs logit)`` of ORT on ``path`` vs the PyTorch model on ``images``."""
    import numpy as np

    with torch.inference_mode():
        expected = select_output(model.to(device).eval()(images.to(device)), output_index).float().cpu()
    session = create_ort_session(path, device)
    got = session.run(["logits"], {"images": images.cpu().numpy()})[0]
    if tuple(got.shape) != tuple(expected.shape):
        raise ModelError(f"onnxruntime output shape {tuple(got.shape)} differs from PyTorch's "
                         f"{tuple(expected.shape)}: the export is wrong; report it with the model file")
    return float(np.abs(got - expected.numpy()).max()), float(expected.abs().max())


def main(args):
    from utils.device import resolve_device

    if args.r is not None and min(args.r) <= 0:
        raise UsageError(f"--r expects two positive integers H W (got {args.r[0]} {args.r[1]})")
    if args.tolerance <= 0:
        raise UsageError(f"--tolerance must be positive (got {args.tolerance})")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise UsageError(f"--opset {args.opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (default 17)")
    output = os.path.abspath(args.output)
    if os.path.isdir(output):
        raise UsageError(f"--output {args.output} is a directory: give a file name such as {args.output}/model.onnx")
    check_writable(output, "--output")
    device = resolve_device(args.device)
    model, output_index, (height, width), description = build_export_model(args)
    model = model.eval()
    exported = model if args.no_fold else fold_batchnorm(model)
    images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))

    with made_dirs(os.path.dirname(output)):
        opset = _export_verified(args, exported, model, images, output_index, device, output, description)
    axes = "static" if args.static else "dynamic batch/height/width"
    print(f"wrote {output} ({description}, {axes}, opset {opset}, "
          f"{'unfolded' if args.no_fold else 'BatchNorm folded'})")
    return 0


def written_opset(path):
    """The default-domain opset recorded in an ONNX file (what was written, not what was asked)."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)


def _export_verified(args, exported, model, images, output_index, device, output, description):
    height, width = images.shape[-2:]
    workdir = tempfile.mkdtemp(prefix=".export_onnx.", dir=os.path.dirname(output))
    try:
        tmp = os.path.join(workdir, "model.onnx")
        export_onnx(exported, tmp, images, output_index, dynamic=not args.static, opset=args.opset)
        opset = written_opset(tmp)
        if opset != args.opset:
            logger.warning("asked for opset %d, the exporter wrote opset %s", args.opset, opset)
        diff, scale = verify_onnx(tmp, model, images, output_index, device)
        print(f"onnxruntime vs PyTorch on 1x3x{height}x{width}: max abs diff {diff:.3e} "
              f"(largest logit {scale:.3g})")
        if not diff <= args.tolerance:
            raise ModelError(f"the ONNX export of {description} differs from PyTorch by {diff:.3e} "
                             f"(> --tolerance {args.tolerance:g}); nothing written. Try --no-fold or another --opset")
        os.replace(tmp, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return opset


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_args()))
