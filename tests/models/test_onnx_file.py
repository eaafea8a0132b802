"""Any PIDNet-like ONNX file (fp32, fp16, int8 QDQ) through onnxruntime and OpenVINO
(models/deploy/onnx_file.py): same logits as eager for fp32, clear errors for bad files."""
import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from models.calibration import randomize_bn, scale_logits
from models.deploy import describe_onnx, export_onnx, fold_batchnorm, prepare_onnx_file
from models.pidnet import PIDNet
from utils.errors import CheckpointError, DeviceError, ModelError

TOL = 1e-3
CLASSES = 5
RUNTIMES = ("onnxruntime", "openvino")


@functools.lru_cache(maxsize=None)
def _model():
    torch.manual_seed(0)
    model = PIDNet(num_classes=CLASSES, planes=8, ppm_planes=16, head_planes=16, augment=False, m=2, n=3)
    randomize_bn(model, 0)
    return scale_logits(model, model.final_layer.conv2, torch.randn(1, 3, 64, 96)).eval()


def _images(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _reference(images):
    with torch.inference_mode():
        return _model()(images)


def _relative_error(got, expected):
    return ((got - expected).norm() / expected.norm()).item()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """fp32 export, its fp16 conversion and a static int8 QDQ quantization (2 calibration images)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.transformers.float16 import convert_float_to_float16

    folder = tmp_path_factory.mktemp("onnx_files")
    fp32 = export_onnx(fold_batchnorm(_model()), folder / "fp32.onnx", _images(1, 3, 64, 96))
    fp16 = str(folder / "fp16.onnx")
    onnx.save(convert_float_to_float16(onnx.load(fp32), keep_io_types=True), fp16)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": _images(1, 3, 64, 96, seed=s).numpy()} for s in (2, 3)])

        def get_next(self):
            return next(self.batches, None)

    int8 = str(folder / "int8.onnx")
    quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return {"fp32": fp32, "fp16": fp16, "int8": int8}


def test_describe_reads_the_signature(files):
    info = describe_onnx(files["fp32"], num_classes=CLASSES)
    assert (info.input_name, info.output_name) == ("images", "logits")
    assert info.input_shape[1] == 3 and len(info.input_shape) == 4 and isinstance(info.input_shape[2], str)
    assert info.num_classes == CLASSES and info.precision == "fp32"
    assert describe_onnx(files["fp16"]).precision == "fp16"
    assert describe_onnx(files["int8"]).precision == "int8"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fp32_file_equals_eager_at_any_size(files, runtime):
    runner = prepare_onnx_file(files["fp32"], runtime, "cpu", threads=1, num_classes=CLASSES)
    assert runner.backend == runtime and runner.onnx_info.precision == "fp32"
    for images in (_images(1, 3, 100, 150), _images(2, 3, 72, 88, seed=2)):
        got, expected = runner(images), _reference(images)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got - expected).abs().max().item() < TOL


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fp16_and_int8_files_run_close_to_fp32(files, runtime):
    images = _images(1, 3, 64, 96, seed=4)
    expected = _reference(images)
    fp16 = prepare_onnx_file(files["fp16"], runtime, "cpu", num_classes=CLASSES)(images)
    assert fp16.dtype == torch.float32 and _relative_error(fp16, expected) < 0.05
    int8 = prepare_onnx_file(files["int8"], runtime, "cpu", num_classes=CLASSES)(images)
    # Random tiny model, 2 calibration images: int8 is coarse, yet far from unrelated scores
    # (an unrelated output has relative error ~1.4 and 1/5 argmax agreement).
    assert _relative_error(int8, expected) < 0.7
    assert (int8.argmax(1) == expected.argmax(1)).float().mean().item() > 0.5


def test_thread_count_is_honoured(files):
    for threads in (1, 2):
        ort_runner = prepare_onnx_file(files["fp32"], "onnxruntime", "cpu", threads=threads)
        assert ort_runner.session.get_session_options().intra_op_num_threads == threads
        ov_runner = prepare_onnx_file(files["fp32"], "openvino", "cpu", threads=threads)
        assert int(ov_runner.compiled.get_property("INFERENCE_NUM_THREADS")) == threads


def _graph_file(path, input_shape, output_shape, in_type=TensorProto.FLOAT):
    """A one-node ONNX file with the given signature (a Conv for rank 4, an Identity else)."""
    inputs = [helper.make_tensor_value_info("x", in_type, input_shape)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)]
    if len(input_shape) == 4 and len(output_shape) == 4:
        weight = helper.make_tensor("w", TensorProto.FLOAT, [output_shape[1], input_shape[1], 1, 1],
                                    np.ones(output_shape[1] * input_shape[1], np.float32))
        nodes, inits = [helper.make_node("Conv", ["x", "w"], ["y"])], [weight]
    else:
        nodes, inits = [helper.make_node("Identity", ["x"], ["y"])], []
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_bad_files_are_one_clear_error(files, tmp_path):
    with pytest.raises(CheckpointError, match="ONNX file not found"):
        prepare_onnx_file(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf\xff\xfe" * 10)
    with pytest.raises(CheckpointError, match="corrupt.onnx is not a (readable|valid) ONNX model"):
        prepare_onnx_file(corrupt)
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a (readable|valid) ONNX model"):
        prepare_onnx_file(text)
    flat = _graph_file(tmp_path / "flat.onnx", [1, 10], [1, 10])
    with pytest.raises(ModelError, match=r"shape \[1, 10\].*rank 4, 3 channels"):
        prepare_onnx_file(flat)
    gray = _graph_file(tmp_path / "gray.onnx", [1, 1, 8, 8], [1, CLASSES, 8, 8])
    with pytest.raises(ModelError, match="rank 4, 3 channels"):
        prepare_onnx_file(gray)
    integer = _graph_file(tmp_path / "int.onnx", [1, 3, 8, 8], [1, 3, 8, 8], in_type=TensorProto.INT64)
    with pytest.raises(ModelError, match="INT64 input"):
        prepare_onnx_file(integer)
    with pytest.raises(ModelError, match=f"predicts {CLASSES} classes, but 19 are expected"):
        prepare_onnx_file(files["fp32"], num_classes=19)
    fixed = _graph_file(tmp_path / "fixed.onnx", [1, 3, 8, 8], [1, CLASSES, 8, 8])
    runner = prepare_onnx_file(fixed, device="cpu", num_classes=CLASSES)
    assert runner(torch.ones(1, 3, 8, 8)).shape == (1, CLASSES, 8, 8)
    with pytest.raises(ModelError, match="fixed input shape.*dynamic axes"):
        runner(torch.ones(1, 3, 16, 16))


def test_bad_runtime_or_precision_is_one_clear_error(files):
    with pytest.raises(ModelError, match="unknown runtime 'tensorrt': use one of onnxruntime, openvino"):
        prepare_onnx_file(files["fp32"], "tensorrt")
    with pytest.raises(ModelError, match="unknown precision 'int4'"):
        prepare_onnx_file(files["fp32"], precision="int4")
    with pytest.raises(DeviceError, match="precision fp16 with onnxruntime needs TensorRT on a CUDA device"):
        prepare_onnx_file(files["fp32"], "onnxruntime", "cpu", precision="fp16")
    with pytest.raises(ModelError, match="OpenVINO runs the file as stored"):
        prepare_onnx_file(files["fp32"], "openvino", "cpu", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            prepare_onnx_file(files["fp32"], "onnxruntime", "cuda")


# ----------------------------------------------------------------------------- CUDA

def test_openvino_models_freed_in_creation_order_leave_the_signal_stack_valid(files):
    """OpenVINO swaps the compiling thread's sigaltstack; two models freed in creation order used to
    leave it on freed memory, and the next Python signal handler killed the process (SIGSEGV)."""
    import ctypes
    import gc
    import sys

    from models.deploy.runtimes import _StackT, compile_openvino

    if not sys.platform.startswith("linux"):
        pytest.skip("sigaltstack check is Linux-only")
    libc = ctypes.CDLL(None)

    def current():
        stack = _StackT()
        assert libc.sigaltstack(None, ctypes.byref(stack)) == 0
        return stack.ss_sp, stack.ss_flags, stack.ss_size

    before = current()
    first = compile_openvino(files["fp32"], torch.device("cpu"), 1)
    second = compile_openvino(files["fp32"], torch.device("cpu"), 1)
    assert current() == before
    del first
    gc.collect()
    del second
    gc.collect()
    assert current() == before


def _tensorrt_available():
    import onnxruntime as ort

    return "TensorrtExecutionProvider" in ort.get_available_providers()


@pytest.mark.gpu
def test_cuda_fp32_file_equals_eager(files):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
    images = _images(1, 3, 100, 150)
    runner = prepare_onnx_file(files["fp32"], "onnxruntime", "cuda", num_classes=CLASSES)
    got = runner(images.cuda())
    assert got.is_cuda and (got.cpu() - _reference(images)).abs().max().item() < TOL


@pytest.mark.gpu
@pytest.mark.parametrize("kind,precision,bound", [("fp32", "fp16", 0.05), ("int8", "fp32", 0.7)])
def test_cuda_tensorrt_fp16_and_int8(files, kind, precision, bound):
    if not _tensorrt_available():
        pytest.skip("onnxruntime has no TensorrtExecutionProvider here (onnxruntime-gpu with TensorRT)")
    images = _images(1, 3, 64, 96, seed=4)
    runner = prepare_onnx_file(files[kind], "onnxruntime", "cuda", precision=precision, num_classes=CLASSES)
    assert runner.session.get_providers()[0] == "TensorrtExecutionProvider"
    got = runner(images.cuda()).cpu()
    assert _relative_error(got, _reference(images)) < bound
