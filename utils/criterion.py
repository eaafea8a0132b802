"""PIDNet training losses, numerically as the official code computes them.

The official recipe (``utils/criterion.py`` + ``FullModel`` in ``utils/utils.py``):

* every output is upsampled to the label size (bilinear, ``MODEL.ALIGN_CORNERS``);
* semantic loss on ``[p_logits, main_logits]`` with ``LOSS.BALANCE_WEIGHTS``: plain CE on the
  auxiliary P output, OHEM CE on the last (main) output;
* boundary loss: ``20 x`` class-balanced BCE-with-logits on the boundary output;
* boundary-aware semantic loss (BAS): the semantic criterion on the main output with
  ``LOSS.SB_WEIGHTS``, labels kept only where ``sigmoid(boundary) > 0.8``;
* ``total = semantic + boundary + bas``.

One official quirk is kept on purpose because training fidelity depends on it: with OHEM the
auxiliary CE is a per-pixel map (``reduction='none'``) that the training loop averages over *all*
pixels, so ignored pixels count as zero in the mean (see ``tests/data/REFERENCE.md``).

Where the official code crashes or returns NaN (a batch with no valid pixel, an empty OHEM
selection) these losses return an exact zero that is still connected to the graph, so the
backward pass and DDP gradient synchronisation keep working.
"""
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# BAS keeps the semantic labels where the predicted boundary probability exceeds this.
BAS_BOUNDARY_THRESHOLD = 0.8


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _zero_like_graph(score):
    # 0 that still depends on `score`: backward works and every parameter gets a (zero) gradient.
    return score.sum() * 0.0


def _valid_mask(target, ignore_label):
    return target != ignore_label


def _safe_target(target, valid):
    # Ignored positions may hold 255 or -1; gather/indexing needs an in-range class id there.
    return torch.where(valid, target, torch.zeros_like(target))


def pixel_ce(score, target, ignore_label, weight=None):
    """Per-pixel (class-weighted) cross-entropy, 0 at ignored pixels. Shape ``N x H x W``."""
    return F.cross_entropy(score, target, weight=weight, ignore_index=ignore_label, reduction="none")


def weighted_mean_ce(score, target, ignore_label, weight=None):
    """``nn.CrossEntropyLoss(weight, ignore_index)`` mean: sum(w_y * nll) / sum(w_y) over valid pixels.

    Returns a graph-connected 0 instead of NaN when no pixel is valid.
    """
    losses = pixel_ce(score, target, ignore_label, weight)
    valid = _valid_mask(target, ignore_label)
    if weight is None:
        denom = valid.sum().to(losses.dtype)
    else:
        denom = (weight.to(losses.dtype)[_safe_target(target, valid)] * valid).sum()
    # An empty (or zero-weight) batch has a zero numerator: the clamp only avoids 0/0.
    return losses.sum() / denom.clamp(min=1e-12)


def ohem_ce(score, target, ignore_label, thres, min_kept, weight=None):
    """Online hard example mining cross-entropy (the official ``_ohem_forward``).

    Among the valid pixels, the threshold is ``max(thres, p_k)`` where ``p_k`` is the
    ``min(min_kept, n_valid - 1)``-th smallest softmax probability of the target class; the loss
    is the mean (class-weighted) CE of the valid pixels whose target probability is below it.

    Everything stays on the tensor's device without host synchronisation: ignored pixels get
    probability ``+inf`` so they sort last, and the index ``k`` is a tensor. When no pixel is
    valid or none is kept, the result is a graph-connected 0 (the official code indexes out of
    range / returns NaN there).
    """
    min_kept = max(1, int(min_kept))
    losses = pixel_ce(score, target, ignore_label, weight).reshape(-1)
    valid = _valid_mask(target, ignore_label)
    with torch.no_grad():
        prob = F.softmax(score.detach().float(), dim=1)
        prob = prob.gather(1, _safe_target(target, valid).unsqueeze(1)).reshape(-1)
        valid = valid.reshape(-1)
        prob = torch.where(valid, prob, torch.full_like(prob, float("inf")))
        sorted_prob = prob.sort().values
        n_valid = valid.sum()
        k = torch.clamp(torch.clamp(n_valid - 1, max=min_kept), min=0)
        threshold = torch.clamp(sorted_prob.gather(0, k.reshape(1)), min=thres)
        keep = valid & (prob < threshold)
    kept = keep.to(losses.dtype)
    return (losses * kept).sum() / kept.sum().clamp(min=1.0)


