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
import resource
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs.default import experiment_name, load_config  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.errors import ConfigError, PIDNetError  # noqa: E402

logger = logging.getLogger("tools.demo")

DEFAULT_CFG = "configs/synthetic/pidnet_small_synthetic.yaml"
# --quick: a smoke run of every step on tiny inputs (the test suite's demo run).
QUICK = dict(num_train=8, num_val=4, epochs=1, finetune_epochs=1, size=(128, 64), crop=(128, 64),
             batch=4, ohem_keep=2000, speed_seconds=0.2, calib_images=4, snr_images=2)


class StepError(PIDNetError):
    """A demo step (one of the tools) failed; the message names the step and its log."""


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

class Runner:
    """Runs numbered steps as subprocesses, streams and logs their output, records timings."""

    def __init__(self, log_dir, total):
        self.log_dir = log_dir
        self.total = total
        self.steps = []
        os.makedirs(log_dir, exist_ok=True)

    def run(self, name, what, argv):
        """Run ``argv`` (a tool and its arguments) with this interpreter; return its stdout text."""
        index = len(self.steps) + 1
        log_path = os.path.join(self.log_dir, f"{index:02d}_{name}.log")
        command = [sys.executable] + argv
        shown = " ".join(_quote(_rel(a)) for a in argv)
        print(f"\n[{index}/{self.total}] {what}\n      $ python {shown}", flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        cpu_start = _children_cpu()
        captured = []
        with open(log_path, "wb") as log:
            log.write(f"$ {' '.join(_quote(a) for a in command)}\n".encode())
            try:
                proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=env)
            except OSError as exc:
                raise StepError(f"step {index} '{name}' could not start ({exc}); see {log_path}") from None
            try:
                # Raw chunks, not lines, so that progress bars (carriage returns) stream live.
                while True:
                    chunk = proc.stdout.read1(4096)
                    if not chunk:
                        break
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                    log.write(chunk)
                    captured.append(chunk)
                code = proc.wait()
            except BaseException:
                # Ctrl-C / SIGTERM: stop the running tool too (the trainer saves a checkpoint).
                proc.terminate()
                proc.wait()
                raise
        seconds = time.perf_counter() - start
        status = "ok" if code == 0 else f"failed (exit {code})"
        self.steps.append({"name": f"{index}. {what}", "status": status, "seconds": seconds,
                           "cpu_seconds": _children_cpu() - cpu_start, "log": _rel(log_path)})
        self.save()
        if code != 0:
            raise StepError(f"demo stopped: step {index} '{name}' failed with exit code {code}; "
                            f"see its log {log_path}")
        print(f"      done in {seconds:.1f} s (CPU {self.steps[-1]['cpu_seconds']:.0f} s)", flush=True)
        return b"".join(captured).decode("utf-8", "replace")

    def record(self, name, seconds, status="ok"):
        self.steps.append({"name": f"{len(self.steps) + 1}. {name}", "status": status, "seconds": seconds,
                           "log": ""})
        self.save()

    def save(self):
        # Lets --report-only rebuild the report (timings included) without rerunning anything.
        from utils.io import atomic_write_text

        atomic_write_text(json.dumps(self.steps, indent=2) + "\n", os.path.join(self.log_dir, "steps.json"))


