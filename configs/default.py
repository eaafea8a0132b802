"""YACS defaults with the official PIDNet keys, plus the few our features need.

Only the CLIs in ``tools/`` read a config: they call :func:`load_config` (defaults ->
``--cfg`` file -> ``KEY VALUE`` overrides -> freeze) and pass plain values on.
"""
import os

import yaml
from yacs.config import CfgNode as CN

from utils.errors import ConfigError

_C = CN()

_C.OUTPUT_DIR = "output"
_C.LOG_DIR = "log"
_C.GPUS = (0,)
_C.WORKERS = 4
_C.PRINT_FREQ = 10
_C.AUTO_RESUME = False
_C.PIN_MEMORY = True
# Ours: "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
_C.DEVICE = "auto"
# Ours: global seed for Python, NumPy and torch (the official train.py uses 304).
_C.SEED = 304

_C.CUDNN = CN()
_C.CUDNN.BENCHMARK = True
_C.CUDNN.DETERMINISTIC = False
_C.CUDNN.ENABLED = True

_C.MODEL = CN()
_C.MODEL.NAME = "pidnet_s"
_C.MODEL.PRETRAINED = "pretrained_models/imagenet/PIDNet_S_ImageNet.pth.tar"
_C.MODEL.ALIGN_CORNERS = True
_C.MODEL.NUM_OUTPUTS = 2

_C.LOSS = CN()
_C.LOSS.USE_OHEM = True
_C.LOSS.OHEMTHRES = 0.9
_C.LOSS.OHEMKEEP = 100000
_C.LOSS.CLASS_BALANCE = False
_C.LOSS.BALANCE_WEIGHTS = [0.5, 0.5]
_C.LOSS.SB_WEIGHTS = 0.5

_C.DATASET = CN()
_C.DATASET.ROOT = "data/"
_C.DATASET.DATASET = "cityscapes"
_C.DATASET.NUM_CLASSES = 19
_C.DATASET.TRAIN_SET = "list/cityscapes/train.lst"
_C.DATASET.EXTRA_TRAIN_SET = ""
_C.DATASET.TEST_SET = "list/cityscapes/val.lst"
# Ours, for DATASET.DATASET 'custom': one name and one [R, G, B] colour per class.
_C.DATASET.CLASS_NAMES = []
_C.DATASET.CLASS_COLORS = []
# Ours, for 'custom': per-class loss weights (empty = unweighted).
_C.DATASET.CLASS_WEIGHTS = []

_C.TRAIN = CN()
_C.TRAIN.IMAGE_SIZE = [1024, 1024]  # width, height
_C.TRAIN.BASE_SIZE = 2048
_C.TRAIN.FLIP = True
_C.TRAIN.MULTI_SCALE = True
_C.TRAIN.SCALE_FACTOR = 16
_C.TRAIN.LR = 0.01
_C.TRAIN.EXTRA_LR = 0.001
_C.TRAIN.OPTIMIZER = "sgd"
_C.TRAIN.MOMENTUM = 0.9
_C.TRAIN.WD = 0.0001
_C.TRAIN.NESTEROV = False
# The official default is -1 but every official YAML sets 255 (labels are uint8).
_C.TRAIN.IGNORE_LABEL = 255
_C.TRAIN.BEGIN_EPOCH = 0
_C.TRAIN.END_EPOCH = 484
_C.TRAIN.EXTRA_EPOCH = 0
# Ours: stop after this many epochs while the LR schedule still spans END_EPOCH (0 = END_EPOCH).
# The official train.py stops CamVid runs at epoch 121 of a 200-epoch schedule; the CamVid YAMLs set it.
_C.TRAIN.STOP_EPOCH = 0
_C.TRAIN.RESUME = False
_C.TRAIN.BATCH_SIZE_PER_GPU = 32
_C.TRAIN.SHUFFLE = True
# Ours: mixed precision (CUDA only; ignored with a warning on CPU).
_C.TRAIN.AMP = False
# Ours: the official validation schedule (every EVAL_INTERVAL epochs, every epoch in
# the last EVAL_LAST_EPOCHS, always on the last one).
_C.TRAIN.EVAL_INTERVAL = 5
_C.TRAIN.EVAL_LAST_EPOCHS = 100

_C.TEST = CN()
_C.TEST.IMAGE_SIZE = [2048, 1024]  # width, height
_C.TEST.BASE_SIZE = 2048
_C.TEST.BATCH_SIZE_PER_GPU = 32
_C.TEST.MODEL_FILE = ""
_C.TEST.FLIP_TEST = False
_C.TEST.MULTI_SCALE = False
# Ours: scales averaged by TEST.MULTI_SCALE (the HRNet/PIDNet evaluation scales).
_C.TEST.SCALE_LIST = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
# The official default is -1, which on the [p, main, boundary] outputs picks the boundary head;
# every official YAML sets 1 (the main head), so that is our default too.
_C.TEST.OUTPUT_INDEX = 1


def get_cfg():
    """A fresh, mutable copy of the defaults."""
    return _C.clone()


def load_config(cfg_file=None, opts=()):
    """Defaults, then ``cfg_file``, then ``KEY VALUE`` pairs; returns a frozen config.

    Raises:
        ConfigError: missing file, YAML syntax error, unknown key, wrong value type or
            an odd number of override tokens.
    """
    cfg = get_cfg()
    if cfg_file:
        if not os.path.isfile(cfg_file):
            raise ConfigError(f"config file not found: {cfg_file}. "
                              "Pass an existing YAML, e.g. --cfg configs/cityscapes/pidnet_small_cityscapes.yaml")
        try:
            cfg.merge_from_file(cfg_file)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"YAML syntax error in {cfg_file}{where}: "
                              f"{getattr(exc, 'problem', exc)}. Fix the file's syntax") from None
        except KeyError as exc:
            raise ConfigError(f"unknown config key in {cfg_file}: {_key_error_text(exc)}. "
                              "Remove it or check its spelling against configs/default.py") from None
        except (ValueError, AssertionError, TypeError) as exc:
            raise ConfigError(f"bad value in {cfg_file}: {exc}. "
                              "Use the type of the default in configs/default.py") from None
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"config overrides must be KEY VALUE pairs; got an odd number: {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        text = _key_error_text(exc)
        if isinstance(exc, KeyError) or "Non-existent key" in str(exc):
            raise ConfigError(f"unknown config key on the command line: {text}. "
                              "Check its spelling against configs/default.py") from None
        raise ConfigError(f"bad command-line config value: {text}. "
                          "Use the type of the default in configs/default.py") from None
    cfg.freeze()
    return cfg


def experiment_name(cfg_file):
    """The official output sub-folder name: the config file's stem."""
    return os.path.splitext(os.path.basename(cfg_file or "default"))[0]


def _key_error_text(exc):
    text = str(exc.args[0]) if exc.args else str(exc)
    for prefix in ("Non-existent config key: ", "Non-existent key: "):
        text = text.replace(prefix, "")
    return text
