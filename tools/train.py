"""Train PIDNet on one CPU/GPU, or on several GPUs/nodes with DistributedDataParallel via torchrun.

Examples (from the repository root)::

    # one GPU (or CPU when there is none), the official recipe
    python tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml

    # 2 GPUs on this machine: TRAIN.BATCH_SIZE_PER_GPU images per process
    torchrun --nproc_per_node 2 tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml

    # 2 nodes x 4 GPUs (run on every node; HOST is node 0's address)
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        --rdzv_id pidnet1 tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml

    # continue the run in OUTPUT_DIR/<dataset>/<cfg name>/ from its checkpoint.pth.tar
    python tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml TRAIN.RESUME True

    # start over in a folder that holds a previous run (refused without --overwrite)
    python tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml --overwrite

    # a quick CPU run on generated data
    python tools/make_synthetic.py --root data/synthetic --num-train 96 --num-val 16 --size 256 128
    python tools/train.py --cfg configs/synthetic/pidnet_small_synthetic.yaml --device cpu TRAIN.END_EPOCH 2

    # fine-tune a compressed NetsPresso model (body + auxiliary heads)
    python tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        --netspresso --model compressed/model.pt --head compressed/head.pt TRAIN.END_EPOCH 100

    # the same, distilling from the uncompressed model (logits + the body's three outputs)
    python tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \\
        --netspresso --model compressed/model.pt --head compressed/head.pt TRAIN.END_EPOCH 100 \\
        --teacher output/cityscapes/pidnet_small_cityscapes/best.pt --kd-weight 1 --kd-temperature 1 \\
        --kd-features cs

Outputs in ``OUTPUT_DIR/<dataset>/<cfg name>/``: ``checkpoint.pth.tar`` (resumable, every epoch and
on SIGINT/SIGTERM), ``best.pt`` and ``final_state.pt`` (``model.``-prefixed state dicts as the
official ones; ``best_model_*.pt``/``final_model_*.pt`` with ``--netspresso``), a log file and, while
the run lasts, the lock ``.pidnet.lock`` that keeps a second run out of the folder;
TensorBoard scalars in ``LOG_DIR/<dataset>/<cfg name>/``. Exit codes: 0 done, 2 bad input or
training error (one ``error:`` line), 130/143 stopped by SIGINT/SIGTERM after saving a checkpoint.
"""
import argparse
import contextlib
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from configs import build  # noqa: E402
from configs.default import load_config  # noqa: E402
from utils import distributed as du  # noqa: E402
from utils.cli import first_line, run_main, setup_logging  # noqa: E402
from utils.errors import (CheckpointError, ConfigError, NonFiniteLossError, OutputError, PIDNetError,  # noqa: E402
                          TrainingError, UsageError)
from utils.io import check_writable, made_dirs  # noqa: E402
from utils.runlock import RunLock  # noqa: E402

logger = logging.getLogger("tools.train")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Train PIDNet (single process or torchrun DDP).")
    parser.add_argument("--cfg", required=True,
                        help="experiment YAML, e.g. configs/cityscapes/pidnet_small_cityscapes.yaml")
    parser.add_argument("opts", nargs="*", default=[],
                        help="config overrides as KEY VALUE pairs, e.g. TRAIN.END_EPOCH 10 TRAIN.RESUME True")
    parser.add_argument("--device", default=None, help="auto (default: the config's DEVICE), cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's SEED, 304)")
    parser.add_argument("--dist-timeout", type=float, default=du.DEFAULT_TIMEOUT_S, metavar="SEC",
                        help="under torchrun: a collective that does not finish within SEC seconds fails the "
                             f"job instead of hanging (default {du.DEFAULT_TIMEOUT_S})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--netspresso", action="store_true",
                        help="fine-tune a compressed NetsPresso/torch.fx model given by --model and --head")
    parser.add_argument("--model", default=None, help="with --netspresso: the compressed model (body) file")
    parser.add_argument("--head", default=None, help="with --netspresso: the auxiliary head file")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a fresh run even though OUTPUT_DIR/<dataset>/<cfg name>/ holds a previous "
                             "run's checkpoint (it is replaced); without it such a run is refused")
    parser.add_argument("--teacher", default=None,
                        help="distil from this frozen PIDNet (any weights file the loader takes, variant "
                             "MODEL.NAME, or a whole-module file) while training")
    parser.add_argument("--kd-weight", type=float, default=None, help="with --teacher: weight of the "
                        "distillation loss (default 1.0)")
    parser.add_argument("--kd-temperature", type=float, default=None,
                        help="with --teacher: softmax temperature of the pixel-wise KL (default 1.0)")
    parser.add_argument("--kd-features", default=None, help="with --teacher: also distil the body's three "
                        "outputs with cs (cosine similarity) or norm_mse (normalised MSE)")
    return parser


