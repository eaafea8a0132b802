"""The one place a frozen config becomes objects: datasets, models, the runtime and the layout.

Tools parse their arguments, call :func:`configs.default.load_config`, then these builders;
everything below them (``datasets/``, ``models/``, ``utils/``) takes plain values and never
sees a config. Tools without a config (``--a/--c/--p`` flags) use the same model loaders
(:func:`load_pidnet`, :func:`load_body`), so every model is built and loaded one way.

    cfg = load_config(args.cfg, args.opts)
    runtime = build_runtime(cfg, args.device)          # device, process group, cuDNN flags
    dataset = build_test_dataset(cfg)                  # DATASET.TEST_SET at TEST.IMAGE_SIZE
    model = build_model(cfg, cfg.TEST.MODEL_FILE)      # PIDNet MODEL.NAME, strictly loaded
    layout = run_layout(cfg, args.cfg)                 # OUTPUT_DIR/<dataset>/<cfg name>/...
"""
import logging
import os
from dataclasses import dataclass

from utils import distributed as du
from utils.layout import RunLayout, experiment_name

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sizes and layout

def image_hw(size):
    """``IMAGE_SIZE`` is ``[width, height]`` (the official YAMLs); tensors and crops are ``(h, w)``."""
    width, height = size
    return int(height), int(width)


def run_layout(cfg, cfg_file):
    """The artifact paths of the experiment ``cfg_file`` (OUTPUT_DIR, LOG_DIR, DATASET.DATASET)."""
    return RunLayout(cfg.OUTPUT_DIR, cfg.DATASET.DATASET, experiment_name(cfg_file), cfg.LOG_DIR)


# --------------------------------------------------------------------------- datasets

def _dataset_kwargs(cfg):
    return dict(num_classes=cfg.DATASET.NUM_CLASSES, scale_factor=cfg.TRAIN.SCALE_FACTOR,
                ignore_label=cfg.TRAIN.IGNORE_LABEL,
                class_names=list(cfg.DATASET.CLASS_NAMES) or None,
                class_colors=[tuple(c) for c in cfg.DATASET.CLASS_COLORS] or None,
                class_weights=list(cfg.DATASET.CLASS_WEIGHTS) or None)


def build_train_dataset(cfg):
    """``DATASET.TRAIN_SET`` with the training augmentation: random crops of TRAIN.IMAGE_SIZE,
    TRAIN.MULTI_SCALE around TRAIN.BASE_SIZE, TRAIN.FLIP."""
    from datasets import build_dataset

    return build_dataset(cfg.DATASET.DATASET, cfg.DATASET.ROOT, cfg.DATASET.TRAIN_SET, is_train=True,
                         crop_size=image_hw(cfg.TRAIN.IMAGE_SIZE), base_size=cfg.TRAIN.BASE_SIZE,
                         multi_scale=cfg.TRAIN.MULTI_SCALE, flip=cfg.TRAIN.FLIP, **_dataset_kwargs(cfg))


def build_test_dataset(cfg, list_path=None):
    """``DATASET.TEST_SET`` (or ``list_path``) as evaluated: whole images, no augmentation, at
    TEST.IMAGE_SIZE. The validation set of training and the test set of ``tools/eval.py``."""
    from datasets import build_dataset

    return build_dataset(cfg.DATASET.DATASET, cfg.DATASET.ROOT, list_path or cfg.DATASET.TEST_SET,
                         is_train=False, crop_size=image_hw(cfg.TEST.IMAGE_SIZE), base_size=cfg.TEST.BASE_SIZE,
                         multi_scale=False, flip=False, **_dataset_kwargs(cfg))


def build_val_dataset(cfg):
    """The validation set of training: :func:`build_test_dataset` of ``DATASET.TEST_SET``."""
    return build_test_dataset(cfg)


# --------------------------------------------------------------------------- models

