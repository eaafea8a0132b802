import os
import random
import signal

import numpy as np
import pytest
import torch

from models.pidnet import PIDNet
from utils.errors import CheckpointError, ConfigError
from utils.training import (PolyLR, StopRequest, TrainSampler, build_optimizer, capture_rng_state, epoch_seed,
                            iterations_per_epoch, load_checkpoint, make_checkpoint, restore_checkpoint,
                            restore_rng_state, save_checkpoint)


def tiny_pidnet(num_classes=4):
    return PIDNet(m=2, n=3, num_classes=num_classes, planes=8, ppm_planes=16, head_planes=16)


class FakeAugmentingDataset:
    """Quacks like BaseDataset for the RNG helpers: ``reseed`` + ``rng``."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)


def _train_steps(model, optimizer, scheduler, steps=2):
    for _ in range(steps):
        loss = sum(o.float().mean() for o in model(torch.randn(2, 3, 64, 64)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


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


def test_checkpoint_round_trip_is_weights_only_and_exact(tmp_path):
    torch.manual_seed(0)
    model = tiny_pidnet()
    opt = build_optimizer(model, lr=0.01)
    sched = PolyLR(opt, max_iters=10)
    _train_steps(model, opt, sched)
    data = FakeAugmentingDataset(3)
    data.rng.random(5)
    rng = capture_rng_state(data)
    state = make_checkpoint(model, opt, sched, None, epoch=3, iteration=1, best_miou=0.25,
                            config_text="TRAIN:\n  LR: 0.01\n", rng_states=[rng], world_size=1)
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint(state, path)
    expected = (random.random(), np.random.rand(), torch.rand(3), data.rng.random(4))

    loaded = torch.load(path, weights_only=True)  # the format promise
    assert (loaded["epoch"], loaded["iteration"], loaded["best_mIoU"], loaded["world_size"]) == (3, 1, 0.25, 1)
    assert "LR: 0.01" in loaded["config"]

    torch.manual_seed(123)
    model2 = tiny_pidnet()
    opt2 = build_optimizer(model2, lr=0.01)
    sched2 = PolyLR(opt2, max_iters=10)
    restore_checkpoint(load_checkpoint(path), model2, opt2, sched2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[key]), key
    assert sched2.last_epoch == sched.last_epoch and sched2.get_last_lr() == sched.get_last_lr()
    buffers = [s["momentum_buffer"] for s in opt.state_dict()["state"].values()]
    buffers2 = [s["momentum_buffer"] for s in opt2.state_dict()["state"].values()]
    assert len(buffers) == len(buffers2) > 0
    assert all(torch.equal(a, b) for a, b in zip(buffers, buffers2))

    data2 = FakeAugmentingDataset(99)
    restore_rng_state(loaded["rng"][0], data2)
    got = (random.random(), np.random.rand(), torch.rand(3), data2.rng.random(4))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])
    np.testing.assert_array_equal(got[3], expected[3])


def test_restore_into_another_model_is_a_checkpoint_error(tmp_path):
    model = tiny_pidnet(num_classes=4)
    opt = build_optimizer(model)
    sched = PolyLR(opt, max_iters=5)
    save_checkpoint(make_checkpoint(model, opt, sched, None, epoch=1), tmp_path / "c.pth.tar")
    other = tiny_pidnet(num_classes=7)
    opt2 = build_optimizer(other)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        restore_checkpoint(load_checkpoint(tmp_path / "c.pth.tar"), other, opt2, PolyLR(opt2, max_iters=5))


def test_load_checkpoint_rejects_plain_weights(tmp_path):
    path = tmp_path / "best.pt"
    torch.save(tiny_pidnet().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a resumable training checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_truncated_file(tmp_path):
    model = tiny_pidnet()
    opt = build_optimizer(model)
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint(make_checkpoint(model, opt, PolyLR(opt, max_iters=5), None, epoch=1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_train_sampler_skip_continues_the_same_permutation():
    data = list(range(23))
    sampler = TrainSampler(data, num_replicas=1, rank=0, shuffle=True, seed=5)
    sampler.set_epoch(4)
    full = list(sampler)
    assert sorted(full) == data and full != data
    sampler.set_epoch(4, skip=6)
    assert list(sampler) == full[6:] and len(sampler) == 17 and sampler.full_length() == 23
    sampler.set_epoch(5)
    assert list(sampler) != full  # a new order every epoch


def test_train_sampler_ranks_partition_the_data():
    data = list(range(20))
    shards = []
    for rank in range(2):
        sampler = TrainSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=1)
        sampler.set_epoch(3)
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == data


@pytest.mark.parametrize("num_samples, world, batch, expected", [
    (2975, 1, 12, 247), (2975, 2, 6, 248), (5, 1, 2, 2), (3, 2, 2, 1), (3, 1, 4, 0)])
def test_iterations_per_epoch(num_samples, world, batch, expected):
    assert iterations_per_epoch(num_samples, world, batch) == expected


def test_epoch_seed_depends_on_seed_rank_and_epoch():
    seeds = {epoch_seed(s, r, e) for s in (0, 304) for r in (0, 1) for e in (0, 1, 2)}
    assert len(seeds) == 12
    assert epoch_seed(304, 0, 1) == epoch_seed(304, 0, 1)
    assert all(0 <= s < 2 ** 63 for s in seeds)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_request_turns_a_signal_into_a_flag(sig, code):
    before = signal.getsignal(sig)
    with StopRequest(duplicate_window_s=60) as stop:
        assert not stop.requested and stop.exit_code == 0
        os.kill(os.getpid(), sig)
        assert stop.requested and stop.exit_code == code
        os.kill(os.getpid(), signal.SIGTERM)  # a duplicate (torchrun forwards signals): ignored
        assert stop.exit_code == code
        stop.duplicate_window_s = 0.0
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)  # a later signal aborts
    assert signal.getsignal(sig) is before


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
