"""Runners: callables ``images -> main logits`` for each inference backend, and the entry point.

``prepare_inference(model, backend, device, example_input)`` returns a callable
``f(images NCHW float tensor on device) -> main logits`` for any of:

* a :class:`models.pidnet.PIDNet` with ``augment=False`` (returns the main logits) or
  ``augment=True`` (returns ``[p, main, boundary]``; ``output_index`` picks the main one);
* any ``nn.Module`` / ``torch.fx.GraphModule`` (pruned or decomposed NetsPresso models).

Backends (``BACKENDS``):

``eager``        the model as it is, in eval mode under ``torch.inference_mode`` (reference).
``fused``        a copy of the *same* model with every conv -> BatchNorm pair folded into the
                 conv (:mod:`models.deploy.fold`), ``channels_last``, inference mode;
                 on CUDA optional fp16/bf16 autocast and CUDA graphs.
``onnxruntime``  the fused model exported to ONNX (dynamic batch/H/W) and run by an ORT session
                 with all graph optimisations and the intra-op thread count set.
``openvino``     the same ONNX export compiled by OpenVINO for the CPU (fp32 inference precision
                 pinned, ``INFERENCE_NUM_THREADS`` = the thread count).
``compile``      ``torch.compile`` of the fused model (compiled on the example input, so a
                 platform that cannot compile fails here with a clear error, or falls back).
``auto``         times the available candidates on ``example_input`` and keeps the fastest
                 (see :func:`models.deploy.auto.auto_candidates` for the rule).

All backends give the eager logits to < 1e-3 (fp32); see ``tests/models/test_deploy.py``.
The logits are returned as float32 in ``channels_last`` memory format (same values and shape),
which makes the evaluation's full-resolution upsampling + argmax about 3x faster on CPU.
cuDNN flags (``benchmark``, ``deterministic``) are the caller's: set once from the config.
"""
import contextlib
import logging
import os
import tempfile

import torch
import torch.nn as nn

from models.deploy import auto, runtimes
from models.deploy.fold import fold_batchnorm
from models.deploy.onnx import export_onnx
from models.deploy.outputs import MainOutput, select_output
from utils.cli import first_line
from utils.errors import DeviceError, ModelError

logger = logging.getLogger(__name__)

BACKENDS = ("eager", "fused", "onnxruntime", "openvino", "compile", "auto")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------- runners

class InferenceRunner:
    """Callable ``images -> main logits`` produced by :func:`prepare_inference`.

    Attributes: ``backend`` (the one actually used, also after ``auto``), ``device``,
    ``module`` (the torch module it runs, or None for ORT), ``details`` (a short description).
    The logits come back as float32 in ``channels_last`` memory format (use ``.reshape``, not
    ``.view``, to flatten them).
    """

    def __init__(self, backend, device, fn, module=None, details=""):
        self.backend = backend
        self.device = device
        self.module = module
        self.details = details
        self._fn = fn

    def __call__(self, images):
        out = self._fn(images)
        # Same values and shape; NHWC strides make the usual next steps (bilinear upsampling to
        # the label size, argmax over classes) about 3x faster on CPU than NCHW.
        return out.contiguous(memory_format=torch.channels_last) if out.dim() == 4 else out

    def __repr__(self):
        return f"InferenceRunner(backend={self.backend!r}, device={str(self.device)!r}, {self.details})"


def _autocast(device, precision):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _eager_runner(model, device, output_index, precision):
    model = model.to(device).eval()

    def run(images):
        with torch.inference_mode(), _autocast(device, precision):
            out = select_output(model(images), output_index)
        return out.float() if out.dtype != torch.float32 else out

    return InferenceRunner("eager", device, run, model, f"precision={precision}")


class _CudaGraphRunner:
    """Replays a captured CUDA graph; recaptures when the input shape changes."""

    def __init__(self, module, device, output_index, precision):
        self.module, self.device = module, device
        self.output_index, self.precision = output_index, precision
        self.graph = self.static_in = self.static_out = None
        self.shape = None

    def _capture(self, images):
        self.static_in = images.clone()
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.inference_mode(), _autocast(self.device, self.precision):
            for _ in range(3):  # warm-up on a side stream, as CUDA graph capture requires
                self.module(self.static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode(), _autocast(self.device, self.precision):
            self.static_out = select_output(self.module(self.static_in), self.output_index)
        self.shape = tuple(images.shape)

    def __call__(self, images):
        if self.graph is None or tuple(images.shape) != self.shape:
            self._capture(images)
        self.static_in.copy_(images)
        self.graph.replay()
        out = self.static_out  # overwritten by the next replay: hand out a copy
        return out.clone() if out.dtype == torch.float32 else out.float()


def _fused_module(model, device, channels_last):
    module = fold_batchnorm(model).to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def _fused_runner(model, device, output_index, precision, channels_last, cuda_graphs):
    if cuda_graphs and device.type != "cuda":
        raise DeviceError("cuda_graphs=True needs a CUDA device: drop the option or use --device cuda")
    module = _fused_module(model, device, channels_last)
    if cuda_graphs:
        graph_runner = _CudaGraphRunner(module, device, output_index, precision)

        def run(images):
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            return graph_runner(images)
    else:
        def run(images):
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), _autocast(device, precision):
                out = select_output(module(images), output_index)
            return out.float()

    details = f"precision={precision}, channels_last={channels_last}, cuda_graphs={cuda_graphs}"
    return InferenceRunner("fused", device, run, module, details)