def parse_args(argv=None):
    # Intermixed parsing lets options follow the KEY VALUE overrides (..., TRAIN.END_EPOCH 5 --device cpu).
    return get_args_parser().parse_intermixed_args(argv)


# ---------------------------------------------------------------------------
# Checks that must fail before any work is done.
# ---------------------------------------------------------------------------

def claim_output(stack, layout, resume_path, overwrite):
    """Rank 0: check and create the output folders, lock OUTPUT_DIR and refuse to overwrite a run.

    Everything is registered on ``stack``: on failure the lock is released and the folders this
    run created are removed again if they are still empty.
    """
    out_dir, tb_dir = layout.run_dir, layout.log_dir
    check_writable(out_dir, "OUTPUT_DIR", is_dir=True)
    check_writable(tb_dir, "LOG_DIR", is_dir=True)
    stack.enter_context(made_dirs(out_dir))
    stack.enter_context(made_dirs(tb_dir))
    stack.enter_context(RunLock(out_dir, what="OUTPUT_DIR"))
    existing = [name for name in layout.run_files if os.path.exists(os.path.join(out_dir, name))]
    if resume_path is None and existing:
        if not overwrite:
            raise OutputError(
                f"{out_dir} holds a previous run ({', '.join(existing)}) that a fresh run would overwrite: "
                "continue it with TRAIN.RESUME True, choose another OUTPUT_DIR, or pass --overwrite to replace it")
        logger.warning("--overwrite: this fresh run replaces %s in %s", ", ".join(existing), out_dir)


def check_config(cfg, args):
    if args.netspresso:
        if not args.model or not args.head:
            raise UsageError("--netspresso training needs --model FILE and --head FILE (the auxiliary heads "
                              "provide the P and boundary outputs the PIDNet loss needs)")
    elif args.model or args.head:
        raise UsageError("--model/--head are for compressed models and need --netspresso")
    check_distillation_args(args)
    train = cfg.TRAIN
    if train.BATCH_SIZE_PER_GPU < 1:
        raise ConfigError(f"TRAIN.BATCH_SIZE_PER_GPU must be >= 1 (got {train.BATCH_SIZE_PER_GPU})")
    if not 0 <= train.BEGIN_EPOCH < train.END_EPOCH:
        raise ConfigError(f"TRAIN.BEGIN_EPOCH {train.BEGIN_EPOCH} / TRAIN.END_EPOCH {train.END_EPOCH}: "
                          "need 0 <= BEGIN_EPOCH < END_EPOCH")
    if not 0 <= train.STOP_EPOCH <= train.END_EPOCH or 0 < train.STOP_EPOCH <= train.BEGIN_EPOCH:
        raise ConfigError(f"TRAIN.STOP_EPOCH {train.STOP_EPOCH} must be 0 (= END_EPOCH) or between "
                          f"BEGIN_EPOCH {train.BEGIN_EPOCH} and END_EPOCH {train.END_EPOCH}")
    if str(train.OPTIMIZER).lower() != "sgd":
        raise ConfigError(f"TRAIN.OPTIMIZER '{train.OPTIMIZER}' is not supported: the PIDNet recipe uses 'sgd'")
    if train.LR <= 0:
        raise ConfigError(f"TRAIN.LR must be positive (got {train.LR})")
    if not 0 <= cfg.TRAIN.IGNORE_LABEL <= 255:
        raise ConfigError(f"TRAIN.IGNORE_LABEL {cfg.TRAIN.IGNORE_LABEL} must be 0..255 (labels are uint8); "
                          "the official configs use 255")
    if cfg.WORKERS < 0:
        raise ConfigError(f"WORKERS must be >= 0 (got {cfg.WORKERS})")


