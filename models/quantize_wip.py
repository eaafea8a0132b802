"""Post-training quantization of an exported segmenter: int8 (static, calibrated) and fp16.

The input is always an fp32 ONNX file with one NCHW float input and the main logits as its
first output (what :func:`models.deploy.export_onnx` writes). Two engines write the same kind
of file, a QDQ ONNX (QuantizeLinear/DequantizeLinear pairs around the quantized operators)
that onnxruntime and OpenVINO both execute with int8 kernels:

``onnxruntime``  ``onnxruntime.quantization.quantize_static``: MinMax calibration, int8
                 activations and per-channel int8 weights.
``openvino``     NNCF ``nncf.quantize`` on the ONNX model (its ONNX backend): NNCF's
                 statistics, bias correction and per-channel int8 weights.

fp16 (:func:`convert_fp16`) is onnxruntime's float16 converter (inputs/outputs kept float32).

Mixed precision, offline (NetsPresso's "recommend"): :func:`layer_sensitivity` quantizes one
weighted layer at a time and measures the SNR of the main logits against fp32;
:func:`recommend_float_layers` then keeps the most sensitive layers in float until the whole
model's logits reach the requested SNR. Sensitivity is always measured with onnxruntime
(one calibration, cached, then one cheap quantization per layer); the final model is made by
the chosen engine with those layers excluded.
"""
import logging
import math
import os
import shutil
import tempfile

import numpy as np

from utils.errors import CheckpointError, ModelError

logger = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "openvino")
RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("int8", "fp16")
# The operators that carry quantization error in a QDQ PIDNet (weights and/or activations):
# the units of the sensitivity analysis and of mixed precision. Conv alone is not enough:
# int8 Add/Mul/Concat/Resize outputs cost PIDNet-S as much logits SNR as all its convs.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "Resize",
             "BatchNormalization", "Sigmoid", "AveragePool", "GlobalAveragePool", "MaxPool")
# SNR requests outside this range are typos: 0 dB is noise as loud as the signal, and fp32
# rounding of two computation orders already stops near 100-140 dB.
MIN_SNR_RANGE = (1.0, 80.0)


# --------------------------------------------------------------------------- checks

def load_segmenter_onnx(path, num_classes=None):
    """Load and check an ONNX segmenter: ``(onnx.ModelProto, input_name, output_name)``.

    Raises:
        CheckpointError: the file is missing, unreadable or not a valid ONNX model.
        ModelError: it is not an image segmenter (one 4-D float input with 3 channels, a 4-D
            first output with ``num_classes`` channels when the file states them).
    """
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"ONNX file not found: {path}. Export one with tools/export_onnx.py "
                              "or pass --cfg ... TEST.MODEL_FILE ckpt instead of --onnx")
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, OSError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {first[:160]}): "
                              "re-export it with tools/export_onnx.py") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or not model.graph.output:
        raise ModelError(f"{path} is not a PIDNet-like segmenter: it has {len(inputs)} inputs and "
                         f"{len(model.graph.output)} outputs (expected one NCHW image input and the logits "
                         "as the first output); export the model with tools/export_onnx.py")
    image, logits = inputs[0], model.graph.output[0]
    in_dims = _dims(image)
    out_dims = _dims(logits)
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    if (image.type.tensor_type.elem_type not in float_types or len(in_dims) != 4
            or in_dims[1] not in (3, None)):
        raise ModelError(f"{path} is not an image segmenter: its input '{image.name}' has shape "
                         f"{_shape_text(in_dims)} (expected float N x 3 x H x W); export a segmenter "
                         "with tools/export_onnx.py")
    if len(out_dims) != 4:
        raise ModelError(f"{path} is not a segmenter: its first output '{logits.name}' has shape "
                         f"{_shape_text(out_dims)} (expected N x classes x H x W logits)")
    if num_classes is not None and out_dims[1] is not None and out_dims[1] != num_classes:
        raise ModelError(f"{path} predicts {out_dims[1]} classes but DATASET.NUM_CLASSES is {num_classes}: "
                         "use the config the model was trained with")
    return model, image.name, logits.name


def _dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _shape_text(dims):
    return "x".join("?" if d is None else str(d) for d in dims) or "scalar"


def quantizable_layers(model, calibrated=None):
    """Names of the nodes of ``model`` that int8 quantization touches, in graph order.

    ``calibrated`` (tensor names with a calibration range) drops the nodes that compute
    integer shapes (the Concat/Mul of Resize sizes), which are never quantized.
    """
    return [node.name for node in model.graph.node if node.op_type in LAYER_OPS
            and (calibrated is None or all(name in calibrated for name in node.output))]


def check_min_snr(value):
    from utils.errors import ConfigError

    low, high = MIN_SNR_RANGE
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"--min-snr {value} is out of range: give a logits SNR in dB between {low:g} "
                          f"and {high:g} (int8 PIDNet typically reaches 20-35 dB)")
    return float(value)