def load_pidnet(name, num_classes, weights="", *, augment=False, **fixes):
    """PIDNet variant ``name`` with ``num_classes`` classes, strictly loaded from ``weights``
    (random weights when empty). ``fixes`` (``classes_fix``, ``variant_fix``, ``module_hint``)
    end the loader's errors with the calling tool's own options."""
    from models.checkpoint import load_for_eval
    from models.pidnet import build_pidnet

    model = build_pidnet(name, num_classes, augment=augment)
    if weights:
        load_for_eval(model, weights, **fixes)
    return model


def load_body(path, state_dict_hint=None):
    """A whole-module NetsPresso/fx body file (``--netspresso --model``), checked to be a body;
    ``state_dict_hint`` is the fix named when ``path`` holds weights only."""
    from models.checkpoint import load_module_file
    from models.netspresso import check_body

    model = load_module_file(path, what="model", state_dict_hint=state_dict_hint)
    check_body(model, path)
    return model


def load_netspresso(model_path, head_path=None):
    """The NetsPresso body (+ auxiliary heads) of ``--netspresso --model M [--head H]`` as one module."""
    from models.netspresso import load_netspresso as load

    return load(model_path, head_path)


def build_model(cfg, weights=None, *, augment=True, netspresso=None):
    """The network a tool evaluates, exports or runs.

    Args:
        weights: a PIDNet weights file, loaded strictly (``TEST.MODEL_FILE`` when ``None``);
            required: an empty one raises :class:`~utils.errors.CheckpointError`.
        augment: PIDNet with its auxiliary heads (``[p, main, boundary]``, the official
            evaluation) or the main output only (inference, export).
        netspresso: ``(model, head)`` paths of ``--netspresso``; the head may be ``None``.
    """
    if netspresso is not None:
        return load_netspresso(*netspresso)
    weights = cfg.TEST.MODEL_FILE if weights is None else weights
    if not weights:  # never a silently random network where a trained one was meant
        from utils.errors import CheckpointError

        raise CheckpointError("no checkpoint given: set TEST.MODEL_FILE path/to/checkpoint.pt")
    return load_pidnet(cfg.MODEL.NAME, cfg.DATASET.NUM_CLASSES, weights, augment=augment)


def build_train_model(cfg, netspresso=None, resume=False):
    """The network to train: PIDNet (+ MODEL.PRETRAINED, partially loaded, unless ``resume``:
    the checkpoint then has every weight), or the NetsPresso ``(model, head)`` to fine-tune."""
    if netspresso is not None:
        return load_netspresso(*netspresso)
    from models.checkpoint import load_pretrained
    from models.pidnet import build_pidnet

    model = build_pidnet(cfg.MODEL.NAME, cfg.DATASET.NUM_CLASSES, augment=True)
    if resume:
        logger.info("resuming: MODEL.PRETRAINED is not loaded (the checkpoint has all weights)")
    elif cfg.MODEL.PRETRAINED:
        load_pretrained(model, cfg.MODEL.PRETRAINED)
    else:
        logger.warning("MODEL.PRETRAINED is empty: training from random initialisation")
    return model


# --------------------------------------------------------------------------- evaluation

# PIDNet(augment=True) returns [p, main, boundary]; only the first two are class scores.
_PIDNET_OUTPUTS = 3
_PIDNET_SEG_OUTPUTS = (0, 1)


def main_output_index(output_index):
    """``TEST.OUTPUT_INDEX`` as an index into PIDNet's ``[p, main, boundary]``, checked."""
    from utils.errors import ConfigError

    if not -_PIDNET_OUTPUTS <= output_index < _PIDNET_OUTPUTS or \
            output_index % _PIDNET_OUTPUTS not in _PIDNET_SEG_OUTPUTS:
        raise ConfigError(f"TEST.OUTPUT_INDEX {output_index} does not select a class-score output of PIDNet "
                          f"[p, main, boundary]: use 1 for the main output")
    return output_index % _PIDNET_OUTPUTS


