"""int8 / fp16 quantization of an exported segmenter (models/deploy/quantize.py).

The model is the ``trained_tiny`` fixture (tests/conftest.py): a narrow PIDNet briefly trained on
synthetic scenes, so its activations and logits have trained-model statistics.
"""
import math
import os

import numpy as np
import onnx
import pytest

from models.deploy import mixed_precision as mp
from models.deploy import quantize as q
from utils.errors import CheckpointError, ModelError, UsageError

# Logits SNR that int8 must beat on the trained tiny model (it measures ~17-20 dB with both
# engines; a broken scale, zero point or missing per-channel weights gives < 5 dB).
INT8_MIN_SNR_DB = 12.0
FP16_MIN_SNR_DB = 45.0


@pytest.fixture(scope="module")
def setup(trained_tiny):
    calib = trained_tiny["images"][:6]
    evals = trained_tiny["images"][8:11]
    reference = q.run_images(q.OnnxModel(trained_tiny["onnx"], threads=1), evals)
    return trained_tiny["onnx"], calib, evals, reference


def test_snr_db():
    ref = np.array([3.0, -4.0])
    assert q.snr_db(ref, ref) == math.inf
    assert q.snr_db(ref, ref * 1.1) == pytest.approx(20.0)
    assert q.snr_db(ref, np.zeros(2)) == pytest.approx(0.0)


@pytest.mark.parametrize("engine", q.ENGINES)
def test_int8_snr_on_trained_model_under_both_runtimes(engine, setup, tmp_path):
    fp32, calib, evals, reference = setup
    path = q.quantize_int8(fp32, tmp_path / "int8.onnx", calib, engine)
    model = onnx.load(path)
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Per-channel weights: the conv weights' (de)quantization scales are vectors, not scalars.
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    sizes.update({node.output[0]: int(np.prod(node.attribute[0].t.dims)) for node in model.graph.node
                  if node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims})
    conv_weights = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
    producers = {out: node for node in model.graph.node for out in node.output}
    per_channel = [name for name in conv_weights if name in producers
                   and producers[name].op_type == "DequantizeLinear" and sizes.get(producers[name].input[1], 1) > 1]
    assert len(per_channel) >= len(conv_weights) // 2, (len(per_channel), len(conv_weights))
    snrs = {runtime: q.logits_snr(path, evals, reference, runtime, threads=1) for runtime in q.RUNTIMES}
    assert min(snrs.values()) > INT8_MIN_SNR_DB, snrs
    assert os.path.getsize(path) < 0.5 * os.path.getsize(fp32)


def test_int8_is_deterministic(setup, tmp_path):
    fp32, calib, _, _ = setup
    a = onnx.load(q.quantize_int8(fp32, tmp_path / "a.onnx", calib))
    b = onnx.load(q.quantize_int8(fp32, tmp_path / "b.onnx", calib))
    c = onnx.load(q.quantize_int8(fp32, tmp_path / "c.onnx", calib[:2]))

    def tensors(model):
        return {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}

    ta, tb, tc = tensors(a), tensors(b), tensors(c)
    assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
    # Other calibration images give other activation ranges.
    assert any(not np.array_equal(ta[k], tc[k]) for k in ta if k.endswith("_scale"))


def test_fp16_keeps_float32_io_and_accuracy(setup, tmp_path):
    fp32, _, evals, reference = setup
    path = q.convert_fp16(fp32, tmp_path / "fp16.onnx")
    model, _, _ = q.load_segmenter_onnx(path, 19)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert q.logits_snr(path, evals, reference, threads=1) > FP16_MIN_SNR_DB


