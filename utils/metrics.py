"""Segmentation metrics: a confusion matrix accumulated on the device with ``torch.bincount``.

Formulas are the official ``testval`` ones (rows = ground truth, columns = prediction)::

    pos = M.sum(1)   res = M.sum(0)   tp = diag(M)
    IoU_c     = tp_c / max(1, pos_c + res_c - tp_c)
    mean_iou  = mean over *all* classes of IoU_c (a class absent from labels and predictions counts as 0)
    pixel_acc = tp.sum() / pos.sum()
    mean_acc  = mean over all classes of tp_c / max(1, pos_c)

Ignored pixels (``ignore_label``) and labels outside ``[0, num_classes)`` are not counted.
"""
import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def logits_to_pred(logits, size=None, align_corners=True):
    """Label map ``N x H x W`` from logits ``N x C x h x w``: bilinear upsampling to ``size``
    (``align_corners`` as ``MODEL.ALIGN_CORNERS``) when it differs, then argmax over classes."""
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)
    return logits.argmax(dim=1)


def _flat_ints(tensor, device):
    """``tensor`` on ``device`` as one flat integer tensor, without a copy when it already is one."""
    tensor = tensor.to(device).reshape(-1)
    return tensor.long() if tensor.is_floating_point() or tensor.dtype == torch.bool else tensor


class ConfusionMatrix:
    """``num_classes x num_classes`` int64 counts on ``device``; rows are labels, columns predictions.

    Args:
        num_classes: number of classes.
        ignore_label: label value that is not counted.
        device: where the counts live (the predictions' device avoids copies).
        align_corners: used by :meth:`update` when it is given logits of another size.
    """

    def __init__(self, num_classes, ignore_label=255, device="cpu", align_corners=True):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.align_corners = align_corners
        self.mat = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64, device=device)

    def reset(self):
        self.mat.zero_()

    def update(self, pred, label):
        """Add a batch. ``pred``: label map ``N x H x W`` (or ``H x W``), or logits ``N x C x h x w``
        (upsampled to the label size and argmax-ed); ``label``: ``N x H x W`` ints."""
        if pred.dim() == label.dim() + 1:
            pred = logits_to_pred(pred, label.shape[-2:], self.align_corners)
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match label shape {tuple(label.shape)}")
        n = self.num_classes
        label = _flat_ints(label, self.mat.device)
        pred = _flat_ints(pred, self.mat.device)
        # One mask over the labels; pixels it rejects go to an extra bin that is dropped, which is
        # cheaper than gathering the kept pixels (boolean indexing) at full resolution.
        invalid = (label < 0) | (label >= n)
        if self.ignore_label is not None and 0 <= self.ignore_label < n:
            invalid |= label == self.ignore_label
        if pred.numel():
            # Predictions from argmax are always in range: one reduction instead of two more masks.
            low, high = torch.aminmax(pred)
            if low < 0 or high >= n:
                invalid |= (pred < 0) | (pred >= n)
        index_dtype = torch.int32 if n * n < 2 ** 31 - 1 else torch.int64  # int32 bincount is ~2x faster
        index = (label.to(index_dtype) * n).add_(pred.to(index_dtype)).masked_fill_(invalid, n * n)
        self.mat += torch.bincount(index, minlength=n * n + 1)[:n * n].reshape(n, n)

    def add_matrix(self, matrix):
        """Add counts from another matrix (e.g. a numpy array from the official code)."""
        self.mat += torch.as_tensor(matrix, dtype=torch.int64, device=self.mat.device)

    def all_reduce(self):
        """Sum the counts over all processes when ``torch.distributed`` is initialised (no-op otherwise)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)
        return self

    def compute(self):
        """``dict(mean_iou, iou (list per class), pixel_acc, mean_acc)`` as Python floats."""
        return metrics_from_matrix(self.mat)


def metrics_from_matrix(matrix):
    """The official metrics from a confusion matrix (tensor or array, rows = labels)."""
    mat = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    pos = mat.sum(1)
    res = mat.sum(0)
    tp = mat.diagonal()
    iou = tp / torch.clamp(pos + res - tp, min=1.0)
    total = pos.sum()
    return {
        "mean_iou": float(iou.mean()) if iou.numel() else 0.0,
        "iou": [float(v) for v in iou],
        "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
        "mean_acc": float((tp / torch.clamp(pos, min=1.0)).mean()) if iou.numel() else 0.0,
    }
