"""The evaluate job: fp32 vs compressed vs quantized mIoU on a config's val set, with the
accuracy-vs-latency chart of the demo report.

Every number comes from what ``tools/eval.py`` runs: the val set, the model and its runner are
built by the same :mod:`configs.build` functions (``build_test_dataset``, ``build_eval_model``
with ``--netspresso --model/--head`` for a body or ``--onnx`` for a quantized file,
``build_eval_runner``), the metrics are :func:`utils.evaluate.evaluate`, and each row keeps the
``tools/eval.py`` command line that reproduces it. The chart and its Pareto front
are :func:`utils.report.charts.plot_tradeoff` / :func:`utils.report.summary.tradeoff_rows`. Latency: batch 1 on
the CPU at the val image size, a body through :func:`models.deploy.prepare_inference` with the
chosen runtime (as the compress job times it), an ONNX file through its own runner.
"""
import json
import logging
import os
import shlex

import torch

from utils.console.compress import measure_latency
from utils.console.sources import config_path
from utils.console.workspace import QUANTIZE_REPORT, run_body, run_report
from utils.errors import ConsoleError
from utils.io import atomic_write_text
from utils.layout import EXPORT_BODY, EXPORT_HEAD

logger = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
CHART_FILE = "tradeoff.png"


def eval_config(workspace, config, dataset_root=""):
    """``(cfg file, overrides, frozen cfg, val dataset)``: the config with ``DATASET.ROOT`` set to a
    folder of the work directory (``dataset_root``, else the config's own ROOT read inside it)."""
    from configs.default import load_config
    from configs.build import build_test_dataset

    if not config:
        raise ConsoleError("pick the config whose val set to evaluate on (e.g. "
                           "builtin:configs/synthetic/pidnet_small_synthetic.yaml)")
    cfg_file = config_path(workspace, config)
    base = load_config(cfg_file)
    root = dataset_root or base.DATASET.ROOT
    try:
        root_dir = workspace.folder(root)
    except ConsoleError:
        raise ConsoleError(f"dataset root '{root}' is not a folder of the work directory {workspace.root}: pick "
                           "the folder holding the data and its list/ (e.g. one written by tools/make_synthetic.py "
                           "--root <workdir>/data)") from None
    opts = ["DATASET.ROOT", root_dir.rstrip("/") + "/"]
    cfg = load_config(cfg_file, opts)
    dataset = build_test_dataset(cfg)
    if len(dataset) == 0 or not dataset.has_labels:
        raise ConsoleError(f"{cfg.DATASET.TEST_SET} in {root} has no labels, so no mIoU: pick a config whose "
                           "DATASET.TEST_SET is a labelled val list")
    return cfg_file, opts, cfg, dataset


def eval_models(workspace, run):
    """``[(label, kind, file, head)]`` of a compress run: the fp32 body it was made from, the
    compressed body and every quantized ONNX file in the run (``kind``: ``body`` or ``onnx``)."""
    workspace.folder(run)
    try:
        body = run_body(workspace, run)
        report = _read_json(workspace.path(run_report(workspace, run)))
    except ConsoleError:
        raise ConsoleError(f"'{run}' is not a compress run (no compressed model and report in it): "
                           "compress a model first") from None
    head = f"{run}/{EXPORT_HEAD}" if os.path.isfile(workspace.path(f"{run}/{EXPORT_HEAD}", False)) else ""
    exported = f"{run}/{EXPORT_BODY}"
    if os.path.isfile(workspace.path(exported, False)):
        fp32 = exported
    else:
        fp32 = workspace.relative(report.get("model", ""))
        workspace.path(fp32)  # the body it was compressed from, still inside the work directory
    method = report.get("method", "compressed")
    models = [("fp32", "body", fp32, head), (method, "body", body, head)]
    folder = workspace.folder(run)
    for name in sorted(os.listdir(folder)):
        quant_report = os.path.join(folder, name, QUANTIZE_REPORT)
        if name.startswith("quantized_") and os.path.isfile(quant_report):
            quant = _read_json(quant_report)
            if not quant.get("file"):
                continue
            label = f"{method} + {quant.get('precision', name)}"
            if any(label == m[0] for m in models):
                label += f" ({name})"  # a second quantization of the same precision
            models.append((label, "onnx", f"{run}/{name}/{quant['file']}", ""))
    return models


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConsoleError(f"cannot read {os.path.basename(path)} ({exc}): pick a run the console wrote") from None


def eval_argv(workspace, cfg_file, opts, kind, name, head):
    """``tools/eval.py`` arguments that evaluate one model of the run on CPU."""
    argv = ["--cfg", cfg_file, *opts, "--device", "cpu", "--no-progress"]
    if kind == "onnx":
        return argv + ["--onnx", workspace.path(name)]
    return argv + ["--netspresso", "--model", workspace.path(name)] + (["--head", workspace.path(head)] if head else [])


