"""The demo's report, assembled from what its steps wrote: metrics, timings, curves, example grids.

``tools/demo.py`` runs the tools; these functions read their outputs (JSON metrics, speed
lines, quantization reports, training histories, colour predictions) into the rows, points and
image grids that :func:`utils.report.build_report` renders. A missing or unreadable output is
logged and only removes its part of the report.
"""
import json
import logging
import os

from utils.layout import QUANTIZE_REPORT

logger = logging.getLogger(__name__)


def read_json(path):
    """The JSON at ``path``, or ``None`` (with a warning) when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s (%s); the report will miss it", path, exc)
        return None


def read_rgb(path):
    """An image file as an RGB array, or ``None`` when it cannot be read."""
    from utils.images import read_image

    image = read_image(path)
    return None if image is None else image[:, :, ::-1].copy()


def validation_examples(dataset, num_classes, pred_dir, count):
    """Grid rows (input / predictions / ground truth) for the first ``count`` images of
    ``dataset``, with the colour predictions eval wrote to ``pred_dir/<model>/color/``."""
    from utils.visualize import colorize, denormalize, palette_for

    palette = palette_for(num_classes, getattr(dataset, "palette", None))
    rows = []
    for index in range(min(count, len(dataset))):
        image, label, _, _, name = dataset[index]
        row = [("Input", denormalize(image.numpy()))]
        for key, column in (("original", "Trained model"), ("compressed", "Compressed + fine-tuned")):
            pred = read_rgb(os.path.join(pred_dir, key, "color", os.path.splitext(name)[0] + ".png"))
            if pred is not None:
                row.append((column, pred))
        row.append(("Ground truth", colorize(label.numpy(), palette)))
        rows.append({"name": name, "images": row})
    return rows


def custom_examples(samples_dir, custom_dir, root, count=3):
    """Grid rows (input / overlays of both models) for the first ``count`` images of
    ``samples_dir`` segmented by tools/custom.py into ``custom_dir/<model>/``; names relative to ``root``."""
    rows = []
    names = sorted(n for n in os.listdir(samples_dir) if n.lower().endswith((".png", ".jpg", ".jpeg")))
    for name in names[:count]:
        stem = os.path.splitext(name)[0]
        image = read_rgb(os.path.join(samples_dir, name))
        row = [("Input", image)] if image is not None else []
        for key, column in (("original", "Trained model (overlay)"), ("compressed", "Compressed (overlay)")):
            pred = read_rgb(os.path.join(custom_dir, key, stem + "_overlay.png"))
            if pred is not None:
                row.append((column, pred))
        if len(row) > 1:
            rows.append({"name": os.path.join(os.path.relpath(samples_dir, root), name), "images": row})
    return rows


def model_stats(compress_report, speed):
    """Params/MACs (from tools/compress.py's JSON) and latency (from the speed runs) per model."""
    stats = {"original": dict(speed.get("original", {})), "compressed": dict(speed.get("compressed", {}))}
    if compress_report:
        for key, side in (("original", "before"), ("compressed", "after")):
            summary = compress_report.get(side) or {}
            stats[key]["params"] = summary.get("params")
            macs = summary.get("macs")
            stats[key]["macs"] = next(iter(macs.values())) if isinstance(macs, dict) and macs else macs
    return stats


def tradeoff_points(speed, quant_dir, original, compressed, ratio):
    """One accuracy-vs-latency point per model the demo made (latency from the speed steps,
    mIoU from the evaluations; the fp32 backends share the trained model's mIoU, since they
    give its logits to 1e-3)."""
    quantized = {key: (read_json(os.path.join(quant_dir, key, QUANTIZE_REPORT)) or {}).get("eval", {})
                 for key in ("original", "compressed")}
    pruned = f"pruned {int(round(100 * ratio))}%"
    rows = (("fp32 eager", "original_eager", (original or {}).get("mean_iou")),
            ("fp32 fused", "original", (original or {}).get("mean_iou")),
            ("fp32 onnxruntime", "original_onnxruntime", (original or {}).get("mean_iou")),
            (pruned, "compressed", (compressed or {}).get("mean_iou")),
            ("int8", "original_int8", quantized["original"].get("int8_miou")),
            (f"{pruned} + int8", "compressed_int8", quantized["compressed"].get("int8_miou")))
    return [{"label": label, "latency_ms": speed.get(key, {}).get("latency_ms"), "miou": miou}
            for label, key, miou in rows]


def training_curves(train_log_dir, finetune_log_dir):
    """Loss and mIoU per epoch of the training run, with the fine-tuning run after it."""
    from utils.history import load_history, pick_series

    train_hist = load_history(train_log_dir)
    ft_hist = load_history(finetune_log_dir)
    offset = max((x for x, _ in pick_series(train_hist, ("train_loss",))), default=-1) + 1

    def shifted(points):
        return [(x + offset, y) for x, y in points]

    return {
        "loss": {"training": pick_series(train_hist, ("train_loss",)),
                 "fine-tuning (compressed)": shifted(pick_series(ft_hist, ("train_loss",)))},
        "mIoU": {"training": pick_series(train_hist, ("valid_mIoU", "mean_iou")),
                 "fine-tuning (compressed)": shifted(pick_series(ft_hist, ("valid_mIoU", "mean_iou")))},
    }