@pytest.mark.slow
def test_mixed_keeps_sensitive_layers_in_float_and_raises_snr(setup, tmp_path):
    fp32, calib, evals, reference = setup
    full = q.logits_snr(q.quantize_int8(fp32, tmp_path / "full.onnx", calib), evals, reference, threads=1)
    model, _, _ = q.load_segmenter_onnx(fp32)
    _, calibrated = mp.calibrate_ranges(fp32, calib, str(tmp_path))
    layers = mp.quantizable_layers(model, calibrated)
    assert len(layers) < len(mp.quantizable_layers(model))  # shape arithmetic is not a layer
    # A dozen layers keep the test short; the first and last ones are classically sensitive.
    chosen = layers[:6] + layers[-6:]
    sensitivity = mp.layer_sensitivity(fp32, calib, evals, reference, str(tmp_path), layers=chosen, threads=1)
    assert set(sensitivity) == set(chosen) and all(s > full - 1.0 for s in sensitivity.values())

    def snr_with(excluded):
        path = q.quantize_int8(fp32, tmp_path / "trial.onnx", calib, exclude=excluded)
        return q.logits_snr(path, evals, reference, threads=1)

    best = snr_with(chosen)  # all twelve in float: the most the search can reach here
    assert best > full
    target = (full + best) / 2
    excluded, snr, trials = mp.recommend_float_layers(sensitivity, snr_with, target)
    assert len(excluded) >= 1 and snr >= target > full
    assert excluded == sorted(sensitivity, key=lambda n: (sensitivity[n], n))[:len(excluded)]
    assert dict(trials)[len(excluded)] == snr


def test_recommend_float_layers_finds_the_smallest_count():
    sensitivity = {f"l{i}": float(i) for i in range(20)}
    calls = []

    def snr_with(excluded):
        calls.append(len(excluded))
        return 10.0 + len(excluded)  # monotonic: 7 layers reach 17 dB

    excluded, snr, _ = mp.recommend_float_layers(sensitivity, snr_with, 17.0)
    assert excluded == [f"l{i}" for i in range(7)] and snr == 17.0
    assert len(calls) <= 8  # doubling + bisection, not one trial per layer
    assert mp.recommend_float_layers(sensitivity, snr_with, 5.0)[0] == []
    everything, reached, _ = mp.recommend_float_layers(sensitivity, snr_with, 79.0)
    assert len(everything) == 20 and reached == 30.0


def test_bad_onnx_files_are_clear_errors(tmp_path, vector_onnx):
    with pytest.raises(CheckpointError, match="ONNX file not found: .*missing.onnx"):
        q.load_segmenter_onnx(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt.onnx is not a readable ONNX model"):
        q.load_segmenter_onnx(corrupt)
    with pytest.raises(ModelError, match=r"takes input 'x' of shape \[1, 10\]: a segmenter"):
        q.load_segmenter_onnx(vector_onnx)


def test_wrong_class_count_and_snr_range(trained_tiny):
    with pytest.raises(ModelError, match="predicts 19 classes, but 11 are expected"):
        q.load_segmenter_onnx(trained_tiny["onnx"], 11)
    for bad in (0.0, 200.0, float("nan")):
        with pytest.raises(UsageError, match="--min-snr .* out of range"):
            mp.check_min_snr(bad)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with q.AtomicDir(final) as out:
            (open(os.path.join(out.path, "half.onnx"), "wb")).close()
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with q.AtomicDir(final) as out:
        open(os.path.join(out.path, "model.onnx"), "wb").close()
        out.commit()
    assert os.listdir(final) == ["model.onnx"] and os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
def test_other_calibrations(calibration, setup, tmp_path, capfd):
    fp32, calib, evals, reference = setup
    path = q.quantize_int8(fp32, tmp_path / "int8.onnx", calib, calibration=calibration)
    assert q.logits_snr(path, evals, reference, threads=1) > INT8_MIN_SNR_DB
    assert capfd.readouterr().out == ""  # onnxruntime's histogram progress stays off stdout
    with pytest.raises(ModelError, match="unknown calibration 'kl'"):
        q.quantize_int8(fp32, tmp_path / "x.onnx", calib, calibration="kl")