def check_distillation_args(args):
    from utils.distillation import check_settings

    given = [f"--{n.replace('_', '-')}" for n in ("kd_weight", "kd_temperature", "kd_features")
             if getattr(args, n, None) is not None]
    if given and not args.teacher:
        raise UsageError(f"{', '.join(given)} need --teacher CKPT (the model to distil from)")
    if args.teacher:
        check_settings(*distillation_settings(args))


def distillation_settings(args):
    """``(weight, temperature, features)`` with the defaults filled in."""
    return (1.0 if args.kd_weight is None else args.kd_weight,
            1.0 if args.kd_temperature is None else args.kd_temperature, args.kd_features)


def resume_source(cfg, layout):
    """The checkpoint to resume from, or ``None`` (with the official warning when it is missing)."""
    if not cfg.TRAIN.RESUME:
        return None
    path = layout.checkpoint
    if os.path.isfile(path):
        return path
    # The official trainer silently starts over in this case; we do the same but say so.
    logger.warning("TRAIN.RESUME is True but %s does not exist: starting a fresh run", path)
    return None


# ---------------------------------------------------------------------------
# Building blocks.
# ---------------------------------------------------------------------------

def make_exporter(layout, netspresso):
    """``export(kind, model)`` writing the weights-only files for ``'best'``/``'final'``."""
    from models.checkpoint import official_state_dict
    from utils.io import atomic_save

    def export(kind, model):
        if netspresso:
            from models.netspresso import save_netspresso

            return save_netspresso(model, layout.run_dir, f"{kind}_model")
        path = layout.weights(kind)
        atomic_save(official_state_dict(model), path)
        logger.info("saved %s", path)
        return [path]

    return export


def _open_writer(log_dir):
    from tensorboardX import SummaryWriter

    return SummaryWriter(log_dir)


def _restore(path, model, optimizer, scheduler, scaler, train_set, info, max_iters, seed, distiller=None):
    from utils.distillation import restore_distillation
    from utils.checkpointing import load_checkpoint, restore_checkpoint
    from utils.seeding import restore_rng_state

    state = load_checkpoint(path)
    restore_distillation(state, distiller, path)
    restore_checkpoint(state, model, optimizer, scheduler, scaler, path=path)
    if scheduler.max_iters != max_iters:
        logger.warning("the LR schedule now spans %d iterations (the checkpoint's %d): TRAIN.END_EPOCH, the "
                       "batch size or the process count changed", max_iters, scheduler.max_iters)
        scheduler.set_max_iters(max_iters)
    if state.get("seed") is not None and state["seed"] != seed:
        logger.warning("the checkpoint was trained with seed %s, this run uses %s", state["seed"], seed)
    rng = state.get("rng") or []
    same_world = state.get("world_size", 1) == info.world_size and len(rng) == info.world_size
    if same_world:
        restore_rng_state(rng[info.rank], train_set)
    else:
        logger.warning("%s was written by %d process(es), this run has %d: the data order and random "
                       "augmentations differ from an uninterrupted run", path, state.get("world_size", 1),
                       info.world_size)
    epoch, iteration = int(state["epoch"]), int(state.get("iteration", 0))
    logger.info("resumed from %s: epoch %d%s, best mIoU %.4f", path, epoch,
                f", iteration {iteration}" if iteration else "", float(state.get("best_mIoU", 0.0)))
    return epoch, iteration, float(state.get("best_mIoU", 0.0)), same_world


