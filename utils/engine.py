"""The training loop: :func:`train_one_epoch` and :class:`Trainer` (epochs, validation, checkpoints).

The recipe is the official one (``utils/function.py`` + ``tools/train.py``): SGD with the poly LR
stepped after every iteration, the PIDNet loss on ``[p, main, boundary]``, validation of every
semantic output on the official schedule (:func:`should_validate`), ``checkpoint.pth.tar`` after
every epoch and ``best.pt`` whenever the main output's mIoU improves.

What we add so that a run cannot lose work:

* every checkpoint is written atomically, together with the optimizer, scheduler, AMP scaler and
  RNG states, so ``TRAIN.RESUME True`` continues exactly where the last checkpoint left off;
* SIGINT/SIGTERM stop the loop after the current step on every rank (all ranks agree on the step), a resumable
  mid-epoch checkpoint is written, and the process exits 130/143;
* a non-finite loss (on any rank) stops training *before* its backward pass with a
  :class:`~utils.errors.NonFiniteLossError` naming the epoch and iteration; the checkpoint on disk is
  the last good one.

The run's per-epoch figures go to ``history.json`` (:mod:`utils.history`) for the report. Extra
per-step behaviour attaches through ``step_hooks`` (the reliability tests' fault injection,
:mod:`utils.faults`, is one).
"""
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from utils import distributed as du
from utils.checkpointing import make_checkpoint, save_checkpoint
from utils.errors import NonFiniteLossError
from utils.evaluate import evaluate
from utils.history import read_records, write_records
from utils.seeding import capture_rng_state, epoch_seed, reseed_data

logger = logging.getLogger(__name__)

