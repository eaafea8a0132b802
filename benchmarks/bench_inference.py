"""Inference latency of every backend of ``models/deploy/`` (a benchmark, not a unit test).

All (model, backend) pairs are prepared in one process and timed in alternation (one call of
each per round, ``--runs`` rounds after ``--warmup``), so machine load affects them alike. The
table gives the median latency, FPS, the ratio to the same model's plain eager PyTorch, the
ratio to the first row (eager of the first, uncompressed model: the reference for compressed
models), and the max abs difference of each backend's logits to its model's eager ones.

Examples::

    python benchmarks/bench_inference.py                         # PIDNet-S, 1x3x512x1024, CPU
    python benchmarks/bench_inference.py --variants s m l --runs 10 --output benchmarks/inference.md
    python benchmarks/bench_inference.py --compressed output/compress/best_model_model.pt
    python benchmarks/bench_inference.py --threads 1 --backends eager onnxruntime openvino
    python benchmarks/bench_inference.py --size 64 128 --runs 1 --warmup 0   # smoke run
"""
import argparse
import logging
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from models.calibration import realistic_random_weights  # noqa: E402
from models.deploy import prepare_inference, select_output  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import UsageError  # noqa: E402

logger = logging.getLogger(__name__)

# name -> prepare_inference keyword arguments
BACKEND_SETTINGS = {
    "eager": dict(backend="eager"),
    "fused": dict(backend="fused", channels_last=True),
    "fused_nchw": dict(backend="fused", channels_last=False),
    "onnxruntime": dict(backend="onnxruntime"),
    "openvino": dict(backend="openvino"),
    "compile": dict(backend="compile", fallback=False),
}


def get_args_parser():
    parser = argparse.ArgumentParser(description="Inference latency per backend (alternating runs)")
    parser.add_argument("--variants", nargs="+", default=["s"], choices=["s", "m", "l"], help="PIDNet variants")
    parser.add_argument("--c", type=int, default=19, help="number of classes")
    parser.add_argument("--p", default="", help="weights for the (single) variant; random init otherwise")
    parser.add_argument("--compressed", nargs="*", default=[],
                        help="whole-module files (compressed NetsPresso/fx models) to time too")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["eager", "fused", "fused_nchw", "onnxruntime"],
                        choices=sorted(BACKEND_SETTINGS))
    parser.add_argument("--runs", type=int, default=10, help="timed calls per (model, backend)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per (model, backend) first")
    parser.add_argument("--threads", type=int, default=0, help="torch and ORT threads (0 = torch default)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--output", default="", help="also write the markdown table here")
    return parser


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_description(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    try:
        import onnxruntime

        text += f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        pass
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def condition(model, seed=0):
    """Random weights with realistic BatchNorm statistics and logit scale (models/calibration.py)."""
    return realistic_random_weights(model, seed, calibrate=(2, 3, 256, 256), example=(1, 3, 256, 256))


def build_models(args):
    """``[(label, model)]``: the PIDNet variants, then the compressed module files."""
    from configs import build

    models = []
    for variant in args.variants:
        model = build.load_pidnet(f"pidnet_{variant}", args.c, args.p, augment=False, classes_fix="pass --c {n}",
                                  variant_fix="list only the checkpoint's variant in --variants").eval()
        if not args.p:
            condition(model)
        models.append((f"PIDNet-{variant.upper()}", model))
    for path in args.compressed:
        models.append((f"compressed {os.path.basename(path)}", build.load_body(path).eval()))
    return models


def run_benchmark(models, backends, images, runs, warmup, threads=None):
    """Time every (model, backend) in alternation; returns a list of row dicts."""
    device = images.device
    if device.type == "cuda":
        from configs.build import apply_cudnn

        apply_cudnn(benchmark=True)  # fixed input size: let cuDNN pick the fastest kernels
    entries = []
    for label, model in models:
        with torch.inference_mode():
            reference = select_output(model.to(device)(images), 1).float()
        for name in backends:
            start = time.perf_counter()
            runner = prepare_inference(model, device=device, example_input=images, threads=threads,
                                       **BACKEND_SETTINGS[name])
            setup_s = time.perf_counter() - start
            diff = (runner(images).float() - reference).abs().max().item()
            entries.append(dict(model=label, backend=name, runner=runner, times=[], diff=diff,
                                logit=reference.abs().max().item(), setup_s=setup_s))
    for _ in range(warmup):
        for entry in entries:
            entry["runner"](images)
    for round_index in range(runs):
        for entry in entries:
            _sync(device)
            start = time.perf_counter()
            entry["runner"](images)
            _sync(device)
            entry["times"].append(time.perf_counter() - start)
        logger.info("round %d/%d done", round_index + 1, runs)
    eager = {e["model"]: statistics.median(e["times"]) for e in entries if e["backend"] == "eager"}
    first = statistics.median(entries[0]["times"])  # first backend of the first (uncompressed) model
    rows = []
    for entry in entries:
        median = statistics.median(entry["times"])
        own = eager.get(entry["model"])
        rows.append(dict(model=entry["model"], backend=entry["runner"].backend, setting=entry["backend"],
                         latency_ms=median * 1e3, fps=images.shape[0] / median,
                         ratio=own / median if own else float("nan"), ratio_first=first / median,
                         diff=entry["diff"], logit=entry["logit"], setup_s=entry["setup_s"],
                         spread_ms=(min(entry["times"]) * 1e3, max(entry["times"]) * 1e3)))
    return rows


def format_table(rows, size, batch):
    lines = ["| model | backend | input | median latency (ms) | min-max (ms) | FPS | vs own eager | "
             f"vs {rows[0]['model']} {rows[0]['setting']} | max abs diff (max logit) | setup (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['setting']} | {batch}x3x{size[0]}x{size[1]} | "
                     f"{row['latency_ms']:.1f} | {row['spread_ms'][0]:.0f}-{row['spread_ms'][1]:.0f} | "
                     f"{row['fps']:.2f} | {row['ratio']:.2f}x | {row['ratio_first']:.2f}x | "
                     f"{row['diff']:.1e} ({row['logit']:.3g}) | "
                     f"{row['setup_s']:.1f} |")
    return "\n".join(lines)


def main(args):
    from utils.device import resolve_device

    if args.runs < 1 or args.warmup < 0 or args.batch < 1 or min(args.size) < 1:
        raise UsageError("--runs and --batch must be >= 1, --warmup >= 0 and --size positive")
    if args.p and len(args.variants) != 1:
        raise UsageError("--p loads one checkpoint: give exactly one --variants entry with it")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, *args.size, device=device)
    rows = run_benchmark(build_models(args), args.backends, images, args.runs, args.warmup,
                         threads=args.threads or None)
    table = format_table(rows, args.size, args.batch)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    header = (f"Machine: {machine_description(device)}; {args.runs} alternating runs after {args.warmup} "
              f"warm-up; load average at the end {load} (other processes share the CPU when > 0)")
    print(header)
    print(table)
    if args.output:
        from utils.io import atomic_write_text

        atomic_write_text(header + "\n\n" + table + "\n", args.output)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_args()))
