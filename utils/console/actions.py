"""What each console button does, written against the library functions the CLI tools use.

* load a model: a whole-module body (+ head) from the work directory, like ``tools/compress.py
  --model``, or a checkpoint + config, exported as ``tools/export_netspresso.py`` does;
* the layer table: :func:`models.compression.report.layer_macs`, channel groups and L2 / GM
  importance from :func:`models.compression.plan.analyse`;
* preview: :func:`models.compression.plan.plan` + :func:`models.compression.plan.preview`
  (as ``tools/compress.py --dry-run``);
* compress: :func:`~models.compression.pruner.compress_model` in a background job, latency from
  :func:`models.deploy.prepare_inference` + :func:`models.deploy.time_runner`, files written as the
  CLI writes them, with the ``tools/compress.py`` command line that reproduces them.
"""
import copy
import dataclasses
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time

import torch
import torch.nn as nn

from utils.console.catalog import method_module, supported_kwargs
from utils.console.workspace import file_kind
from utils.errors import CompressionError, ConsoleError
from utils.io import atomic_save, atomic_write_text

logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILTIN_CONFIGS = os.path.join(REPO_ROOT, "configs")
BUILTIN_PREFIX = "builtin:"
DEFAULT_INPUT_SIZE = (512, 1024)
TRACE_SIZE = (256, 256)  # tools/compress.py's default --trace-size
# tools/compress.py's flag for each compress_model keyword holding per-layer values.
MANUAL_FLAGS = {"layer_ratios": "--layer-ratios", "layer_indices": "--indices", "layer_ranks": "--layer-ranks"}
MIN_SIZE = 32
MAX_SIZE = 4096


# --------------------------------------------------------------------------- sources

@dataclasses.dataclass
class Source:
    """A model as the user picked it (names relative to the work directory)."""
    model: str
    config: str = ""
    head: str = ""

    def describe(self):
        return self.model + (f" + {self.config}" if self.config else "") + (f" (head {self.head})" if self.head else "")


def builtin_configs():
    """The shipped experiment files, offered beside the work directory's own configs."""
    names = []
    for folder, _, files in os.walk(BUILTIN_CONFIGS):
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")):
                rel = os.path.relpath(os.path.join(folder, name), REPO_ROOT).replace(os.sep, "/")
                names.append(BUILTIN_PREFIX + rel)
    return sorted(names)


def config_path(workspace, name):
    if name.startswith(BUILTIN_PREFIX):
        full = os.path.realpath(os.path.join(REPO_ROOT, name[len(BUILTIN_PREFIX):]))
        if os.path.commonpath([full, BUILTIN_CONFIGS]) != BUILTIN_CONFIGS or not os.path.isfile(full):
            raise ConsoleError(f"'{name}' is not one of the shipped configs: pick one from the list")
        return full
    return workspace.path(name)


def head_for(workspace, model_name):
    """The head file exported beside a body (``model_headfx.pt`` / ``<prefix>_head.pt``), or ''."""
    folder, base = os.path.split(model_name)
    candidates = []
    if base == "model_modelfx.pt":
        candidates.append("model_headfx.pt")
    if base.endswith("_model.pt"):
        candidates.append(base[:-len("_model.pt")] + "_head.pt")
    for candidate in candidates:
        name = f"{folder}/{candidate}" if folder else candidate
        try:
            workspace.path(name)
        except ConsoleError:
            continue
        return name
    return ""


def _input_size(size):
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConsoleError(f"input size must be two integers (height width), got {size!r}") from None
    if not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise ConsoleError(f"input size {height}x{width} is out of range: use {MIN_SIZE}..{MAX_SIZE} per side")
    return height, width


def trace_size_for(input_size):
    return (min(TRACE_SIZE[0], input_size[0]), min(TRACE_SIZE[1], input_size[1]))


def load_source(workspace, source):
    """``(body, head or None, default input size, export)`` for a picked model.

    ``export`` is ``{"cfg": path, "checkpoint": path}`` when the body was exported from a
    checkpoint (as tools/export_netspresso.py does), else None.
    """
    from models.checkpoint import load_module_file

    path = workspace.path(source.model)
    kind = file_kind(path)
    if kind == "config":
        raise ConsoleError(f"{source.model} is a config, not a model: pick it as the config of a checkpoint")
    if kind == "other":
        raise ConsoleError(f"{source.model} is not a model file (neither a PyTorch module nor a checkpoint): "
                           "pick an exported model_modelfx.pt, a compressed model or a checkpoint + config")
    if kind == "module":
        if source.config:
            raise ConsoleError(f"{source.model} is a whole exported module; it needs no config: clear the config")
        body = load_module_file(path, what="model")
        head = load_module_file(workspace.path(source.head), what="head") if source.head else None
        return body, head, DEFAULT_INPUT_SIZE, None
    if not source.config:
        raise ConsoleError(f"{source.model} holds weights only: pick the config it was trained with "
                           "(e.g. configs/cityscapes/pidnet_small_cityscapes.yaml)")
    from configs.default import load_config
    from models.checkpoint import load_for_eval
    from models.netspresso import export_pidnet
    from models.pidnet import build_pidnet

    cfg_file = config_path(workspace, source.config)
    cfg = load_config(cfg_file)
    net = build_pidnet(cfg.MODEL.NAME, cfg.DATASET.NUM_CLASSES, augment=True)
    load_for_eval(net, path)
    body, head = export_pidnet(net.eval())
    width, height = cfg.TEST.IMAGE_SIZE
    return body, head, (int(height), int(width)), {"cfg": cfg_file, "checkpoint": path}


