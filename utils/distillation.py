"""Knowledge distillation while fine-tuning: a frozen PIDNet teacher guides a (compressed) student.

The loss added to the PIDNet loss is ``weight * (KL + features)``:

* **KL** (Hinton et al.): pixel-wise ``KL(softmax(t / T) || softmax(s / T)) * T^2`` between the
  teacher's and the student's main logits, both upsampled to the label size as
  :class:`utils.criterion.PIDNetLoss` does, averaged over the pixels whose label is not
  ``ignore_label``;
* **features** (optional, ``features='cs'`` or ``'norm_mse'``): the mean over the body's three
  outputs ``[p_features, main_logits, d_features]`` (the inputs of the auxiliary heads and the main
  logits, see :meth:`models.pidnet.PIDNet.forward_body`) of

  - ``cs``: ``1 - cos`` of the channel vectors at each pixel, computed as ``||a/|a| - b/|b|||^2 / 2``
    so that two all-zero vectors (common after a ReLU) count as equal;
  - ``norm_mse``: ``||s - t||^2 / ||t||^2`` per image (the squared error relative to the teacher's
    energy, so the three outputs weigh alike whatever their scale).

Where a student output has another channel count than the teacher's (a student of another variant;
NetsPresso pruning keeps the channels feeding the heads, so pruned bodies normally match), a 1x1
convolution maps the student's channels to the teacher's. The adapters are trained with the student
(same optimizer), saved in the training checkpoint and discarded at export. Per-pixel channel
comparison was chosen over channel-independent forms (spatial attention maps) because it keeps
the information of every channel the heads read, and the adapter is only a few thousand weights.

The teacher is frozen (``requires_grad=False``), always in eval mode, runs under ``no_grad`` on the
student's device and is never wrapped in DistributedDataParallel; under torchrun the adapters'
gradients are averaged over the processes before each optimizer step.
"""
import hashlib
import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import distributed as du
from utils.cli import first_line
from utils.errors import CheckpointError, ModelError, UsageError

logger = logging.getLogger(__name__)

FEATURE_LOSSES = ("cs", "norm_mse")
BODY_OUTPUTS = ("p_features", "main_logits", "d_features")
# Large enough for every PIDNet stage (1/64 in the context branch), small enough to be instant.
_PROBE_SIZE = 128


def check_settings(weight, temperature, features):
    """Raise :class:`UsageError` for a negative weight, a temperature <= 0 or an unknown feature loss."""
    if not weight >= 0:  # also rejects NaN
        raise UsageError(f"--kd-weight must be >= 0 (got {weight})")
    if not temperature > 0:
        raise UsageError(f"--kd-temperature must be > 0 (got {temperature}); 1 is plain KL, 2-4 soften more")
    if features is not None and features not in FEATURE_LOSSES:
        raise UsageError(f"--kd-features '{features}' is unknown: use one of {', '.join(FEATURE_LOSSES)} "
                          "(or leave it out for logit distillation only)")


# ---------------------------------------------------------------------------
# Losses.
# ---------------------------------------------------------------------------

def _upsample(x, size, align_corners):
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def kl_distillation(student_logits, teacher_logits, labels, ignore_label=255, temperature=1.0,
                    align_corners=True):
    """Pixel-wise ``T^2 * KL(teacher || student)`` at the label size, mean over non-ignored pixels.

    Returns a graph-connected 0 when no pixel is valid.
    """
    size = labels.shape[-2:]
    s = _upsample(student_logits.float(), size, align_corners) / temperature
    t = _upsample(teacher_logits.float(), size, align_corners) / temperature
    per_pixel = F.kl_div(F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="none",
                         log_target=True).sum(dim=1)
    valid = (labels != ignore_label).to(per_pixel.dtype)
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1.0) * temperature ** 2


def cosine_distance(student, teacher, eps=1e-8):
    """Mean over pixels of ``1 - cos`` between channel vectors (0 for two all-zero vectors)."""
    s = F.normalize(student.float(), dim=1, eps=eps)
    t = F.normalize(teacher.float(), dim=1, eps=eps)
    return 0.5 * (s - t).pow(2).sum(dim=1).mean()


