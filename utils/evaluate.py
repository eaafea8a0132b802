"""The evaluation loop shared by ``tools/eval.py`` and the trainer's validation.

:func:`evaluate` runs a model over a loader and returns the official metrics (mIoU, per-class
IoU, pixel and mean accuracy) for the output chosen by ``output_index`` (``TEST.OUTPUT_INDEX``),
plus the same metrics for every semantic output when the model returns several (the official
``validate`` logs the P head and the main head), and the mean validation loss when a criterion
is given. Test-time augmentation averages softmax probabilities at the label size:

* ``flip_test`` (``TEST.FLIP_TEST``): the horizontally flipped image, its prediction flipped back;
* ``scales`` (``TEST.SCALE_LIST`` when ``TEST.MULTI_SCALE``): the image resized by each factor
  relative to its own size.

Under ``torchrun`` give the loader :func:`eval_sampler` (or a ``DistributedSampler``): the
confusion matrices, loss and image counts are all-reduced, so every rank returns the same numbers.
"""
import logging
import math
import os
import time

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Sampler
from tqdm import tqdm

from datasets.palette import palette_for
from utils.errors import ConfigError, ModelError
from utils.io import atomic_write_bytes
from utils.metrics import ConfusionMatrix, metrics_from_matrix

logger = logging.getLogger(__name__)


def _dist_on():
    return dist.is_available() and dist.is_initialized()


def _rank_world():
    return (dist.get_rank(), dist.get_world_size()) if _dist_on() else (0, 1)


class ShardedEvalSampler(Sampler):
    """Rank ``r`` of ``w`` gets indices ``r, r + w, ...``: no sample is repeated or dropped, unlike
    ``DistributedSampler``, which pads with duplicates; metrics stay exact after all-reduce."""

    def __init__(self, dataset, rank=None, world_size=None):
        default_rank, default_world = _rank_world()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        self.length = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self):
        return len(range(self.rank, self.length, self.world_size))


def eval_sampler(dataset):
    """The sampler to use for evaluation: sharded under ``torch.distributed``, else ``None`` (sequential)."""
    return ShardedEvalSampler(dataset) if _dist_on() else None


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _resize_input(images, scale):
    height, width = images.shape[-2:]
    size = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
    # align_corners=False matches the cv2.INTER_LINEAR resize of the official multi-scale code.
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _to_size(logits, size, align_corners):
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def _cpu_channels_last(logits):
    # On CPU, upsampling + argmax of NHWC logits is ~2-3x faster than of NCHW ones (the deploy
    # runners already return NHWC); the copy is of the small low-resolution logits only.
    if logits.device.type == "cpu" and logits.dim() == 4:
        return logits.contiguous(memory_format=torch.channels_last)
    return logits


def segmentation_outputs(outputs, num_classes):
    """Indices of the outputs that are class scores (``C == num_classes``); the boundary head is not."""
    return [i for i, out in enumerate(outputs) if out.dim() == 4 and out.shape[1] == num_classes]


def predict(model_fn, images, size, num_classes, scales=None, flip=False, align_corners=True):
    """Class scores at ``size`` for every semantic output of ``model_fn(images)``.

    Returns ``(scores, seg_indices, n_outputs, raw_outputs)``: ``scores[j]`` (``N x C x H x W``)
    belongs to output ``seg_indices[j]`` of the ``n_outputs`` the model returns; they are logits
    without test-time augmentation and otherwise the mean softmax probabilities over scales and
    flips. ``raw_outputs`` is the plain forward at scale 1 (for the loss), or ``None`` when no such
    pass was run.
    """
    scales = [float(s) for s in (scales or [1.0])]
    plain = scales == [1.0] and not flip
    total, count, raw, seg_indices, n_outputs = None, 0, None, None, 0
    for scale in scales:
        inputs = images if scale == 1.0 else _resize_input(images, scale)
        for flipped in ((False, True) if flip else (False,)):
            outputs = _as_list(model_fn(inputs.flip(-1) if flipped else inputs))
            if seg_indices is None:
                n_outputs = len(outputs)
                seg_indices = segmentation_outputs(outputs, num_classes)
                if not seg_indices:
                    shapes = [tuple(o.shape) for o in outputs]
                    raise ModelError(f"the model returns no output with {num_classes} classes (shapes {shapes}): "
                                     "check DATASET.NUM_CLASSES against the checkpoint")
            if scale == 1.0 and not flipped and raw is None:
                raw = outputs
            if plain:
                # argmax(softmax) == argmax(logits): the logits are upsampled in their own dtype and
                # never normalised.
                scores = [_to_size(_cpu_channels_last(outputs[i]), size, align_corners) for i in seg_indices]
                return scores, seg_indices, n_outputs, raw
            scores = []
            for i in seg_indices:
                out = outputs[i].flip(-1) if flipped else outputs[i]
                scores.append(F.softmax(_to_size(out.float(), size, align_corners), dim=1))
            total = scores if total is None else [t + s for t, s in zip(total, scores)]
            count += 1
    return [t / count for t in total], seg_indices, n_outputs, raw


