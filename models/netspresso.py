"""NetsPresso format: a torch.fx body (``model_modelfx.pt``) and its auxiliary heads (``model_headfx.pt``).

NetsPresso compresses ``torch.fx.GraphModule`` files saved whole with ``torch.save``. As in
NetsPresso's PIDNet tutorial the network is split in two:

* the body, :meth:`models.pidnet.PIDNet.forward_body`: image -> ``[p_features, main_logits,
  d_features]`` (what gets compressed; channels feeding the heads keep their counts);
* the heads, :meth:`models.pidnet.PIDNet.forward_aux_heads`: that list -> ``[p_logits,
  main_logits, boundary_logits]`` (``seghead_p``/``seghead_d``, kept uncompressed).

``nn.Sequential(body, head)`` is the training network. :func:`load_netspresso` reassembles the
files for fine-tuning (with the head) or inference (without), :func:`save_netspresso` splits
a fine-tuned module back into the two files.
"""
import logging
import os

import torch
import torch.fx as fx
import torch.nn as nn

from models.pidnet import PIDNet
from utils.errors import CheckpointError, ModelError
from utils.io import atomic_save
from utils.layout import EXPORT_BODY, EXPORT_HEAD, pair_names

logger = logging.getLogger(__name__)

MODEL_FILE, HEAD_FILE = EXPORT_BODY, EXPORT_HEAD  # the names live in utils/layout.py
_HEADS = ("seghead_p", "seghead_d")


class PIDNetBody(nn.Module):
    """The PIDNet network without its auxiliary heads; same submodules, same names."""

    def __init__(self, net):
        super().__init__()
        for name, module in net.named_children():
            if name not in _HEADS:
                self.add_module(name, module)
        self.align_corners = net.align_corners

    def forward(self, x):
        return PIDNet.forward_body(self, x)


class PIDNetAuxHeads(nn.Module):
    """``[p_features, main_logits, d_features]`` -> ``[p_logits, main_logits, boundary_logits]``."""

    def __init__(self, net):
        super().__init__()
        for name in _HEADS:
            if not hasattr(net, name):
                raise ModelError("the model has no auxiliary heads: build PIDNet with augment=True to export it")
            self.add_module(name, getattr(net, name))

    def forward(self, outputs):
        # Indexing rather than unpacking: fx can trace item access on a proxy, not iteration.
        return [self.seghead_p(outputs[0]), outputs[1], self.seghead_d(outputs[2])]


def export_pidnet(net):
    """fx-trace the body and heads of a PIDNet (augment=True); returns ``(body_gm, head_gm)``.

    The traced modules share the PIDNet's parameters (export a copy to keep them apart).
    """
    if not isinstance(net, PIDNet):
        raise ModelError(f"export_pidnet expects a PIDNet, got {type(net).__name__}")
    body = fx.symbolic_trace(PIDNetBody(net))
    head = fx.symbolic_trace(PIDNetAuxHeads(net))
    body.train(net.training)
    head.train(net.training)
    return body, head


def input_shapes(image_size):
    """NetsPresso's ``input_shapes`` from a config ``IMAGE_SIZE`` given as ``[width, height]``."""
    width, height = int(image_size[0]), int(image_size[1])
    return [{"batch": 1, "channel": 3, "dimension": [height, width]}]


class NetsPressoPIDNet(nn.Module):
    """An exported (possibly compressed) body, optionally followed by its auxiliary heads.

    With a head it behaves like ``PIDNet(augment=True)``: the forward returns ``[p_logits,
    main_logits, boundary_logits]``. Without one it returns the main logits, like
    ``PIDNet(augment=False)``.
    """

    def __init__(self, model, head=None):
        super().__init__()
        self.model = model
        self.head = head

    @property
    def augment(self):
        return self.head is not None

    def forward(self, x):
        outputs = self.model(x)
        if self.head is not None:
            return self.head(outputs)
        if torch.is_tensor(outputs):
            return outputs
        return outputs[1]


def is_aux_heads(module):
    """Whether ``module`` is an exported auxiliary-heads file (only ``seghead_p``/``seghead_d``)."""
    names = {name for name, _ in module.named_children()}
    return bool(names) and names <= set(_HEADS)


def check_body(module, path):
    """Refuse the auxiliary-heads file where the body is expected (the one check every tool uses)."""
    if is_aux_heads(module):
        raise CheckpointError(f"{path} holds the auxiliary heads (like {HEAD_FILE}), not the model body: "
                              f"pass the body file (like {MODEL_FILE}) as --model")


def check_heads(module, path):
    """Refuse a body where the auxiliary heads are expected (``--model`` and ``--head`` swapped)."""
    if not is_aux_heads(module):
        raise CheckpointError(f"{path} given as --head is a model body, not the auxiliary heads "
                              f"(like {HEAD_FILE}): pass the body as --model and the heads file as --head")


def load_netspresso(model_path, head_path=None, map_location="cpu"):
    """Load ``model_modelfx.pt`` (and optionally ``model_headfx.pt``) as one trainable module.

    Both are whole-module pickles, read with :func:`models.checkpoint.load_module_file` (this
    runs code from the files: only pass files you trust).

    Raises:
        CheckpointError: a missing or unreadable file, one that is not a module, non-finite
            weights, or the heads file given as the model (or the two swapped).
    """
    from models.checkpoint import load_module_file

    model = load_module_file(model_path, map_location=map_location, what="model")
    check_body(model, model_path)
    head = load_module_file(head_path, map_location=map_location, what="head") if head_path else None
    if head is not None:
        check_heads(head, head_path)
    if isinstance(model, NetsPressoPIDNet):
        raise CheckpointError(f"{model_path} holds a combined model+head module: save it with "
                              "models.netspresso.save_netspresso, which writes the two files")
    return NetsPressoPIDNet(model, head)


def save_netspresso(module, out_dir, prefix):
    """Write ``<prefix>_model.pt`` (and ``<prefix>_head.pt`` when there is a head) atomically.

    ``module`` is a :class:`NetsPressoPIDNet` (possibly wrapped by DistributedDataParallel).
    Returns the written paths.
    """
    module = getattr(module, "module", module)
    if not isinstance(module, NetsPressoPIDNet):
        raise ModelError(f"save_netspresso expects a module from load_netspresso, got {type(module).__name__}")
    body_name, head_name = pair_names(prefix)
    paths = [os.path.join(out_dir, body_name)]
    atomic_save(module.model, paths[0])
    if module.head is not None:
        paths.append(os.path.join(out_dir, head_name))
        atomic_save(module.head, paths[1])
    logger.info("saved %s", ", ".join(paths))
    return paths
