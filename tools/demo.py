"""The whole toolkit in one command, on built-in synthetic street scenes, on a CPU.

    python tools/demo.py                 # ~10 min on 2 CPU cores -> report/index.html
    python tools/demo.py --quick         # tiny smoke run (about a minute), what the tests run
    python tools/demo.py --device cuda --epochs 60 --num-train 400     # a longer run on a GPU
    python tools/demo.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml --device cuda \\
        --checkpoint pretrained_models/cityscapes/PIDNet_S_Cityscapes_val.pt    # real data, no training

Every step runs the real command-line tool as a subprocess (same Python interpreter), with
its output streamed here and saved to ``<workdir>/logs/NN_<step>.log``:

 1. data      tools/make_synthetic.py   synthetic scenes in the Cityscapes layout
 2. train     tools/train.py            PIDNet-S from scratch (no ImageNet weights offline)
 3. eval      tools/eval.py --json      mIoU + per-class IoU, colour predictions
 4. export    tools/export_netspresso.py  torch.fx body + auxiliary heads
 5. compress  tools/compress.py         structured pruning, PR_L2 + SLAMP (``--ratio``)
 6. finetune  tools/train.py --netspresso  fine-tune the pruned model with its heads
 7. eval      tools/eval.py --netspresso   the compressed model
 8. quantize  tools/quantize.py         int8 (onnxruntime QDQ) of both models, mIoU of each
 9. speed     models/speed/pidnet_speed.py  latency of every model made (short runs)
10. custom    tools/custom.py           segment ``samples/`` with both models

then writes ``report/index.html`` and ``report/report.md`` (curves, per-class IoU before and
after compression, params/MACs/latency, accuracy vs latency of fp32 eager / fused / onnxruntime,
pruned, int8 and pruned + int8 with the Pareto front, example grids). A failing step stops the demo with one
line naming the step and its log. With a non-synthetic ``--cfg`` the data step is skipped and
the config's ``DATASET.ROOT`` is used; ``--checkpoint`` skips training.
"""
import argparse
import json
import logging
import os
import re
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import build  # noqa: E402
from configs.default import load_config  # noqa: E402
from utils import demo_report  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.errors import PIDNetError, UsageError  # noqa: E402
from utils.layout import (COMPRESSED_BODY, EXPORT_BODY, EXPORT_HEAD, LEGACY_COMPRESSED_BODIES,  # noqa: E402
                          RunLayout, compression_report, experiment_name)
from utils.steps import ReplayRunner, Runner, relative  # noqa: E402

logger = logging.getLogger("tools.demo")

DEFAULT_CFG = "configs/synthetic/pidnet_small_synthetic.yaml"
# --quick: a smoke run of every step on tiny inputs (the test suite's demo run).
QUICK = dict(num_train=8, num_val=4, epochs=1, finetune_epochs=1, size=(128, 64), crop=(128, 64),
             batch=4, ohem_keep=2000, speed_seconds=0.2, calib_images=4, snr_images=2)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Run the PIDNet toolkit end to end on synthetic data and "
                                                 "write an HTML report", allow_abbrev=False)
    parser.add_argument("--cfg", default=DEFAULT_CFG, help=f"experiment YAML (default {DEFAULT_CFG})")
    parser.add_argument("--workdir", default="output/demo", help="data, checkpoints, logs (default output/demo)")
    parser.add_argument("--report-dir", default="report", help="where index.html and report.md go (default report)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 epoch: a smoke test of every step")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's END_EPOCH)")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="fine-tuning epochs after compression (default: a quarter of --epochs, >= 1)")
    parser.add_argument("--num-train", type=int, default=64, help="synthetic training scenes")
    parser.add_argument("--num-val", type=int, default=16, help="synthetic validation scenes")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of prunable filters removed (SLAMP)")
    parser.add_argument("--checkpoint", default=None, help="use these weights instead of training (skips step 2)")
    parser.add_argument("--samples", default="samples", help="images for tools/custom.py (default samples/)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report from a finished demo in --workdir, running nothing")
    parser.add_argument("--speed-seconds", type=float, default=2.0, help="length of each timed speed run")
    parser.add_argument("opts", nargs="*", default=[],
                        help="config overrides for training/evaluation, e.g. TRAIN.BATCH_SIZE_PER_GPU 16")
    return parser