class CrossEntropy(nn.Module):
    """Cross-entropy over one or several outputs (the official ``CrossEntropy``).

    Args:
        ignore_label: label value excluded from the loss.
        weight: optional per-class weights (``C`` floats).
        balance_weights: weights of the outputs when a list of that length is given.
        sb_weights: weight when a single output is given.
    """

    def __init__(self, ignore_label=255, weight=None, balance_weights=(0.4, 1.0), sb_weights=1.0):
        super().__init__()
        self.ignore_label = ignore_label
        self.balance_weights = [float(w) for w in balance_weights]
        self.sb_weights = float(sb_weights)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def _single(self, score, target):
        return weighted_mean_ce(score, target, self.ignore_label, self.weight)

    def per_output(self, outputs, target):
        """``[(weight, loss), ...]`` for each output, as :meth:`forward` sums them."""
        outputs = _as_list(outputs)
        if len(outputs) == len(self.balance_weights):
            return [(w, self._single(x, target)) for w, x in zip(self.balance_weights, outputs)]
        if len(outputs) == 1:
            return [(self.sb_weights, self._single(outputs[0], target))]
        raise ValueError(f"got {len(outputs)} outputs but {len(self.balance_weights)} balance weights "
                         f"{self.balance_weights}: LOSS.BALANCE_WEIGHTS needs one weight per output")

    def forward(self, outputs, target):
        return sum(w * loss for w, loss in self.per_output(outputs, target))


class OhemCrossEntropy(CrossEntropy):
    """OHEM cross-entropy over one or several outputs (the official ``OhemCrossEntropy``).

    With ``len(balance_weights)`` outputs, only the last uses OHEM; the others use the
    per-pixel CE averaged over all pixels (ignored ones count as zero), as the official training
    loop ends up computing it. A single output gets ``sb_weights x`` OHEM.

    Args:
        ignore_label: label value excluded from the loss.
        thres: probability threshold (``LOSS.OHEMTHRES``).
        min_kept: minimum number of hardest pixels kept (``LOSS.OHEMKEEP``).
        weight: optional per-class weights.
        balance_weights, sb_weights: as :class:`CrossEntropy`.
    """

    def __init__(self, ignore_label=255, thres=0.7, min_kept=100000, weight=None,
                 balance_weights=(0.4, 1.0), sb_weights=1.0):
        super().__init__(ignore_label, weight, balance_weights, sb_weights)
        self.thresh = float(thres)
        self.min_kept = max(1, int(min_kept))

    def _ohem(self, score, target):
        return ohem_ce(score, target, self.ignore_label, self.thresh, self.min_kept, self.weight)

    def _ce_all_pixels(self, score, target):
        return pixel_ce(score, target, self.ignore_label, self.weight).mean()

    def per_output(self, outputs, target):
        outputs = _as_list(outputs)
        if len(outputs) == len(self.balance_weights):
            last = len(outputs) - 1
            return [(w, self._ohem(x, target) if i == last else self._ce_all_pixels(x, target))
                    for i, (w, x) in enumerate(zip(self.balance_weights, outputs))]
        if len(outputs) == 1:
            return [(self.sb_weights, self._ohem(outputs[0], target))]
        raise ValueError(f"got {len(outputs)} outputs but {len(self.balance_weights)} balance weights "
                         f"{self.balance_weights}: LOSS.BALANCE_WEIGHTS needs one weight per output")


def weighted_bce(logits, target):
    """Class-balanced BCE-with-logits over the whole batch (the official ``weighted_bce``).

    Boundary pixels (target 1) weigh ``n_neg / n``, the others (target 0) ``n_pos / n``; the
    mean runs over all pixels. A batch without any boundary pixel therefore gives 0.
    """
    logits = logits.reshape(-1)
    target = target.reshape(-1).to(logits.dtype)
    pos = target == 1
    neg = target == 0
    n_pos = pos.sum().to(logits.dtype)
    n_neg = neg.sum().to(logits.dtype)
    total = (n_pos + n_neg).clamp(min=1.0)
    weight = pos.to(logits.dtype) * (n_neg / total) + neg.to(logits.dtype) * (n_pos / total)
    return F.binary_cross_entropy_with_logits(logits, target, weight, reduction="mean")


class BoundaryLoss(nn.Module):
    """``coeff_bce x`` class-balanced BCE on the boundary logits (``N x 1 x H x W``)."""

    def __init__(self, coeff_bce=20.0):
        super().__init__()
        self.coeff_bce = float(coeff_bce)

    def forward(self, logits, target):
        return self.coeff_bce * weighted_bce(logits, target)


