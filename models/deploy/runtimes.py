"""Sessions of the ONNX runtimes: onnxruntime (CPU, CUDA providers)."""
import os

import torch

from utils.errors import DeviceError


def onnxruntime_available():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ort_providers(device):
    """ORT execution providers for ``device`` (CUDA provider first when it exists)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise DeviceError("the onnxruntime backend on CUDA needs onnxruntime-gpu "
                              "(CUDAExecutionProvider is not available): pip install onnxruntime-gpu, "
                              "or use --backend fused")
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_ort_session(onnx_path, device, threads=None):
    """An ORT session with every graph optimisation and ``threads`` intra-op threads.

    ``threads`` defaults to ``torch.get_num_threads()`` (the physical cores unless the user set
    it), so that ORT and torch timings use the same cores. Operators run sequentially: PIDNet's
    branches are too small for inter-op parallelism to pay on CPU.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(onnx_path), options, providers=ort_providers(device))