# --------------------------------------------------------------------------- steps


def plan(args):
    """Everything the steps need, from the config and the flags (no side effects)."""
    cfg = load_config(args.cfg, args.opts)
    synthetic = "synthetic" in os.path.normpath(args.cfg).split(os.sep) or "synthetic" in cfg.DATASET.ROOT
    workdir = os.path.abspath(args.workdir)
    name = experiment_name(args.cfg)
    epochs = args.epochs if args.epochs is not None else cfg.TRAIN.END_EPOCH
    overrides = [f"OUTPUT_DIR {workdir}/output", f"LOG_DIR {workdir}/log"]
    test_w, test_h = cfg.TEST.IMAGE_SIZE
    num_train, num_val = args.num_train, args.num_val
    speed_seconds = args.speed_seconds
    if args.quick:
        q = QUICK
        epochs = args.epochs if args.epochs is not None else q["epochs"]
        num_train, num_val = q["num_train"], q["num_val"]
        test_w, test_h = q["size"]
        speed_seconds = q["speed_seconds"]
        overrides += [f"TRAIN.IMAGE_SIZE [{q['crop'][0]},{q['crop'][1]}]", f"TRAIN.BASE_SIZE {q['size'][0]}",
                      f"TEST.IMAGE_SIZE [{test_w},{test_h}]", f"TEST.BASE_SIZE {test_w}",
                      f"TRAIN.BATCH_SIZE_PER_GPU {q['batch']}", f"TEST.BATCH_SIZE_PER_GPU {q['batch']}",
                      f"LOSS.OHEMKEEP {q['ohem_keep']}", "WORKERS 0"]
    finetune_epochs = args.finetune_epochs
    if finetune_epochs is None:
        finetune_epochs = QUICK["finetune_epochs"] if args.quick else max(1, epochs // 4)
    if epochs < 1 or finetune_epochs < 1:
        raise UsageError(f"--epochs and --finetune-epochs must be >= 1 (got {epochs}, {finetune_epochs})")
    if not 0.0 < args.ratio < 1.0:
        raise UsageError(f"--ratio must be in (0, 1), got {args.ratio}")
    if num_train < 1 or num_val < 1:
        raise UsageError(f"--num-train and --num-val must be >= 1 (got {num_train}, {num_val})")
    data_root = os.path.join(workdir, "data") + os.sep if synthetic else cfg.DATASET.ROOT
    overrides.insert(0, f"DATASET.ROOT {data_root}")
    opts = [token for item in overrides for token in item.split(" ", 1)] + list(args.opts)
    cfg = load_config(args.cfg, opts)
    # Where the training run and the fine-tuning run (its own OUTPUT_DIR and LOG_DIR) write.
    layouts = (build.run_layout(cfg, args.cfg),
               RunLayout(os.path.join(workdir, "finetune"), cfg.DATASET.DATASET, name,
                         os.path.join(workdir, "finetune_log")))
    return dict(cfg=cfg, opts=opts, synthetic=synthetic, workdir=workdir, name=name, layouts=layouts,
                epochs=epochs, finetune_epochs=finetune_epochs, num_train=num_train, num_val=num_val,
                size=(test_w, test_h), data_root=data_root, speed_seconds=speed_seconds)


def run_steps(args, p, runner):
    cfg, opts, workdir, device = p["cfg"], p["opts"], p["workdir"], args.device
    dataset = cfg.DATASET.DATASET
    trained, finetuned = p["layouts"]
    ft_opts = opts + ["OUTPUT_DIR", finetuned.output_dir, "LOG_DIR", finetuned.log_root,
                      "TRAIN.END_EPOCH", str(p["finetune_epochs"]), "TRAIN.RESUME", "False"]
    base = ["--cfg", args.cfg, "--device", device]
    out = {"train_dir": trained.run_dir, "finetune_dir": finetuned.run_dir}

    if p["synthetic"]:
        width, height = p["size"]
        runner.run("data", "Generate synthetic street scenes (Cityscapes layout)",
                   ["tools/make_synthetic.py", "--root", p["data_root"], "--num-train", str(p["num_train"]),
                    "--num-val", str(p["num_val"]), "--num-test", "0", "--size", str(width), str(height),
                    "--layouts", dataset, "--seed", "0", "--overwrite", "--no-progress"])

    if args.checkpoint:
        checkpoint = os.path.abspath(args.checkpoint)
        runner.record("Train PIDNet (skipped: --checkpoint given)", 0.0, "skipped")
    else:
        checkpoint = trained.best
        runner.run("train", f"Train {cfg.MODEL.NAME} from scratch for {p['epochs']} epoch(s)",
                   ["tools/train.py", "--overwrite"] + base + opts + ["TRAIN.END_EPOCH", str(p["epochs"]),
                                                                      "TRAIN.RESUME", "False"])
    out["checkpoint"] = checkpoint

    metrics_dir = os.path.join(workdir, "metrics")
    pred_dir = os.path.join(workdir, "predictions")
    runner.run("eval", "Evaluate the trained model (mIoU, per-class IoU)",
               ["tools/eval.py"] + base + ["--json", os.path.join(metrics_dir, "original.json"),
                                           "--save-pred", os.path.join(pred_dir, "original"), "--save-color"]
               + opts + ["TEST.MODEL_FILE", checkpoint])

    export_dir = os.path.join(workdir, "netspresso")
    runner.run("export", "Export to NetsPresso torch.fx files (body + auxiliary heads)",
               ["tools/export_netspresso.py", "--cfg", args.cfg, "--output-dir", export_dir, "--device", "cpu"]
               + opts + ["TEST.MODEL_FILE", checkpoint])
    body, head = os.path.join(export_dir, EXPORT_BODY), os.path.join(export_dir, EXPORT_HEAD)

    width, height = p["size"]
    compressed_dir = os.path.join(workdir, "compressed")
    compressed = os.path.join(compressed_dir, COMPRESSED_BODY)
    runner.run("compress", f"Compress: PR_L2 pruning, SLAMP recommendation, ratio {args.ratio}",
               ["tools/compress.py", "--model", body, "--method", "PR_L2", "--recommendation", "slamp",
                "--ratio", str(args.ratio), "--input-size", str(height), str(width),
                "--trace-size", str(height), str(width), "--output", compressed, "--device", "cpu"])
    # A demo folder written before the name was settled (--report-only) has its report under the old name.
    reports = [compression_report(os.path.join(compressed_dir, name))
               for name in (COMPRESSED_BODY,) + LEGACY_COMPRESSED_BODIES]
    out["compress_report"] = next((path for path in reports if os.path.isfile(path)), reports[0])

    runner.run("finetune", f"Fine-tune the compressed model for {p['finetune_epochs']} epoch(s)",
               ["tools/train.py", "--overwrite"] + base
               + ["--netspresso", "--model", compressed, "--head", head] + ft_opts)
    ft_model, ft_head = finetuned.netspresso_pair("best")
    out["compressed_model"] = ft_model
    runner.run("eval_compressed", "Evaluate the compressed, fine-tuned model",
               ["tools/eval.py"] + base + ["--netspresso", "--model", ft_model, "--head", ft_head,
                                           "--json", os.path.join(metrics_dir, "compressed.json"),
                                           "--save-pred", os.path.join(pred_dir, "compressed"), "--save-color"]
               + opts)

    quant_dir = os.path.join(workdir, "quantized")
    calib = ["--calib-images", str(QUICK["calib_images"] if args.quick else 100),
             "--snr-images", str(QUICK["snr_images"] if args.quick else 8), "--device", "cpu", "--eval"]
    for key, model_args, what in (("original", [], "the trained model"),
                                  ("compressed", ["--netspresso", "--model", ft_model], "the compressed model")):
        runner.run(f"quantize_{key}", f"Quantize {what} to int8 (onnxruntime QDQ, calibrated on the train set)",
                   ["tools/quantize.py", "--cfg", args.cfg, "--output-dir", os.path.join(quant_dir, key),
                    "--overwrite"] + model_args + calib + opts
                   + (["TEST.MODEL_FILE", checkpoint] if key == "original" else []))
    out["quant_dir"] = quant_dir

    speed = {}
    timing = ["--r", str(height), str(width), "--warmup", "3",
              "--calib-seconds", str(min(1.0, p["speed_seconds"])), "--seconds", str(p["speed_seconds"])]
    original = ["--a", cfg.MODEL.NAME, "--c", str(cfg.DATASET.NUM_CLASSES), "--p", checkpoint]
    for key, model_args, what in (
            ("original", original + ["--backend", "fused"], "the original model (fused)"),
            ("compressed", ["--model", ft_model, "--backend", "fused"], "the compressed model (fused)"),
            ("original_eager", original + ["--backend", "eager"], "the original model (eager PyTorch)"),
            ("original_onnxruntime", original + ["--backend", "onnxruntime"], "the original model (onnxruntime)"),
            ("original_int8", ["--onnx", os.path.join(quant_dir, "original", "model_int8.onnx")],
             "the int8 model (onnxruntime)"),
            ("compressed_int8", ["--onnx", os.path.join(quant_dir, "compressed", "model_int8.onnx")],
             "the compressed int8 model (onnxruntime)")):
        # int8 files run on the CPU (onnxruntime's CPU provider), also in a CUDA demo.
        where = ["--device", "cpu" if "--onnx" in model_args else device]
        text = runner.run(f"speed_{key}", f"Speed of {what} (batch 1, {height}x{width})",
                          ["models/speed/pidnet_speed.py"] + model_args + timing + where)
        speed[key] = parse_speed(text)
    out["speed"] = speed

    custom_dir = os.path.join(workdir, "custom")
    out["custom_dir"] = custom_dir
    if os.path.isdir(os.path.join(ROOT, args.samples)):
        # The run's config gives custom.py the class names and colours eval --save-color used.
        runner.run("custom", f"Segment {relative(args.samples, ROOT)}/ with tools/custom.py (trained model)",
                   ["tools/custom.py", "--a", cfg.MODEL.NAME, "--p", checkpoint, "--r", args.samples,
                    "--o", os.path.join(custom_dir, "original"), "--device", device, "--overlay",
                    "--cfg", args.cfg] + opts)
        runner.run("custom_compressed", f"Segment {relative(args.samples, ROOT)}/ with tools/custom.py (compressed model)",
                   ["tools/custom.py", "--netspresso", "--model", ft_model, "--r", args.samples,
                    "--o", os.path.join(custom_dir, "compressed"), "--device", device, "--overlay",
                    "--cfg", args.cfg] + opts)
    else:
        runner.record("Segment samples/ (skipped: no samples folder)", 0.0, "skipped")
    out["metrics_dir"], out["pred_dir"] = metrics_dir, pred_dir
    return out


def parse_speed(text):
    """``{'latency_ms', 'fps', 'backend'}`` from pidnet_speed.py's result line (empty if absent)."""
    match = re.search(r"backend: (\S+) \| iterations: \d+ \| latency: ([0-9.]+) ms \| FPS: ([0-9.]+)", text)
    if not match:
        return {}
    return {"backend": match.group(1), "latency_ms": float(match.group(2)), "fps": float(match.group(3))}


# --------------------------------------------------------------------------- report

def _report_colors(cfg):
    """The config's own colours for a custom dataset (as eval's dataset uses them), else None."""
    if str(cfg.DATASET.DATASET).lower() == "custom" and len(cfg.DATASET.CLASS_COLORS):
        return [list(c) for c in cfg.DATASET.CLASS_COLORS]
    return None


def write_report(args, p, out, runner, total_seconds):
    from utils.report import build_report
    from utils.visualize import class_names_for

    cfg = p["cfg"]
    original = demo_report.read_json(os.path.join(out["metrics_dir"], "original.json"))
    compressed = demo_report.read_json(os.path.join(out["metrics_dir"], "compressed.json"))
    stats = demo_report.model_stats(demo_report.read_json(out["compress_report"]), out["speed"])
    class_names = (original or {}).get("class_names") or class_names_for(cfg.DATASET.NUM_CLASSES)
    label = cfg.MODEL.NAME.replace("pidnet_small", "PIDNet-S").replace("pidnet_medium", "PIDNet-M") \
        .replace("pidnet_large", "PIDNet-L")
    runs = [{"label": label, "metrics": original, "stats": stats["original"]},
            {"label": f"Pruned {int(round(100 * args.ratio))}% + fine-tuned", "metrics": compressed,
             "stats": stats["compressed"]}]

    dataset = cfg.DATASET.DATASET
    curves = demo_report.training_curves(*(layout.log_dir for layout in p["layouts"]))
    try:
        samples = demo_report.validation_examples(build.build_test_dataset(cfg), cfg.DATASET.NUM_CLASSES,
                                                  out["pred_dir"], 2 if args.quick else 4)
    except (PIDNetError, OSError, ValueError, IndexError) as exc:
        logger.warning("no validation examples in the report: %s", exc)
        samples = []
    samples_dir = os.path.join(ROOT, args.samples)
    gallery = demo_report.custom_examples(samples_dir, out["custom_dir"], ROOT) if os.path.isdir(samples_dir) else []
    width, height = p["size"]
    backend = out["speed"].get("original", {}).get("backend", "fused")
    device_text = str(resolve_device(args.device))
    machine = f"{os.cpu_count()} CPU core(s)"
    if p.get("load") is not None:
        machine += f", load average {p['load']:.1f} at the start (other work slows every step)"
    settings = [("config", relative(args.cfg, ROOT)), ("device", device_text), ("machine", machine), ("dataset", f"{dataset} at {cfg.DATASET.ROOT}"),
                ("training", f"{p['epochs']} epoch(s), crops {cfg.TRAIN.IMAGE_SIZE[0]}x{cfg.TRAIN.IMAGE_SIZE[1]}, "
                             f"batch {cfg.TRAIN.BATCH_SIZE_PER_GPU}, lr {cfg.TRAIN.LR}, from scratch"
                             if not args.checkpoint else f"skipped, weights {args.checkpoint}"),
                ("compression", f"PR_L2 + SLAMP, ratio {args.ratio}; fine-tuned {p['finetune_epochs']} epoch(s)"),
                ("evaluation", f"{cfg.DATASET.TEST_SET}, {width}x{height}, single scale, no flip")]
    if p["synthetic"]:
        settings.insert(3, ("synthetic data", f"{p['num_train']} train / {p['num_val']} val scenes, {width}x{height}"))
    outputs = [("report", os.path.join(args.report_dir, "index.html")),
               ("trained checkpoint", out["checkpoint"]), ("compressed model", out["compressed_model"]),
               ("metrics (JSON)", out["metrics_dir"]), ("custom-image outputs", out["custom_dir"]),
               ("step logs", os.path.join(p["workdir"], "logs"))]
    subtitle = (f"{'Quick smoke run' if args.quick else 'End-to-end demo'} on "
                f"{'synthetic street scenes' if p['synthetic'] else dataset}: train, evaluate, compress, "
                f"fine-tune, measure and segment - generated {time.strftime('%Y-%m-%d %H:%M')}")
    return build_report(args.report_dir, title="PIDNet toolkit demo", subtitle=subtitle, runs=runs,
                        class_names=class_names, class_colors=_report_colors(cfg), curves=curves, samples=samples, gallery=gallery,
                        steps=[dict(step, log=relative(step.get("log", ""), ROOT)) for step in runner.steps], settings=settings, outputs=outputs, total_seconds=total_seconds,
                        tradeoff=demo_report.tradeoff_points(out["speed"], out["quant_dir"], original, compressed,
                                                             args.ratio),
                        tradeoff_note=f"Latency: batch 1 at {height}x{width} on {device_text} (int8 on the CPU, "
                                      "onnxruntime QDQ from tools/quantize.py), models/speed/pidnet_speed.py short "
                                      "runs on this machine. mIoU: the val set; the three fp32 backends run the "
                                      "same weights (logits equal to 1e-3) and share one mIoU.",
                        speed_note=f"Latency: batch 1 at {height}x{width}, {backend} backend on {device_text}, "
                                   "models/speed/pidnet_speed.py (short runs). Params/MACs: the inference "
                                   "network without auxiliary heads, from tools/compress.py.")


def main(args):
    start = time.perf_counter()
    resolve_device(args.device)  # a bad --device fails here, before any step runs
    # The steps run from the repository root: make the user's paths independent of the cwd.
    if not os.path.isfile(args.cfg) and os.path.isfile(os.path.join(ROOT, args.cfg)):
        args.cfg = os.path.join(ROOT, args.cfg)
    args.cfg = os.path.abspath(args.cfg)
    if args.checkpoint:
        args.checkpoint = os.path.abspath(args.checkpoint)
    if not os.path.isdir(args.samples):
        args.samples = os.path.join(ROOT, args.samples)
    args.samples = os.path.abspath(args.samples)
    p = plan(args)
    args.report_dir = os.path.abspath(args.report_dir)
    from utils.io import check_writable

    check_writable(p["workdir"], "--workdir", is_dir=True)  # before any step, not after an hour of them
    check_writable(args.report_dir, "--report-dir", is_dir=True)
    run_info = os.path.join(p["workdir"], "logs", "run.json")
    if args.report_only:
        p["load"] = (demo_report.read_json(run_info) or {}).get("load")
    else:
        p["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        from utils.io import atomic_write_text
        atomic_write_text(json.dumps({"load": p["load"]}) + "\n", run_info)
    print(f"PIDNet demo: config {relative(args.cfg, ROOT)}, device {args.device}, work folder {p['workdir']}"
          + (" (quick smoke run)" if args.quick else ""), flush=True)
    total = 17 if p["synthetic"] else 16
    runner = (ReplayRunner if args.report_only else Runner)(os.path.join(p["workdir"], "logs"), total, ROOT)
    out = run_steps(args, p, runner)
    print(f"\n[report] writing {args.report_dir}", flush=True)
    elapsed = time.perf_counter() - start
    if args.report_only:
        elapsed = sum(step.get("seconds") or 0.0 for step in runner.steps)
    html_path = write_report(args, p, out, runner, elapsed)
    original = demo_report.read_json(os.path.join(out["metrics_dir"], "original.json")) or {}
    compressed = demo_report.read_json(os.path.join(out["metrics_dir"], "compressed.json")) or {}
    minutes = elapsed / 60.0
    print(f"\nDemo finished in {minutes:.1f} min. mIoU: trained {100 * original.get('mean_iou', 0):.1f}%, "
          f"compressed + fine-tuned {100 * compressed.get('mean_iou', 0):.1f}%")
    print(f"Report:  {html_path}  (and {os.path.join(args.report_dir, 'report.md')})")
    print(f"Outputs: {p['workdir']}  (checkpoints, compressed model, metrics, logs, custom-image results)")
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_args()))
