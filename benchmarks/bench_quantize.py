"""int8 (QDQ, onnxruntime) vs eager fp32 latency, and calibration time (a benchmark, not a unit test).

For each variant the eager fp32 model and its int8 file (``models/deploy/quantize.py``, calibrated
on synthetic street scenes) are timed in alternation, batch 1, per thread count; a pruned
NetsPresso body (``--pruned``) adds ``pruned eager`` and ``pruned int8`` rows, whose ratios are
to the *unpruned* eager model. ``--calib-images N`` also times the calibration + quantization of
PIDNet-S on N images at ``--size``.

Examples::

    python benchmarks/bench_quantize.py --variants s m l --threads 1 2 --runs 5
    python benchmarks/bench_quantize.py --pruned output/demo/finetune/.../best_model_model.pt
    python benchmarks/bench_quantize.py --variants s --calib-images 100 --runs 0
    python benchmarks/bench_quantize.py --size 64 128 --runs 1 --threads 1    # smoke run
"""
import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import UsageError  # noqa: E402

logger = logging.getLogger(__name__)
NAMES = {"s": "PIDNet-S", "m": "PIDNet-M", "l": "PIDNet-L"}


def get_args_parser():
    parser = argparse.ArgumentParser(description="int8 vs eager fp32 latency (alternating runs), calibration time")
    parser.add_argument("--variants", nargs="+", default=["s"], choices=sorted(NAMES))
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (one call of each model per round)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--pruned", default=None, help="a pruned NetsPresso body (*_model.pt) of PIDNet-S")
    parser.add_argument("--calib", type=int, default=4, help="calibration images of the timed int8 models")
    parser.add_argument("--calib-images", type=int, default=0, help="also time calibrating PIDNet-S on N images")
    parser.add_argument("--output", default=None, help="also write the table (markdown) here")
    return parser


def scenes(count, size, seed=0):
    """``count`` synthetic street scenes at ``size`` (H, W), normalised as the datasets do."""
    from datasets.base_dataset import normalize
    from datasets.synthetic import scene

    height, width = size
    return np.stack([normalize(scene(seed, "train", i, (width, height))[0]) for i in range(count)])


def int8_file(model, workdir, name, images):
    from models.deploy import export_onnx, fold_batchnorm
    from models.deploy.quantize import quantize_int8

    fp32 = export_onnx(fold_batchnorm(model.eval()), os.path.join(workdir, f"{name}_fp32.onnx"),
                       torch.from_numpy(images[:1]), output_index=1)
    return quantize_int8(fp32, os.path.join(workdir, f"{name}_int8.onnx"), images)


def build_models(args, workdir, images):
    """``[(label, variant key, kind, model or int8 path)]``."""
    from models.calibration import realistic_random_weights
    from models.pidnet import build_pidnet

    entries = []
    for variant in args.variants:
        model = realistic_random_weights(build_pidnet(f"pidnet_{variant}", 19, augment=False))
        entries.append((NAMES[variant], variant, "eager", model))
        entries.append((NAMES[variant], variant, "int8", int8_file(model, workdir, variant, images)))
    if args.pruned:
        from models.netspresso import load_netspresso

        pruned = load_netspresso(args.pruned).eval()
        entries.append(("pruned PIDNet-S", "s", "eager", pruned))
        entries.append(("pruned PIDNet-S", "s", "int8", int8_file(pruned, workdir, "pruned", images)))
    return entries


def runner_for(kind, target, threads):
    from models.deploy import prepare_inference
    from models.deploy.onnx_file import prepare_onnx_file

    if kind == "eager":
        return prepare_inference(target, "eager", torch.device("cpu"))
    return prepare_onnx_file(target, "onnxruntime", torch.device("cpu"), threads=threads)


def time_alternating(runners, example, runs, warmup):
    for _ in range(warmup):
        for run in runners:
            run(example)
    times = [[] for _ in runners]
    for _ in range(runs):
        for index, run in enumerate(runners):
            start = time.perf_counter()
            run(example)
            times[index].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main(args):
    if args.runs < 0 or args.calib < 1 or min(args.threads) < 1 or min(args.size) < 32:
        raise UsageError("--runs >= 0, --calib >= 1, --threads >= 1 and --size >= 32 are required")
    height, width = args.size
    images = scenes(args.calib, args.size)
    example = torch.from_numpy(images[:1])
    lines = [f"| model | precision | threads | latency (ms) | vs eager fp32 of the unpruned model |",
             "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="bench_quantize_") as workdir:
        entries = build_models(args, workdir, images) if args.runs else []
        for threads in args.threads if args.runs else []:
            torch.set_num_threads(threads)
            runners = [runner_for(kind, target, threads) for _, _, kind, target in entries]
            seconds = time_alternating(runners, example, args.runs, args.warmup)
            eager = {variant: s for (label, variant, kind, _), s in zip(entries, seconds)
                     if kind == "eager" and not label.startswith("pruned")}
            for (label, variant, kind, _), s in zip(entries, seconds):
                row = (f"| {label} | {'fp32 eager' if kind == 'eager' else 'int8 QDQ (onnxruntime)'} | {threads} | "
                       f"{1e3 * s:.1f} | {eager[variant] / s:.2f}x |")
                lines.append(row)
                print(row, flush=True)
        if args.calib_images:
            from models.calibration import realistic_random_weights
            from models.pidnet import build_pidnet

            torch.set_num_threads(max(args.threads))
            calib = scenes(args.calib_images, args.size, seed=1)
            model = realistic_random_weights(build_pidnet("pidnet_s", 19, augment=False))
            start, cpu = time.perf_counter(), time.process_time()
            int8_file(model, workdir, "calib", calib)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            # CPU time too: on a shared machine the wall time measures the other jobs as well.
            line = (f"calibration + int8 quantization of PIDNet-S on {args.calib_images} images at {height}x{width} "
                    f"(export included, {max(args.threads)} threads): {seconds:.1f} s wall, {cpu:.1f} s CPU")
            lines.append("")
            lines.append(line)
            print(line, flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    footer = (f"batch 1, 1x3x{height}x{width}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, load average {load:.1f} at the end, torch {torch.__version__}")
    print(footer)
    if args.output:
        from utils.io import atomic_write_text

        atomic_write_text("\n".join(lines + ["", footer]) + "\n", args.output)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_args()))
