import os

import pytest
import torch

from models.netspresso import export_pidnet
from models.pidnet import PIDNet
from utils.io import atomic_save

TINY = dict(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5)
SIZE = [64, 128]


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def tiny_export():
    torch.manual_seed(0)
    return export_pidnet(PIDNet(**TINY).eval())


@pytest.fixture
def workdir(tmp_path, tiny_export):
    """A work directory with an exported tiny body + head in tiny/."""
    body, head = tiny_export
    root = tmp_path / "work"
    atomic_save(body, root / "tiny" / "model_modelfx.pt")
    atomic_save(head, root / "tiny" / "model_headfx.pt")
    return root


def snapshot(root):
    """Every file under ``root`` with its size and mtime: 'unchanged' means equal snapshots."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = (os.path.getsize(path), os.path.getmtime(path))
    return out


TINY19 = dict(TINY, num_classes=19)  # the synthetic scenes' Cityscapes classes
SYNTH_CONFIG = "builtin:configs/synthetic/pidnet_small_synthetic.yaml"
VAL_IMAGES = "data/cityscapes/leftImg8bit/val/synth"


@pytest.fixture(scope="module")
def synth_base(tmp_path_factory):
    """A work directory with a tiny 19-class body + head in tiny/ and 2 labelled synthetic val
    scenes (128x64) in data/ (``DATASET.ROOT``), as tools/make_synthetic.py writes them."""
    from datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synth") / "work"
    torch.manual_seed(0)
    body, head = export_pidnet(PIDNet(**TINY19).eval())
    atomic_save(body, root / "tiny" / "model_modelfx.pt")
    atomic_save(head, root / "tiny" / "model_headfx.pt")
    generate(str(root / "data"), num_train=0, num_val=2, num_test=0, size=(128, 64), layouts=("cityscapes",))
    return root
