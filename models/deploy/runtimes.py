"""The ONNX runtimes: onnxruntime (CPU; CUDA and TensorRT providers) and OpenVINO (CPU).

Each ``*_run_fn`` turns a session into ``f(images NCHW tensor) -> float32 logits tensor`` on the
images' device; :mod:`models.deploy.runners` and :mod:`models.deploy.onnx_file` wrap these.
"""
import contextlib
import ctypes
import logging
import os
import sys

import numpy as np
import torch

from utils.errors import DeviceError, ModelError

logger = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")


def onnxruntime_available():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_available():
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def check_runtime(runtime):
    """``runtime`` if it is known and installed, else a one-line error naming the fix."""
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime '{runtime}': use one of {', '.join(RUNTIMES)}")
    available = onnxruntime_available() if runtime == "onnxruntime" else openvino_available()
    if not available:
        package = "onnxruntime (or onnxruntime-gpu)" if runtime == "onnxruntime" else "openvino"
        raise ModelError(f"runtime '{runtime}' needs the {runtime} package: pip install {package}, "
                         f"or use --runtime {'openvino' if runtime == 'onnxruntime' else 'onnxruntime'}")
    return runtime


def _threads(threads):
    return int(threads or torch.get_num_threads())


# --------------------------------------------------------------------------- onnxruntime

def ort_providers(device, precision="fp32", int8=False):
    """ORT execution providers for ``device``.

    On CUDA: the CUDA provider (onnxruntime-gpu); TensorRT's provider goes first when fp16 is
    asked for or the model is int8 (QDQ), the two things only TensorRT runs fast. On the CPU
    only fp32 compute is offered (an int8 QDQ file runs as int8 there by itself).
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type != "cuda":
        if precision != "fp32":
            raise DeviceError(f"precision {precision} with onnxruntime needs TensorRT on a CUDA device "
                              f"(this run is on {device}, providers: {', '.join(available)}): use "
                              "--precision fp32, or an fp16 ONNX file made by tools/quantize.py --precision fp16")
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise DeviceError("the onnxruntime backend on CUDA needs onnxruntime-gpu "
                          "(CUDAExecutionProvider is not available): pip install onnxruntime-gpu, "
                          "or use --backend fused")
    index = device.index or 0
    providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if precision == "fp16" or int8:
        if "TensorrtExecutionProvider" in available:
            options = {"device_id": index, "trt_fp16_enable": precision == "fp16", "trt_int8_enable": bool(int8)}
            providers.insert(0, ("TensorrtExecutionProvider", options))
        elif precision == "fp16":
            raise DeviceError("precision fp16 with onnxruntime needs its TensorRT execution provider "
                              "(onnxruntime-gpu built with TensorRT, and TensorRT installed): install "
                              "them, or use --precision fp32, or --backend fused --precision fp16")
        else:
            logger.warning("no TensorRT execution provider: the int8 (QDQ) model runs on the CUDA "
                           "provider with float kernels (correct, not faster)")
    elif precision not in ("fp32", "fp16"):
        raise DeviceError(f"precision {precision} is not offered by onnxruntime: use fp32 or fp16")
    return providers


def create_ort_session(onnx_path, device, threads=None, precision="fp32", int8=False):
    """An ORT session with every graph optimisation and ``threads`` intra-op threads.

    ``threads`` defaults to ``torch.get_num_threads()`` (the physical cores unless the user set
    it), so that ORT and torch timings use the same cores. Operators run sequentially: PIDNet's
    branches are too small for inter-op parallelism to pay on CPU.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = _threads(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ort_providers(device, precision, int8)
    return ort.InferenceSession(os.fspath(onnx_path), options, providers=providers)


def provider_names(session):
    return list(session.get_providers())


class _OrtCudaRunner:
    """Feeds CUDA tensors to ORT through IO binding (no host round trip)."""

    def __init__(self, session, device, input_name, output_name):
        self.session, self.device = session, device
        self.input_name, self.output_name = input_name, output_name
        self.out_shapes = {}

    def __call__(self, images):
        images = images.contiguous().float()
        binding = self.session.io_binding()
        index = self.device.index or 0
        binding.bind_input(self.input_name, "cuda", index, np.float32, tuple(images.shape), images.data_ptr())
        key = tuple(images.shape)
        if key not in self.out_shapes:
            binding.bind_output(self.output_name, "cuda", index)
            torch.cuda.current_stream(self.device).synchronize()
            self.session.run_with_iobinding(binding)
            self.out_shapes[key] = tuple(binding.get_outputs()[0].shape())
            binding = self.session.io_binding()
            binding.bind_input(self.input_name, "cuda", index, np.float32, key, images.data_ptr())
        out = torch.empty(self.out_shapes[key], dtype=torch.float32, device=self.device)
        binding.bind_output(self.output_name, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out


def ort_run_fn(session, device, input_name="images", output_name="logits", input_dtype=np.float32):
    """``images -> logits`` through ``session``; CUDA tensors stay on the GPU (float32 I/O)."""
    if device.type == "cuda" and np.dtype(input_dtype) == np.float32:
        return _OrtCudaRunner(session, device, input_name, output_name)

    def run(images):
        array = images.detach().cpu().contiguous().numpy().astype(input_dtype, copy=False)
        out = torch.from_numpy(session.run([output_name], {input_name: array})[0])
        return out.to(device=images.device, dtype=torch.float32)

    return run


# --------------------------------------------------------------------------- OpenVINO

def compile_openvino(onnx_path, device, threads=None):
    """An OpenVINO CPU model compiled from the ONNX file, with ``threads`` inference threads.

    fp32 inference precision is pinned: on CPUs with bf16 units OpenVINO would otherwise run
    float layers in bf16 by default, and this backend promises the eager logits. A QDQ (int8)
    file still runs its quantized layers in int8. One stream, latency hint: batch-1 serving.
    """
    if device.type != "cpu":
        raise DeviceError(f"OpenVINO runs on the CPU here (got --device {device}): use --device cpu, "
                          "or --runtime onnxruntime / --backend onnxruntime on CUDA")
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": _threads(threads), "INFERENCE_PRECISION_HINT": "f32",
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    with keep_signal_stack():
        return core.compile_model(core.read_model(os.fspath(onnx_path)), "CPU", config)


class _StackT(ctypes.Structure):  # Linux ``stack_t`` (sigaltstack(2))
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def keep_signal_stack():
    """Give the calling thread back its alternate signal stack after OpenVINO has replaced it.

    OpenVINO's CPU plugin (2026.4) installs its own sigaltstack on the thread that compiles a
    model and puts back the one it saw when that model is destroyed. Two compiled models freed in
    creation order leave the thread on the first model's freed stack; the next Python signal
    handler (SA_ONSTACK: SIGCHLD of a subprocess, SIGINT, ...) then makes the kernel kill the
    process with SIGSEGV (si_code SI_KERNEL) and no traceback. Measured in the test suite: the
    pytest process died that way, at a different test each run. Restoring the caller's stack at
    once makes every model's later "restore" a no-op.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _StackT()
    if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(saved), None)


def openvino_run_fn(compiled, input_dtype=np.float32):
    """``images -> logits`` through one infer request of ``compiled`` (CPU tensors)."""
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(images):
        array = images.detach().cpu().contiguous().numpy().astype(input_dtype, copy=False)
        # share_outputs=False: the result is a copy, not a view the next call overwrites.
        out = request.infer({0: array}, share_inputs=True, share_outputs=False)[output]
        return torch.from_numpy(np.asarray(out)).to(device=images.device, dtype=torch.float32)

    return run