def build_eval_model(cfg, device, *, weights=None, netspresso=None, onnx=None, runtime=None, backend="eager"):
    """The network ``tools/eval.py`` (and the console) evaluates, on ``device`` in eval mode:
    PIDNet + ``weights`` (with its auxiliary heads, as the official evaluation), the NetsPresso
    body/head pair ``netspresso``, or for ``onnx`` a runner of the file (checked to be a segmenter
    for DATASET.NUM_CLASSES) on ``runtime``."""
    if onnx:
        from models.deploy import prepare_onnx_file

        runner = prepare_onnx_file(onnx, runtime or "onnxruntime", device, num_classes=cfg.DATASET.NUM_CLASSES)
        logger.info("evaluating the ONNX file %s: %r", onnx, runner)
        return runner
    if netspresso is not None:
        return build_model(cfg, netspresso=netspresso).to(device).eval()
    if backend != "eager":
        main_output_index(cfg.TEST.OUTPUT_INDEX)  # a bad index fails before the checkpoint is read
    return build_model(cfg, weights, augment=True).to(device).eval()


def build_eval_runner(model, cfg, device, dataset, *, onnx=False, backend="eager"):
    """``model`` as :func:`utils.evaluate.evaluate` gets it: itself (eager, all outputs) or a deploy
    runner that returns the output TEST.OUTPUT_INDEX only. Returns ``(model_fn, output_index)``, the
    index being that of the evaluated output in PIDNet's list (None for eager: evaluate() reports all)."""
    if onnx:
        return model, 1  # ONNX exports hold the main output only
    if backend == "eager":
        return model, None
    from models.deploy import prepare_inference

    index = main_output_index(cfg.TEST.OUTPUT_INDEX)
    if len(dataset):
        example = (1,) + tuple(dataset[0][0].shape)  # the real test size for the export/compile/auto probe
    else:
        example = (1, 3) + image_hw(cfg.TEST.IMAGE_SIZE)
    runner = prepare_inference(model, backend, device, example, output_index=index)
    logger.info("inference backend: %r (main output %d only)", runner, index)
    return runner, index


# --------------------------------------------------------------------------- training

def build_loaders(cfg, train_set, val_set, dist, seed):
    """``(train loader, validation loader, iterations per epoch)`` for this process of the job
    ``dist`` (:class:`utils.distributed.DistInfo`): TRAIN.BATCH_SIZE_PER_GPU images per process,
    incomplete batches dropped, the data order and worker seeds drawn from ``seed``."""
    import torch
    from torch.utils.data import DataLoader

    from datasets.base_dataset import seed_worker
    from utils.errors import ConfigError, DatasetError
    from utils.evaluate import eval_sampler
    from utils.sampler import TrainSampler
    from utils.schedule import iterations_per_epoch

    batch_size = cfg.TRAIN.BATCH_SIZE_PER_GPU
    iters = iterations_per_epoch(len(train_set), dist.world_size, batch_size)
    if iters == 0:
        raise DatasetError(
            f"{cfg.DATASET.TRAIN_SET} has {len(train_set)} images: too few for one batch of "
            f"TRAIN.BATCH_SIZE_PER_GPU {batch_size} per process x {dist.world_size} process(es) "
            "(incomplete batches are dropped); lower TRAIN.BATCH_SIZE_PER_GPU or add images")
    if batch_size < 2 and not (dist.distributed and dist.device.type == "cuda"):
        raise ConfigError("TRAIN.BATCH_SIZE_PER_GPU 1: BatchNorm needs at least 2 images per process in training "
                          "(PIDNet's context module pools to 1x1); use 2 or more (SyncBatchNorm under torchrun "
                          "on CUDA counts the images of all GPUs)")
    sampler = TrainSampler(train_set, num_replicas=dist.world_size, rank=dist.rank, shuffle=cfg.TRAIN.SHUFFLE,
                           seed=seed)
    pin = dist.device.type == "cuda" and cfg.PIN_MEMORY
    generator = torch.Generator()
    generator.manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, num_workers=cfg.WORKERS,
                              pin_memory=pin, drop_last=True, worker_init_fn=seed_worker, generator=generator)
    val_loader = DataLoader(val_set, batch_size=cfg.TEST.BATCH_SIZE_PER_GPU, shuffle=False,
                            sampler=eval_sampler(val_set), num_workers=cfg.WORKERS, pin_memory=pin)
    return train_loader, val_loader, iters


