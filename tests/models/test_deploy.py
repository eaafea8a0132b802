"""Inference backends (models/deploy/): every backend gives the eager logits."""
import copy
import functools
import os

import pytest
import torch
import torch.fx
import torch.nn as nn

from models.deploy import runners as deploy_runners
from models.deploy import runtimes as deploy_runtimes
from models.deploy import (BACKENDS, auto_candidates, count_batchnorms, export_onnx, find_conv_bn_pairs,
                           fold_batchnorm, prepare_inference, select_output)
from models.pidnet import PIDNet
from models.calibration import randomize_bn, scale_logits
from utils.errors import DeviceError, ModelError

TOL = 1e-3
STRUCTURES = {"s": dict(m=2, n=3), "l": dict(m=3, n=4)}
# BatchNorms that precede ReLU + conv: nothing before them to fold into.
PRE_ACTIVATION_BN = ("final_layer.bn1", "seghead_p.bn1", "seghead_d.bn1", "spp.", "dfm.conv.0")


def tiny_pidnet(structure="s", augment=False, seed=0):
    return copy.deepcopy(_tiny_pidnet(structure, augment, seed))


@functools.lru_cache(maxsize=None)
def _tiny_pidnet(structure, augment, seed):
    torch.manual_seed(seed)
    model = PIDNet(num_classes=5, planes=8, ppm_planes=16, head_planes=16, augment=augment,
                   **STRUCTURES[structure])
    randomize_bn(model, seed)
    return scale_logits(model, model.final_layer.conv2, torch.randn(1, 3, 64, 96))


def reference(model, images):
    with torch.inference_mode():
        return select_output(model.eval()(images), 1)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return {"odd": torch.randn(1, 3, 100, 150, generator=generator),
            "other": torch.randn(2, 3, 72, 88, generator=generator)}


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_fold_batchnorm_keeps_class_and_only_pre_activation_bns(structure):
    model = tiny_pidnet(structure)
    before = count_batchnorms(model)
    folded = fold_batchnorm(model)
    assert type(folded) is PIDNet
    assert count_batchnorms(model) == before, "the input model must not be modified"
    assert find_conv_bn_pairs(folded) == []
    remaining = [name for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert remaining, "pre-activation BNs (heads, PPM, Bag) cannot be folded and must stay"
    assert all(name.startswith(PRE_ACTIVATION_BN) for name in remaining), remaining
    assert len(remaining) < before / 4
    # Every conv that a BN used to follow now carries the bias.
    assert folded.layer1[0].conv1.bias is not None and folded.compression3[0].bias is not None


@pytest.mark.parametrize("structure,augment", [("s", False), ("l", True)])
@pytest.mark.parametrize("backend", ["eager", "fused", "onnxruntime", "openvino"])
def test_backend_equals_eager(structure, augment, backend, images):
    model = tiny_pidnet(structure, augment=augment)
    runner = prepare_inference(model, backend, "cpu", images["odd"])
    assert runner.backend in BACKENDS and runner.backend != "auto"
    for batch in images.values():  # the second size differs from the export/probe size
        expected = reference(model, batch)
        got = runner(batch)
        assert got.shape == expected.shape
        assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
        assert (got - expected).abs().max().item() < TOL


@pytest.mark.parametrize("backend", ["fused", "onnxruntime", "openvino"])
def test_graph_module_backends(backend, images):
    model = tiny_pidnet("s", augment=True)
    graph_module = torch.fx.symbolic_trace(model)
    runner = prepare_inference(graph_module, backend, "cpu", images["odd"])
    for batch in images.values():
        assert (runner(batch) - reference(model, batch)).abs().max().item() < TOL
    if backend == "fused":
        folded = runner.module
        assert isinstance(folded, torch.fx.GraphModule)
        modules = dict(folded.named_modules())
        for node in folded.graph.nodes:
            if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
                producer = node.args[0]
                assert not (producer.op == "call_module" and isinstance(modules[producer.target], nn.Conv2d))


class Untraceable(nn.Module):
    """Data-dependent control flow (fx cannot trace it) around Sequential conv->BN pairs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        y = self.body(x)
        if y.mean() > 100:  # never true; only there to defeat symbolic tracing
            y = y * 0
        return [y, self.head(y)]


def test_untraceable_module_folds_sequential_pairs(images):
    model = randomize_bn(Untraceable()).eval()
    folded = fold_batchnorm(model)
    assert isinstance(folded.body[1], nn.Identity)
    assert isinstance(folded.head[0], nn.BatchNorm2d)
    runner = prepare_inference(model, "fused", "cpu", images["odd"])
    assert (runner(images["odd"]) - reference(model, images["odd"])).abs().max().item() < TOL


class SharedConv(nn.Module):
    """A conv whose output feeds a BN *and* a skip connection must not be folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_conv_with_other_users_is_not_folded(images):
    model = randomize_bn(SharedConv()).eval()
    assert find_conv_bn_pairs(model) == []
    runner = prepare_inference(model, "fused", "cpu", images["odd"])
    assert (runner(images["odd"]) - reference(model, images["odd"])).abs().max().item() < TOL


@pytest.mark.slow
def test_compile_backend_equals_eager():
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))).eval()
    images = torch.randn(1, 3, 20, 30)
    runner = prepare_inference(model, "compile", "cpu", images, fallback=False)
    assert runner.backend == "compile"
    assert (runner(images) - reference(model, images)).abs().max().item() < TOL


