"""The model the user picked: a whole exported module (+ head) or a checkpoint + config.

Names are relative to the work directory; shipped configs are offered as ``builtin:configs/...``.
A checkpoint is exported to a body + head as ``tools/export_netspresso.py`` does.
"""
import dataclasses
import logging
import os

from utils.console.workspace import CONFIG_EXTENSIONS, file_kind
from utils.errors import ConsoleError

logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILTIN_CONFIGS = os.path.join(REPO_ROOT, "configs")
BUILTIN_PREFIX = "builtin:"
DEFAULT_INPUT_SIZE = (512, 1024)
TRACE_SIZE = (256, 256)  # tools/compress.py's default --trace-size
MIN_SIZE = 32
MAX_SIZE = 4096


@dataclasses.dataclass
class Source:
    """A model as the user picked it (names relative to the work directory)."""
    model: str
    config: str = ""
    head: str = ""

    def describe(self):
        return self.model + (f" + {self.config}" if self.config else "") + (f" (head {self.head})" if self.head else "")


def builtin_configs():
    """The shipped experiment files, offered beside the work directory's own configs."""
    names = []
    for folder, _, files in os.walk(BUILTIN_CONFIGS):
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")):
                rel = os.path.relpath(os.path.join(folder, name), REPO_ROOT).replace(os.sep, "/")
                names.append(BUILTIN_PREFIX + rel)
    return sorted(names)


def config_path(workspace, name):
    if not name.lower().endswith(CONFIG_EXTENSIONS):
        raise ConsoleError(f"'{name}' is not a config (.yaml): pick a config from the list")
    if name.startswith(BUILTIN_PREFIX):
        full = os.path.realpath(os.path.join(REPO_ROOT, name[len(BUILTIN_PREFIX):]))
        if os.path.commonpath([full, BUILTIN_CONFIGS]) != BUILTIN_CONFIGS or not os.path.isfile(full):
            raise ConsoleError(f"'{name}' is not one of the shipped configs: pick one from the list")
        return full
    return workspace.path(name)


def head_for(workspace, model_name):
    """The head file that goes with a body (:func:`utils.layout.find_head`), relative, or ''."""
    from utils.layout import find_head

    head = find_head(workspace.path(model_name, must_exist=False))
    return workspace.relative(head) if head else ""


def check_input_size(size):
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConsoleError(f"input size must be two integers (height width), got {size!r}") from None
    if not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise ConsoleError(f"input size {height}x{width} is out of range: use {MIN_SIZE}..{MAX_SIZE} per side")
    return height, width


def trace_size_for(input_size):
    return (min(TRACE_SIZE[0], input_size[0]), min(TRACE_SIZE[1], input_size[1]))


def load_source(workspace, source):
    """``(body, head or None, default input size, export)`` for a picked model.

    ``export`` is ``{"cfg": path, "checkpoint": path}`` when the body was exported from a
    checkpoint (as tools/export_netspresso.py does), else None.
    """
    from models.checkpoint import load_module_file

    path = workspace.path(source.model)
    kind = file_kind(path)
    if kind == "config":
        raise ConsoleError(f"{source.model} is a config, not a model: pick it as the config of a checkpoint")
    if kind == "other":
        raise ConsoleError(f"{source.model} is not a model file (neither a PyTorch module nor a checkpoint): "
                           "pick an exported model_modelfx.pt, a compressed model or a checkpoint + config")
    if kind == "module":
        if source.config:
            raise ConsoleError(f"{source.model} is a whole exported module; it needs no config: clear the config")
        body = load_module_file(path, what="model")
        head = load_module_file(workspace.path(source.head), what="head") if source.head else None
        return body, head, DEFAULT_INPUT_SIZE, None
    if not source.config:
        raise ConsoleError(f"{source.model} holds weights only: pick the config it was trained with "
                           "(e.g. configs/cityscapes/pidnet_small_cityscapes.yaml)")
    from configs.default import load_config
    from models.checkpoint import load_for_eval
    from models.netspresso import export_pidnet
    from models.pidnet import build_pidnet

    cfg_file = config_path(workspace, source.config)
    cfg = load_config(cfg_file)
    net = build_pidnet(cfg.MODEL.NAME, cfg.DATASET.NUM_CLASSES, augment=True)
    load_for_eval(net, path)
    body, head = export_pidnet(net.eval())
    width, height = cfg.TEST.IMAGE_SIZE
    return body, head, (int(height), int(width)), {"cfg": cfg_file, "checkpoint": path}