def build_criterion(cfg, class_weights=None):
    """PIDNet's loss (OHEM cross-entropy, boundary loss and their weights) from ``LOSS.*``;
    ``class_weights`` are the training set's (Cityscapes', or DATASET.CLASS_WEIGHTS)."""
    from utils.criterion import build_criterion as criterion

    return criterion(cfg.DATASET.NUM_CLASSES, ignore_label=cfg.TRAIN.IGNORE_LABEL, use_ohem=cfg.LOSS.USE_OHEM,
                     ohem_thres=cfg.LOSS.OHEMTHRES, ohem_keep=cfg.LOSS.OHEMKEEP, class_weights=class_weights,
                     balance_weights=list(cfg.LOSS.BALANCE_WEIGHTS), sb_weights=cfg.LOSS.SB_WEIGHTS,
                     align_corners=cfg.MODEL.ALIGN_CORNERS)


def build_optimizer(cfg, module, iters_per_epoch):
    """``(SGD optimizer over module, poly LR schedule over TRAIN.END_EPOCH epochs)``."""
    from utils.schedule import PolyLR, build_optimizer as optimizer_for

    optimizer = optimizer_for(module, cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR, cfg.TRAIN.MOMENTUM, cfg.TRAIN.WD,
                              cfg.TRAIN.NESTEROV)
    return optimizer, PolyLR(optimizer, max_iters=cfg.TRAIN.END_EPOCH * iters_per_epoch)


def load_teacher(cfg, path, device):
    """``(teacher body, weights fingerprint)`` of ``--teacher path`` (variant MODEL.NAME)."""
    from utils.distillation import load_teacher as load

    return load(path, cfg.MODEL.NAME, cfg.DATASET.NUM_CLASSES, device)


def build_distiller(cfg, teacher, student, weight=1.0, temperature=1.0, features=None):
    """The distillation loss of ``student`` (before DDP wrapping) against ``teacher`` (from
    :func:`load_teacher`), or ``None`` without a teacher."""
    if teacher is None:
        return None
    from utils.distillation import Distiller

    body, fingerprint = teacher
    return Distiller(body, student, weight, temperature, features, ignore_label=cfg.TRAIN.IGNORE_LABEL,
                     align_corners=cfg.MODEL.ALIGN_CORNERS, fingerprint=fingerprint)


# --------------------------------------------------------------------------- runtime

def apply_cudnn(enabled=True, benchmark=True, deterministic=False):
    """Set the cuDNN flags, once per process (nothing else in the toolkit changes them).

    ``deterministic`` wins over ``benchmark`` (autotuning picks kernels by timing) and makes
    cuBLAS deterministic too.
    """
    import torch

    torch.backends.cudnn.enabled = bool(enabled)
    torch.backends.cudnn.benchmark = bool(benchmark) and not deterministic
    torch.backends.cudnn.deterministic = bool(deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job (:class:`utils.distributed.DistInfo`) and whether it
    joined the process group itself (then :meth:`close` leaves it)."""
    dist: du.DistInfo
    owns_group: bool

    @property
    def device(self):
        return self.dist.device

    def close(self):
        if self.owns_group:
            du.cleanup()


def build_runtime(cfg, device_arg=None, timeout_s=du.DEFAULT_TIMEOUT_S):
    """Pick the device (``device_arg``, else ``DEVICE``), join torchrun's process group (with a
    collective timeout of ``timeout_s``) and apply ``CUDNN.*``.

    A process that already belongs to a group (a tool called in-process by a distributed job)
    keeps it: the device is resolved and the group is left to its owner.
    """
    import torch.distributed as dist

    name = device_arg or cfg.DEVICE
    if dist.is_available() and dist.is_initialized():
        from utils.device import resolve_device

        info = du.DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK") or 0),
                           resolve_device(name))
        runtime = Runtime(info, owns_group=False)
    else:
        info = du.init_distributed(name, timeout_s)
        runtime = Runtime(info, owns_group=info.distributed)
    apply_cudnn(cfg.CUDNN.ENABLED, cfg.CUDNN.BENCHMARK, cfg.CUDNN.DETERMINISTIC)
    return runtime