def _headline_position(output_index, n_outputs, seg_indices):
    if n_outputs == 1:
        return 0  # a single tensor (inference model): TEST.OUTPUT_INDEX does not apply
    if not -n_outputs <= output_index < n_outputs:
        raise ConfigError(f"TEST.OUTPUT_INDEX {output_index} is out of range: the model returns {n_outputs} "
                          f"outputs; use 1 for PIDNet's main output")
    index = output_index % n_outputs
    if index not in seg_indices:
        raise ConfigError(f"TEST.OUTPUT_INDEX {output_index} selects output {index}, which is not a class-score "
                          f"output (those are {seg_indices}); use 1 for PIDNet's main output")
    return seg_indices.index(index)


class PredictionWriter:
    """Writes label-ID PNGs (``<dir>/<name>.png``, via ``dataset.train_id_to_label_id``, the format
    of the Cityscapes benchmark server) and/or colour PNGs (``<dir>/color/<name>.png``, via
    ``dataset.palette``). Each file is written atomically."""

    def __init__(self, save_dir, dataset=None, num_classes=256, label_ids=True, color=False):
        self.save_dir = save_dir
        self.label_ids = label_ids
        self.color = color
        base = dataset
        while base is not None and not hasattr(base, "palette") and hasattr(base, "dataset"):
            base = base.dataset  # Subset and similar wrappers
        self.to_label_id = getattr(base, "train_id_to_label_id", None)
        colors = getattr(base, "palette", None)
        palette = colors if colors is not None and len(colors) else palette_for(num_classes)
        self.lut = np.zeros((256, 3), dtype=np.uint8)
        for i, rgb in enumerate(palette[:256]):
            self.lut[i] = rgb

    def _path(self, sub, name):
        name = os.path.normpath(str(name))
        if os.path.isabs(name) or name.startswith(".."):
            name = os.path.basename(name)
        return os.path.join(self.save_dir, sub, os.path.splitext(name)[0] + ".png")

    def write(self, pred, name):
        """``pred``: ``H x W`` train-ID array."""
        pred = np.asarray(pred, dtype=np.uint8)
        if self.label_ids:
            ids = pred if self.to_label_id is None else np.asarray(self.to_label_id(pred))
            self._write_png(ids.astype(np.uint8), self._path("", name))
        if self.color:
            self._write_png(self.lut[pred][..., ::-1], self._path("color", name))

    @staticmethod
    def _write_png(array, path):
        ok, data = cv2.imencode(".png", np.ascontiguousarray(array))
        if not ok:
            raise OSError(f"could not encode a PNG for {path}")
        atomic_write_bytes(data.tobytes(), path)


def _unpack(batch, index_base):
    images, labels = batch[0], batch[1]
    edges = batch[2] if len(batch) > 2 else None
    names = batch[4] if len(batch) > 4 else [f"{index_base + i:06d}" for i in range(images.shape[0])]
    if isinstance(names, str):
        names = [names]
    return images, labels, edges, list(names)