def non_finite_message(exc, cfg, args, layout, resume_path):
    """The non-finite-loss error with what is on disk and the likely culprit."""
    checkpoint = layout.checkpoint
    text = str(exc)
    if os.path.isfile(checkpoint):
        text += f"; {checkpoint} is untouched: the last good state (resume with TRAIN.RESUME True)"
    else:
        text += "; no checkpoint was written yet"
    first_step = exc.epoch == cfg.TRAIN.BEGIN_EPOCH and exc.iteration == 0 and resume_path is None
    fixes = "lower TRAIN.LR, check the data, or disable TRAIN.AMP"
    if first_step and args.netspresso:
        return text + (f". The very first step failed: suspect the --model file {args.model} or the --head file "
                       f"{args.head}; otherwise {fixes}")
    if first_step and cfg.MODEL.PRETRAINED:
        return text + (f". The very first step failed: suspect MODEL.PRETRAINED {cfg.MODEL.PRETRAINED} (re-download "
                       f"it, or set MODEL.PRETRAINED '' to train from scratch); otherwise {fixes}")
    return text + f". {fixes[0].upper()}{fixes[1:]}"


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------

def main(args):
    setup_logging()
    cfg = load_config(args.cfg, args.opts)
    check_config(cfg, args)
    layout = build.run_layout(cfg, args.cfg)
    resume_path = resume_source(cfg, layout)
    if args.netspresso:
        for what, path in (("model", args.model), ("head", args.head)):
            if not os.path.isfile(path):
                raise CheckpointError(f"--{what} file not found: {path}. Check the path")
    elif cfg.MODEL.PRETRAINED and resume_path is None and not os.path.isfile(cfg.MODEL.PRETRAINED):
        raise CheckpointError(f"MODEL.PRETRAINED file not found: {cfg.MODEL.PRETRAINED}. Download it "
                              "(see pretrained_models/README.md) or set MODEL.PRETRAINED '' to train from scratch")

    runtime = build.build_runtime(cfg, args.device, args.dist_timeout)
    info = runtime.dist
    try:
        with contextlib.ExitStack() as stack:
            failure = None
            if info.is_main:  # one process owns the folder (and its lock) for the whole job
                try:
                    claim_output(stack, layout, resume_path, args.overwrite)
                except (PIDNetError, OSError) as exc:
                    failure = exc
            if info.distributed:  # every rank learns the outcome: none waits for a rank 0 that gave up
                (failed,) = du.any_rank([failure is not None], info.device)
                if failed and failure is None:
                    raise OutputError(f"rank {info.rank}: rank 0 could not claim OUTPUT_DIR {layout.run_dir} "
                                      "(see its error line)")
            if failure is not None:
                raise failure
            return _train(cfg, args, info, layout, resume_path)
    except NonFiniteLossError as exc:
        raise TrainingError(non_finite_message(exc, cfg, args, layout, resume_path)) from None
    except torch.distributed.DistError as exc:
        first = first_line(exc)
        raise TrainingError(f"rank {info.rank}: a collective failed ({first}); another process probably died "
                            f"or timed out. {layout.checkpoint} holds the last completed "
                            "epoch: fix the cause and resume with TRAIN.RESUME True") from None
    finally:
        runtime.close()


