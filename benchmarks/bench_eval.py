"""Evaluation throughput: the full pipeline vs the model alone (a benchmark, not a unit test).

The full pipeline is ``utils.evaluate.evaluate`` (DataLoader over the Cityscapes-layout dataset,
the inference backend of ``models/deploy/``, upsampling to the label size, argmax, confusion
matrix) over synthetic scenes. The model-only figure times the same backend on a tensor of the
same size, batch 1. Target: pipeline images/s >= 0.9x model-only.

Examples::

    python benchmarks/bench_eval.py                                  # PIDNet-S, 512x1024, CPU, auto backend
    python benchmarks/bench_eval.py --backend eager --images 20 --workers 2
    python benchmarks/bench_eval.py --image-size 128 64 --images 2 --backend eager   # smoke
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from models.deploy import BACKENDS, prepare_inference  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import UsageError  # noqa: E402

logger = logging.getLogger(__name__)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Evaluation pipeline throughput vs model-only throughput")
    parser.add_argument("--variant", default="s", choices=["s", "m", "l"])
    parser.add_argument("--image-size", type=int, nargs=2, default=(1024, 512), metavar=("W", "H"),
                        help="synthetic scene size (width height)")
    parser.add_argument("--images", type=int, default=10, help="validation images")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--data-root", default="", help="existing synthetic root (default: generate in a temp dir)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    return parser


def model_only_images_per_s(runner, images, runs):
    """Median throughput of ``runner`` on one same-size tensor (after one warm-up call)."""
    runner(images)
    times = []
    for _ in range(runs):
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        start = time.perf_counter()
        runner(images)
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        times.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(times)


def main(args):
    from datasets import build_dataset
    from datasets.synthetic import generate
    from models.pidnet import build_pidnet
    from utils.device import resolve_device
    from utils.evaluate import evaluate

    if args.images < 1 or args.workers < 0:
        raise UsageError("--images must be >= 1 and --workers >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        from configs.build import apply_cudnn

        apply_cudnn(benchmark=True)  # fixed input size: let cuDNN pick the fastest kernels
    width, height = args.image_size
    torch.manual_seed(0)
    model = build_pidnet(f"pidnet_{args.variant}", 19, augment=False).eval()
    runner = prepare_inference(model, args.backend, device, (1, 3, height, width))

    with tempfile.TemporaryDirectory(prefix="pidnet_bench_eval_") as tmp:
        root = args.data_root or tmp
        if not args.data_root:
            generate(root, num_train=0, num_val=args.images, num_test=0, size=(width, height),
                     layouts=("cityscapes",))
        dataset = build_dataset("cityscapes", root, "list/cityscapes/val.lst", num_classes=19, is_train=False,
                                base_size=width, multi_scale=False, flip=False)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=args.workers,
                                             pin_memory=device.type == "cuda")
        evaluate(runner, loader, 19, device=device, progress=False)  # warm-up pass: workers, allocator
        result = evaluate(runner, loader, 19, device=device, progress=False)
    pipeline = result["num_images"] / result["seconds"]
    model_only = model_only_images_per_s(runner, torch.randn(1, 3, height, width, device=device),
                                         max(3, args.images))
    print(f"eval PIDNet-{args.variant.upper()} | device {device} | backend {runner.backend} | "
          f"{args.images} images {width}x{height} | workers {args.workers} | threads {torch.get_num_threads()}")
    print(f"pipeline: {pipeline:.3f} images/s | model only: {model_only:.3f} images/s | "
          f"ratio: {pipeline / model_only:.2f}x (target >= 0.9x)")
    return 0


if __name__ == "__main__":
    setup_logging(level=logging.WARNING)
    sys.exit(run_main(main, get_args_parser().parse_args()))
