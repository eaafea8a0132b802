"""Post-training quantization of an exported segmenter: int8 (static, calibrated) and fp16.

The input is always an fp32 ONNX file with one NCHW float input and the main logits as its
first output (what :func:`models.deploy.export_onnx` writes). Two engines write the same kind
of file, a QDQ ONNX (QuantizeLinear/DequantizeLinear pairs around the quantized operators)
that onnxruntime and OpenVINO both execute with int8 kernels:

``onnxruntime``  ``onnxruntime.quantization.quantize_static``: calibrated ranges (the moving
                 average of per-image min/max by default), uint8 activations and per-channel
                 int8 weights.
``openvino``     NNCF ``nncf.quantize`` on the ONNX model (its ONNX backend): NNCF's
                 statistics, bias correction and per-channel int8 weights.

fp16 (:func:`convert_fp16`) is onnxruntime's float16 converter (inputs/outputs kept float32);
:func:`fp16_unsupported_reason` says whether a device computes it faster than fp32.

Mixed precision (which layers stay float) is :mod:`models.deploy.mixed_precision`.
"""
import contextlib
import io
import logging
import math
import os
import shutil
import tempfile

import numpy as np

from utils.errors import ModelError

logger = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "openvino")
RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("int8", "fp16")
# onnxruntime calibration: name -> (CalibrationMethod name, extra options). MinMax takes the
# extremes over all images, so one outlier image widens a range for every other; the moving
# average of per-image extremes and the 99.999th percentile are robust to that.
CALIBRATIONS = {"minmax": ("MinMax", {}), "moving-average": ("MinMax", {"CalibMovingAverage": True}),
                "percentile": ("Percentile", {"CalibPercentile": 99.999}), "entropy": ("Entropy", {})}
# Measured on the demo's trained PIDNet-S, 64 calibration images (benchmarks/RESULTS.md):
# int8 mIoU -0.11 points with moving-average, -3.6 with minmax, -4.5 with percentile.
DEFAULT_CALIBRATION = "moving-average"


# --------------------------------------------------------------------------- checks

def load_segmenter_onnx(path, num_classes=None):
    """Check an ONNX segmenter (:func:`models.deploy.onnx_file.describe_onnx`) and load it:
    ``(onnx.ModelProto, input_name, output_name)``.

    Raises:
        CheckpointError: the file is missing or not ONNX.
        ModelError: not a PIDNet-like segmenter, or another class count than ``num_classes``.
    """
    import onnx

    from models.deploy.onnx_file import describe_onnx

    info = describe_onnx(path, num_classes)
    return onnx.load(os.fspath(path)), info.input_name, info.output_name


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
    """An ONNX file on the CPU through :func:`models.deploy.onnx_file.prepare_onnx_file`:
    ``model(NCHW float32 array)`` returns the main logits as a float32 array."""

    def __init__(self, path, runtime="onnxruntime", threads=None):
        import torch

        from models.deploy.onnx_file import prepare_onnx_file

        self.path, self.runtime = os.fspath(path), runtime
        self._runner = prepare_onnx_file(path, runtime, torch.device("cpu"), threads=threads)

    def __call__(self, images):
        import torch

        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        return self._runner(images).numpy().astype(np.float32, copy=False)


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
def ort_quantize(fp32_path, out_path, images, input_name, exclude=(), only=None, cache_path=None,
                 calibration=DEFAULT_CALIBRATION):
    """onnxruntime's static QDQ quantization of ``fp32_path`` -> ``out_path``: ``only`` / ``exclude``
    name the nodes quantized / kept float, ``cache_path`` a calibration-range cache to reuse."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    if calibration not in CALIBRATIONS:
        raise ModelError(f"unknown calibration '{calibration}': use one of {', '.join(CALIBRATIONS)}")
    method, extra = CALIBRATIONS[calibration]
    reader = type("Reader", (_ArrayReader, CalibrationDataReader), {})(images, input_name)
    # onnxruntime logs a pre-processing hint at WARNING on every call: the exported model is
    # already BN-folded and constant-folded, so the hint is noise here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        # The histogram calibrators print progress to stdout, where the CLI keeps one summary line.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(os.fspath(fp32_path), os.fspath(out_path), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=list(only) if only is not None else None,
                            nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod[method],
                            extra_options=dict(extra),
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


def quantize_int8(fp32_path, out_path, images, engine="onnxruntime", exclude=(), cache_path=None,
                  calibration=DEFAULT_CALIBRATION):
    """Static int8 QDQ quantization of ``fp32_path`` calibrated on ``images`` -> ``out_path``.

    Args:
        images: ``N x 3 x H x W`` float32 calibration images (preprocessed as for inference).
        engine: ``onnxruntime`` or ``openvino`` (NNCF).
        exclude: node names kept in float (mixed precision).
        cache_path: onnxruntime only: a calibration-range cache file (written on first use,
            reused after), so that repeated quantizations of one model calibrate once.
        calibration: onnxruntime only: one of ``CALIBRATIONS`` (NNCF has its own statistics).
    """
    if engine not in ENGINES:
        raise ModelError(f"unknown quantization engine '{engine}': use one of {', '.join(ENGINES)}")
    if len(images) == 0:
        raise ModelError("no calibration images: int8 quantization needs at least one")
    _, input_name, _ = load_segmenter_onnx(fp32_path)
    if engine == "onnxruntime":
        ort_quantize(fp32_path, out_path, images, input_name, exclude=exclude, cache_path=cache_path,
                     calibration=calibration)
    else:
        _nncf_quantize(fp32_path, out_path, images, input_name, exclude=exclude)
    return os.fspath(out_path)


def fp16_unsupported_reason(device):
    """Why fp16 cannot run fast on ``device`` here, or None when it can.

    On CPU, fp16 arithmetic needs native fp16 units (OpenVINO reports ``FP16`` among the CPU's
    optimization capabilities); elsewhere the runtimes convert every layer back to fp32, which is
    slower than fp32. On CUDA it needs onnxruntime's CUDA provider.
    """
    if device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return ("fp16 on CUDA runs through onnxruntime's CUDA provider, which this onnxruntime lacks: "
                    "pip install onnxruntime-gpu, or use --precision int8 on the CPU")
        return None
    try:
        import openvino as ov

        capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except (ImportError, RuntimeError) as exc:
        return f"cannot query this CPU's fp16 support ({exc}): use --precision int8"
    if "FP16" in capabilities:
        return None
    return (f"this CPU has no native fp16 arithmetic (capabilities {', '.join(capabilities)}), so an fp16 model "
            "would run slower than fp32: use --precision int8, or --device cuda on a GPU machine")


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