# --------------------------------------------------------------------------- onnxruntime

class _FoldedExport:
    """The BN-folded model exported to ONNX once, on first use (the onnxruntime and openvino
    backends, and ``auto`` probing both, share one export)."""

    def __init__(self, model, example, output_index, onnx_path=None):
        self.model, self.example, self.output_index = model, example, output_index
        self.onnx_path = onnx_path
        self._tmpdir = None
        self._done = False

    def path(self):
        if not self._done:
            if self.onnx_path is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="pidnet_onnx_")
                self.onnx_path = os.path.join(self._tmpdir.name, "model.onnx")
            export_onnx(fold_batchnorm(self.model).cpu(), self.onnx_path, self.example, self.output_index)
            self._done = True
        return self.onnx_path


def _onnxruntime_runner(export, device, precision, threads):
    if not runtimes.onnxruntime_available():
        raise ModelError("backend 'onnxruntime' needs the onnxruntime package: "
                         "pip install onnxruntime (or onnxruntime-gpu), or choose another backend")
    if precision not in ("fp32", "fp16") or (precision == "fp16" and device.type != "cuda"):
        raise ModelError(f"backend 'onnxruntime' runs fp32 only on {device.type} (got precision {precision}): "
                         "use --backend fused for fp16/bf16, or fp16 on CUDA with TensorRT")
    runtimes.ort_providers(device, precision)  # a missing provider fails before the export
    session = runtimes.create_ort_session(export.path(), device, threads, precision)
    run = runtimes.ort_run_fn(session, device)
    runner = InferenceRunner("onnxruntime", device, run, None,
                             f"providers={runtimes.provider_names(session)}, precision={precision}, "
                             f"threads={int(threads or torch.get_num_threads())}")
    runner.session = session
    runner._export = export  # keeps a temporary exported file alive as long as the runner
    return runner


def _check_openvino(device, precision):
    if not runtimes.openvino_available():
        raise ModelError("backend 'openvino' needs the openvino package: pip install openvino, "
                         "or choose another backend")
    if precision != "fp32":
        raise ModelError(f"backend 'openvino' runs fp32 only (got precision {precision}): for int8 "
                         "quantize with tools/quantize.py and run the file with --onnx FILE --runtime openvino")
    if device.type != "cpu":
        raise DeviceError(f"backend 'openvino' runs on the CPU (got device {device}): use --device cpu, "
                          "or --backend fused/onnxruntime on CUDA")


def _openvino_runner(export, device, precision, threads):
    _check_openvino(device, precision)
    compiled = runtimes.compile_openvino(export.path(), device, threads)
    runner = InferenceRunner("openvino", device, runtimes.openvino_run_fn(compiled), None,
                             f"device=CPU, precision=fp32, threads={compiled.get_property('INFERENCE_NUM_THREADS')}")
    runner.compiled = compiled
    runner._export = export
    return runner


# --------------------------------------------------------------------------- torch.compile

def _compile_runner(model, device, output_index, precision, channels_last, example, fallback, mode):
    module = MainOutput(_fused_module(model, device, channels_last), output_index).eval()
    # Without a mode, inductor "freezing": weights become constants, so convolutions get
    # prepacked (oneDNN on CPU) and constant-folded; this is what makes compile pay on CPU.
    kwargs = dict(mode=mode) if mode else dict(options={"freezing": True})
    try:
        compiled = torch.compile(module, **kwargs)
    except Exception as exc:  # torch.compile raises platform-specific errors (no compiler, Windows...)
        return _compile_failed(exc, model, device, output_index, precision, channels_last, fallback)

    def run(images):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _autocast(device, precision):
            out = compiled(images)
        return out.float()

    try:
        run(example)  # compilation happens on the first call: fail here, not inside a timing loop
    except Exception as exc:  # inductor/dynamo failures have many types
        return _compile_failed(exc, model, device, output_index, precision, channels_last, fallback)
    return InferenceRunner("compile", device, run, compiled,
                           f"{kwargs}, precision={precision}, channels_last={channels_last}")


