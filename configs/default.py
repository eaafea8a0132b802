"""YACS defaults with the official PIDNet keys, plus the few our features need.

Only the CLIs in ``tools/`` read a config: they call :func:`load_config` (defaults ->
``--cfg`` file -> ``KEY VALUE`` overrides -> freeze) and pass plain values on.
"""
import logging
import math
import os

import yaml
from yacs.config import CfgNode as CN

from utils.errors import ConfigError

logger = logging.getLogger(__name__)

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


# Official keys that nothing reads: accepted so the official YAMLs load, with what to use instead.
IGNORED_KEYS = {
    "GPUS": "start one process per GPU with torchrun --nproc_per_node N (see README); --device picks the device",
    "AUTO_RESUME": "use TRAIN.RESUME True to continue from OUTPUT_DIR/<dataset>/<cfg name>/checkpoint.pth.tar",
    "MODEL.NUM_OUTPUTS": "PIDNet always has its [P, main, boundary] outputs; TEST.OUTPUT_INDEX picks the evaluated one",
    "LOSS.CLASS_BALANCE": "Cityscapes always uses its class weights; give DATASET.CLASS_WEIGHTS for a custom dataset",
    "DATASET.EXTRA_TRAIN_SET": "list every training image in DATASET.TRAIN_SET (e.g. a trainval list)",
    "TRAIN.EXTRA_LR": "there is no extra training phase: run tools/train.py again with TRAIN.LR",
    "TRAIN.EXTRA_EPOCH": "there is no extra training phase: run tools/train.py again with TRAIN.END_EPOCH",
}
# Per-dataset keys that only DATASET.DATASET 'custom' reads (the official datasets have their own).
CUSTOM_ONLY_KEYS = ("CLASS_NAMES", "CLASS_COLORS", "CLASS_WEIGHTS")


def get_cfg():
    """A fresh, mutable copy of the defaults."""
    return _C.clone()


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def log_ignored_keys(cfg):
    """One line per compatibility key set to something other than its default."""
    for key, instead in IGNORED_KEYS.items():
        value = _get(cfg, key)
        if value != _get(_C, key):
            logger.info("%s %s is accepted for compatibility and ignored: %s", key, value, instead)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(cfg, source):
    """Shapes and ranges of the values every tool relies on, before data or models are built."""
    for key in ("TRAIN.IMAGE_SIZE", "TEST.IMAGE_SIZE"):
        size = _get(cfg, key)
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise ConfigError(f"{key} {list(size)} in {source} must be two positive integers [width, height], "
                              "e.g. [1024, 1024]")
    for key in ("TRAIN.BASE_SIZE", "TEST.BASE_SIZE", "DATASET.NUM_CLASSES"):
        if not _get(cfg, key) > 0:
            raise ConfigError(f"{key} {_get(cfg, key)} in {source} must be positive")
    weights = list(cfg.LOSS.BALANCE_WEIGHTS)
    if len(weights) != 2 or not all(_is_number(w) and w >= 0 for w in weights):
        raise ConfigError(f"LOSS.BALANCE_WEIGHTS {weights} in {source} needs two weights >= 0, one for the P "
                          "output and one for the main output (the official [0.4, 1.0])")
    scales = list(cfg.TEST.SCALE_LIST)
    if not all(_is_number(s) and s > 0 for s in scales):
        raise ConfigError(f"TEST.SCALE_LIST {scales} in {source} must hold positive factors, e.g. [0.75, 1.0, 1.25]")
    if cfg.TEST.MULTI_SCALE and not scales:
        raise ConfigError(f"TEST.MULTI_SCALE True with an empty TEST.SCALE_LIST in {source}: give the scales, "
                          "e.g. TEST.SCALE_LIST [0.75,1.0,1.25], or set TEST.MULTI_SCALE False")
    from datasets import DATASETS  # the one list of dataset names

    name = str(cfg.DATASET.DATASET).lower()
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{cfg.DATASET.DATASET}' (DATASET.DATASET in {source}); choose one of "
                          f"{', '.join(sorted(DATASETS))}")
    given = [f"DATASET.{key}" for key in CUSTOM_ONLY_KEYS if len(cfg.DATASET[key])]
    if given and name != "custom":
        raise ConfigError(f"{', '.join(given)} in {source} only apply to DATASET.DATASET custom; "
                          f"{cfg.DATASET.DATASET} has its own classes: remove them or use DATASET.DATASET custom")


def _check_yaml_file(cfg_file):
    """A YAML mapping of config keys, or one clear error for a folder, an empty file or another shape."""
    if os.path.isdir(cfg_file):
        raise ConfigError(f"--cfg {cfg_file} is a folder: pass a YAML file inside it, "
                          "e.g. configs/cityscapes/pidnet_small_cityscapes.yaml")
    if not os.path.isfile(cfg_file):
        raise ConfigError(f"config file not found: {cfg_file}. "
                          "Pass an existing YAML, e.g. --cfg configs/cityscapes/pidnet_small_cityscapes.yaml")
    with open(cfg_file, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError:
            return  # merge_from_file reports the syntax error with its position
    if data is None:
        raise ConfigError(f"config file {cfg_file} is empty: give at least the keys that differ from "
                          "configs/default.py, e.g. copy configs/cityscapes/pidnet_small_cityscapes.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {cfg_file} holds a YAML {type(data).__name__}, not a mapping of "
                          "config keys (KEY: value lines, as in configs/cityscapes/pidnet_small_cityscapes.yaml)")


def load_config(cfg_file=None, opts=()):
    """Defaults, then ``cfg_file``, then ``KEY VALUE`` pairs; returns a frozen config.

    Compatibility keys that nothing reads (:data:`IGNORED_KEYS`) are logged once when set.

    Raises:
        ConfigError: missing, empty or non-mapping file, YAML syntax error, unknown key, wrong
            value type or shape (:func:`validate`), or an odd number of override tokens.
    """
    cfg = get_cfg()
    if cfg_file:
        _check_yaml_file(cfg_file)
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
    log_ignored_keys(cfg)
    validate(cfg, " + ".join(([cfg_file] if cfg_file else []) + (["the command-line overrides"] if opts else []))
             or "configs/default.py")
    cfg.freeze()
    return cfg


def _key_error_text(exc):
    text = str(exc.args[0]) if exc.args else str(exc)
    for prefix in ("Non-existent config key: ", "Non-existent key: "):
        text = text.replace(prefix, "")
    return text