def test_compile_failure_is_clear_or_falls_back(monkeypatch, caplog, images):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler on this platform")

    monkeypatch.setattr(torch, "compile", broken)
    model = tiny_pidnet("s")
    with pytest.raises(ModelError, match="torch.compile failed.*--backend fused"):
        prepare_inference(model, "compile", "cpu", images["odd"])
    runner = prepare_inference(model, "compile", "cpu", images["odd"], fallback=True)
    assert runner.backend == "fused"
    assert "falling back to the fused backend" in caplog.text
    assert (runner(images["odd"]) - reference(model, images["odd"])).abs().max().item() < TOL


def test_auto_picks_an_available_backend(monkeypatch, images):
    model = tiny_pidnet("s")
    cpu = torch.device("cpu")
    assert auto_candidates(cpu) == ["fused", "onnxruntime", "openvino"]
    exports = []
    real_export = deploy_runners.export_onnx
    monkeypatch.setattr(deploy_runners, "export_onnx", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    runner = prepare_inference(model, "auto", cpu, images["odd"])
    assert runner.backend in auto_candidates(cpu)
    assert len(exports) == 1, "onnxruntime and openvino are probed on one ONNX export"
    for batch in images.values():
        assert (runner(batch) - reference(model, batch)).abs().max().item() < TOL
    monkeypatch.setattr(deploy_runtimes, "onnxruntime_available", lambda: False)
    assert auto_candidates(cpu) == ["fused", "openvino"]
    monkeypatch.setattr(deploy_runtimes, "openvino_available", lambda: False)
    assert auto_candidates(cpu) == ["fused"]
    assert prepare_inference(model, "auto", cpu, images["odd"]).backend == "fused"


@pytest.mark.parametrize("threads", [1, 2])
def test_openvino_honours_the_thread_count(threads, images):
    runner = prepare_inference(tiny_pidnet("s"), "openvino", "cpu", images["odd"], threads=threads)
    assert int(runner.compiled.get_property("INFERENCE_NUM_THREADS")) == threads
    import openvino as ov

    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert f"threads={threads}" in runner.details


def test_unavailable_or_unknown_backend_is_a_clear_error(monkeypatch, images):
    model = tiny_pidnet("s")
    with pytest.raises(ModelError, match="unknown inference backend 'tensorrt'"):
        prepare_inference(model, "tensorrt", "cpu", images["odd"])
    with pytest.raises(ModelError, match="unknown precision"):
        prepare_inference(model, "fused", "cpu", images["odd"], precision="int8")
    with pytest.raises(ModelError, match="fp32 only"):
        prepare_inference(model, "onnxruntime", "cpu", images["odd"], precision="fp16")
    with pytest.raises(DeviceError, match="cuda_graphs=True needs a CUDA device"):
        prepare_inference(model, "fused", "cpu", images["odd"], cuda_graphs=True)
    with pytest.raises(ModelError, match="example input size"):
        prepare_inference(model, "onnxruntime", "cpu", (0, 10))
    with pytest.raises(ModelError, match="'openvino' runs fp32 only"):
        prepare_inference(model, "openvino", "cpu", images["odd"], precision="bf16")
    with pytest.raises(DeviceError, match="'openvino' runs on the CPU"):
        prepare_inference(model, "openvino", torch.device("cuda"), images["odd"])
    monkeypatch.setattr(deploy_runtimes, "onnxruntime_available", lambda: False)
    with pytest.raises(ModelError, match="pip install onnxruntime"):
        prepare_inference(model, "onnxruntime", "cpu", images["odd"])
    monkeypatch.setattr(deploy_runtimes, "openvino_available", lambda: False)
    with pytest.raises(ModelError, match="pip install openvino"):
        prepare_inference(model, "openvino", "cpu", images["odd"])
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            prepare_inference(model, "fused", "cuda", images["odd"])


def test_output_index_out_of_range():
    with pytest.raises(ModelError, match="output_index 3 is out of range"):
        select_output([torch.zeros(1)] * 3, 3)


def test_bf16_autocast_on_cpu_returns_float32_logits(images):
    model = tiny_pidnet("s")
    runner = prepare_inference(model, "fused", "cpu", images["odd"], precision="bf16")
    got, expected = runner(images["odd"]), reference(model, images["odd"])
    assert got.dtype == torch.float32 and got.shape == expected.shape
    # bf16 keeps ~3 significant digits: a loose check that it computes the same function.
    assert (got - expected).abs().mean().item() < 0.1 * expected.abs().mean().item()


def test_export_onnx_is_atomic_and_dynamic(tmp_path, images):
    import onnxruntime as ort

    model = tiny_pidnet("l", augment=True)
    path = export_onnx(model, tmp_path / "model.onnx", images["odd"])
    assert os.listdir(tmp_path) == ["model.onnx"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in images.values():
        got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
        assert (got - reference(model, batch)).abs().max().item() < TOL


# ----------------------------------------------------------------------------- CUDA

@pytest.mark.gpu
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_cuda_fused_fp32_and_cuda_graphs_equal_eager(structure):
    model = tiny_pidnet(structure)
    images = torch.randn(1, 3, 100, 150, device="cuda")
    expected = reference(model.cuda(), images)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for graphs in (False, True):
        runner = prepare_inference(model, "fused", "cuda", images, cuda_graphs=graphs)
        assert (runner(images) - expected).abs().max().item() < TOL
        assert (runner(images) - expected).abs().max().item() < TOL  # replay


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_autocast_is_close(precision):
    model = tiny_pidnet("s")
    images = torch.randn(1, 3, 128, 192, device="cuda")
    expected = reference(model.cuda(), images)
    runner = prepare_inference(model, "fused", "cuda", images, precision=precision, cuda_graphs=True)
    got = runner(images)
    assert got.dtype == torch.float32
    assert (got - expected).abs().mean().item() < 0.05 * expected.abs().mean().item()


@pytest.mark.gpu
def test_cuda_compile_and_onnxruntime_equal_eager():
    model = tiny_pidnet("s")
    images = torch.randn(1, 3, 100, 150, device="cuda")
    expected = reference(model.cuda(), images)
    torch.backends.cudnn.allow_tf32 = False
    runner = prepare_inference(model, "compile", "cuda", images)
    assert (runner(images) - expected).abs().max().item() < TOL
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        runner = prepare_inference(model, "onnxruntime", "cuda", images)
        assert (runner(images) - expected).abs().max().item() < TOL


@pytest.mark.gpu
def test_deploy_leaves_the_cudnn_flags_to_the_caller():
    model = tiny_pidnet("s")
    images = torch.randn(1, 3, 64, 96, device="cuda")
    previous = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        prepare_inference(model, "fused", "cuda", images)(images)
        prepare_inference(model, "fused", "cuda", images, cuda_graphs=True)(images)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = previous


@pytest.mark.gpu
def test_cuda_onnxruntime_fp16_needs_tensorrt():
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        pytest.skip("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
    model = tiny_pidnet("s")
    images = torch.randn(1, 3, 128, 192, device="cuda")
    if "TensorrtExecutionProvider" not in providers:
        with pytest.raises(DeviceError, match="needs its TensorRT execution provider"):
            prepare_inference(model, "onnxruntime", "cuda", images, precision="fp16")
        return
    expected = reference(model.cuda(), images)
    runner = prepare_inference(model, "onnxruntime", "cuda", images, precision="fp16")
    assert runner.session.get_providers()[0] == "TensorrtExecutionProvider"
    got = runner(images)
    assert (got - expected).abs().mean().item() < 0.05 * expected.abs().mean().item()
