"""The quantize job: ``tools/quantize.py`` itself, in a subprocess, on a run's compressed body,
and the page's view of its ``quantize_report.json`` (overall and per-layer SNR, float layers).
"""
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import time

from utils.console.sources import REPO_ROOT
from utils.console.workspace import QUANTIZE_REPORT, run_body
from utils.errors import ConsoleError

logger = logging.getLogger(__name__)

QUANTIZE_TOOL = os.path.join("tools", "quantize.py")


def quantize_available():
    return os.path.isfile(os.path.join(REPO_ROOT, QUANTIZE_TOOL))


def quantize_argv(model, calib_dir, input_size, precision, engine, output_dir, min_snr=None):
    """``tools/quantize.py`` arguments for a compressed body, calibrated on a folder of images;
    ``min_snr`` (dB) adds ``--mixed --min-snr`` (sensitive layers kept in float)."""
    argv = [QUANTIZE_TOOL, "--netspresso", "--model", model, "--calib-dir", calib_dir,
            "--input-size", str(input_size[0]), str(input_size[1]), "--precision", precision,
            "--engine", engine, "--device", "cpu", "--output-dir", output_dir]
    if min_snr is not None:
        argv += ["--mixed", "--min-snr", repr(float(min_snr))]
    return argv


def quantize_view(report):
    """What the page shows of a ``quantize_report.json``: its flat fields, the overall logits SNR
    per runtime, every measured layer's SNR (sensitivity, lowest first) with whether it was kept
    in float, and the ``--mixed`` search (target, reached, trials)."""
    floats = set(report.get("float_layers") or [])
    # A layer whose int8 version gives the float logits exactly has an infinite SNR: JSON has no
    # infinity, so the page gets null (shown as "inf").

    def finite(value):
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    layers = sorted((report.get("layer_snr_db") or {}).items(), key=lambda item: item[1])
    mixed = report.get("mixed") or None
    return {"fields": {k: v for k, v in report.items()
                       if isinstance(v, str) or (not isinstance(v, (dict, list)) and finite(v) is not None)},
            "overall_snr_db": {k: finite(v) for k, v in (report.get("logits_snr_db") or {}).items()},
            "layers": [{"name": name, "snr_db": finite(snr), "float": name in floats} for name, snr in layers],
            "float_layers": list(report.get("float_layers") or []),
            "mixed": None if mixed is None else {"min_snr_db": finite(mixed.get("min_snr_db")),
                                                 "reached_snr_db": finite(mixed.get("reached_snr_db")),
                                                 "trials": len(mixed.get("trials") or [])},
            "sizes_bytes": dict(report.get("sizes_bytes") or {}), "eval": dict(report.get("eval") or {})}


def _error_line(output):
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["tools/quantize.py failed without a message"])[-1]


def read_report(workspace, name):
    """The view of a ``quantize_report.json`` of the work directory (one a CLI run wrote, too)."""
    if os.path.basename(name) != QUANTIZE_REPORT:
        raise ConsoleError(f"'{name}' is not a {QUANTIZE_REPORT}: pick one written by tools/quantize.py")
    try:
        with open(workspace.path(name), encoding="utf-8") as handle:
            report = json.load(handle)
    except ValueError as exc:
        raise ConsoleError(f"{name} is not JSON ({exc}): pick one written by tools/quantize.py") from None
    if not isinstance(report, dict) or "logits_snr_db" not in report:
        raise ConsoleError(f"{name} has no logits_snr_db: it was not written by tools/quantize.py")
    return quantize_view(report)


def run_quantize(job, workspace, run, calib_dir, input_size, precision, engine, min_snr=None, poll_seconds=0.5):
    """The quantize job: ``tools/quantize.py`` itself, in a subprocess, on a run's compressed body.

    The tool writes its output folder atomically (nothing is left when it fails); a cancel
    terminates it. The output folder goes into the run folder: ``<run>/quantized_<precision>``.
    """
    if not quantize_available():
        raise ConsoleError("this toolkit has no tools/quantize.py: quantization is not available")
    model = workspace.path(run_body(workspace, run))
    calib = workspace.folder(calib_dir)
    output_dir = os.path.join(os.path.dirname(model), f"quantized_{precision}")
    count = 1
    while os.path.exists(output_dir):
        output_dir = os.path.join(os.path.dirname(model), f"quantized_{precision}_{count}")
        count += 1
    argv = quantize_argv(model, calib, input_size, precision, engine, output_dir, min_snr)
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
            "commands": [shlex.join(["python", *argv])], "summary": report,
            "view": quantize_view(report)}