def pixel_accuracy(logits, labels):
    """The official training ``Acc``: correct argmax pixels / pixels with a label ``>= 0``.

    As in the official ``FullModel.pixel_acc``, an ignore value of 255 counts as a (never
    correct) pixel, so this underestimates the accuracy over valid pixels; it is a logged
    statistic only, kept comparable with official training logs. The evaluation metrics
    (:mod:`utils.metrics`) exclude ignored pixels.
    """
    counted = labels >= 0
    correct = (logits.argmax(dim=1) == labels) & counted
    return correct.sum().float() / counted.sum().float().clamp(min=1.0)


class PIDNetLoss(nn.Module):
    """The complete PIDNet loss: semantic (aux + main) + boundary + boundary-aware semantic.

    ``forward(outputs, labels, edges)`` takes the network's ``[p_logits, main_logits,
    boundary_logits]`` (any resolution), ``labels`` (``N x H x W`` int64, ``ignore_label`` to
    ignore) and ``edges`` (``N x H x W`` boundary target in {0, 1}) and returns ``(total, parts)``
    with ``parts = dict(semantic, aux, main, boundary, bas, pixel_acc)`` (detached scalars):
    ``aux``/``main`` are unweighted, ``semantic`` is their balance-weighted sum.

    Args:
        semantic: a :class:`CrossEntropy` or :class:`OhemCrossEntropy`.
        boundary: a :class:`BoundaryLoss`.
        ignore_label: label value excluded from the losses.
        align_corners: for upsampling the outputs to the label size (``MODEL.ALIGN_CORNERS``).
    """

    def __init__(self, semantic, boundary, ignore_label=255, align_corners=True):
        super().__init__()
        self.semantic = semantic
        self.boundary = boundary
        self.ignore_label = ignore_label
        self.align_corners = align_corners

    def _upsample(self, outputs, size):
        return [x if tuple(x.shape[-2:]) == tuple(size)
                else F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)
                for x in outputs]

    def forward(self, outputs, labels, edges):
        outputs = _as_list(outputs)
        if len(outputs) < 2:
            raise ValueError("PIDNetLoss needs the training outputs [p_logits, main_logits, boundary_logits] "
                             "(a model built with augment=True); got a single output")
        labels = labels.long()
        outputs = self._upsample(outputs, labels.shape[-2:])
        seg_outputs, boundary_logits = outputs[:-1], outputs[-1]
        main_logits = seg_outputs[-1]

        weighted = self.semantic.per_output(seg_outputs, labels)
        semantic = sum(w * loss for w, loss in weighted)
        loss_boundary = self.boundary(boundary_logits, edges)

        with torch.no_grad():
            on_boundary = torch.sigmoid(boundary_logits[:, 0]) > BAS_BOUNDARY_THRESHOLD
            bas_labels = torch.where(on_boundary, labels, torch.full_like(labels, self.ignore_label))
        loss_bas = self.semantic(main_logits, bas_labels)

        total = semantic + loss_boundary + loss_bas
        aux = weighted[0][1] if len(weighted) > 1 else torch.zeros((), device=total.device)
        parts = {
            "semantic": semantic.detach(),
            "aux": aux.detach(),
            "main": weighted[-1][1].detach(),
            "boundary": loss_boundary.detach(),
            "bas": loss_bas.detach(),
            "pixel_acc": pixel_accuracy(main_logits.detach(), labels),
        }
        return total, parts


def build_criterion(num_classes, ignore_label=255, use_ohem=True, ohem_thres=0.9, ohem_keep=131072,
                    class_weights=None, balance_weights=(0.4, 1.0), sb_weights=1.0, align_corners=True,
                    boundary_coeff=20.0):
    """The PIDNet loss from plain values (the trainer passes ``LOSS.*``, ``MODEL.ALIGN_CORNERS``,
    ``TRAIN.IGNORE_LABEL`` and the dataset's class weights).

    Raises:
        ValueError: ``class_weights`` does not have ``num_classes`` entries, or no balance weight.
    """
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
        if weight.numel() == 0:
            weight = None
        elif weight.numel() != num_classes:
            raise ValueError(f"class_weights has {weight.numel()} entries but there are {num_classes} classes: "
                             "give one weight per class (DATASET.CLASS_WEIGHTS) or none")
    if len(balance_weights) == 0:
        raise ValueError("LOSS.BALANCE_WEIGHTS is empty: give one weight per semantic output, e.g. [0.4, 1.0]")
    if use_ohem:
        semantic = OhemCrossEntropy(ignore_label, ohem_thres, ohem_keep, weight, balance_weights, sb_weights)
    else:
        semantic = CrossEntropy(ignore_label, weight, balance_weights, sb_weights)
    return PIDNetLoss(semantic, BoundaryLoss(boundary_coeff), ignore_label, align_corners)