# --------------------------------------------------------------------------- layer table

def _kind(module):
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = "x".join(str(k) for k in module.kernel_size)
        stride = "" if set(module.stride) == {1} else f" /{module.stride[0]}"
        groups = f" g{module.groups}" if module.groups > 1 else ""
        return f"{type(module).__name__} {kernel}{stride}{groups}"
    return type(module).__name__


def layer_table(analysis, input_size):
    """Rows ``{name, kind, in, out, params, macs, group, prunable, reason, l2, gm}`` and totals."""
    from models.compression import importance
    from models.compression.report import count_params, layer_macs

    model = analysis.model
    modules = dict(model.named_modules())
    macs = layer_macs(model, input_size)
    group_of, scores = {}, {}
    for group in analysis.all_groups:
        for name in group.layers:
            group_of[name] = group
    for gi, group in enumerate(analysis.groups):
        gm = importance.geometric_median_distances(analysis.graph, analysis.tp_groups[gi], group.channels)
        scores[group.name] = (float(analysis.norms[gi].sqrt().mean()), float(gm.mean() / max(1, group.channels - 1)))
    rows = []
    for name, value in macs.items():
        module = modules[name]
        group = group_of.get(name)
        l2, gm = scores.get(group.name, (None, None)) if group is not None and group.prunable else (None, None)
        rows.append({"name": name, "kind": _kind(module),
                     "in": getattr(module, "in_channels", getattr(module, "in_features", None)),
                     "out": getattr(module, "out_channels", getattr(module, "out_features", None)),
                     "params": int(sum(p.numel() for p in module.parameters(recurse=False))),
                     "macs": value, "group": group.name if group is not None else "",
                     "root": group is not None and group.name == name,
                     "prunable": bool(group is not None and group.prunable),
                     "reason": group.reason if group is not None else "", "l2": l2, "gm": gm})
    return {"layers": rows, "totals": {"params": count_params(model), "macs": sum(macs.values()),
                                       "layers": len(rows), "prunable_groups": len(analysis.groups),
                                       "prunable_filters": sum(g.filters for g in analysis.groups)},
            "input_size": list(input_size)}


# --------------------------------------------------------------------------- requests

@dataclasses.dataclass
class Request:
    """One compression request as the page sends it (validated by the compression module)."""
    method: str
    recommendation: str = ""
    ratio: float = None
    round_to: int = 1
    manual: dict = dataclasses.field(default_factory=dict)
    budget: str = ""
    budget_value: float = None

    def kwargs(self, meta):
        """Keyword arguments of the method's compress function (and of the preview)."""
        kwargs = {"method": self.method, "recommendation": self.recommendation or None, "round_to": self.round_to}
        keyword = meta["manual"]
        manual = (self.recommendation or meta["default_recommendation"]) == "manual"
        if self.budget:
            if self.budget not in meta["budgets"]:
                raise CompressionError(f"{self.method} takes no {self.budget} budget: use one of "
                                       f"{', '.join(meta['budgets']) or 'none'}")
            kwargs[self.budget] = self.budget_value
        elif manual:
            # Decomposition also takes a ratio in manual mode (the fraction of the full rank elsewhere).
            with_ratio = keyword == "layer_ranks" and self.ratio is not None
            values = _manual_values(self.manual, keyword, required=not with_ratio)
            if values:
                kwargs[keyword] = values
            if with_ratio:
                kwargs["ratio"] = self.ratio
        else:
            kwargs["ratio"] = self.ratio
        return kwargs