def _compile_failed(exc, model, device, output_index, precision, channels_last, fallback):
    first = first_line(exc)
    if not fallback:
        raise ModelError(f"torch.compile failed on this platform ({type(exc).__name__}: {first[:200]}): "
                         "install a C++ compiler / Triton, or use --backend fused") from None
    logger.warning("torch.compile failed (%s: %s); falling back to the fused backend",
                   type(exc).__name__, first[:200])
    return _fused_runner(model, device, output_index, precision, channels_last, cuda_graphs=False)


# --------------------------------------------------------------------------- entry point

def _as_example(example_input, device):
    """A random NCHW tensor from a tensor, an ``(H, W)`` size or an ``(N, C, H, W)`` size."""
    if torch.is_tensor(example_input):
        return example_input.to(device)
    size = tuple(int(s) for s in example_input)
    if len(size) == 2:
        size = (1, 3) + size
    if len(size) != 4 or min(size) <= 0:
        raise ModelError(f"example input size {example_input} is not (H, W) or (N, C, H, W) with positive values")
    generator = torch.Generator().manual_seed(0)
    return torch.randn(size, generator=generator).to(device)


def prepare_inference(model, backend="eager", device=None, example_input=(512, 1024), *, output_index=1,
                      precision="fp32", channels_last=True, cuda_graphs=False, threads=None,
                      compile_mode=None, fallback=False, onnx_path=None, probe_iters=3):
    """Turn ``model`` into a callable ``f(images) -> main logits`` with the chosen backend.

    Args:
        model: PIDNet (``augment`` either way), any nn.Module or torch.fx GraphModule. It is put
            in eval mode; ``eager`` runs it as is (moved to ``device``), while ``fused``,
            ``onnxruntime``, ``openvino`` and ``compile`` work on a BN-folded copy.
        backend: one of ``BACKENDS``. ``auto`` times the candidates of :func:`models.deploy.auto.auto_candidates`
            on ``example_input`` and keeps the fastest.
        device: ``torch.device`` or a name (``'cpu'``, ``'cuda'``, ``'auto'``/None).
        example_input: a tensor, ``(H, W)`` or ``(N, C, H, W)``: the size used for the ONNX
            export, the compile warm-up and the ``auto`` probe.
        output_index: which element of a list/tuple output is the main logits (PIDNet: 1).
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast; eager/fused/compile), or ``fp16``
            for ``onnxruntime`` on CUDA (TensorRT execution provider).
        channels_last: NHWC memory format for fused/compile.
        cuda_graphs: capture the fused model in a CUDA graph (CUDA only).
        threads: ORT intra-op / OpenVINO inference threads (default ``torch.get_num_threads()``).
        compile_mode: ``torch.compile`` mode (None = default).
        fallback: when ``compile`` fails, warn and use ``fused`` instead of raising.
        onnx_path: keep the exported ONNX file here (default: a temporary file). To run an
            existing ONNX file, see :func:`models.deploy.onnx_file.prepare_onnx_file`.

    Returns:
        :class:`InferenceRunner`; ``runner.backend`` names the backend actually used.

    Raises:
        ModelError: unknown or unavailable backend, or a backend that fails on this platform.
        DeviceError: a device or option this machine does not have.
    """
    from utils.device import resolve_device

    if backend not in BACKENDS:
        raise ModelError(f"unknown inference backend '{backend}': use one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if not isinstance(model, nn.Module):
        raise ModelError(f"prepare_inference needs an nn.Module, got {type(model).__name__}")
    model.eval()
    if backend == "eager":
        return _eager_runner(model, device, output_index, precision)
    if backend == "fused":
        return _fused_runner(model, device, output_index, precision, channels_last, cuda_graphs)
    if backend == "openvino":
        _check_openvino(device, precision)  # before an example input is put on an unusable device
    example = _as_example(example_input, device)
    export = _FoldedExport(model, example, output_index, onnx_path)
    if backend == "onnxruntime":
        return _onnxruntime_runner(export, device, precision, threads)
    if backend == "openvino":
        return _openvino_runner(export, device, precision, threads)
    if backend == "compile":
        return _compile_runner(model, device, output_index, precision, channels_last, example,
                               fallback, compile_mode)

    candidates = auto.auto_candidates(device)
    if precision != "fp32":
        candidates = [c for c in candidates if c not in ("onnxruntime", "openvino")]

    def build(name):
        if name == "onnxruntime":
            return _onnxruntime_runner(export, device, precision, threads)
        if name == "openvino":
            return _openvino_runner(export, device, precision, threads)
        return prepare_inference(model, name, device, example, output_index=output_index,
                                 precision=precision, channels_last=channels_last,
                                 cuda_graphs=cuda_graphs, threads=threads)

    return auto.choose_fastest(candidates, build, example, probe_iters)
