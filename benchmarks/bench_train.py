"""Training throughput on synthetic data (a benchmark, not a unit test).

PIDNet (augment=True) + the official loss (``utils.criterion.build_criterion``: OHEM CE on P and
main, boundary BCE, boundary-aware CE) + SGD, fed by the real Cityscapes-layout dataset pipeline
(multi-scale, crop, flip, boundary targets) over scenes from ``datasets.synthetic``. Reports
images/s, the share of the step spent waiting for the DataLoader, and peak memory (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS).

Examples::

    python benchmarks/bench_train.py                       # CPU, PIDNet-S, batch 4, 512x512 crops
    python benchmarks/bench_train.py --workers 2 --iters 10
    python benchmarks/bench_train.py --device cuda --batch 12 --crop 1024 1024 --amp
    python benchmarks/bench_train.py --iters 1 --warmup 0 --batch 2 --crop 64 64 --image-size 128 64  # smoke
"""
import argparse
import logging
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import ConfigError, UsageError  # noqa: E402

logger = logging.getLogger(__name__)


def get_args_parser():
    parser = argparse.ArgumentParser(description="PIDNet training throughput on synthetic data")
    parser.add_argument("--variant", default="s", choices=["s", "m", "l"])
    parser.add_argument("--batch", type=int, default=4, help="images per step")
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="training crop")
    parser.add_argument("--image-size", type=int, nargs=2, default=(1024, 512), metavar=("W", "H"),
                        help="synthetic scene size (width height)")
    parser.add_argument("--iters", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--data-root", default="", help="existing synthetic root (default: generate in a temp dir)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    return parser


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux; the DataLoader workers are separate processes (not included).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_loader(root, args, steps):
    from datasets import build_dataset, seed_worker
    from datasets.synthetic import generate

    if not args.data_root:
        generate(root, num_train=args.batch * steps, num_val=1, num_test=0, size=tuple(args.image_size),
                 layouts=("cityscapes",))
    dataset = build_dataset("cityscapes", root, "list/cityscapes/train.lst", num_classes=19, is_train=True,
                            crop_size=tuple(args.crop), base_size=args.image_size[0], multi_scale=True,
                            flip=True, scale_factor=16)
    if len(dataset) < args.batch:
        raise ConfigError(f"{root} has {len(dataset)} training images, fewer than --batch {args.batch}")
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                       num_workers=args.workers, worker_init_fn=seed_worker,
                                       pin_memory=False, persistent_workers=args.workers > 0)


def train_steps(model, criterion, optimizer, loader, device, steps, warmup, amp):
    """Run ``warmup + steps`` steps; returns (seconds, data-wait seconds) of the timed ones."""
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    iterator = iter(loader)
    total = data = 0.0
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        fetched = time.perf_counter()
        images, labels, edges = (t.to(device, non_blocking=True) for t in batch[:3])
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            outputs = model(images)
            loss, _ = criterion(outputs, labels, edges)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if not torch.isfinite(loss):
            raise ConfigError("the loss became non-finite during the benchmark: lower the learning rate")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= warmup:
            total += time.perf_counter() - start
            data += fetched - start
    return total, data


def main(args):
    from models.pidnet import build_pidnet
    from utils.criterion import build_criterion
    from utils.device import resolve_device

    if args.batch < 2 or args.iters < 1 or args.warmup < 0 or min(args.crop) < 32:
        raise UsageError("--batch must be >= 2 (BatchNorm), --iters >= 1, --warmup >= 0, --crop >= 32")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = args.amp and device.type == "cuda"
    if args.amp and not amp:
        logger.warning("--amp needs CUDA: running fp32 on %s", device)
    if device.type == "cuda":
        from configs.build import apply_cudnn

        apply_cudnn(benchmark=True)
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = build_pidnet(f"pidnet_{args.variant}", 19, augment=True).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion = build_criterion(19, ignore_label=255, use_ohem=True).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    with tempfile.TemporaryDirectory(prefix="pidnet_bench_train_") as tmp:
        root = args.data_root or tmp
        loader = build_loader(root, args, args.iters + args.warmup)
        seconds, data_seconds = train_steps(model, criterion, optimizer, loader, device, args.iters,
                                            args.warmup, amp)
    images_per_s = args.batch * args.iters / seconds
    print(f"train PIDNet-{args.variant.upper()} | device {device} | batch {args.batch} | crop "
          f"{args.crop[0]}x{args.crop[1]} | workers {args.workers} | threads {torch.get_num_threads()} | "
          f"amp {amp}")
    print(f"images/s: {images_per_s:.3f} | step: {seconds / args.iters * 1e3:.0f} ms | data loading: "
          f"{100 * data_seconds / seconds:.1f}% of the step time | peak memory: {peak_memory_mb(device):.0f} MB "
          f"({'CUDA max allocated' if device.type == 'cuda' else 'process peak RSS'})")
    return 0


if __name__ == "__main__":
    setup_logging(level=logging.WARNING)
    sys.exit(run_main(main, get_args_parser().parse_args()))
