import random

import numpy as np
import pytest
import torch

from models.pidnet import PIDNet
from utils.checkpointing import load_checkpoint, make_checkpoint, restore_checkpoint, save_checkpoint
from utils.errors import CheckpointError
from utils.schedule import PolyLR, build_optimizer
from utils.seeding import capture_rng_state, restore_rng_state


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
