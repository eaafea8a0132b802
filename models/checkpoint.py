"""The one weight loader every tool uses.

Accepted files (all loaded with ``map_location`` and ``weights_only=True``):

* ImageNet backbones, ``{'state_dict': {...}}`` with unprefixed keys (``PIDNet_S_ImageNet.pth.tar``);
* official fine-tuned checkpoints (``PIDNet_S_Cityscapes_val.pt``): a plain state dict whose keys
  are prefixed ``model.`` because the official training wrapper saved itself, possibly with loss
  keys such as ``sem_loss.criterion.weight``;
* our training checkpoints (``checkpoint.pth.tar``: a dict with ``'model'``), ``best.pt`` /
  ``final_state.pt`` (official format);
* any of these with a DistributedDataParallel ``module.`` prefix.

Keys are normalised by :func:`checkpoint_filter_fn`. Loading never silently does nothing: zero
matching tensors is a :class:`CheckpointError`, and evaluation refuses missing keys or a
class-count mismatch. Every file read here (whole modules included) must hold finite floating-point
tensors: a NaN/inf anywhere is refused naming the file and the first bad tensor. Whole-module
pickles (NetsPresso / torch.fx files) run code when loaded and are only read by
:func:`load_module_file`, for paths the user named explicitly.
"""
import logging
import os
import pickle
import re

import torch
import torch.nn as nn

from utils.cli import first_line
from utils.errors import CheckpointError

logger = logging.getLogger(__name__)

_PREFIXES = ("module.", "model.")
# Keys the official training wrapper saved beside the network (loss buffers).
_NON_MODEL_PREFIXES = ("sem_loss.", "bd_loss.", "loss.")


MODULE_HINT = "use the --netspresso --model FILE option for such files"


def read_checkpoint(path, map_location="cpu", module_hint=MODULE_HINT):
    """``torch.load`` a checkpoint safely, turning every failure into one clear CheckpointError."""
    path = os.fspath(path)
    if not path:
        raise CheckpointError("no checkpoint given: set TEST.MODEL_FILE (or the tool's checkpoint flag)")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder: pass the weights file inside it "
                              f"(e.g. {os.path.join(path, 'best.pt')})")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}. Check the path "
                              "(see pretrained_models/README.md for where official files go)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        name = found.group(1) if found else ""
        if _looks_like_module(name):
            raise CheckpointError(
                f"{path} holds a whole pickled module ({name}), not weights (e.g. a NetsPresso/torch.fx "
                f"model): {module_hint}") from None
        what = f"Python objects ({name})" if name else "data a safe load refuses"
        raise CheckpointError(f"{path} is not a weights file: it contains {what}. "
                              "Pass a .pt/.pth/.pth.tar state dict or checkpoint") from None
    except Exception as exc:  # arbitrary bytes make the unpickler raise almost anything (KeyError, ...)
        first = first_line(exc)
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a checkpoint: {first}): "
                              "re-download or re-create the file") from None
    check_finite(_named_tensors(obj), path)
    return obj


def _named_tensors(obj, prefix=""):
    """``(dotted name, tensor)`` for every tensor nested in dicts/lists/tuples, in file order."""
    if torch.is_tensor(obj):
        yield prefix or "<tensor>", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _named_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _named_tensors(value, f"{prefix}.{index}" if prefix else str(index))


def check_finite(named_tensors, path):
    """Raise CheckpointError naming ``path`` and the first floating tensor holding NaN or inf."""
    for name, tensor in named_tensors:
        if tensor.is_floating_point() or tensor.is_complex():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int(finite.numel() - finite.sum())
                raise CheckpointError(
                    f"{path} holds non-finite weights: tensor '{name}' has {bad} NaN/inf value(s) of "
                    f"{tensor.numel()} (a diverged or damaged run): use an earlier checkpoint or re-create the file")


def _looks_like_module(global_name):
    return global_name.startswith(("torch.nn.", "torch.fx.", "models.", "__main__")) or "GraphModule" in global_name