def normalized_mse(student, teacher, eps=1e-8):
    """Mean over images of ``||s - t||^2 / ||t||^2``."""
    s, t = student.float().flatten(1), teacher.float().flatten(1)
    return ((s - t).pow(2).sum(dim=1) / t.pow(2).sum(dim=1).clamp(min=eps)).mean()


_FEATURE_FNS = {"cs": cosine_distance, "norm_mse": normalized_mse}


# ---------------------------------------------------------------------------
# Teacher.
# ---------------------------------------------------------------------------

def _teacher_body(obj, path):
    """The ``image -> [p_features, main_logits, d_features]`` module inside a whole-module file."""
    from models.netspresso import NetsPressoPIDNet, PIDNetBody
    from models.pidnet import PIDNet

    if isinstance(obj, PIDNet):
        return PIDNetBody(obj)
    if isinstance(obj, NetsPressoPIDNet):
        return obj.model
    if isinstance(obj, nn.Module):
        return obj  # an exported body (model_modelfx.pt); its outputs are checked by the probe
    raise CheckpointError(f"teacher {path} is not a PIDNet: pass a PIDNet checkpoint or an exported body")


def _class_count_in(path, state, num_classes):
    bias = state.get("final_layer.conv2.bias")
    if bias is not None and bias.shape[0] != num_classes:
        raise CheckpointError(f"teacher {path} has {bias.shape[0]} classes, the config has {num_classes} "
                              "(DATASET.NUM_CLASSES): pass a teacher trained on this dataset")


def load_teacher(path, model_name, num_classes, device="cpu", whole_module=None):
    """The frozen teacher body from any checkpoint :mod:`models.checkpoint` reads.

    A weights file (official ``.pt``, ``best.pt``, ``checkpoint.pth.tar``, ...) is loaded strictly
    into ``build_pidnet(model_name, num_classes)``; a whole pickled module (a PIDNet, or an
    exported ``model_modelfx.pt`` body) is used as it is (this runs code from the file: only pass
    files you trust). ``whole_module`` forces one or the other; by default a file that a safe load
    refuses as a pickled module is read as one.

    Returns ``(body, fingerprint)``: the body in eval mode without gradients on ``device``, and the
    SHA-256 of its weights (what a resumed run must be given again).

    Raises:
        CheckpointError: missing or unreadable file, another class count or variant.
    """
    from models.checkpoint import (checkpoint_filter_fn, extract_state_dict, load_for_eval,
                                   load_module_file, read_checkpoint)
    from models.netspresso import PIDNetBody
    from models.pidnet import build_pidnet

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"--teacher file not found: {path}. Check the path")
    if whole_module is None:
        try:
            state = read_checkpoint(path)
            whole_module = False
        except CheckpointError as exc:
            if "whole pickled module" not in str(exc):
                raise CheckpointError(f"teacher: {exc}") from None
            whole_module = True
    if whole_module:
        body = _teacher_body(load_module_file(path, what="teacher"), path)
    else:
        _class_count_in(path, checkpoint_filter_fn(extract_state_dict(state, path)), num_classes)
        net = build_pidnet(model_name, num_classes, augment=False)
        try:
            load_for_eval(net, path)
        except CheckpointError as exc:
            raise CheckpointError(f"teacher: {exc}") from None
        body = PIDNetBody(net)
    body = body.to(device).eval()
    for param in body.parameters():
        param.requires_grad_(False)
    outputs = _probe(body, device)
    if not isinstance(outputs, (list, tuple)) or len(outputs) != 3:
        raise CheckpointError(f"teacher {path} does not return the three body outputs {list(BODY_OUTPUTS)}: "
                              "pass a PIDNet checkpoint or an exported body (model_modelfx.pt)")
    if outputs[1].shape[1] != num_classes:
        raise CheckpointError(f"teacher {path} has {outputs[1].shape[1]} classes, the config has {num_classes} "
                              "(DATASET.NUM_CLASSES): pass a teacher trained on this dataset")
    logger.info("teacher %s: %d parameters, frozen", path, sum(p.numel() for p in body.parameters()))
    return body, weights_fingerprint(body)