# --------------------------------------------------------------------------- running

def snr_db(reference, test):
    """Signal-to-noise ratio of ``test`` against ``reference`` in dB (inf when identical)."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((reference - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


class OnnxModel:
    """An ONNX file run by onnxruntime or OpenVINO on the CPU: ``model(NCHW float32 array)``
    returns the first output (the main logits) as a float32 array."""

    def __init__(self, path, runtime="onnxruntime", threads=None):
        if runtime not in RUNTIMES:
            raise ModelError(f"unknown runtime '{runtime}': use one of {', '.join(RUNTIMES)}")
        self.path, self.runtime = os.fspath(path), runtime
        threads = int(threads or _default_threads())
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
            self.input_name = self._session.get_inputs()[0].name
            self._run = lambda x: self._session.run(None, {self.input_name: x})[0]
        else:
            import openvino as ov

            core = ov.Core()
            # f32 inference precision: by default OpenVINO runs fp32 models in bf16 on CPUs that
            # have it, which would hide the quantization error behind bf16's.
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_PRECISION_HINT": "f32"}
            self._compiled = core.compile_model(self.path, "CPU", config)
            self._run = lambda x: self._compiled(x)[0]

    def __call__(self, images):
        return np.asarray(self._run(np.ascontiguousarray(images, dtype=np.float32)), dtype=np.float32)


def _default_threads():
    import torch

    return torch.get_num_threads()


def run_images(model, images):
    """``model`` on each image (batch 1, as deployed); the outputs stacked."""
    return np.concatenate([model(images[i:i + 1]) for i in range(len(images))])


def logits_snr(path, images, reference, runtime="onnxruntime", threads=None):
    """SNR (dB) of the logits of the ONNX file at ``path`` vs ``reference`` on ``images``."""
    return snr_db(reference, run_images(OnnxModel(path, runtime, threads), images))


# --------------------------------------------------------------------------- engines

class _ArrayReader:
    """onnxruntime CalibrationDataReader over an ``N x 3 x H x W`` array, one image per batch."""

    def __init__(self, images, input_name):
        self.images, self.input_name, self.index = images, input_name, 0

    def get_next(self):
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.input_name: np.ascontiguousarray(self.images[self.index - 1:self.index], dtype=np.float32)}

    def rewind(self):
        self.index = 0

    def __len__(self):
        return len(self.images)


# uint8 activations, int8 per-channel weights: the pairing that OpenVINO executes with the same
# result as onnxruntime (int8 activations lost ~10 dB of logits SNR there on PIDNet-S).
def _ort_quantize(fp32_path, out_path, images, input_name, exclude=(), only=None, cache_path=None):
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    reader = type("Reader", (_ArrayReader, CalibrationDataReader), {})(images, input_name)
    # onnxruntime logs a pre-processing hint at WARNING on every call: the exported model is
    # already BN-folded and constant-folded, so the hint is noise here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(os.fspath(fp32_path), os.fspath(out_path), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=list(only) if only is not None else None,
                        nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod.MinMax,
                        calibration_cache_path=os.fspath(cache_path) if cache_path else None)
    finally:
        root.setLevel(level)


def _nncf_quantize(fp32_path, out_path, images, input_name, exclude=(), seed=0):
    import nncf
    import onnx

    model = onnx.load(os.fspath(fp32_path))
    items = [np.ascontiguousarray(images[i:i + 1], dtype=np.float32) for i in range(len(images))]
    dataset = nncf.Dataset(items, lambda item: {input_name: item})
    ignored = nncf.IgnoredScope(names=list(exclude), validate=False) if exclude else None
    kwargs = dict(subset_size=len(items), preset=nncf.QuantizationPreset.MIXED)
    if ignored is not None:
        kwargs["ignored_scope"] = ignored
    _quiet_nncf()
    quantized = nncf.quantize(model, dataset, **kwargs)
    onnx.save(quantized, os.fspath(out_path))


def _quiet_nncf():
    # NNCF logs progress bars and INFO lines at import/run time; our CLI prints one summary line.
    from nncf.common.logging import nncf_logger

    nncf_logger.setLevel(logging.WARNING)


def quantize_int8(fp32_path, out_path, images, engine="onnxruntime", exclude=(), cache_path=None):
    """Static int8 QDQ quantization of ``fp32_path`` calibrated on ``images`` -> ``out_path``.

    Args:
        images: ``N x 3 x H x W`` float32 calibration images (preprocessed as for inference).
        engine: ``onnxruntime`` or ``openvino`` (NNCF).
        exclude: node names kept in float (mixed precision).
        cache_path: onnxruntime only: a calibration-range cache file (written on first use,
            reused after), so that repeated quantizations of one model calibrate once.
    """
    if engine not in ENGINES:
        raise ModelError(f"unknown quantization engine '{engine}': use one of {', '.join(ENGINES)}")
    if len(images) == 0:
        raise ModelError("no calibration images: int8 quantization needs at least one")
    _, input_name, _ = load_segmenter_onnx(fp32_path)
    if engine == "onnxruntime":
        _ort_quantize(fp32_path, out_path, images, input_name, exclude=exclude, cache_path=cache_path)
    else:
        _nncf_quantize(fp32_path, out_path, images, input_name, exclude=exclude)
    return os.fspath(out_path)


def convert_fp16(fp32_path, out_path):
    """fp16 weights and activations (inputs and outputs stay float32) -> ``out_path``.

    Resize's scales and other shape inputs stay float32: the converter's default block list
    keeps the operators that need it.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(os.fspath(fp32_path))
    half = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, os.fspath(out_path))
    return os.fspath(out_path)