def _manual_values(manual, keyword, required=True):
    values = {}
    for name, raw in (manual or {}).items():
        text = str(raw).strip()
        if not text:
            continue
        if keyword in ("layer_indices", "layer_ranks"):
            try:
                numbers = [int(v) for v in text.replace(",", " ").split()]
            except ValueError:
                what = "channel indices" if keyword == "layer_indices" else "ranks"
                raise CompressionError(f"{what} of layer '{name}' must be integers separated by commas, "
                                       f"got '{text}'") from None
            values[name] = numbers if keyword == "layer_indices" or len(numbers) > 1 else numbers[0]
        else:
            try:
                values[name] = float(text)
            except ValueError:
                raise CompressionError(f"ratio of layer '{name}' must be a number in (0, 1), got '{text}'") from None
    if required and not values:
        raise CompressionError("manual compression needs at least one value in the layer table "
                               "(the 'manual' column of a prunable layer)")
    return values


def preview(analysis, request, input_size, layer_macs=None):
    from models.compression import plan as plan_lib

    _, meta = method_module(request.method)
    kwargs = request.kwargs(meta)
    if not meta["preview"] or request.budget:
        raise CompressionError(f"{request.method}{' with a budget' if request.budget else ''} has no per-layer "
                               "preview yet: press Compress (the result lists every layer)")
    if meta["manual"] == "layer_ranks":
        ranks, vbmf_ranks = plan_lib.plan_ranks(analysis.model, **supported_kwargs(plan_lib.plan_ranks, kwargs))
        result = plan_lib.preview_ranks(analysis.model, request.method, ranks, input_size, vbmf_ranks)
    else:
        result = plan_lib.preview(analysis, plan_lib.plan(analysis, **kwargs), input_size, layer_macs)
    result["request"] = kwargs
    return result


# --------------------------------------------------------------------------- compress job

def measure_latency(model, runtime, input_size, iters=3):
    """Median CPU seconds of one batch-1 forward with the chosen runtime (models.deploy)."""
    from models.deploy import prepare_inference, time_runner

    runner = prepare_inference(copy.deepcopy(model), runtime, "cpu", example_input=tuple(input_size))
    images = torch.randn(1, 3, *input_size)
    return time_runner(runner, images, iters=iters, warmup=1)


def command_lines(source_paths, export, kwargs, run_dir, input_size, trace_size, manual_file):
    """The ``tools/`` command lines that reproduce a console run, as shell lines."""
    lines = []
    model_path = source_paths["model"]
    if export is not None:
        lines.append(shlex.join(["python", "tools/export_netspresso.py", "--cfg", export["cfg"], "--output-dir",
                                 run_dir, "--device", "cpu", "TEST.MODEL_FILE", export["checkpoint"]]))
        model_path = os.path.join(run_dir, "model_modelfx.pt")
    argv = ["python", "tools/compress.py", "--model", model_path, "--method", kwargs["method"]]
    if kwargs.get("recommendation"):
        argv += ["--recommendation", kwargs["recommendation"]]
    if kwargs.get("ratio") is not None:
        argv += ["--ratio", repr(float(kwargs["ratio"]))]
    for budget in ("target_macs", "target_latency"):
        if kwargs.get(budget) is not None:
            argv += ["--" + budget.replace("_", "-"), repr(float(kwargs[budget]))]
    if manual_file:
        argv += [MANUAL_FLAGS[manual_file[0]], manual_file[1]]
    argv += ["--round-to", str(kwargs["round_to"]), "--input-size", str(input_size[0]), str(input_size[1]),
             "--trace-size", str(trace_size[0]), str(trace_size[1]), "--device", "cpu",
             "--output", os.path.join(run_dir, "compressed.pt")]
    lines.append(shlex.join(argv))
    return lines


