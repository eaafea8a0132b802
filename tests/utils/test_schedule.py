import pytest
import torch

from models.pidnet import PIDNet
from utils.errors import ConfigError
from utils.schedule import PolyLR, build_optimizer, iterations_per_epoch


def tiny_pidnet(num_classes=4):
    return PIDNet(m=2, n=3, num_classes=num_classes, planes=8, ppm_planes=16, head_planes=16)


def test_build_optimizer_is_one_sgd_group():
    model = tiny_pidnet()
    opt = build_optimizer(model, "sgd", lr=0.02, momentum=0.9, weight_decay=5e-4, nesterov=True)
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.02, 0.9, 5e-4, True)
    assert len(group["params"]) == len(list(model.parameters()))


def test_build_optimizer_rejects_other_optimizers():
    with pytest.raises(ConfigError, match="TRAIN.OPTIMIZER 'adam'"):
        build_optimizer(tiny_pidnet(), "adam")


def test_poly_lr_rejects_zero_iterations():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="at least one iteration"):
        PolyLR(opt, max_iters=0)


@pytest.mark.parametrize("num_samples, world, batch, expected", [
    (2975, 1, 12, 247), (2975, 2, 6, 248), (5, 1, 2, 2), (3, 2, 2, 1), (3, 1, 4, 0)])
def test_iterations_per_epoch(num_samples, world, batch, expected):
    assert iterations_per_epoch(num_samples, world, batch) == expected


def test_poly_lr_length_can_change_on_resume():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = PolyLR(opt, max_iters=10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 4 / 10) ** 0.9)
    sched.set_max_iters(20)  # e.g. TRAIN.END_EPOCH doubled when resuming
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 4 / 20) ** 0.9)
    assert sched.get_last_lr() == [opt.param_groups[0]["lr"]]
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 5 / 20) ** 0.9)


def official_lrs(base_lr, max_iters):
    """The LR each iteration uses under the official loop (adjust_learning_rate after the step)."""
    lrs, lr = [], base_lr
    for cur in range(max_iters):
        lrs.append(lr)
        lr = base_lr * ((1 - float(cur) / max_iters) ** 0.9)
    return lrs


def test_poly_lr_matches_official_adjust_learning_rate():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.01, momentum=0.9)
    sched = PolyLR(opt, max_iters=50)
    used = []
    for _ in range(50):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert used == pytest.approx(official_lrs(0.01, 50), rel=1e-12, abs=0)
    for _ in range(5):  # past the end (e.g. resumed with fewer processes): 0, never complex/NaN
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