def weights_fingerprint(module):
    """SHA-256 over the module's state dict (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


@torch.no_grad()
def _probe(module, device):
    return module(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE, device=device))


# ---------------------------------------------------------------------------
# Student body outputs.
# ---------------------------------------------------------------------------

class BodyOutputs:
    """Records the student's ``[p_features, main_logits, d_features]`` during its forward.

    Forward pre-hooks on the auxiliary heads catch their inputs: the ``head`` module of a
    :class:`models.netspresso.NetsPressoPIDNet` (it receives the whole list), or ``seghead_p`` and
    ``seghead_d`` of a :class:`models.pidnet.PIDNet`. The main logits are the model's second output.
    Nothing is recorded in eval mode (validation) unless :attr:`always` is set.
    """

    def __init__(self, model):
        model = getattr(model, "module", model)
        self.always = False
        self._p = self._d = None
        head = getattr(model, "head", None)
        if isinstance(head, nn.Module):
            head.register_forward_pre_hook(self._on_head)
        elif isinstance(getattr(model, "seghead_p", None), nn.Module) and \
                isinstance(getattr(model, "seghead_d", None), nn.Module):
            model.seghead_p.register_forward_pre_hook(self._on_p)
            model.seghead_d.register_forward_pre_hook(self._on_d)
        else:
            raise ModelError(f"cannot distil into {type(model).__name__}: the student needs its auxiliary heads "
                             "(PIDNet with augment=True, or --netspresso with --head)")

    def _record(self, module):
        return module.training or self.always

    def _on_head(self, module, args):
        if self._record(module):
            self._p, self._d = args[0][0], args[0][2]

    def _on_p(self, module, args):
        if self._record(module):
            self._p = args[0]

    def _on_d(self, module, args):
        if self._record(module):
            self._d = args[0]

    def take(self, outputs):
        """The body outputs of the forward that returned ``outputs``; forgets them."""
        if self._p is None or self._d is None:
            raise ModelError("the student's auxiliary heads did not run in this forward pass: "
                             "distillation needs the training outputs [p, main, boundary]")
        found = [self._p, outputs[1], self._d]
        self._p = self._d = None
        return found


# ---------------------------------------------------------------------------
# The distillation loss.
# ---------------------------------------------------------------------------

class Distiller(nn.Module):
    """Distillation term of the training loss (see the module docstring).

    ``distiller(images, outputs, labels) -> (loss, parts)`` after the student's forward on
    ``images`` returned ``outputs``; ``parts`` has ``kd`` (the weighted KL) and, with features,
    ``kd_feat`` (the weighted feature loss), detached.

    Args:
        teacher: module ``image -> [p_features, main_logits, d_features]`` (:func:`load_teacher`).
        student: the student before DDP wrapping; it must return ``[p, main, boundary]`` in training.
        weight: factor of the whole term (``>= 0``).
        temperature: softmax temperature of the KL (``> 0``).
        features: ``None``, ``'cs'`` or ``'norm_mse'``.
        ignore_label: label value of pixels left out of the KL.
        align_corners: for upsampling the logits to the label size (``MODEL.ALIGN_CORNERS``).
        fingerprint: identity of the teacher's weights, stored in checkpoints.
    """

    def __init__(self, teacher, student, weight=1.0, temperature=1.0, features=None, ignore_label=255,
                 align_corners=True, fingerprint=""):
        super().__init__()
        check_settings(weight, temperature, features)
        self.teacher = teacher
        self.weight, self.temperature, self.features = float(weight), float(temperature), features
        self.ignore_label, self.align_corners = int(ignore_label), bool(align_corners)
        self.fingerprint = str(fingerprint)
        self.body = BodyOutputs(student)
        self.adapters = nn.ModuleDict()
        self.teacher.eval()
        if features is not None:
            self._build_adapters(student)

    def _build_adapters(self, student):
        device = next(self.teacher.parameters()).device
        student = getattr(student, "module", student)
        was_training = student.training
        self.body.always = True
        try:
            student.eval()
            student_out = self.body.take(_probe(student, device))
        finally:
            self.body.always = False
            student.train(was_training)
        teacher_out = _probe(self.teacher, device)
        for name, s, t in zip(BODY_OUTPUTS, student_out, teacher_out):
            if s.shape[1] != t.shape[1]:
                self.adapters[name] = nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1, bias=False).to(device)
                logger.info("distillation: 1x1 adapter for %s (%d -> %d channels)", name, s.shape[1], t.shape[1])

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()  # frozen: BatchNorm statistics must not move
        return self

    def settings(self):
        """What a resumed run must match."""
        return {"teacher_sha256": self.fingerprint, "weight": self.weight, "temperature": self.temperature,
                "features": self.features or ""}

    def checkpoint_state(self):
        return {"settings": self.settings(), "adapters": self.adapters.state_dict()}

    def sync_gradients(self):
        """Average the adapters' gradients over the processes (they are not inside DDP)."""
        du.average_gradients(self.adapters.parameters())

    def forward(self, images, outputs, labels):
        student = self.body.take(outputs)
        with torch.no_grad():
            teacher = self.teacher(images)
        loss_kl = kl_distillation(student[1], teacher[1], labels, self.ignore_label, self.temperature,
                                  self.align_corners)
        parts = {"kd": (self.weight * loss_kl).detach()}
        total = loss_kl
        if self.features is not None:
            fn = _FEATURE_FNS[self.features]
            terms = []
            for name, s, t in zip(BODY_OUTPUTS, student, teacher):
                if name in self.adapters:
                    s = self.adapters[name](s)
                terms.append(fn(_upsample(s, t.shape[-2:], self.align_corners), t))
            loss_feat = sum(terms) / len(terms)
            parts["kd_feat"] = (self.weight * loss_feat).detach()
            total = total + loss_feat
        return self.weight * total, parts


