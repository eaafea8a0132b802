import pytest
import torch

from models.netspresso import export_pidnet
from models.pidnet import PIDNet

TINY = {
    "sm": dict(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5),
    "l": dict(m=3, n=4, planes=8, ppm_planes=16, head_planes=16, num_classes=5),
}
# Small sizes keep every compression call to a few seconds on two cores.
FAST = dict(trace_size=(64, 64), report_sizes=[(64, 128)])


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    yield


def _exported(kind):
    torch.manual_seed(0)
    net = PIDNet(**TINY[kind]).eval()
    body, head = export_pidnet(net)
    return body, head


@pytest.fixture(scope="module")
def tiny_sm():
    return _exported("sm")


@pytest.fixture(scope="module")
def tiny_l():
    return _exported("l")


@pytest.fixture
def fast():
    return dict(FAST)
