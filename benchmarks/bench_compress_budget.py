"""PR_NN and compression to a MAC budget on a trained PIDNet-S body (a benchmark, not a unit test).

Compresses the exported body twice with ``tools/compress.py`` — ``PR_NN`` at ratio 0.6 (slamp,
nuclear norms over ``--images``) and ``PR_L2 --target-macs 0.4`` — then reports for the original
and both results: parameters, MACs at 512x1024 and 1024x2048, CPU latency (eager and onnxruntime,
1 and 2 threads, each model timed alternately with the uncompressed one) and, with ``--cfg``, the
mIoU right after compression (no fine-tune) from ``tools/eval.py --netspresso``.

Examples::

    python benchmarks/bench_compress_budget.py --model /work/artifacts/demo/netspresso/model_modelfx.pt \\
        --head /work/artifacts/demo/netspresso/model_headfx.pt \\
        --images /work/artifacts/demo/data/cityscapes/leftImg8bit/train/synth \\
        --cfg configs/synthetic/pidnet_small_synthetic.yaml --data-root /work/artifacts/demo/data/ \\
        --out-dir /tmp/bench_budget --output budget.md
    python benchmarks/bench_compress_budget.py --model model_modelfx.pt --images samples/ --threads 1   # no mIoU
"""
import argparse
import json
import logging
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from models.checkpoint import load_module_file  # noqa: E402
from models.compression.latency import make_runner, time_pair  # noqa: E402
from models.compression.report import summary  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402

logger = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_args_parser():
    parser = argparse.ArgumentParser(description="PR_NN and --target-macs on a PIDNet-S body")
    parser.add_argument("--model", required=True, help="exported body (model_modelfx.pt)")
    parser.add_argument("--head", default=None, help="its head (model_headfx.pt), for the mIoU")
    parser.add_argument("--images", required=True, help="images folder for PR_NN")
    parser.add_argument("--cfg", default=None, help="config for tools/eval.py (mIoU); omit to skip it")
    parser.add_argument("--data-root", default=None, help="DATASET.ROOT for tools/eval.py")
    parser.add_argument("--out-dir", default="bench_budget", help="where compressed models go")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to time")
    parser.add_argument("--runtimes", nargs="+", default=["eager", "onnxruntime"])
    parser.add_argument("--latency-size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1024, 2048], metavar="H W",
                        help="sizes (H W pairs) at which MACs are reported; the last one is --target-macs's")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per pair")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per timing block")
    parser.add_argument("--output", default=None, help="markdown table path (default: print only)")
    return parser


def _run(argv):
    logger.info("$ %s", " ".join(argv))
    result = subprocess.run([sys.executable] + argv, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return result


def _pairs(values):
    if len(values) % 2:
        raise ValueError(f"--sizes takes H W pairs, got {values}")
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def compress_all(args, sizes):
    size = ["--input-size", str(sizes[-1][0]), str(sizes[-1][1])]
    runs = {
        "PR_NN slamp 0.6": ["--method", "PR_NN", "--images", args.images, "--ratio", "0.6"] + size,
        "PR_L2 --target-macs 0.4": ["--method", "PR_L2", "--target-macs", "0.4"] + size,
    }
    paths = {}
    for name, extra in runs.items():
        out = os.path.join(args.out_dir, name.split()[0].lower() + ("_macs04" if "target" in name else "_06") + ".pt")
        _run([os.path.join("tools", "compress.py"), "--model", args.model, "--output", out] + extra)
        paths[name] = out
    return paths


def miou(args, model_path):
    if not args.cfg:
        return None
    out_json = os.path.join(args.out_dir, os.path.splitext(os.path.basename(model_path))[0] + "_eval.json")
    opts = ["DATASET.ROOT", args.data_root] if args.data_root else []
    _run([os.path.join("tools", "eval.py"), "--cfg", args.cfg, "--netspresso", "--model", model_path,
          "--head", args.head, "--device", "cpu", "--json", out_json] + opts)
    with open(out_json, encoding="utf-8") as handle:
        return json.load(handle)["mean_iou"]


def main(args):
    setup_logging()
    os.makedirs(args.out_dir, exist_ok=True)
    sizes = _pairs(args.sizes)
    paths = {"uncompressed": args.model, **compress_all(args, sizes)}
    models = {name: load_module_file(path, what="model").eval() for name, path in paths.items()}
    rows = {name: {"summary": summary(model, sizes)} for name, model in models.items()}
    for name, path in paths.items():
        rows[name]["miou"] = miou(args, path)
    device = torch.device("cpu")
    images = torch.randn(1, 3, *args.latency_size, generator=torch.Generator().manual_seed(0))
    base = models["uncompressed"]
    for runtime in args.runtimes:
        for threads in args.threads:
            base_runner = make_runner(base, runtime, device, args.latency_size, threads)
            for name, model in models.items():
                if name == "uncompressed":
                    continue
                runner = make_runner(model, runtime, device, args.latency_size, threads)
                base_s, cand_s = time_pair(base_runner, runner, images, threads, rounds=args.rounds,
                                           min_run_time=args.min_run_time)
                rows[name][(runtime, threads)] = (cand_s, base_s)
                logger.info("%s %s %d thread(s): %.1f ms vs %.1f ms", name, runtime, threads, 1e3 * cand_s,
                            1e3 * base_s)
    text = table(rows, args, sizes)
    print(text)
    if args.output:
        atomic_write_text(text + "\n", args.output)
    return 0


def table(rows, args, sizes):
    base = rows["uncompressed"]["summary"]
    keys = [(r, t) for r in args.runtimes for t in args.threads]
    h, w = args.latency_size
    head = ("| model | params | " + " | ".join(f"MACs {hh}x{ww}" for hh, ww in sizes) + " | "
            + " | ".join(f"{r} {t}T {h}x{w} (vs uncompressed)" for r, t in keys) + " | mIoU, no fine-tune |")
    lines = [head, "|" + "---|" * (3 + len(sizes) + len(keys))]
    for name, row in rows.items():
        s = row["summary"]
        cells = [name, f"{s['params'] / 1e6:.3f}M ({s['params'] / base['params']:.2f}x)"]
        for hh, ww in sizes:
            key = f"{hh}x{ww}"
            cells.append(f"{s['macs'][key] / 1e9:.2f}G ({s['macs'][key] / base['macs'][key]:.3f}x)")
        for key in keys:
            if key in row:
                cand, ref = row[key]
                cells.append(f"{1e3 * cand:.0f} ms vs {1e3 * ref:.0f} ms ({cand / ref:.2f}x)")
            else:
                cells.append("reference")
        cells.append("-" if row["miou"] is None else f"{100 * row['miou']:.2f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
