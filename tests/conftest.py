import os
import random
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture
def ref_data():
    """Path of a conformance file computed with the official code (see tests/data/REFERENCE.md)."""
    return lambda name: os.path.join(DATA, name)


@pytest.fixture
def one_thread():
    """Tiny models: one thread beats two (thread sync dominates) on a busy 2-core CI box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def vector_onnx(tmp_path):
    """A valid ONNX file that is no segmenter: a Relu over a ``[1, 10]`` input named ``x``."""
    import onnx

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "vector",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 10])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 10])])
    path = tmp_path / "vector.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    return path


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep torch from oversubscribing when tests spawn processes.
    torch.set_num_threads(2)
    yield


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Tools call setup_logging(), which binds a handler to the sys.stderr of that moment (a test's
    capture stream, closed when the test ends); put the root logger back so that no later test
    writes into a closed stream ("--- Logging error ---") because of the order tests ran in."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()  # a FileHandler's log file; a StreamHandler leaves its stream open
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whatever ran before it in this process.

    Tests that draw random weights or data without their own seed are then repeatable, and their
    outcome does not depend on which other tests ran first (or were selected with -k).
    """
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """A narrow PIDNet (S structure, 19 classes) briefly trained on synthetic scenes, for the
    quantization tests: random weights amplify any rounding, trained ones behave like real models.

    Returns a dict: ``root`` (DATASET.ROOT of 12 train / 4 val 128x64 scenes), ``model``
    (augment=False, eval mode), ``onnx`` (its BN-folded fp32 export) and ``images`` (the train
    images, N x 3 x 64 x 128 float32).
    """
    import numpy as np
    import torch.nn.functional as F

    from datasets import build_dataset
    from datasets.synthetic import generate
    from models.deploy import export_onnx, fold_batchnorm
    from models.pidnet import PIDNet

    root = str(tmp_path_factory.mktemp("quant_data")) + os.sep
    generate(root, num_train=12, num_val=4, size=(128, 64), seed=0, layouts=("cityscapes",))
    dataset = build_dataset("cityscapes", root, "list/cityscapes/train.lst", num_classes=19, is_train=False)
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([s[0] for s in samples])
    labels = torch.stack([s[1] for s in samples])
    torch.manual_seed(0)
    model = PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=19, augment=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and far faster on a busy box
    for step in range(25):
        batch = [(step * 4 + k) % len(images) for k in range(4)]
        logits = F.interpolate(model(images[batch]), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels[batch], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval()
    path = str(tmp_path_factory.mktemp("quant_model") / "tiny_fp32.onnx")
    export_onnx(fold_batchnorm(model), path, images[:1], output_index=1)
    return {"root": root, "model": model, "onnx": path, "images": np.ascontiguousarray(images.numpy()),
            "loss": float(loss.detach())}
