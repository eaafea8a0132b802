"""Compression requests, the per-layer preview and the compress job.

* preview: :func:`models.compression.plan.plan` + :func:`models.compression.plan.preview`
  (as ``tools/compress.py --dry-run``), :func:`~models.compression.plan.plan_ranks` for ``FD_*``;
* compress: the method module's ``compress_model`` in a background job (``PR_NN`` images read by
  :func:`utils.images.load_images`), latency from :func:`models.deploy.prepare_inference` +
  :func:`models.deploy.time_runner`, files written as the CLI writes them, with the
  ``tools/compress.py`` command line that reproduces them.
"""
import copy
import dataclasses
import json
import logging
import os
import shlex
import shutil
import time

import torch

from utils.console.catalog import method_module, supported_kwargs
from utils.console.sources import check_input_size, load_source, trace_size_for
from utils.errors import CompressionError
from utils.console.workspace import RUN_BODY, RUN_REPORT
from utils.io import atomic_save, atomic_write_text
from utils.layout import EXPORT_BODY, EXPORT_HEAD

logger = logging.getLogger(__name__)

# tools/compress.py's flag for each compress_model keyword holding per-layer values.
MANUAL_FLAGS = {"layer_ratios": "--layer-ratios", "layer_indices": "--indices", "layer_ranks": "--layer-ranks"}


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
    images: str = ""
    num_images: int = 32

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


def nn_images(workspace, folder, count):
    """Images of a work-directory folder, read and preprocessed as ``tools/compress.py --images`` does."""
    from utils.images import load_images

    if not folder:
        raise CompressionError("PR_NN ranks filters by their feature maps on real images: pick an image folder "
                               "of the work directory (or upload images) first")
    return load_images(workspace.folder(folder), count)


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


def command_lines(source_paths, export, kwargs, run_dir, input_size, trace_size, manual_file, images=None):
    """The ``tools/`` command lines that reproduce a console run, as shell lines."""
    lines = []
    model_path = source_paths["model"]
    if export is not None:
        lines.append(shlex.join(["python", "tools/export_netspresso.py", "--cfg", export["cfg"], "--output-dir",
                                 run_dir, "--device", "cpu", "TEST.MODEL_FILE", export["checkpoint"]]))
        model_path = os.path.join(run_dir, EXPORT_BODY)
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
    if images:
        argv += ["--images", images[0], "--num-images", str(images[1])]
    argv += ["--round-to", str(kwargs["round_to"]), "--input-size", str(input_size[0]), str(input_size[1]),
             "--trace-size", str(trace_size[0]), str(trace_size[1]), "--device", "cpu",
             "--output", os.path.join(run_dir, RUN_BODY)]
    lines.append(shlex.join(argv))
    return lines


def run_compress(job, workspace, source, request, input_size, runtime):
    """The compress job: prune, time before/after, write everything into a new ``runs/`` folder."""
    input_size = check_input_size(input_size)
    trace_size = trace_size_for(input_size)
    module, meta = method_module(request.method)
    kwargs = request.kwargs(meta)
    job.progress(0.02, "loading the model")
    body, head, _, export = load_source(workspace, source)
    images = None
    if request.method == "PR_NN":
        job.progress(0.1, f"reading the images of {request.images}")
        images = nn_images(workspace, request.images, request.num_images)
    job.progress(0.15, f"compressing ({request.method})")
    started = time.time()
    call = supported_kwargs(module.compress_model, {**kwargs, "trace_size": trace_size, "images": images,
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
            atomic_save(body, os.path.join(tmp, EXPORT_BODY))
            atomic_save(head, os.path.join(tmp, EXPORT_HEAD))
        elif source.head:
            shutil.copyfile(workspace.path(source.head), os.path.join(tmp, EXPORT_HEAD))
        atomic_save(compressed, os.path.join(tmp, RUN_BODY))
        source_paths = {"model": workspace.path(source.model)}
        image_flags = (workspace.folder(request.images), request.num_images) if images is not None else None
        commands = command_lines(source_paths, export, kwargs, final, input_size, trace_size, manual_file,
                                 image_flags)
        report["model"] = source_paths["model"]
        if image_flags:
            report["images_dir"] = image_flags[0]
        report["backend"] = "offline"
        report["latency_ms"] = {"runtime": runtime, "device": "cpu", "input_size": list(input_size),
                                "before": before * 1e3, "after": after * 1e3}
        report["commands"] = commands
        job.progress(0.95, "writing the report")
        atomic_write_text(json.dumps(report, indent=2) + "\n", os.path.join(tmp, RUN_REPORT))
        atomic_write_text("\n".join(commands) + "\n", os.path.join(tmp, "command.sh"))
        files = sorted(os.listdir(tmp))
    first = f"{input_size[0]}x{input_size[1]}"
    return {"run": workspace.relative(final), "files": [f"{workspace.relative(final)}/{f}" for f in files],
            "report": f"{workspace.relative(final)}/{RUN_REPORT}", "commands": commands,
            "seconds": seconds, "input_size": list(input_size), "runtime": runtime,
            "before": {"params": report["before"]["params"], "macs": report["before"]["macs"][first],
                       "latency_ms": before * 1e3},
            "after": {"params": report["after"]["params"], "macs": report["after"]["macs"][first],
                      "latency_ms": after * 1e3},
            "ratio_achieved": report.get("ratio_achieved"), "method": request.method,
            "recommendation": report.get("recommendation")}