def evaluate(model_fn, loader, num_classes, ignore_label=255, device=None, output_index=-1,
             align_corners=True, flip_test=False, scales=None, criterion=None, save_dir=None,
             save_label_ids=True, save_color=False, dataset=None, progress=True, desc="eval"):
    """Evaluate ``model_fn`` over ``loader`` and return the metrics (identical on every rank).

    Args:
        model_fn: ``images -> outputs`` (a tensor or a list such as PIDNet's ``[p, main, boundary]``).
            An ``nn.Module`` is put in eval mode for the loop and restored afterwards.
        loader: yields the dataset tuples ``(image, label, edge, size, name)``.
        num_classes, ignore_label: as the dataset.
        device: where inputs go (default: the module's device, else CPU).
        output_index: which output is the headline (``TEST.OUTPUT_INDEX``; ignored for a single tensor).
        align_corners: for upsampling predictions to the label size (``MODEL.ALIGN_CORNERS``).
        flip_test, scales: test-time augmentation (averaged softmax probabilities).
        criterion: optional loss ``(outputs, labels, edges) -> (loss, parts)`` on the plain forward;
            needs a model returning the training outputs.
        save_dir: write predictions there (see :class:`PredictionWriter`), for ``save_label_ids``
            and/or ``save_color``.
        dataset: source of ``palette``/``train_id_to_label_id`` (default ``loader.dataset``).

    Returns:
        dict: ``mean_iou``, ``iou``, ``pixel_acc``, ``mean_acc`` (headline output), ``outputs``
        (the same per semantic output, with its ``index``), ``output_index``, ``confusion_matrix``,
        ``loss`` (mean per image, or ``None``), ``num_images``, ``labelled_pixels``, ``seconds``,
        ``images_per_sec``.
    """
    module = model_fn if isinstance(model_fn, nn.Module) else None
    if device is None:
        param = next(module.parameters(), None) if module is not None else None
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    rank, _ = _rank_world()
    writer = None
    if save_dir and (save_label_ids or save_color):
        writer = PredictionWriter(save_dir, dataset if dataset is not None else getattr(loader, "dataset", None),
                                  num_classes, label_ids=save_label_ids, color=save_color)

    matrices, seg_indices, headline = None, None, None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_images = 0
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress or rank != 0,
                              dynamic_ncols=True):
                images, labels, edges, names = _unpack(batch, n_images)
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, torch.int64, non_blocking=True)
                scores, indices, n_outputs, raw = predict(model_fn, images, labels.shape[-2:], num_classes,
                                                          scales, flip_test, align_corners)
                if matrices is None:
                    seg_indices = indices
                    headline = _headline_position(output_index, n_outputs, seg_indices)
                    matrices = [ConfusionMatrix(num_classes, ignore_label, device) for _ in seg_indices]
                preds = [s.argmax(dim=1) for s in scores]
                for matrix, pred in zip(matrices, preds):
                    matrix.update(pred, labels)
                if criterion is not None:
                    loss_sum += _batch_loss(model_fn, criterion, images, labels, edges, raw, device) * images.shape[0]
                if writer is not None:
                    for pred, name in zip(preds[headline].to("cpu").numpy(), names):
                        writer.write(pred, name)
                n_images += images.shape[0]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        if module is not None:
            module.train(was_training)
    seconds = time.perf_counter() - start
    return _finish(matrices, seg_indices, headline, num_classes, ignore_label, device, loss_sum,
                   n_images, seconds, criterion is not None)


def _batch_loss(model_fn, criterion, images, labels, edges, raw, device):
    if edges is None:
        raise ValueError("a validation loss needs the boundary targets: the loader must yield "
                         "(image, label, edge, size, name)")
    outputs = raw if raw is not None else _as_list(model_fn(images))
    if len(outputs) < 2:
        raise ModelError("the validation loss needs the training outputs [p, main, boundary]: "
                         "build the model with augment=True (or pass no criterion)")
    loss, _ = criterion(outputs, labels, edges.to(device, torch.float32))
    return loss.double()


def _agree_on_outputs(seg_indices, headline, device, max_outputs=16):
    """Output layout known to every rank, including ranks that saw no batch."""
    if not _dist_on():
        return (seg_indices, headline) if seg_indices is not None else ([0], 0)
    meta = torch.full((max_outputs + 1,), -1, dtype=torch.int64, device=device)
    if seg_indices is not None:
        meta[0] = headline
        meta[1:1 + len(seg_indices)] = torch.tensor(seg_indices, dtype=torch.int64)
    dist.all_reduce(meta, op=dist.ReduceOp.MAX)
    if meta[0] < 0:
        return [0], 0
    return [int(i) for i in meta[1:] if i >= 0], int(meta[0])


def _finish(matrices, seg_indices, headline, num_classes, ignore_label, device, loss_sum, n_images,
            seconds, with_loss):
    seg_indices, headline = _agree_on_outputs(seg_indices, headline, device)
    if matrices is None:
        # This rank saw no batch (an empty list, or more ranks than images): it still joins the reductions.
        matrices = [ConfusionMatrix(num_classes, ignore_label, device) for _ in seg_indices]
    counts = torch.tensor([float(n_images), seconds], dtype=torch.float64, device=device)
    if _dist_on():
        for matrix in matrices:
            matrix.all_reduce()
        dist.all_reduce(loss_sum)
        dist.all_reduce(counts[:1])
        max_seconds = counts[1:].clone()
        dist.all_reduce(max_seconds, op=dist.ReduceOp.MAX)
        counts[1:] = max_seconds
    total_images, seconds = int(counts[0].item()), float(counts[1].item())
    per_output = []
    for index, matrix in zip(seg_indices, matrices):
        metrics = matrix.compute()
        metrics["index"] = index
        per_output.append(metrics)
    result = dict(per_output[headline])
    result.pop("index")
    result.update(
        outputs=per_output,
        output_index=seg_indices[headline],
        confusion_matrix=matrices[headline].mat.cpu().tolist(),
        labelled_pixels=int(matrices[headline].mat.sum().item()),
        loss=float(loss_sum.item() / total_images) if with_loss and total_images else None,
        num_images=total_images,
        seconds=seconds,
        images_per_sec=total_images / seconds if seconds > 0 else math.inf,
    )
    logger.info("evaluated %d images in %.1f s (%.2f images/s, data loading included)",
                total_images, seconds, result["images_per_sec"])
    return result
