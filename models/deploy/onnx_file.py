"""Run any PIDNet-like ONNX file (fp32, fp16 or int8 QDQ) with onnxruntime or OpenVINO.

A PIDNet-like segmenter takes one NCHW image tensor with 3 channels and returns class scores
``N x classes x h x w`` (our exports: the main logits at 1/8 resolution, dynamic batch/H/W).
:func:`describe_onnx` reads the file's signature and refuses anything else with one clear
line; :func:`prepare_onnx_file` returns the same :class:`InferenceRunner` as
:func:`models.deploy.prepare_inference`, so eval, custom and the speed tool treat a file and
a checkpoint alike.
"""
import dataclasses
import logging
import os

import numpy as np
import torch

from models.deploy import runtimes
from models.deploy.runners import InferenceRunner
from utils.cli import first_line
from utils.errors import CheckpointError, ModelError

logger = logging.getLogger(__name__)

# Operators that mark a quantized (int8) graph: QDQ pairs, or quantized operators.
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul"}
_EXPORT_HINT = "export one with tools/export_onnx.py (or tools/quantize.py)"


@dataclasses.dataclass(frozen=True)
class OnnxInfo:
    """The signature of a segmentation ONNX file. Shapes hold ints or symbolic names (str)."""
    path: str
    input_name: str
    input_dtype: np.dtype
    input_shape: tuple
    output_name: str
    output_shape: tuple
    precision: str  # "int8", "fp16" or "fp32": what the file stores

    @property
    def num_classes(self):
        classes = self.output_shape[1]
        return classes if isinstance(classes, int) else None


def _shape(value_info):
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _load(path):
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"ONNX file not found: {path}; check the path, or {_EXPORT_HINT}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, onnx ValueError/OSError: all mean "not ONNX"
        raise CheckpointError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {first_line(exc, 200)}); "
                              f"{_EXPORT_HINT}") from None
    if not model.graph.node or not model.graph.output:
        raise CheckpointError(f"{path} is not a valid ONNX model (empty graph): the file is corrupt "
                              f"or not ONNX; {_EXPORT_HINT}")
    return model