class _Reporting:
    """A loader that reports progress (and so can be cancelled) before every batch."""

    def __init__(self, loader, job, start, span, label):
        self.loader, self.job, self.start, self.span, self.label = loader, job, start, span, label
        self.dataset = loader.dataset

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        total = len(self.loader)
        for i, batch in enumerate(self.loader):
            self.job.progress(self.start + self.span * i / max(1, total), f"{self.label}: image {i + 1}/{total}")
            yield batch


LATENCY_ITERS = 10  # batch-1 forwards timed per model (val-size images are small; more is steadier)


def _latency_ms(workspace, kind, name, model_fn, runtime, size):
    from models.checkpoint import load_module_file
    from models.deploy import time_runner

    if kind == "onnx":
        return 1e3 * time_runner(model_fn, torch.randn(1, 3, *size), iters=LATENCY_ITERS, warmup=1)
    body = load_module_file(workspace.path(name), what="model")
    return 1e3 * measure_latency(body, runtime, size, iters=LATENCY_ITERS)


def run_evaluate(job, workspace, run, config, dataset_root, runtime):
    """Evaluate every model of ``run``; writes ``<run>/evaluation/{eval.json, tradeoff.png, command.sh}``."""
    from torch.utils.data import DataLoader

    from configs.build import build_eval_model, build_eval_runner
    from utils.evaluate import evaluate
    from utils.report.charts import plot_tradeoff
    from utils.report.summary import tradeoff_rows

    job.progress(0.01, "reading the val set")
    cfg_file, opts, cfg, dataset = eval_config(workspace, config, dataset_root)
    models = eval_models(workspace, run)
    device = torch.device("cpu")
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
    scales = list(cfg.TEST.SCALE_LIST) if cfg.TEST.MULTI_SCALE else [1.0]
    size = tuple(int(v) for v in dataset[0][0].shape[-2:])
    rows, commands = [], []
    for i, (label, kind, name, head) in enumerate(models):
        span = 0.85 / len(models)
        argv = eval_argv(workspace, cfg_file, opts, kind, name, head)
        if kind == "onnx":
            model = build_eval_model(cfg, device, onnx=workspace.path(name), runtime="onnxruntime")
        else:
            model = build_eval_model(cfg, device, netspresso=(workspace.path(name),
                                                              workspace.path(head) if head else None))
        model_fn, _ = build_eval_runner(model, cfg, device, dataset, onnx=kind == "onnx")
        result = evaluate(model_fn, _Reporting(loader, job, 0.05 + i * span, 0.8 * span, f"evaluating {label}"),
                          cfg.DATASET.NUM_CLASSES, ignore_label=cfg.TRAIN.IGNORE_LABEL, device=device,
                          output_index=cfg.TEST.OUTPUT_INDEX, align_corners=cfg.MODEL.ALIGN_CORNERS,
                          flip_test=cfg.TEST.FLIP_TEST, scales=scales, progress=False, desc=label)
        job.progress(0.05 + (i + 0.8) * span, f"timing {label} ({'onnxruntime' if kind == 'onnx' else runtime})")
        latency = _latency_ms(workspace, kind, name, model_fn, runtime, size)
        rows.append({"label": label, "file": name, "kind": kind, "miou": result["mean_iou"],
                     "pixel_acc": result["pixel_acc"], "mean_acc": result["mean_acc"], "latency_ms": latency,
                     "runtime": "onnxruntime" if kind == "onnx" else runtime,
                     "size_bytes": os.path.getsize(workspace.path(name)), "num_images": result["num_images"]})
        commands.append(shlex.join(["python", "tools/eval.py", *argv]))
    job.progress(0.92, "drawing the accuracy-vs-latency chart")
    front = {row[0] for row in tradeoff_rows(rows) if row[3]}
    for row in rows:
        row["pareto"] = row["label"] in front
    run_dir = workspace.folder(run)
    with workspace.output_dir(run_dir, "evaluation") as (tmp, final):
        chart = plot_tradeoff(rows, os.path.join(tmp, CHART_FILE),
                              title=f"mIoU vs CPU latency, {cfg.DATASET.TEST_SET} ({len(dataset)} images)")
        summary = {"config": cfg_file, "dataset_root": opts[1], "test_set": cfg.DATASET.TEST_SET,
                   "images": len(dataset), "input_size": list(size), "runtime": runtime, "rows": rows,
                   "commands": commands}
        atomic_write_text(json.dumps(summary, indent=2) + "\n", os.path.join(tmp, EVAL_FILE))
        atomic_write_text("\n".join(commands) + "\n", os.path.join(tmp, "command.sh"))
        files = sorted(os.listdir(tmp))
    rel = workspace.relative(final)
    return {**summary, "run": rel, "files": [f"{rel}/{f}" for f in files], "report": f"{rel}/{EVAL_FILE}",
            "chart": f"{rel}/{CHART_FILE}" if chart else None}