def extract_state_dict(obj, path="<checkpoint>"):
    """The network weights inside any supported checkpoint layout."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} contains no state dict: expected a dict of tensors, "
                              "{'state_dict': ...} or a training checkpoint with 'model'")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors: it is not a PIDNet weights file")
    return tensors


def checkpoint_filter_fn(state_dict):
    """Strip ``module.``/``model.`` prefixes (in any order) and drop the official loss buffers."""
    cleaned = {}
    for key, value in state_dict.items():
        if key.startswith(_NON_MODEL_PREFIXES):
            continue
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    stripped = True
        cleaned[key] = value
    return cleaned


def _match(model, state_dict):
    own = model.state_dict()
    matched, mismatched = {}, []
    for key, value in state_dict.items():
        if key in own:
            if own[key].shape == value.shape:
                matched[key] = value
            else:
                mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    return matched, mismatched, missing, unexpected


def _summary(keys, limit=5):
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_pretrained(model, path, map_location="cpu", module_hint=MODULE_HINT):
    """Partial, shape-matched load for training initialisation (ImageNet or another dataset's checkpoint).

    Returns the number of tensors loaded. Raises CheckpointError when nothing matches.
    """
    state = checkpoint_filter_fn(extract_state_dict(read_checkpoint(path, map_location, module_hint), path))
    matched, mismatched, missing, unexpected = _match(model, state)
    if not matched:
        raise CheckpointError(f"no tensor of {path} matches this PIDNet: it is not a PIDNet checkpoint "
                              "or belongs to another variant; check MODEL.NAME / MODEL.PRETRAINED")
    model.load_state_dict(matched, strict=False)
    logger.info("loaded %d/%d tensors from %s", len(matched), len(model.state_dict()), path)
    if mismatched:
        logger.info("skipped %d tensors with other shapes (e.g. a different class count): %s",
                    len(mismatched), _summary([k for k, _, _ in mismatched]))
    if missing:
        logger.info("%d model tensors not in the file (randomly initialised): %s", len(missing), _summary(missing))
    if unexpected:
        logger.info("ignored %d tensors the model does not have: %s", len(unexpected), _summary(unexpected))
    return len(matched)


# The classifier of PIDNet's main head: its output channels are the class count.
CLASSIFIER_KEY = "final_layer.conv2.weight"


def read_num_classes(path, map_location="cpu", module_hint=MODULE_HINT):
    """The class count a PIDNet weights file was trained for (its final classifier's rows).

    Raises:
        CheckpointError: unreadable file, or no ``final_layer.conv2.weight`` (not a PIDNet).
    """
    state = checkpoint_filter_fn(extract_state_dict(read_checkpoint(path, map_location, module_hint), path))
    weight = state.get(CLASSIFIER_KEY)
    if weight is None or weight.dim() != 4:
        raise CheckpointError(f"{path} has no PIDNet classifier ({CLASSIFIER_KEY}): it is not a PIDNet "
                              "weights file; pass the best.pt/final_state.pt of a PIDNet run")
    return int(weight.shape[0])


def load_for_eval(model, path, map_location="cpu", module_hint=MODULE_HINT, *,
                  classes_fix="set DATASET.NUM_CLASSES {n}", variant_fix="set MODEL.NAME to the checkpoint's variant"):
    """Strict load for evaluation/inference: every network tensor must be there with its shape.

    The auxiliary heads (``seghead_p``/``seghead_d``) may be absent from the file when the model
    has them (they do not affect the main output); they are then reported. ``classes_fix`` (with
    ``{n}``, the file's class count) and ``variant_fix`` end the errors for a wrong class count or
    variant: each tool names its own option.
    """
    state = checkpoint_filter_fn(extract_state_dict(read_checkpoint(path, map_location, module_hint), path))
    matched, mismatched, missing, unexpected = _match(model, state)
    if not matched:
        raise CheckpointError(f"no tensor of {path} matches this PIDNet: it is not a PIDNet checkpoint "
                              "or belongs to another variant; check MODEL.NAME")
    class_mismatch = [m for m in mismatched if m[0] == "final_layer.conv2.bias" and m[1][0] != m[2][0]]
    if class_mismatch:
        _, theirs, ours = class_mismatch[0]
        raise CheckpointError(f"{path} was trained for {theirs[0]} classes but the model has {ours[0]}: "
                              + classes_fix.format(n=theirs[0]))
    if mismatched:
        detail = _summary([f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in mismatched], 3)
        raise CheckpointError(f"{path} belongs to another PIDNet variant (shape mismatch: {detail}): "
                              + variant_fix)
    hard_missing = [k for k in missing if not k.startswith(("seghead_p.", "seghead_d."))]
    if hard_missing:
        raise CheckpointError(f"{path} lacks {len(hard_missing)} tensors of this model "
                              f"({_summary(hard_missing, 3)}): it belongs to another variant; "
                              + variant_fix)
    model.load_state_dict(matched, strict=False)
    if missing:
        logger.warning("%s has no auxiliary heads (%s); the main output is unaffected", path, _summary(missing, 2))
    logger.info("loaded %d tensors from %s", len(matched), path)
    return len(matched)


def official_state_dict(model):
    """The official fine-tuned format: every key prefixed ``model.`` (as the official best.pt)."""
    model = getattr(model, "module", model)
    return {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}


def load_module_file(path, map_location="cpu", what="model", state_dict_hint=None):
    """Load a whole pickled ``nn.Module`` (NetsPresso / torch.fx files).

    Unpickling runs code stored in the file, so this is only used for paths the user named
    explicitly (``--model``/``--head``), and says so once. ``state_dict_hint`` is what the
    calling tool tells a user who passed a state dict instead (it names that tool's options).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"--{what} {path} is a folder: pass the module file inside it")
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} file not found: {path}. Check the --{what} path")
    logger.warning("loading %s as a whole pickled module: this runs code from the file, "
                   "only load files you trust", path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # unpickling can raise anything the pickled code raises
        first = first_line(exc)
        raise CheckpointError(f"cannot load {what} file {path} ({type(exc).__name__}: {first}): "
                              "pass a file written by tools/export_netspresso.py, tools/compress.py "
                              "or the NetsPresso service") from None
    if not isinstance(obj, nn.Module):
        hint = state_dict_hint or "state-dict checkpoints go to TEST.MODEL_FILE"
        raise CheckpointError(f"{path} is not a whole-module file (found {type(obj).__name__}): "
                              f"--{what} expects an exported torch.fx/NetsPresso module; {hint}")
    check_finite(obj.state_dict().items(), path)
    return obj
