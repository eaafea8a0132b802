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


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep torch from oversubscribing when tests spawn processes.
    torch.set_num_threads(2)
    yield


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