def run_compress(job, workspace, source, request, input_size, runtime):
    """The compress job: prune, time before/after, write everything into a new ``runs/`` folder."""
    input_size = _input_size(input_size)
    trace_size = trace_size_for(input_size)
    module, meta = method_module(request.method)
    kwargs = request.kwargs(meta)
    job.progress(0.02, "loading the model")
    body, head, _, export = load_source(workspace, source)
    job.progress(0.15, f"compressing ({request.method})")
    started = time.time()
    call = supported_kwargs(module.compress_model, {**kwargs, "trace_size": trace_size,
                                                    "report_sizes": [input_size], "device": "cpu"})
    compressed, report = module.compress_model(body, **call)
    seconds = time.time() - started
    job.progress(0.55, f"measuring latency before ({runtime}, CPU)")
    before = measure_latency(body, runtime, input_size)
    job.progress(0.75, f"measuring latency after ({runtime}, CPU)")
    after = measure_latency(compressed, runtime, input_size)
    job.progress(0.9, "writing files")
    label = f"{time.strftime('%Y%m%d-%H%M%S')}_{request.method}"
    with workspace.run_dir(label) as (tmp, final):
        manual_file = None
        keyword = meta["manual"]
        if keyword and keyword in kwargs:
            name = f"{keyword}.json"
            atomic_write_text(json.dumps(kwargs[keyword], indent=2) + "\n", os.path.join(tmp, name))
            manual_file = (keyword, os.path.join(final, name))
        if export is not None:
            atomic_save(body, os.path.join(tmp, "model_modelfx.pt"))
            atomic_save(head, os.path.join(tmp, "model_headfx.pt"))
        elif source.head:
            shutil.copyfile(workspace.path(source.head), os.path.join(tmp, "model_headfx.pt"))
        atomic_save(compressed, os.path.join(tmp, "compressed.pt"))
        source_paths = {"model": workspace.path(source.model)}
        commands = command_lines(source_paths, export, kwargs, final, input_size, trace_size, manual_file)
        report["model"] = source_paths["model"]
        report["backend"] = "offline"
        report["latency_ms"] = {"runtime": runtime, "device": "cpu", "input_size": list(input_size),
                                "before": before * 1e3, "after": after * 1e3}
        report["commands"] = commands
        job.progress(0.95, "writing the report")
        atomic_write_text(json.dumps(report, indent=2) + "\n", os.path.join(tmp, "compressed.json"))
        atomic_write_text("\n".join(commands) + "\n", os.path.join(tmp, "command.sh"))
        files = sorted(os.listdir(tmp))
    first = f"{input_size[0]}x{input_size[1]}"
    return {"run": workspace.relative(final), "files": [f"{workspace.relative(final)}/{f}" for f in files],
            "report": f"{workspace.relative(final)}/compressed.json", "commands": commands,
            "seconds": seconds, "input_size": list(input_size), "runtime": runtime,
            "before": {"params": report["before"]["params"], "macs": report["before"]["macs"][first],
                       "latency_ms": before * 1e3},
            "after": {"params": report["after"]["params"], "macs": report["after"]["macs"][first],
                      "latency_ms": after * 1e3},
            "ratio_achieved": report.get("ratio_achieved"), "method": request.method,
            "recommendation": report.get("recommendation")}



# --------------------------------------------------------------------------- quantize job

QUANTIZE_TOOL = os.path.join("tools", "quantize.py")
QUANTIZE_REPORT = "quantize_report.json"


def quantize_available():
    return os.path.isfile(os.path.join(REPO_ROOT, QUANTIZE_TOOL))


def quantize_argv(model, calib_dir, input_size, precision, engine, output_dir):
    """``tools/quantize.py`` arguments for a compressed body, calibrated on a folder of images."""
    return [QUANTIZE_TOOL, "--netspresso", "--model", model, "--calib-dir", calib_dir,
            "--input-size", str(input_size[0]), str(input_size[1]), "--precision", precision,
            "--engine", engine, "--device", "cpu", "--output-dir", output_dir]


def _error_line(output):
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["tools/quantize.py failed without a message"])[-1]


def run_quantize(job, workspace, run, calib_dir, input_size, precision, engine, poll_seconds=0.5):
    """The quantize job: ``tools/quantize.py`` itself, in a subprocess, on a run's compressed body.

    The tool writes its output folder atomically (nothing is left when it fails); a cancel
    terminates it. The output folder goes into the run folder: ``<run>/quantized_<precision>``.
    """
    if not quantize_available():
        raise ConsoleError("this toolkit has no tools/quantize.py: quantization is not available")
    model = workspace.path(f"{run}/compressed.pt")
    calib = workspace.folder(calib_dir)
    output_dir = os.path.join(os.path.dirname(model), f"quantized_{precision}")
    count = 1
    while os.path.exists(output_dir):
        output_dir = os.path.join(os.path.dirname(model), f"quantized_{precision}_{count}")
        count += 1
    argv = quantize_argv(model, calib, input_size, precision, engine, output_dir)
    job.progress(0.05, f"tools/quantize.py ({precision}, {engine})")
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started = time.time()
    try:
        while proc.poll() is None:
            time.sleep(poll_seconds)
            job.progress(0.05 + 0.9 * (1 - 1 / (1 + (time.time() - started) / 60)),
                         f"tools/quantize.py running ({time.time() - started:.0f} s)")
    except BaseException:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    output = proc.stdout.read()
    if proc.returncode != 0:
        raise ConsoleError(f"quantization failed: {_error_line(output)}")
    report_path = os.path.join(output_dir, QUANTIZE_REPORT)
    with open(report_path, encoding="utf-8") as handle:
        report = json.load(handle)
    files = sorted(os.listdir(output_dir))
    rel = workspace.relative(output_dir)
    return {"run": rel, "files": [f"{rel}/{f}" for f in files], "report": f"{rel}/{QUANTIZE_REPORT}",
            "commands": [shlex.join(["python", *argv])], "summary": report}
