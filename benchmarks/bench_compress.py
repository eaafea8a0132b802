"""Filter decomposition of PIDNet-S: params, MACs, CPU latency and (optionally) mIoU per variant.

Decomposes the exported body with FD_TK + vbmf (ratio 0 and 0.5) and FD_SVD + vbmf (ratio 0),
counts parameters and MACs, then times every (variant, backend) pair in alternation (one call of
each per round) at each thread count, so machine load hits them alike. With ``--cfg`` each
variant is also evaluated right after decomposition (no fine-tune) with
``tools/eval.py --netspresso``.

Examples::

    python benchmarks/bench_compress.py                                  # random PIDNet-S body
    python benchmarks/bench_compress.py --model /work/artifacts/demo/netspresso/model_modelfx.pt \\
        --cfg configs/synthetic/pidnet_small_synthetic.yaml --eval-opts DATASET.ROOT data/synthetic/
    python benchmarks/bench_compress.py --size 64 128 --mac-sizes 64 128 --runs 1 --warmup 0   # smoke run
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from models.checkpoint import load_module_file  # noqa: E402
from models.compression import decompose  # noqa: E402
from models.compression.report import summary  # noqa: E402
from models.deploy import prepare_inference  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.io import atomic_save, atomic_write_text  # noqa: E402

logger = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = (("FD_TK vbmf 0", "FD_TK", 0.0), ("FD_TK vbmf 0.5", "FD_TK", 0.5), ("FD_SVD vbmf 0", "FD_SVD", 0.0))


def get_args_parser():
    parser = argparse.ArgumentParser(description="Filter decomposition benchmark (alternating runs)")
    parser.add_argument("--model", default="", help="exported body (model_modelfx.pt); random PIDNet-S otherwise")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"), help="timed input")
    parser.add_argument("--mac-sizes", type=int, nargs=2, action="append", default=None, metavar=("H", "W"),
                        help="sizes for MACs (default 512x1024 and 1024x2048)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cfg", default="", help="config for tools/eval.py (mIoU right after decomposition)")
    parser.add_argument("--eval-opts", nargs="*", default=[], help="config overrides for tools/eval.py")
    parser.add_argument("--work-dir", default="", help="where the decomposed files go (default: a temp dir)")
    parser.add_argument("--output", default="", help="also write the markdown table here")
    return parser


def _body(path):
    if path:
        return load_module_file(path, what="model").eval()
    from models.netspresso import export_pidnet
    from models.pidnet import pidnet_s

    torch.manual_seed(0)
    return export_pidnet(pidnet_s(19).eval())[0]


def _miou(cfg, opts, model_file, out):
    run = subprocess.run([sys.executable, "tools/eval.py", "--cfg", cfg, "--netspresso", "--model", model_file,
                          "--device", "cpu", "--no-progress", "--json", out, *opts],
                         cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        logger.warning("eval failed for %s: %s", model_file, run.stderr.strip().splitlines()[-1:])
        return None
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)["mean_iou"]


def _time(models, backends, size, threads, runs, warmup):
    torch.set_num_threads(threads)
    x = torch.randn(1, 3, *size)
    runners = [(label, backend, prepare_inference(model, backend, device="cpu", example_input=size, threads=threads))
               for label, model in models for backend in backends]
    times = {(label, backend): [] for label, backend, _ in runners}
    with torch.inference_mode():
        for step in range(warmup + runs):
            for label, backend, runner in runners:
                start = time.perf_counter()
                runner(x)
                if step >= warmup:
                    times[(label, backend)].append(time.perf_counter() - start)
    return {key: statistics.median(value) for key, value in times.items()}


def main(args):
    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args):
    setup_logging()
    mac_sizes = [tuple(s) for s in (args.mac_sizes or [(512, 1024), (1024, 2048)])]
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_compress_")
    os.makedirs(work, exist_ok=True)
    # one thread for the factorisations: on a shared 2-core box two BLAS threads are many times slower
    torch.set_num_threads(1)
    body = _body(args.model)
    models, rows = [("original", body)], {}
    rows["original"] = dict(summary(body, mac_sizes), seconds=0.0, layers=0)
    files = {"original": args.model}
    for label, method, ratio in VARIANTS:
        start = time.perf_counter()
        module, report = decompose.compress_model(body, method, "vbmf", ratio=ratio, report_sizes=mac_sizes)
        seconds = time.perf_counter() - start
        path = os.path.join(work, label.replace(" ", "_") + ".pt")
        atomic_save(module, path)
        atomic_write_text(json.dumps(report, indent=2) + "\n", path[:-3] + ".json")
        files[label] = path
        rows[label] = dict(report["after"], seconds=seconds, layers=report["decomposed_layers"])
        models.append((label, module.eval()))
    latency = {t: _time(models, args.backends, tuple(args.size), t, args.runs, args.warmup) for t in args.threads}
    miou = {label: _miou(args.cfg, args.eval_opts, path, os.path.join(work, label.replace(" ", "_") + ".eval.json"))
            for label, path in files.items() if path} if args.cfg else {}

    keys = [f"{h}x{w}" for h, w in mac_sizes]
    head = ["variant", "layers", "params (M)"] + [f"GMACs {k}" for k in keys]
    for t in args.threads:
        head += [f"{b} {t}T ms (x orig)" for b in args.backends]
    if miou:
        head.append("mIoU (no fine-tune)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows["original"]
    for label, _ in models:
        row = rows[label]
        cells = [label, str(row["layers"]), f"{row['params'] / 1e6:.3f} ({row['params'] / base['params']:.2f})"]
        cells += [f"{row['macs'][k] / 1e9:.2f} ({row['macs'][k] / base['macs'][k]:.2f})" for k in keys]
        for t in args.threads:
            for b in args.backends:
                ms = latency[t][(label, b)] * 1e3
                cells.append(f"{ms:.1f} ({latency[t][(label, b)] / latency[t][('original', b)]:.2f})")
        if miou:
            cells.append("-" if miou.get(label) is None else f"{100 * miou[label]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    seconds = ", ".join(f"{k} {rows[k]['seconds']:.1f}" for k, _, _ in VARIANTS)
    table = "\n".join(lines) + (f"\n\ninput 1x3x{args.size[0]}x{args.size[1]}, median of {args.runs} alternating "
                                f"runs; decomposition seconds: {seconds}")
    print(table)
    if args.output:
        atomic_write_text(table + "\n", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
