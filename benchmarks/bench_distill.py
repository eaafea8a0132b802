"""Fine-tuning a pruned PIDNet with and without distillation from the uncompressed model (accuracy).

Runs the real CLIs in subprocesses: export the trained model to NetsPresso files, prune the body
(PR_L2 + SLAMP), then fine-tune the same pruned model for the same epochs with the same seed, once
per variant (``plain``: no teacher; ``kd``: ``--teacher`` logits only; ``kd+cs`` / ``kd+norm_mse``:
logits and the body's three outputs), and evaluate each result with ``tools/eval.py``. Writes a
Markdown table (and JSON) with the mIoU of the teacher, of the pruned model before fine-tuning and
after each fine-tune, plus the wall time of each fine-tune.

With ``--compressed FILE [FILE ...]`` (already-compressed NetsPresso bodies, e.g. from
``tools/compress.py``, plus ``--head`` and the ``--checkpoint`` they came from) the export and
pruning steps are skipped and each file goes through the same evaluation and fine-tunes, labelled
by its file stem; the table then also gives each body's parameters and MACs at 128x256.

Example (the demo's trained PIDNet-S and synthetic data)::

    nice python benchmarks/bench_distill.py --cfg configs/synthetic/pidnet_small_synthetic.yaml \\
        --checkpoint DEMO/output/cityscapes/pidnet_small_synthetic/best.pt \\
        --data-root DEMO/data/ --epochs 4 --ratio 0.6 --workdir /tmp/bench_distill \\
        --output distill.md

    # already-compressed bodies instead of pruning (the head and teacher of the demo export)
    nice python benchmarks/bench_distill.py --cfg configs/synthetic/pidnet_small_synthetic.yaml \\
        --checkpoint DEMO/output/cityscapes/pidnet_small_synthetic/best.pt --data-root DEMO/data/ \\
        --compressed FD_TK_vbmf_0.5.pt pr_nn_06.pt --head DEMO/netspresso/model_headfx.pt \\
        --epochs 3 --variants plain kd+cs --workdir /tmp/bench_distill_c --threads 1 WORKERS 0

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
from utils.errors import TrainingError, UsageError  # noqa: E402
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
    parser.add_argument("--compressed", nargs="+", default=[], metavar="FILE",
                        help="already-compressed NetsPresso bodies to fine-tune instead of pruning "
                        "(labelled by file stem; needs --head and --checkpoint)")
    parser.add_argument("--head", default="", help="NetsPresso head file for --compressed (the export's "
                        "model_headfx.pt)")
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


def _check_compressed(args):
    """Fail before any run when the ``--compressed`` inputs cannot work."""
    if not args.compressed:
        if args.head:
            raise UsageError("--head is only used with --compressed; drop it or add --compressed FILE ...")
        return
    if not args.checkpoint:
        raise UsageError("--compressed needs --checkpoint (the trained model the bodies were compressed from, "
                          "used as teacher and for the teacher row)")
    if not args.head:
        raise UsageError("--compressed needs --head (the NetsPresso head exported with the bodies, "
                          "model_headfx.pt)")
    for path in [*args.compressed, args.head, args.checkpoint]:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file; pass an existing file (tools/compress.py writes bodies, "
                              "tools/export_netspresso.py the head)")
    stems = [_label(path) for path in args.compressed]
    if len(set(stems)) != len(stems):
        raise UsageError(f"--compressed file stems must be distinct (they label the runs): {stems}")


def _label(path):
    return os.path.splitext(os.path.basename(path))[0]


def _size(path):
    """``(parameters, MACs at 128x256)`` of a NetsPresso body file."""
    from models.checkpoint import load_module_file
    from models.compression.report import count_macs, count_params

    body = load_module_file(path, what="compressed")
    return count_params(body), count_macs(body, (128, 256))


def main(args):
    setup_logging()
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1 (got {args.epochs})")
    _check_compressed(args)
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

    metrics = os.path.join(work, "metrics")
    rows = []
    _run(["tools/eval.py", *cfg, "--no-progress", "--json", os.path.join(metrics, "teacher.json"), *opts,
          "TEST.MODEL_FILE", checkpoint], env, "eval teacher")
    rows.append({"model": "teacher (unpruned, trained)", "mIoU": _miou(os.path.join(metrics, "teacher.json"))})
    if args.compressed:
        head = os.path.abspath(args.head)
        students = [(_label(path), os.path.abspath(path)) for path in args.compressed]
    else:
        export = os.path.join(work, "export")
        _run(["tools/export_netspresso.py", "--cfg", args.cfg, "--output-dir", export, *opts,
              "TEST.MODEL_FILE", checkpoint], env, "export")
        body, head = os.path.join(export, "model_modelfx.pt"), os.path.join(export, "model_headfx.pt")
        pruned = os.path.join(work, "pruned", "pruned_model.pt")
        _run(["tools/compress.py", "--model", body, "--method", "PR_L2", "--recommendation", "slamp", "--ratio",
              str(args.ratio), "--input-size", "128", "256", "--trace-size", "128", "256", "--output", pruned],
             env, "compress")
        students = [(f"pruned {args.ratio:g}", pruned)]
    for label, student in students:
        tag = "" if not args.compressed else label + "_"
        size = {}
        if args.compressed:
            params, macs = _size(student)
            size = {"params_M": round(params / 1e6, 3), "GMACs_128x256": round(macs / 1e9, 3)}
        _run(["tools/eval.py", *cfg, "--no-progress", "--netspresso", "--model", student, "--head", head, "--json",
              os.path.join(metrics, f"{tag}pruned.json"), *opts], env, f"eval {label}")
        rows.append({"model": f"{label}, not fine-tuned", **size,
                     "mIoU": _miou(os.path.join(metrics, f"{tag}pruned.json"))})
        _write(rows, args)
        # Variants alternate inside each seed so that machine load drifts hit them alike.
        for seed in args.seeds:
            for variant in args.variants:
                name = f"{tag}{variant}_s{seed}"
                out = os.path.join(work, "runs", name)
                teacher = [] if variant == "plain" else ["--teacher", checkpoint, "--kd-weight",
                                                         str(args.kd_weight), "--kd-temperature",
                                                         str(args.kd_temperature), *VARIANTS[variant]]
                seconds = _run(["tools/train.py", *cfg, "--no-progress", "--seed", str(seed), "--netspresso",
                                "--model", student, "--head", head, *teacher, *opts, "OUTPUT_DIR", out, "LOG_DIR",
                                out + "_tb", "TRAIN.END_EPOCH", str(args.epochs), "TRAIN.RESUME", "False"], env,
                               f"fine-tune {name}")
                exp = os.path.join(out, "cityscapes", os.path.splitext(os.path.basename(args.cfg))[0])
                result = os.path.join(metrics, f"{name}.json")
                _run(["tools/eval.py", *cfg, "--no-progress", "--netspresso", "--model",
                      os.path.join(exp, "final_model_model.pt"), "--head", os.path.join(exp, "final_model_head.pt"),
                      "--json", result, *opts], env, f"eval {name}")
                rows.append({"model": f"{label} + {args.epochs} epochs, {variant}", "seed": seed,
                             "mIoU": _miou(result), "finetune_s": round(seconds, 1)})
                logger.info("%s: mIoU %.2f%%", name, 100 * rows[-1]["mIoU"])
                _write(rows, args)
    print(_table(rows))
    return 0


def _table(rows):
    sized = any("params_M" in row for row in rows)
    lines = ["| model |" + (" params (M) | GMACs 128x256 |" if sized else "") + " seed | mIoU (%) | "
             "fine-tune wall time (s) |", "|---|" + ("---:|---:|" if sized else "") + "---:|---:|---:|"]
    for row in rows:
        size = f" {row.get('params_M', '')} | {row.get('GMACs_128x256', '')} |" if sized else ""
        lines.append(f"| {row['model']} |{size} {row.get('seed', '')} | {100 * row['mIoU']:.2f} | "
                     f"{row.get('finetune_s', '')} |")
    return "\n".join(lines)


def _write(rows, args):
    """Rewrites the table after every row, so an interrupted run keeps what it measured."""
    if args.output:
        atomic_write_text(_table(rows) + "\n", args.output)
        atomic_write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n",
                          os.path.splitext(args.output)[0] + ".json")


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_intermixed_args()))
