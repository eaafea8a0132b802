"""Mixed precision, offline (NetsPresso's "recommend"): which layers of an int8 model stay float.

:func:`layer_sensitivity` quantizes one weighted layer at a time and measures the SNR of the
main logits against fp32; :func:`recommend_float_layers` then keeps the most sensitive layers
in float until the whole model's logits reach the requested SNR; :func:`choose_float_layers`
runs both for ``tools/quantize.py --mixed``. Sensitivity is always measured with onnxruntime
(one calibration, cached, then one cheap quantization per layer); the final model is made by
the chosen engine with those layers excluded (:func:`models.deploy.quantize.quantize_int8`).
"""
import logging
import math
import os
import time

from models.deploy.quantize import DEFAULT_CALIBRATION, load_segmenter_onnx, logits_snr, ort_quantize, quantize_int8

logger = logging.getLogger(__name__)

# The operators that carry quantization error in a QDQ PIDNet (weights and/or activations):
# the units of the sensitivity analysis and of mixed precision. Conv alone is not enough:
# int8 Add/Mul/Concat/Resize outputs cost PIDNet-S as much logits SNR as all its convs.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "Resize",
             "BatchNormalization", "Sigmoid", "AveragePool", "GlobalAveragePool", "MaxPool")
# SNR requests outside this range are typos: 0 dB is noise as loud as the signal, and fp32
# rounding of two computation orders already stops near 100-140 dB.
MIN_SNR_RANGE = (1.0, 80.0)


def quantizable_layers(model, calibrated=None):
    """Names of the nodes of ``model`` that int8 quantization touches, in graph order.

    ``calibrated`` (tensor names with a calibration range) drops the nodes that compute
    integer shapes (the Concat/Mul of Resize sizes), which are never quantized.
    """
    return [node.name for node in model.graph.node if node.op_type in LAYER_OPS
            and (calibrated is None or all(name in calibrated for name in node.output))]


def check_min_snr(value):
    from utils.errors import UsageError

    low, high = MIN_SNR_RANGE
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise UsageError(f"--min-snr {value} is out of range: give a logits SNR in dB between {low:g} "
                          f"and {high:g} (int8 PIDNet typically reaches 20-35 dB)")
    return float(value)


def calibrate_ranges(fp32_path, images, workdir, calibration=DEFAULT_CALIBRATION):
    """Calibrate every tensor of ``fp32_path`` once (onnxruntime MinMax) into ``workdir``'s range
    cache; returns the cache path and the names of the calibrated (float) tensors."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    _, input_name, _ = load_segmenter_onnx(fp32_path)
    cache = os.path.join(workdir, "calibration_ranges.json")
    if not os.path.isfile(cache):
        ort_quantize(fp32_path, os.path.join(workdir, "all_layers.onnx"), images, input_name, cache_path=cache,
                     calibration=calibration)
    return cache, set(load_tensors_data(cache))


def layer_sensitivity(fp32_path, images, eval_images, reference, workdir, layers=None, threads=None,
                      progress=None, calibration=DEFAULT_CALIBRATION):
    """``{layer: SNR dB}`` of the logits when only that layer is int8 (onnxruntime QDQ).

    One calibration over ``images`` (:func:`calibrate_ranges`), then one quantization per layer
    (``layers`` defaults to every :func:`quantizable_layers`), each run on ``eval_images`` and
    compared with ``reference`` (their fp32 logits).
    """
    model, input_name, _ = load_segmenter_onnx(fp32_path)
    cache, calibrated = calibrate_ranges(fp32_path, images, workdir, calibration)
    layers = quantizable_layers(model, calibrated) if layers is None else list(layers)
    result = {}
    for index, name in enumerate(layers):
        path = os.path.join(workdir, "one_layer.onnx")
        ort_quantize(fp32_path, path, images, input_name, only=[name], cache_path=cache, calibration=calibration)
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


def choose_float_layers(fp32_path, images, snr_images, reference, workdir, engine, min_snr,
                        calibration=DEFAULT_CALIBRATION, threads=None):
    """The layers to keep in float for a logits SNR of ``min_snr`` dB, and what the report records.

    Sensitivity is measured on ``snr_images`` against ``reference`` (their fp32 logits); each
    trial quantizes with ``engine`` (onnxruntime reuses one calibration cache in ``workdir``).
    Returns ``{"float_layers", "layer_snr_db", "mixed"}``; a target still out of reach with every
    tried layer in float is a warning, not an error.
    """
    def progress(done, total, name, snr):
        logger.info("sensitivity %d/%d: %s %.1f dB", done, total, name, snr)

    start = time.perf_counter()
    sensitivity = layer_sensitivity(fp32_path, images, snr_images, reference, workdir, threads=threads,
                                    progress=progress, calibration=calibration)
    trial_path = os.path.join(workdir, "trial.onnx")

    def snr_with(excluded):
        quantize_int8(fp32_path, trial_path, images, engine, exclude=excluded,
                      cache_path=os.path.join(workdir, "calibration_ranges.json")
                      if engine == "onnxruntime" else None, calibration=calibration)
        return logits_snr(trial_path, snr_images, reference, threads=threads)

    exclude, snr, trials = recommend_float_layers(sensitivity, snr_with, min_snr)
    if snr < min_snr:
        logger.warning("--mixed: %.1f dB < --min-snr %.1f even with %d layers in float", snr, min_snr, len(exclude))
    return {"float_layers": exclude, "layer_snr_db": {k: round(v, 3) for k, v in sensitivity.items()},
            "mixed": {"min_snr_db": min_snr, "reached_snr_db": round(snr, 3),
                      "trials": [{"float_layers": c, "snr_db": round(s, 3)} for c, s in trials],
                      "seconds": round(time.perf_counter() - start, 1)}}