def describe_onnx(path, num_classes=None, output_index=1):
    """Read and check the signature of ``path``; returns :class:`OnnxInfo`.

    With several outputs, ``output_index`` picks the class scores (PIDNet(augment=True): 1).

    Raises:
        CheckpointError: the file is missing or not ONNX.
        ModelError: not a PIDNet-like segmenter (input not N x 3 x H x W float, output not
            rank 4, or ``num_classes`` given and the output has another class count).
    """
    import onnx

    model = _load(path)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    fix = "use the ONNX export of a PIDNet-like segmenter (tools/export_onnx.py)"
    if len(inputs) != 1:
        raise ModelError(f"{path} has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}): a segmenter "
                         f"takes one N x 3 x H x W image tensor; {fix}")
    image = inputs[0]
    in_shape = _shape(image)
    if len(in_shape) != 4 or (isinstance(in_shape[1], int) and in_shape[1] != 3):
        raise ModelError(f"{path} takes input '{image.name}' of shape {list(in_shape)}: a segmenter takes "
                         f"N x 3 x H x W images (rank 4, 3 channels); {fix}")
    elem = image.type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        raise ModelError(f"{path} takes {onnx.TensorProto.DataType.Name(elem)} input: a segmenter takes float32 "
                         f"or float16 images; {fix}")
    outputs = list(graph.output)
    chosen = outputs[0] if len(outputs) == 1 else outputs[output_index % len(outputs)]
    out_shape = _shape(chosen)
    if len(out_shape) != 4:
        raise ModelError(f"{path} returns '{chosen.name}' of shape {list(out_shape)}: a segmenter returns "
                         f"N x classes x h x w scores; {fix}")
    if num_classes is not None and isinstance(out_shape[1], int) and out_shape[1] != num_classes:
        raise ModelError(f"{path} predicts {out_shape[1]} classes, but {num_classes} are expected: use the "
                         f"ONNX file of a model trained for {num_classes} classes, or set the class count "
                         f"to {out_shape[1]} (DATASET.NUM_CLASSES)")
    ops = {node.op_type for node in graph.node}
    fp16 = elem == onnx.TensorProto.FLOAT16 or any(
        init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    precision = "int8" if ops & _INT8_OPS else "fp16" if fp16 else "fp32"
    dtype = np.float16 if elem == onnx.TensorProto.FLOAT16 else np.float32
    return OnnxInfo(os.fspath(path), image.name, np.dtype(dtype), in_shape, chosen.name, out_shape, precision)


def _checked(run, info, num_classes):
    """Wrap ``run`` with the checks only a call can make: fixed input sizes, symbolic class count."""
    fixed = [(axis, size) for axis, size in enumerate(info.input_shape) if isinstance(size, int)]
    checked = {"classes": num_classes is None or info.num_classes is not None}

    def call(images):
        for axis, size in fixed:
            if images.shape[axis] != size:
                raise ModelError(f"{info.path} has a fixed input shape {list(info.input_shape)}, got images "
                                 f"{list(images.shape)}: re-export with dynamic axes (tools/export_onnx.py) "
                                 "or feed that size")
        out = run(images)
        if not checked["classes"]:
            if out.dim() != 4 or out.shape[1] != num_classes:
                raise ModelError(f"{info.path} returns {list(out.shape)}, not {num_classes} class scores: use "
                                 f"the ONNX file of a model trained for {num_classes} classes")
            checked["classes"] = True
        return out

    return call


def prepare_onnx_file(path, runtime="onnxruntime", device=None, *, threads=None, precision="fp32",
                      num_classes=None, output_index=1):
    """A runner ``images -> class scores`` for the ONNX file ``path``.

    Args:
        runtime: ``onnxruntime`` (CPU; CUDA provider, TensorRT for fp16/int8 on CUDA) or
            ``openvino`` (CPU).
        device: ``torch.device`` or a name (``'cpu'``, ``'cuda'``, ``'auto'``/None).
        threads: intra-op / inference threads (default ``torch.get_num_threads()``).
        precision: ``fp32`` runs the file as stored (an int8 or fp16 file stays int8/fp16);
            ``fp16`` asks TensorRT to build fp16 kernels (CUDA with TensorRT only).
        num_classes: expected class count; another one is a :class:`ModelError`.

    Raises:
        ModelError: unknown/uninstalled runtime, a file that is not a segmenter, or a runtime
            that cannot load it. CheckpointError: missing or corrupt file. DeviceError: a
            device, provider or precision this machine does not have.
    """
    from utils.device import resolve_device

    runtimes.check_runtime(runtime)
    if precision not in ("fp32", "fp16"):
        raise ModelError(f"unknown precision '{precision}' for an ONNX file: use fp32 (as stored) or fp16 (TensorRT)")
    info = describe_onnx(path, num_classes, output_index)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if runtime == "onnxruntime":
        runtimes.ort_providers(device, precision, info.precision == "int8")  # a missing provider: one line
        try:
            session = runtimes.create_ort_session(path, device, threads, precision, info.precision == "int8")
        except Exception as exc:  # ORT's pybind exceptions (Fail, InvalidGraph, NotImplemented...)
            raise ModelError(f"onnxruntime cannot load {path} ({type(exc).__name__}: {first_line(exc, 200)}): "
                             "re-export the file, or try --runtime openvino") from None
        run = runtimes.ort_run_fn(session, device, info.input_name, info.output_name, info.input_dtype)
        details = f"providers={runtimes.provider_names(session)}"
        handle = ("session", session)
    else:
        if precision != "fp32":
            raise ModelError(f"--precision {precision} is for TensorRT on CUDA; OpenVINO runs the file as "
                             f"stored ({info.precision}): use --precision fp32 with --runtime openvino")
        try:
            compiled = runtimes.compile_openvino(path, device, threads)
        except RuntimeError as exc:  # OpenVINO reports unreadable/unsupported graphs as RuntimeError
            raise ModelError(f"OpenVINO cannot load {path} ({first_line(exc, 200)}): re-export the file, "
                             "or try --runtime onnxruntime") from None
        run = runtimes.openvino_run_fn(compiled, info.input_dtype)
        details = "device=CPU"
        handle = ("compiled", compiled)
    threads = int(threads or torch.get_num_threads())
    runner = InferenceRunner(runtime, device, _checked(run, info, num_classes), None,
                             f"file={os.path.basename(info.path)} ({info.precision}), {details}, "
                             f"precision={precision}, threads={threads}")
    runner.onnx_info = info
    setattr(runner, *handle)  # runner.session (onnxruntime) or runner.compiled (OpenVINO)
    logger.info("ONNX file %s (%s, input %s, output %s) on %s via %s", info.path, info.precision,
                list(info.input_shape), list(info.output_shape), device, runtime)
    return runner