class AverageMeter:
    """Running mean of a scalar."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, value, n=1):
        self.total += float(value) * n
        self.count += n

    @property
    def average(self):
        return self.total / self.count if self.count else float("nan")


@dataclass
class EpochResult:
    """What :func:`train_one_epoch` did: mean loss and parts over its iterations, the iteration the
    epoch reached (``iterations`` counts from the epoch start, skipped batches included) and whether
    it stopped early on a signal."""
    loss: float
    parts: dict
    iterations: int
    seconds: float
    stopped: bool = False
    lr: float = 0.0


def _current_lr(optimizer):
    return optimizer.param_groups[0]["lr"]


def train_one_epoch(model, criterion, loader, optimizer, scheduler, device, epoch, *, num_epochs,
                    iters_per_epoch, start_iter=0, scaler=None, amp=False, print_freq=10, stop=None,
                    writer=None, step_hooks=(), progress=True, distiller=None):
    """Train one epoch (or the rest of it, from ``start_iter``).

    Args:
        model: returns ``[p, main, boundary]`` (PIDNet with ``augment=True``, possibly DDP-wrapped).
        criterion: ``(outputs, labels, edges) -> (loss, parts)`` (:func:`utils.criterion.build_criterion`).
        loader: yields ``(image, label, edge, size, name)`` batches, ``drop_last=True``.
        optimizer, scheduler: the scheduler is stepped after every optimizer step.
        device: where the batches go.
        epoch: 0-based epoch index (for logs, the schedule and the step hooks).
        num_epochs: total epochs, for the logs.
        iters_per_epoch: batches in a full epoch (for the progress bar).
        start_iter: batches of this epoch already trained on (mid-epoch resume).
        scaler: ``torch.amp.GradScaler`` (disabled without AMP).
        amp: run the forward pass under float16 autocast (CUDA).
        print_freq: log a line every this many iterations (``PRINT_FREQ``).
        stop: a :class:`utils.signals.StopRequest`; when any rank has seen a signal, every rank stops
            after the current step (before the next batch is drawn).
        writer: TensorBoard ``SummaryWriter`` (rank 0) or ``None``.
        step_hooks: callables ``hook(epoch, iteration, loss) -> loss`` run after each forward pass,
            before the loss is checked and back-propagated, in order; each returns the loss to use
            (the same tensor when it only observes). E.g. :class:`utils.faults.FaultInjector`.
        distiller: a :class:`utils.distillation.Distiller` whose loss is added to the criterion's
            (its parts ``kd``/``kd_feat`` are logged with the others), or ``None``.

    Raises:
        TrainingError: the loss is NaN/inf on some rank; raised before that step's backward pass.
    """
    model.train()
    loss_meter = AverageMeter()
    part_meters = {}
    iteration = start_iter
    stopped = False
    start = time.perf_counter()
    show = progress and du.is_main_process()
    bar = tqdm(total=iters_per_epoch, initial=start_iter, disable=not show, dynamic_ncols=True,
               desc=f"epoch {epoch + 1}/{num_epochs}", unit="it", leave=False)
    with logging_redirect_tqdm():
        for batch in loader:
            images = batch[0].to(device, non_blocking=True)
            labels = batch[1].to(device, torch.int64, non_blocking=True)
            edges = batch[2].to(device, torch.float32, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                outputs = model(images)
                loss, parts = criterion(outputs, labels, edges)
                if distiller is not None:
                    kd_loss, kd_parts = distiller(images, outputs, labels)
                    loss = loss + kd_loss
                    parts = {**parts, **kd_parts}
            for hook in step_hooks:
                loss = hook(epoch, iteration, loss)
            loss_value = loss.item()
            non_finite, stop_now = du.any_rank(
                [not math.isfinite(loss_value), stop is not None and stop.requested], device)
            if non_finite:
                raise NonFiniteLossError(
                    f"non-finite loss ({loss_value if not math.isfinite(loss_value) else 'on another rank'}) "
                    f"at epoch {epoch}, iteration {iteration}: training stopped before this step", epoch, iteration)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if distiller is not None:
                    distiller.sync_gradients()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if distiller is not None:
                    distiller.sync_gradients()
                optimizer.step()
            lr = _current_lr(optimizer)
            scheduler.step()
            loss_meter.update(loss_value)
            names = list(parts)
            values = torch.stack([parts[n].detach().float().reshape(()) for n in names]).tolist() if names else []
            for name, value in zip(names, values):  # one device sync for all parts
                part_meters.setdefault(name, AverageMeter()).update(value)
            if show:
                bar.set_postfix(loss=f"{loss_meter.average:.4f}", lr=f"{lr:.3g}")
            if du.is_main_process() and iteration % max(1, print_freq) == 0:
                kd = "".join(f" {n} {_avg(part_meters, n):.4f}" for n in ("kd", "kd_feat") if n in part_meters)
                logger.info("Epoch [%d/%d] Iter [%d/%d] lr %.6g loss %.4f (semantic %.4f boundary %.4f bas %.4f%s "
                            "acc %.4f)", epoch, num_epochs, iteration, iters_per_epoch, lr, loss_meter.average,
                            _avg(part_meters, "semantic"), _avg(part_meters, "boundary"), _avg(part_meters, "bas"),
                            kd, _avg(part_meters, "pixel_acc"))
                if writer is not None:
                    writer.add_scalar("train/loss_iter", loss_value, epoch * iters_per_epoch + iteration)
            iteration += 1
            bar.update(1)
            if stop_now:
                # Stop after a complete step and before the next batch is drawn: the checkpoint then
                # holds a consistent state (weights, BN statistics, data RNG) at a batch boundary.
                stopped = True
                break
    bar.close()
    return EpochResult(loss_meter.average, {k: m.average for k, m in part_meters.items()}, iteration,
                       time.perf_counter() - start, stopped, _current_lr(optimizer))


def _avg(meters, name):
    meter = meters.get(name)
    return meter.average if meter is not None else float("nan")


def should_validate(epoch, end_epoch, interval=5, last_epochs=100):
    """The official schedule: every ``interval`` epochs, every epoch of the last ``last_epochs``,
    and always the last epoch (``epoch`` is 0-based)."""
    if epoch >= end_epoch - 1 or epoch >= end_epoch - last_epochs:
        return True
    return interval > 0 and epoch % interval == 0


@dataclass
class Trainer:
    """The epoch loop over the objects built by ``tools/train.py``.

    ``export(kind, model)`` writes the weights-only files for ``kind`` ``'best'`` or ``'final'``
    (``best.pt``/``final_state.pt`` for PIDNet, the NetsPresso model/head pairs otherwise);
    ``checkpoint_path`` is the resumable ``checkpoint.pth.tar``; ``history_path`` the
    ``history.json`` rewritten after every epoch. Only rank 0 writes files.
    """
    model: torch.nn.Module                 # what is trained (DDP-wrapped under torchrun)
    model_without_ddp: torch.nn.Module     # what is saved and validated
    criterion: torch.nn.Module
    train_loader: torch.utils.data.DataLoader
    val_loader: Optional[torch.utils.data.DataLoader]
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    device: torch.device
    checkpoint_path: str
    export: Callable
    end_epoch: int
    iters_per_epoch: int
    batch_size: int
    num_classes: int
    ignore_label: int = 255
    align_corners: bool = True
    seed: int = 304
    amp: bool = False
    eval_interval: int = 5
    eval_last_epochs: int = 100
    print_freq: int = 10
    config_text: str = ""
    class_names: list = field(default_factory=list)
    writer: object = None
    stop: object = None
    step_hooks: list = field(default_factory=list)   # see train_one_epoch
    progress: bool = True
    best_miou: float = 0.0
    distiller: object = None               # utils.distillation.Distiller (its state goes in the checkpoint)
    history_path: Optional[str] = None     # history.json (utils.history), rank 0 writes it; None: not written

    @property
    def _train_set(self):
        return self.train_loader.dataset

    def _seed_epoch(self, epoch, restored_mid_epoch):
        seed = epoch_seed(self.seed, du.get_rank(), epoch)
        if restored_mid_epoch:
            # The dataset's augmentation RNG was restored from the checkpoint (exact with WORKERS 0).
            if self.train_loader.generator is not None:
                self.train_loader.generator.manual_seed(seed)
        else:
            reseed_data(self._train_set, self.train_loader.generator, seed)

    def save_checkpoint(self, epoch, iteration=0):
        """All ranks call this (the RNG states are gathered); rank 0 writes the file."""
        rng_states = du.gather_objects(capture_rng_state(self._train_set))
        if not du.is_main_process():
            return
        state = make_checkpoint(self.model_without_ddp, self.optimizer, self.scheduler, self.scaler,
                                epoch=epoch, iteration=iteration, best_miou=self.best_miou,
                                config_text=self.config_text, rng_states=rng_states,
                                world_size=du.get_world_size(), extra=self._checkpoint_extra())
        save_checkpoint(state, self.checkpoint_path)
        logger.info("saved checkpoint %s (next: epoch %d%s)", self.checkpoint_path, epoch,
                    f", iteration {iteration}" if iteration else "")

    def _checkpoint_extra(self):
        extra = {"seed": self.seed}
        if self.distiller is not None:
            extra["distillation"] = self.distiller.checkpoint_state()
        return extra

    def validate(self, epoch):
        result = evaluate(self.model_without_ddp, self.val_loader, self.num_classes, self.ignore_label,
                          device=self.device, output_index=1, align_corners=self.align_corners,
                          criterion=self.criterion, progress=self.progress, desc="validate")
        if du.is_main_process():
            for out in result["outputs"]:
                logger.info("epoch %d output %d: mIoU %.4f pixel acc %.4f", epoch, out["index"], out["mean_iou"],
                            out["pixel_acc"])
            names = self.class_names or [str(i) for i in range(self.num_classes)]
            logger.info("per-class IoU: %s", ", ".join(f"{n} {v:.4f}" for n, v in zip(names, result["iou"])))
            if self.writer is not None:
                self.writer.add_scalar("valid_loss", result["loss"] if result["loss"] is not None else float("nan"),
                                       epoch)
                self.writer.add_scalar("valid_mIoU", result["mean_iou"], epoch)
        return result

    def _history_before(self, start_epoch):
        """The records of ``history_path`` before ``start_epoch`` (a resumed run repeats the rest)."""
        if self.history_path is None or not du.is_main_process():
            return []
        return [r for r in read_records(self.history_path) if isinstance(r.get("epoch"), int)
                and r["epoch"] < start_epoch]

    def _append_history(self, history, record):
        if self.history_path is None or not du.is_main_process():
            return
        history.append(record)
        write_records(history, self.history_path)

    def run(self, start_epoch=0, start_iter=0, restored_mid_epoch=False):
        """Train from ``start_epoch``/``start_iter`` to ``end_epoch``.

        Returns:
            0 when training finished, ``128 + signal`` when it stopped on SIGINT/SIGTERM (after
            saving a resumable checkpoint).
        """
        history = self._history_before(start_epoch)
        for epoch in range(start_epoch, self.end_epoch):
            skip = start_iter if epoch == start_epoch else 0
            self.train_loader.sampler.set_epoch(epoch, skip=skip * self.batch_size)
            self._seed_epoch(epoch, restored_mid_epoch and skip > 0)
            result = train_one_epoch(
                self.model, self.criterion, self.train_loader, self.optimizer, self.scheduler, self.device,
                epoch, num_epochs=self.end_epoch, iters_per_epoch=self.iters_per_epoch, start_iter=skip,
                scaler=self.scaler, amp=self.amp, print_freq=self.print_freq, stop=self.stop,
                writer=self.writer, step_hooks=self.step_hooks, progress=self.progress, distiller=self.distiller)
            if not result.stopped and self.stop is not None:
                # A signal during the last step: stop before the (possibly long) validation.
                result.stopped = du.any_rank([self.stop.requested], self.device)[0]
            if result.stopped:
                if result.iterations >= self.iters_per_epoch:
                    self.save_checkpoint(epoch + 1)
                else:
                    self.save_checkpoint(epoch, result.iterations)
                logger.warning("stopped at epoch %d iteration %d; resume with TRAIN.RESUME True", epoch,
                               result.iterations)
                return self.stop.exit_code
            loss = du.mean_over_ranks([result.loss], self.device)[0]
            if du.is_main_process():
                logger.info("epoch %d done (%d/%d) in %.1f s: train loss %.4f, next lr %.6g", epoch, epoch + 1,
                            self.end_epoch, result.seconds, loss, result.lr)
                if self.writer is not None:
                    self.writer.add_scalar("train_loss", loss, epoch)
                    self.writer.add_scalar("lr", result.lr, epoch)
            record = {"epoch": epoch, "train_loss": loss, "lr": result.lr, "seconds": result.seconds}
            if self.val_loader is not None and should_validate(epoch, self.end_epoch, self.eval_interval,
                                                               self.eval_last_epochs):
                metrics = self.validate(epoch)
                if metrics["mean_iou"] > self.best_miou:
                    self.best_miou = metrics["mean_iou"]
                    if du.is_main_process():
                        self.export("best", self.model_without_ddp)
                if du.is_main_process():
                    loss_text = f"{metrics['loss']:.3f}" if metrics["loss"] is not None else "n/a"
                    logger.info("Loss: %s, MeanIU: %.4f, Best_mIoU: %.4f", loss_text, metrics["mean_iou"],
                                self.best_miou)
                record.update(valid_loss=metrics["loss"], valid_mIoU=metrics["mean_iou"])
            self._append_history(history, record)
            self.save_checkpoint(epoch + 1)
        if du.is_main_process():
            self.export("final", self.model_without_ddp)
        return 0