def check_resume(state, distiller, path="checkpoint"):
    """Refuse to resume when the distillation settings differ from the checkpoint's.

    ``state`` is the checkpoint's ``'distillation'`` entry (``None`` when it was trained without a
    teacher), ``distiller`` this run's :class:`Distiller` or ``None``.

    Raises:
        CheckpointError: naming what differs and how to proceed.
    """
    if state is None and distiller is None:
        return
    if state is None:
        raise CheckpointError(f"{path} was trained without --teacher: resume without it, or start a new run "
                              "(another OUTPUT_DIR or TRAIN.RESUME False) to fine-tune with distillation")
    if distiller is None:
        raise CheckpointError(f"{path} was trained with --teacher (distillation): resume with the same --teacher "
                              "and --kd-* options, or start a new run without them")
    saved, now = dict(state.get("settings", {})), distiller.settings()
    names = {"teacher_sha256": "teacher weights", "weight": "--kd-weight", "temperature": "--kd-temperature",
             "features": "--kd-features"}
    differ = [f"{names[k]} {saved.get(k)!s:.12} -> {now[k]!s:.12}" for k in names if saved.get(k) != now[k]]
    if differ:
        raise CheckpointError(f"{path} was trained with other distillation settings ({'; '.join(differ)}): "
                              "resume with the same --teacher and --kd-* options, or start a new run")


def restore_distillation(checkpoint, distiller, path="checkpoint"):
    """Check a training checkpoint's distillation entry against this run and load the adapters.

    Call it before restoring the optimizer: the adapters' parameters are in the optimizer, so a
    mismatch would otherwise surface as a less clear optimizer error.
    """
    state = checkpoint.get("distillation")
    check_resume(state, distiller, path)
    if distiller is not None:
        try:
            distiller.adapters.load_state_dict(state["adapters"], strict=True)
        except (KeyError, RuntimeError) as exc:
            first = first_line(exc)
            raise CheckpointError(f"{path}: the distillation adapters do not fit this student ({first}): "
                                  "resume with the model it was written with, or start a new run") from None