# --------------------------------------------------------------------------- mixed precision

def calibrate_ranges(fp32_path, images, workdir):
    """Calibrate every tensor of ``fp32_path`` once (onnxruntime MinMax) into ``workdir``'s range
    cache; returns the cache path and the names of the calibrated (float) tensors."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    _, input_name, _ = load_segmenter_onnx(fp32_path)
    cache = os.path.join(workdir, "calibration_ranges.json")
    if not os.path.isfile(cache):
        _ort_quantize(fp32_path, os.path.join(workdir, "all_layers.onnx"), images, input_name, cache_path=cache)
    return cache, set(load_tensors_data(cache))


def layer_sensitivity(fp32_path, images, eval_images, reference, workdir, layers=None, threads=None,
                      progress=None):
    """``{layer: SNR dB}`` of the logits when only that layer is int8 (onnxruntime QDQ).

    One calibration over ``images`` (:func:`calibrate_ranges`), then one quantization per layer
    (``layers`` defaults to every :func:`quantizable_layers`), each run on ``eval_images`` and
    compared with ``reference`` (their fp32 logits).
    """
    model, input_name, _ = load_segmenter_onnx(fp32_path)
    cache, calibrated = calibrate_ranges(fp32_path, images, workdir)
    layers = quantizable_layers(model, calibrated) if layers is None else list(layers)
    result = {}
    for index, name in enumerate(layers):
        path = os.path.join(workdir, "one_layer.onnx")
        _ort_quantize(fp32_path, path, images, input_name, only=[name], cache_path=cache)
        result[name] = logits_snr(path, eval_images, reference, threads=threads)
        if progress:
            progress(index + 1, len(layers), name, result[name])
    return result


def recommend_float_layers(sensitivity, snr_with, min_snr):
    """The fewest most-sensitive layers to keep in float so that ``snr_with(excluded) >= min_snr``.

    ``sensitivity`` maps layer -> SNR when alone quantized (lower = more sensitive);
    ``snr_with(list_of_layers)`` quantizes everything else and returns the logits SNR. Layers
    are excluded in order of sensitivity: the count doubles until the target is met, then a
    bisection finds the smallest count (SNR grows almost monotonically with the count, and this
    needs O(log n) quantizations instead of n).

    Returns ``(excluded_layers, snr, trials)`` where ``trials`` is ``[(count, snr), ...]``.
    When even all layers in float cannot reach the target (impossible for an exact fp32
    fallback), all layers are returned with the SNR reached.
    """
    order = sorted(sensitivity, key=lambda name: (sensitivity[name], name))
    trials = {}

    def measure(count):
        if count not in trials:
            trials[count] = snr_with(order[:count])
        return trials[count]

    if measure(0) >= min_snr:
        return [], trials[0], sorted(trials.items())
    low, high = 0, 1
    while high < len(order) and measure(high) < min_snr:
        low, high = high, min(2 * high, len(order))
    if measure(high) < min_snr:
        return order[:high], trials[high], sorted(trials.items())
    while high - low > 1:
        middle = (low + high) // 2
        if measure(middle) >= min_snr:
            high = middle
        else:
            low = middle
    return order[:high], trials[high], sorted(trials.items())


# --------------------------------------------------------------------------- output folder

class AtomicDir:
    """A temporary folder next to ``final`` that becomes ``final`` on :meth:`commit`, or is
    deleted when the ``with`` block fails: a failed run leaves nothing behind."""

    def __init__(self, final, overwrite=False):
        self.final = os.path.abspath(os.fspath(final))
        self.overwrite = overwrite
        self.path = None

    def __enter__(self):
        parent = os.path.dirname(self.final)
        os.makedirs(parent, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix=f".{os.path.basename(self.final)}.", dir=parent)
        return self

    def commit(self):
        old = None
        if os.path.exists(self.final):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.final)}.old.", dir=os.path.dirname(self.final))
            os.rename(self.final, os.path.join(old, "previous"))
        os.rename(self.path, self.final)
        os.chmod(self.final, 0o777 & ~_umask())
        self.path = None
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb):
        if self.path and os.path.exists(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
        return False


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