class ReplayRunner(Runner):
    """``--report-only``: walks the same steps, reading the logs of the previous run instead."""

    def __init__(self, log_dir, total):
        # Not Runner.__init__: replaying creates nothing (no empty logs/ when there is no demo to replay).
        self.log_dir, self.total, self.steps = log_dir, total, []
        path = os.path.join(log_dir, "steps.json")
        try:
            with open(path, encoding="utf-8") as handle:
                self.steps = json.load(handle)
        except (OSError, ValueError):
            raise StepError(f"--report-only needs a finished demo in this --workdir: {path} is missing "
                            "or unreadable; run the demo first") from None
        self._index = 0

    def run(self, name, what, argv):
        self._index += 1
        log_path = os.path.join(self.log_dir, f"{self._index:02d}_{name}.log")
        try:
            with open(log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            raise StepError(f"--report-only: {log_path} is missing; run the demo again") from None

    def record(self, name, seconds, status="ok"):
        self._index += 1

    def save(self):
        pass


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rel(text):
    """Paths under the repository root, shown relative to it (the steps run from there)."""
    text = str(text)
    return text[len(ROOT) + 1:] if text.startswith(ROOT + os.sep) else text


def _quote(text):
    text = str(text)
    return text if re.fullmatch(r"[\w./:=,\[\]+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


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
        raise ConfigError(f"--epochs and --finetune-epochs must be >= 1 (got {epochs}, {finetune_epochs})")
    if not 0.0 < args.ratio < 1.0:
        raise ConfigError(f"--ratio must be in (0, 1), got {args.ratio}")
    if num_train < 1 or num_val < 1:
        raise ConfigError(f"--num-train and --num-val must be >= 1 (got {num_train}, {num_val})")
    data_root = os.path.join(workdir, "data") + os.sep if synthetic else cfg.DATASET.ROOT
    overrides.insert(0, f"DATASET.ROOT {data_root}")
    opts = [token for item in overrides for token in item.split(" ", 1)] + list(args.opts)
    return dict(cfg=load_config(args.cfg, opts), opts=opts, synthetic=synthetic, workdir=workdir, name=name,
                epochs=epochs, finetune_epochs=finetune_epochs, num_train=num_train, num_val=num_val,
                size=(test_w, test_h), data_root=data_root, speed_seconds=speed_seconds)


def run_steps(args, p, runner):
    cfg, opts, workdir, device = p["cfg"], p["opts"], p["workdir"], args.device
    dataset = cfg.DATASET.DATASET
    train_dir = os.path.join(workdir, "output", dataset, p["name"])
    finetune_out = os.path.join(workdir, "finetune")
    finetune_dir = os.path.join(finetune_out, dataset, p["name"])
    ft_opts = opts + ["OUTPUT_DIR", finetune_out, "LOG_DIR", os.path.join(workdir, "finetune_log"),
                      "TRAIN.END_EPOCH", str(p["finetune_epochs"]), "TRAIN.RESUME", "False"]
    base = ["--cfg", args.cfg, "--device", device]
    out = {"train_dir": train_dir, "finetune_dir": finetune_dir}

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
        checkpoint = os.path.join(train_dir, "best.pt")
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
    body, head = os.path.join(export_dir, "model_modelfx.pt"), os.path.join(export_dir, "model_headfx.pt")

    width, height = p["size"]
    compressed = os.path.join(workdir, "compressed", "compressed_model.pt")
    runner.run("compress", f"Compress: PR_L2 pruning, SLAMP recommendation, ratio {args.ratio}",
               ["tools/compress.py", "--model", body, "--method", "PR_L2", "--recommendation", "slamp",
                "--ratio", str(args.ratio), "--input-size", str(height), str(width),
                "--trace-size", str(height), str(width), "--output", compressed, "--device", "cpu"])
    out["compress_report"] = os.path.splitext(compressed)[0] + ".json"

    runner.run("finetune", f"Fine-tune the compressed model for {p['finetune_epochs']} epoch(s)",
               ["tools/train.py", "--overwrite"] + base
               + ["--netspresso", "--model", compressed, "--head", head] + ft_opts)
    ft_model = os.path.join(finetune_dir, "best_model_model.pt")
    ft_head = os.path.join(finetune_dir, "best_model_head.pt")
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
        runner.run("custom", f"Segment {_rel(args.samples)}/ with tools/custom.py (trained model)",
                   ["tools/custom.py", "--a", cfg.MODEL.NAME, "--p", checkpoint, "--r", args.samples,
                    "--o", os.path.join(custom_dir, "original"), "--device", device, "--overlay",
                    "--cfg", args.cfg] + opts)
        runner.run("custom_compressed", f"Segment {_rel(args.samples)}/ with tools/custom.py (compressed model)",
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

def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s (%s); the report will miss it", path, exc)
        return None


def _read_rgb(path):
    import cv2

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if image is None else image[:, :, ::-1].copy()


def validation_examples(cfg, pred_dir, count):
    """Grid rows (input / predictions / ground truth) for the first ``count`` validation images."""
    import datasets
    from utils.visualize import colorize, denormalize, palette_for

    dataset = datasets.build_dataset(cfg.DATASET.DATASET, cfg.DATASET.ROOT, cfg.DATASET.TEST_SET,
                                     num_classes=cfg.DATASET.NUM_CLASSES, is_train=False,
                                     crop_size=tuple(cfg.TEST.IMAGE_SIZE[::-1]), base_size=cfg.TEST.BASE_SIZE,
                                     multi_scale=False, flip=False, ignore_label=cfg.TRAIN.IGNORE_LABEL,
                                     class_names=list(cfg.DATASET.CLASS_NAMES) or None,
                                     class_colors=[list(c) for c in cfg.DATASET.CLASS_COLORS] or None)
    palette = palette_for(cfg.DATASET.NUM_CLASSES, getattr(dataset, "palette", None))
    rows = []
    for index in range(min(count, len(dataset))):
        image, label, _, _, name = dataset[index]
        row = [("Input", denormalize(image.numpy()))]
        for key, column in (("original", "Trained model"), ("compressed", "Compressed + fine-tuned")):
            pred = _read_rgb(os.path.join(pred_dir, key, "color", os.path.splitext(name)[0] + ".png"))
            if pred is not None:
                row.append((column, pred))
        row.append(("Ground truth", colorize(label.numpy(), palette)))
        rows.append({"name": name, "images": row})
    return rows


def custom_examples(samples_dir, custom_dir, count=3):
    rows = []
    names = sorted(n for n in os.listdir(samples_dir) if n.lower().endswith((".png", ".jpg", ".jpeg")))
    for name in names[:count]:
        stem = os.path.splitext(name)[0]
        image = _read_rgb(os.path.join(samples_dir, name))
        row = [("Input", image)] if image is not None else []
        for key, column in (("original", "Trained model (overlay)"), ("compressed", "Compressed (overlay)")):
            pred = _read_rgb(os.path.join(custom_dir, key, stem + "_overlay.png"))
            if pred is not None:
                row.append((column, pred))
        if len(row) > 1:
            rows.append({"name": os.path.join(os.path.relpath(samples_dir, ROOT), name), "images": row})
    return rows


def model_stats(compress_report, speed):
    """Params/MACs (from tools/compress.py's JSON) and latency (from the speed runs) per model."""
    stats = {"original": dict(speed.get("original", {})), "compressed": dict(speed.get("compressed", {}))}
    if compress_report:
        for key, side in (("original", "before"), ("compressed", "after")):
            summary = compress_report.get(side) or {}
            stats[key]["params"] = summary.get("params")
            macs = summary.get("macs")
            stats[key]["macs"] = next(iter(macs.values())) if isinstance(macs, dict) and macs else macs
    return stats


def tradeoff_points(out, original, compressed, ratio):
    """One accuracy-vs-latency point per model the demo made (latency from the speed steps,
    mIoU from the evaluations; the fp32 backends share the trained model's mIoU, since they
    give its logits to 1e-3)."""
    speed = out["speed"]
    quantized = {key: (_read_json(os.path.join(out["quant_dir"], key, "quantize_report.json")) or {}).get("eval", {})
                 for key in ("original", "compressed")}
    pruned = f"pruned {int(round(100 * ratio))}%"
    rows = (("fp32 eager", "original_eager", (original or {}).get("mean_iou")),
            ("fp32 fused", "original", (original or {}).get("mean_iou")),
            ("fp32 onnxruntime", "original_onnxruntime", (original or {}).get("mean_iou")),
            (pruned, "compressed", (compressed or {}).get("mean_iou")),
            ("int8", "original_int8", quantized["original"].get("int8_miou")),
            (f"{pruned} + int8", "compressed_int8", quantized["compressed"].get("int8_miou")))
    return [{"label": label, "latency_ms": speed.get(key, {}).get("latency_ms"), "miou": miou}
            for label, key, miou in rows]


def _report_colors(cfg):
    """The config's own colours for a custom dataset (as eval's dataset uses them), else None."""
    if str(cfg.DATASET.DATASET).lower() == "custom" and len(cfg.DATASET.CLASS_COLORS):
        return [list(c) for c in cfg.DATASET.CLASS_COLORS]
    return None


def write_report(args, p, out, runner, total_seconds):
    from utils.history import load_history, pick_series
    from utils.report import build_report
    from utils.visualize import class_names_for

    cfg = p["cfg"]
    original = _read_json(os.path.join(out["metrics_dir"], "original.json"))
    compressed = _read_json(os.path.join(out["metrics_dir"], "compressed.json"))
    stats = model_stats(_read_json(out["compress_report"]), out["speed"])
    class_names = (original or {}).get("class_names") or class_names_for(cfg.DATASET.NUM_CLASSES)
    label = cfg.MODEL.NAME.replace("pidnet_small", "PIDNet-S").replace("pidnet_medium", "PIDNet-M") \
        .replace("pidnet_large", "PIDNet-L")
    runs = [{"label": label, "metrics": original, "stats": stats["original"]},
            {"label": f"Pruned {int(round(100 * args.ratio))}% + fine-tuned", "metrics": compressed,
             "stats": stats["compressed"]}]

    dataset = cfg.DATASET.DATASET
    train_hist = load_history(os.path.join(p["workdir"], "log", dataset, p["name"]))
    ft_hist = load_history(os.path.join(p["workdir"], "finetune_log", dataset, p["name"]))
    offset = max((x for x, _ in pick_series(train_hist, ("train_loss",))), default=-1) + 1

    def shifted(points):
        return [(x + offset, y) for x, y in points]

    curves = {
        "loss": {"training": pick_series(train_hist, ("train_loss",)),
                 "fine-tuning (compressed)": shifted(pick_series(ft_hist, ("train_loss",)))},
        "mIoU": {"training": pick_series(train_hist, ("valid_mIoU", "mean_iou")),
                 "fine-tuning (compressed)": shifted(pick_series(ft_hist, ("valid_mIoU", "mean_iou")))},
    }
    try:
        samples = validation_examples(cfg, out["pred_dir"], 2 if args.quick else 4)
    except (PIDNetError, OSError, ValueError, IndexError) as exc:
        logger.warning("no validation examples in the report: %s", exc)
        samples = []
    samples_dir = os.path.join(ROOT, args.samples)
    gallery = custom_examples(samples_dir, out["custom_dir"]) if os.path.isdir(samples_dir) else []
    width, height = p["size"]
    backend = out["speed"].get("original", {}).get("backend", "fused")
    device_text = str(resolve_device(args.device))
    machine = f"{os.cpu_count()} CPU core(s)"
    if p.get("load") is not None:
        machine += f", load average {p['load']:.1f} at the start (other work slows every step)"
    settings = [("config", _rel(args.cfg)), ("device", device_text), ("machine", machine), ("dataset", f"{dataset} at {cfg.DATASET.ROOT}"),
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
                        steps=[dict(step, log=_rel(step.get("log", ""))) for step in runner.steps], settings=settings, outputs=outputs, total_seconds=total_seconds,
                        tradeoff=tradeoff_points(out, original, compressed, args.ratio),
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
        p["load"] = (_read_json(run_info) or {}).get("load")
    else:
        p["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        from utils.io import atomic_write_text
        atomic_write_text(json.dumps({"load": p["load"]}) + "\n", run_info)
    print(f"PIDNet demo: config {_rel(args.cfg)}, device {args.device}, work folder {p['workdir']}"
          + (" (quick smoke run)" if args.quick else ""), flush=True)
    total = 17 if p["synthetic"] else 16
    runner = (ReplayRunner if args.report_only else Runner)(os.path.join(p["workdir"], "logs"), total)
    out = run_steps(args, p, runner)
    print(f"\n[report] writing {args.report_dir}", flush=True)
    elapsed = time.perf_counter() - start
    if args.report_only:
        elapsed = sum(step.get("seconds") or 0.0 for step in runner.steps)
    html_path = write_report(args, p, out, runner, elapsed)
    original = _read_json(os.path.join(out["metrics_dir"], "original.json")) or {}
    compressed = _read_json(os.path.join(out["metrics_dir"], "compressed.json")) or {}
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
