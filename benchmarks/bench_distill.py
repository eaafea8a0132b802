"""Fine-tuning a pruned PIDNet with and without distillation from the uncompressed model (accuracy).

Runs the real CLIs in subprocesses: export the trained model to NetsPresso files, prune the body
(PR_L2 + SLAMP), then fine-tune the same pruned model for the same epochs with the same seed, once
per variant (``plain``: no teacher; ``kd``: ``--teacher`` logits only; ``kd+cs`` / ``kd+norm_mse``:
logits and the body's three outputs), and evaluate each result with ``tools/eval.py``. Writes a
Markdown table (and JSON) with the mIoU of the teacher, of the pruned model before fine-tuning and
after each fine-tune, plus the wall time of each fine-tune.

Example (the demo's trained PIDNet-S and synthetic data)::

    nice python benchmarks/bench_distill.py --cfg configs/synthetic/pidnet_small_synthetic.yaml \\
        --checkpoint /work/artifacts/demo/output/cityscapes/pidnet_small_synthetic/best.pt \\
        --data-root /work/artifacts/demo/data/ --epochs 4 --ratio 0.6 --workdir /tmp/bench_distill \\
        --output distill.md

    # smoke: a tiny run on freshly generated data (no trained model: random PIDNet-S weights)
    python benchmarks/bench_distill.py --cfg configs/synthetic/pidnet_small_synthetic.yaml --epochs 1 \\
        --variants plain kd --workdir /tmp/bd TRAIN.IMAGE_SIZE [128,64] TEST.IMAGE_SIZE [128,64]
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import ConfigError, TrainingError  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402

logger = logging.getLogger("bench_distill")

VARIANTS = {"plain": [], "kd": [], "kd+cs": ["--kd-features", "cs"], "kd+norm_mse": ["--kd-features", "norm_mse"]}


def get_args_parser():
    parser = argparse.ArgumentParser(description="Pruned PIDNet fine-tune: with vs without distillation")
    parser.add_argument("--cfg", required=True, help="experiment YAML (the trained model's)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides for every run (KEY VALUE)")
    parser.add_argument("--checkpoint", default="", help="trained model (teacher, and source of the pruned "
                        "student); default: random weights (smoke runs only)")
    parser.add_argument("--data-root", default="", help="dataset root (default: generate synthetic data)")
    parser.add_argument("--workdir", required=True, help="folder for every intermediate file")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs")
    parser.add_argument("--ratio", type=float, default=0.6, help="SLAMP pruning ratio")
    parser.add_argument("--variants", nargs="+", default=["plain", "kd", "kd+cs"], choices=sorted(VARIANTS))
    parser.add_argument("--kd-weight", type=float, default=1.0)
    parser.add_argument("--kd-temperature", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[304])
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the runs (0 = default)")
    parser.add_argument("--output", default="", help="Markdown table path (also written as .json)")
    return parser


def _env(threads):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(argv, env, what):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise TrainingError(f"{what} failed (exit {proc.returncode}): {tail[0]}")
    logger.info("%s: %.1f s", what, seconds)
    return seconds


def _miou(path):
    with open(path) as handle:
        return float(json.load(handle)["mean_iou"])


def main(args):
    setup_logging()
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1 (got {args.epochs})")
    work = os.path.abspath(args.workdir)
    env = _env(args.threads)
    cfg = ["--cfg", args.cfg, "--device", "cpu"]
    opts = list(args.opts)
    if args.data_root:
        data_root = os.path.abspath(args.data_root).rstrip(os.sep) + os.sep
    else:
        data_root = os.path.join(work, "data") + os.sep
        _run(["tools/make_synthetic.py", "--root", data_root, "--num-train", "16", "--num-val", "8", "--num-test",
              "0", "--size", "128", "64", "--layouts", "cityscapes", "--seed", "0", "--overwrite", "--no-progress"],
             env, "data")
    opts = ["DATASET.ROOT", data_root, *opts]
    checkpoint = os.path.abspath(args.checkpoint) if args.checkpoint else ""
    if not checkpoint:
        import torch

        from models.checkpoint import official_state_dict
        from models.pidnet import build_pidnet

        torch.manual_seed(0)
        checkpoint = os.path.join(work, "random_teacher.pt")
        os.makedirs(work, exist_ok=True)
        torch.save(official_state_dict(build_pidnet("pidnet_s", 19)), checkpoint)

    export = os.path.join(work, "export")
    _run(["tools/export_netspresso.py", "--cfg", args.cfg, "--output-dir", export, *opts,
          "TEST.MODEL_FILE", checkpoint], env, "export")
    body, head = os.path.join(export, "model_modelfx.pt"), os.path.join(export, "model_headfx.pt")
    pruned = os.path.join(work, "pruned", "pruned_model.pt")
    _run(["tools/compress.py", "--model", body, "--method", "PR_L2", "--recommendation", "slamp", "--ratio",
          str(args.ratio), "--input-size", "128", "256", "--trace-size", "128", "256", "--output", pruned], env,
         "compress")
    metrics = os.path.join(work, "metrics")
    rows = []
    _run(["tools/eval.py", *cfg, "--no-progress", "--json", os.path.join(metrics, "teacher.json"), *opts,
          "TEST.MODEL_FILE", checkpoint], env, "eval teacher")
    rows.append({"model": "teacher (unpruned, trained)", "mIoU": _miou(os.path.join(metrics, "teacher.json"))})
    _run(["tools/eval.py", *cfg, "--no-progress", "--netspresso", "--model", pruned, "--head", head, "--json",
          os.path.join(metrics, "pruned.json"), *opts], env, "eval pruned")
    rows.append({"model": f"pruned {args.ratio:g}, not fine-tuned", "mIoU": _miou(os.path.join(metrics,
                                                                                               "pruned.json"))})
    # Variants alternate inside each seed so that machine load drifts hit them alike.
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}_s{seed}"
            out = os.path.join(work, "runs", name)
            teacher = [] if variant == "plain" else ["--teacher", checkpoint, "--kd-weight", str(args.kd_weight),
                                                     "--kd-temperature", str(args.kd_temperature),
                                                     *VARIANTS[variant]]
            seconds = _run(["tools/train.py", *cfg, "--no-progress", "--seed", str(seed), "--netspresso", "--model",
                            pruned, "--head", head, *teacher, *opts, "OUTPUT_DIR", out, "LOG_DIR", out + "_tb",
                            "TRAIN.END_EPOCH", str(args.epochs), "TRAIN.RESUME", "False"], env, f"fine-tune {name}")
            exp = os.path.join(out, "cityscapes", os.path.splitext(os.path.basename(args.cfg))[0])
            result = os.path.join(metrics, f"{name}.json")
            _run(["tools/eval.py", *cfg, "--no-progress", "--netspresso", "--model",
                  os.path.join(exp, "final_model_model.pt"), "--head", os.path.join(exp, "final_model_head.pt"),
                  "--json", result, *opts], env, f"eval {name}")
            rows.append({"model": f"pruned + {args.epochs} epochs, {variant}", "seed": seed,
                         "mIoU": _miou(result), "finetune_s": round(seconds, 1)})
            logger.info("%s: mIoU %.2f%%", name, 100 * rows[-1]["mIoU"])

    lines = ["| model | seed | mIoU (%) | fine-tune wall time (s) |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row.get('seed', '')} | {100 * row['mIoU']:.2f} | "
                     f"{row.get('finetune_s', '')} |")
    table = "\n".join(lines)
    print(table)
    if args.output:
        atomic_write_text(table + "\n", args.output)
        atomic_write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n",
                          os.path.splitext(args.output)[0] + ".json")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_intermixed_args()))
