import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from models.pidnet import PIDNet
from utils.checkpointing import load_checkpoint
from utils.criterion import build_criterion
from utils.engine import Trainer, should_validate, train_one_epoch
from utils.errors import TrainingError
from utils.history import load_history
from utils.sampler import TrainSampler
from utils.schedule import PolyLR, build_optimizer

NUM_CLASSES = 4


def tiny_pidnet():
    return PIDNet(m=2, n=3, num_classes=NUM_CLASSES, planes=8, ppm_planes=16, head_planes=16)


def make_batch(seed, nan=False):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 64, 64, generator=g)
    if nan:
        images[0, 0, 0, 0] = float("nan")
    labels = torch.randint(0, NUM_CLASSES, (2, 64, 64), generator=g)
    edges = (torch.rand(2, 64, 64, generator=g) > 0.9).float()
    return images, labels, edges, torch.tensor([[64, 64]] * 2), ["a", "b"]


class TinySet(Dataset):
    def __init__(self, n=4):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        images, labels, edges, _, _ = make_batch(i)
        return images[0], labels[0], edges[0], torch.tensor([64, 64]), f"img{i}"


class Flag:
    def __init__(self, requested):
        self.requested = requested
        self.exit_code = 143


def setup(max_iters=10):
    torch.manual_seed(0)
    model = tiny_pidnet()
    criterion = build_criterion(NUM_CLASSES, ohem_keep=1000)
    optimizer = build_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    return model, criterion, optimizer, PolyLR(optimizer, max_iters=max_iters)


@pytest.mark.parametrize("end_epoch", [484, 200, 121, 101, 12, 1])
def test_should_validate_is_the_official_schedule(end_epoch):
    for epoch in range(end_epoch):
        official = (epoch % 5 == 0 and epoch < end_epoch - 100) or (epoch >= end_epoch - 100)
        assert should_validate(epoch, end_epoch, 5, 100) == official, epoch
    assert should_validate(end_epoch - 1, end_epoch, 0, 0)  # the last epoch always


def test_train_one_epoch_updates_every_parameter_and_the_schedule():
    model, criterion, optimizer, scheduler = setup()
    before = {k: v.clone() for k, v in model.named_parameters()}
    result = train_one_epoch(model, criterion, [make_batch(i) for i in range(3)], optimizer, scheduler,
                             torch.device("cpu"), 0, num_epochs=1, iters_per_epoch=3, progress=False)
    assert result.iterations == 3 and not result.stopped and math.isfinite(result.loss)
    assert set(result.parts) >= {"semantic", "boundary", "bas"}
    assert scheduler.last_epoch == 3
    params = dict(model.named_parameters())
    assert all(p.grad is not None for p in params.values())  # the loss reaches every head
    unchanged = [k for k, v in params.items() if torch.equal(v, before[k])]
    # Only biases right before a BatchNorm in training mode can stay put (their gradient is exactly 0).
    assert all(k.endswith(".bias") and not params[k].grad.any() for k in unchanged), unchanged
    assert len(unchanged) < 0.05 * len(params)


def test_non_finite_loss_stops_before_the_step():
    model, criterion, optimizer, scheduler = setup()
    batches = [make_batch(0), make_batch(1, nan=True), make_batch(2)]
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 7, iteration 1"):
        train_one_epoch(model, criterion, batches, optimizer, scheduler, torch.device("cpu"), 7, num_epochs=9,
                        iters_per_epoch=3, progress=False)
    assert scheduler.last_epoch == 1  # only the good step was taken
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_stop_request_finishes_the_current_step_then_stops():
    model, criterion, optimizer, scheduler = setup()
    result = train_one_epoch(model, criterion, [make_batch(i) for i in range(3)], optimizer, scheduler,
                             torch.device("cpu"), 0, num_epochs=1, iters_per_epoch=5, start_iter=2,
                             stop=Flag(True), progress=False)
    assert result.stopped and result.iterations == 3  # counted from the epoch start
    assert scheduler.last_epoch == 1


def test_step_hooks_see_every_step_in_order_and_can_replace_the_loss():
    model, criterion, optimizer, scheduler = setup()
    seen = []

    def observe(epoch, iteration, loss):
        seen.append((epoch, iteration))
        return loss

    def poison(epoch, iteration, loss):
        return loss * float("nan") if iteration == 3 else loss

    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 4, iteration 3"):
        train_one_epoch(model, criterion, [make_batch(i) for i in range(3)], optimizer, scheduler,
                        torch.device("cpu"), 4, num_epochs=5, iters_per_epoch=4, start_iter=1,
                        step_hooks=[observe, poison], progress=False)
    assert seen == [(4, 1), (4, 2), (4, 3)]
    assert scheduler.last_epoch == 2  # the poisoned step was not taken