def _train(cfg, args, info, layout, resume_path):
    from utils.engine import Trainer
    from utils.faults import fault_hooks_from_env
    from utils.seeding import seed_everything
    from utils.signals import StopRequest

    # Before anything is written: a wrong teacher is bad input.
    teacher = build.load_teacher(cfg, args.teacher, info.device) if args.teacher else None
    seed = cfg.SEED if args.seed is None else args.seed
    device = info.device
    if info.distributed:
        some, missing = du.any_rank([resume_path is not None, resume_path is None], device)
        if some and missing:
            raise TrainingError(f"rank {info.rank}: {layout.checkpoint} is visible to some "
                                "processes only: put OUTPUT_DIR on storage that every node shares to resume")
    amp = bool(cfg.TRAIN.AMP)
    if amp and device.type != "cuda":
        logger.warning("TRAIN.AMP needs CUDA: training in float32 on %s", device)
        amp = False
    # Each rank gets its own streams; DDP broadcasts rank 0's initial weights anyway.
    seed_everything(seed + info.rank, deterministic=cfg.CUDNN.DETERMINISTIC)

    train_set, val_set = build.build_train_dataset(cfg), build.build_val_dataset(cfg)
    train_loader, val_loader, iters = build.build_loaders(cfg, train_set, val_set, info, seed)
    if info.is_main:
        # The log file only appears once the data checks passed.
        stamp = time.strftime("%Y-%m-%d-%H-%M")
        setup_logging(log_file=layout.train_log(stamp))
        logger.info("config %s, overrides %s, seed %d\n%s", args.cfg, args.opts, seed, cfg.dump())
    logger.info("%d training images, %d validation images; %d iterations per epoch of %d images per process "
                "x %d process(es)", len(train_set), len(val_set), iters, cfg.TRAIN.BATCH_SIZE_PER_GPU,
                info.world_size)

    model = build.build_train_model(cfg, netspresso=(args.model, args.head) if args.netspresso else None,
                                    resume=resume_path is not None)
    if info.distributed and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif info.distributed:
        logger.info("SyncBatchNorm needs CUDA: each CPU process normalises over its own batch")
    model = model.to(device)
    model_without_ddp = model
    distiller = build.build_distiller(cfg, teacher, model_without_ddp, *distillation_settings(args))
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    criterion = build.build_criterion(cfg, getattr(train_set, "class_weights", None)).to(device)
    # The distillation adapters (if any) are trained with the student, in the same parameter group.
    trained = model_without_ddp if distiller is None else nn.ModuleList([model_without_ddp, distiller.adapters])
    optimizer, scheduler = build.build_optimizer(cfg, trained, iters)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, start_iter, best, restored_rng = cfg.TRAIN.BEGIN_EPOCH, 0, 0.0, False
    if resume_path is not None:
        start_epoch, start_iter, best, restored_rng = _restore(
            resume_path, model_without_ddp, optimizer, scheduler, scaler, train_set, info,
            max_iters=cfg.TRAIN.END_EPOCH * iters, seed=seed, distiller=distiller)
    elif start_epoch:
        # BEGIN_EPOCH > 0 without a checkpoint: the LR continues as if those epochs had run.
        for _ in range(start_epoch * iters):
            scheduler.step()
    if start_iter >= iters:
        start_epoch, start_iter = start_epoch + 1, 0

    writer = _open_writer(layout.log_dir) if info.is_main else None
    trainer = Trainer(
        model=model, model_without_ddp=model_without_ddp, criterion=criterion, train_loader=train_loader,
        val_loader=val_loader, optimizer=optimizer, scheduler=scheduler, scaler=scaler, device=device,
        checkpoint_path=layout.checkpoint, export=make_exporter(layout, args.netspresso),
        end_epoch=cfg.TRAIN.STOP_EPOCH or cfg.TRAIN.END_EPOCH, iters_per_epoch=iters, batch_size=cfg.TRAIN.BATCH_SIZE_PER_GPU,
        num_classes=cfg.DATASET.NUM_CLASSES, ignore_label=cfg.TRAIN.IGNORE_LABEL,
        align_corners=cfg.MODEL.ALIGN_CORNERS, seed=seed, amp=amp, eval_interval=cfg.TRAIN.EVAL_INTERVAL,
        eval_last_epochs=cfg.TRAIN.EVAL_LAST_EPOCHS, print_freq=cfg.PRINT_FREQ, config_text=cfg.dump(),
        class_names=list(getattr(train_set, "class_names", None) or []), writer=writer,
        step_hooks=fault_hooks_from_env(), progress=not args.no_progress, best_miou=best, distiller=distiller,
        history_path=layout.history)
    if start_epoch >= trainer.end_epoch:
        logger.info("training already reached epoch %d (TRAIN.STOP_EPOCH/END_EPOCH)", trainer.end_epoch)
    start = time.perf_counter()
    try:
        with StopRequest() as stop:
            trainer.stop = stop
            code = trainer.run(start_epoch, start_iter, restored_mid_epoch=restored_rng)
    finally:
        if writer is not None:
            writer.close()
    if code == 0:
        logger.info("done in %.2f hours; best mIoU %.4f; outputs in %s", (time.perf_counter() - start) / 3600,
                    trainer.best_miou, layout.run_dir)
    return code


if __name__ == "__main__":
    sys.exit(run_main(main, parse_args()))