def _trainer(tmp_path, end_epoch, exports, eval_interval=5, **kwargs):
    model, criterion, optimizer, _ = setup()
    dataset = TinySet(4)
    sampler = TrainSampler(dataset, shuffle=True, seed=1)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, drop_last=True, generator=torch.Generator())
    val_loader = DataLoader(TinySet(2), batch_size=2)
    scheduler = PolyLR(optimizer, max_iters=end_epoch * 2)
    return Trainer(model=model, model_without_ddp=model, criterion=criterion, train_loader=loader,
                   val_loader=val_loader, optimizer=optimizer, scheduler=scheduler, scaler=None,
                   device=torch.device("cpu"), checkpoint_path=str(tmp_path / "checkpoint.pth.tar"),
                   export=lambda kind, m: exports.append(kind), end_epoch=end_epoch, iters_per_epoch=2,
                   batch_size=2, num_classes=NUM_CLASSES, eval_interval=eval_interval, eval_last_epochs=1,
                   progress=False, config_text="x: 1\n", **kwargs)


def test_trainer_runs_validates_on_schedule_and_checkpoints(tmp_path):
    exports = []
    trainer = _trainer(tmp_path, end_epoch=3, exports=exports, eval_interval=2)
    validated = []
    original = trainer.validate
    trainer.validate = lambda epoch: validated.append(epoch) or original(epoch)
    assert trainer.run() == 0
    assert validated == [0, 2]
    assert exports[-1] == "final" and "best" in exports
    state = load_checkpoint(tmp_path / "checkpoint.pth.tar")
    assert (state["epoch"], state["iteration"]) == (3, 0)
    assert state["scheduler"]["last_epoch"] == 6
    assert 0.0 < state["best_mIoU"] == trainer.best_miou <= 1.0


def test_trainer_stop_writes_a_mid_epoch_checkpoint(tmp_path):
    exports = []
    trainer = _trainer(tmp_path, end_epoch=3, exports=exports)
    trainer.stop = Flag(True)
    assert trainer.run(start_epoch=1) == 143
    state = load_checkpoint(tmp_path / "checkpoint.pth.tar")
    assert (state["epoch"], state["iteration"]) == (1, 1)
    assert exports == []


def test_trainer_writes_history_json_and_a_resumed_run_keeps_the_earlier_epochs(tmp_path):
    history = tmp_path / "log" / "history.json"
    trainer = _trainer(tmp_path, end_epoch=3, exports=[], eval_interval=2, history_path=str(history))
    assert trainer.run() == 0
    records = json.loads(history.read_text())["epochs"]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [("valid_mIoU" in r) for r in records] == [True, False, True]  # validated epochs only
    assert all(math.isfinite(r["train_loss"]) and r["lr"] > 0 for r in records)
    assert records[2]["valid_mIoU"] <= trainer.best_miou
    curves = load_history(str(tmp_path / "log"))
    assert [x for x, _ in curves["train_loss"]] == [0, 1, 2] and [x for x, _ in curves["valid_mIoU"]] == [0, 2]

    # Resumed at epoch 1: epoch 0 stays, the epochs it trains again are replaced, not repeated.
    records[1]["train_loss"] = records[2]["train_loss"] = -1.0
    history.write_text(json.dumps({"epochs": records}))
    assert _trainer(tmp_path, end_epoch=3, exports=[], history_path=str(history)).run(start_epoch=1) == 0
    resumed = json.loads(history.read_text())["epochs"]
    assert [r["epoch"] for r in resumed] == [0, 1, 2] and resumed[0] == records[0]
    assert all(r["train_loss"] > 0 for r in resumed)


def test_trainer_without_history_path_writes_none(tmp_path):
    assert _trainer(tmp_path, end_epoch=1, exports=[]).run() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth.tar"]


@pytest.mark.gpu
def test_amp_training_on_cuda_and_scaler_round_trip(tmp_path):
    from utils.checkpointing import make_checkpoint, restore_checkpoint, save_checkpoint

    device = torch.device("cuda")
    model, criterion, optimizer, scheduler = setup()
    model.to(device)
    criterion.to(device)
    scaler = torch.amp.GradScaler("cuda")
    result = train_one_epoch(model, criterion, [make_batch(i) for i in range(3)], optimizer, scheduler, device, 0,
                             num_epochs=1, iters_per_epoch=3, scaler=scaler, amp=True, progress=False)
    assert result.iterations == 3 and math.isfinite(result.loss)
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint(make_checkpoint(model, optimizer, scheduler, scaler, epoch=1), path)
    scaler2 = torch.amp.GradScaler("cuda", init_scale=1.0)
    restore_checkpoint(load_checkpoint(path), model, optimizer, scheduler, scaler2)
    assert scaler2.state_dict() == scaler.state_dict()
