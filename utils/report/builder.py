""":func:`build_report`: save the report's images, then render the HTML and Markdown pages."""
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from utils.io import atomic_write_bytes, atomic_write_text
from utils.report.charts import plot_curves, plot_tradeoff
from utils.report.html import render_html
from utils.report.markdown import render_markdown
from utils.report.summary import headline

logger = logging.getLogger(__name__)


@dataclass
class Page:
    """Everything both renderers show: :func:`build_report`'s arguments plus the saved image paths."""
    title: str
    subtitle: str
    cards: list
    runs: list
    class_names: list
    class_colors: object = None
    plots: list = field(default_factory=list)          # [(curve key, png path)]
    speed_note: str = ""
    tradeoff: list = field(default_factory=list)
    tradeoff_path: object = None
    tradeoff_note: str = ""
    samples: list = field(default_factory=list)
    sample_paths: list = field(default_factory=list)
    gallery: list = field(default_factory=list)
    gallery_paths: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    settings: list = field(default_factory=list)
    outputs: list = field(default_factory=list)


def build_report(report_dir, *, title, runs, class_names, subtitle="", curves=None, samples=None,
                 gallery=None, steps=None, settings=None, outputs=None, total_seconds=None, speed_note="",
                 tradeoff=None, tradeoff_note="", class_colors=None):
    """Write ``index.html``, ``report.md`` and ``img/`` into ``report_dir``; return the HTML path.

    Args:
        title, subtitle: page heading.
        runs: ``[{'label', 'metrics': eval --json dict (mean_iou, iou dict/list, pixel_acc, ...),
            'stats': {'params', 'macs', 'latency_ms', 'fps'}}]``; the first is "before", the last "after".
        class_names: class names in label order (IoU rows; colours from the matching palette).
        class_colors: the config's ``DATASET.CLASS_COLORS`` (custom datasets), so the swatches are
            the colours of ``eval --save-color``; ``None`` for the dataset's default palette.
        curves: ``{'loss': {series label: [(x, y)]}, 'mIoU': {...}}`` (empty series are dropped);
            the series come from :func:`utils.history.load_history`.
        samples: example grid rows ``[{'name', 'images': [(column, HxWx3 RGB uint8)]}]``.
        gallery: the same for custom-image outputs.
        steps: ``[{'name', 'status', 'seconds', 'log'}]``; settings: ``[(key, value)]``;
        outputs: ``[(label, path)]`` listed at the end.
        tradeoff: ``[{'label', 'latency_ms', 'miou'}]``, one per model variant (fp32, int8,
            pruned...): the accuracy-vs-latency chart with its Pareto front, and its table.
    """
    img_dir = os.path.join(report_dir, "img")
    os.makedirs(img_dir, exist_ok=True)
    plots = []
    for key, ylabel in (("loss", "loss"), ("mIoU", "mIoU (%)")):
        series = (curves or {}).get(key) or {}
        if key == "mIoU":
            # mIoU is shown in percent; histories may store fractions.
            series = {k: [(x, 100.0 * y if y <= 1.0 else y) for x, y in v] for k, v in series.items()}
        path = plot_curves(series, os.path.join(img_dir, f"{key.lower()}.png"), f"{ylabel} per epoch", ylabel)
        if path:
            plots.append((key, path))

    def save_rows(rows, prefix):
        saved = []
        for index, row in enumerate(rows or []):
            paths = []
            for column, image in row["images"]:
                slug = "".join(ch if ch.isalnum() else "_" for ch in column.lower())
                paths.append(write_rgb_png(image, os.path.join(img_dir, f"{prefix}{index:02d}_{slug}.png")))
            saved.append(paths)
        return saved

    tradeoff_path = plot_tradeoff(tradeoff or [], os.path.join(img_dir, "tradeoff.png"))
    page = Page(title=title, subtitle=subtitle, cards=headline(runs, total_seconds), runs=runs,
                class_names=class_names, class_colors=class_colors, plots=plots, speed_note=speed_note,
                tradeoff=tradeoff or [], tradeoff_path=tradeoff_path, tradeoff_note=tradeoff_note,
                samples=samples or [], sample_paths=save_rows(samples, "sample"), gallery=gallery or [],
                gallery_paths=save_rows(gallery, "custom"), steps=steps or [], settings=settings or [],
                outputs=outputs or [])
    html_path = os.path.join(report_dir, "index.html")
    atomic_write_text(render_html(page), html_path)
    atomic_write_text(render_markdown(page), os.path.join(report_dir, "report.md"))
    logger.info("report written to %s", html_path)
    return html_path


def write_rgb_png(image, path):
    """Write an ``HxWx3`` RGB uint8 image as PNG (atomically); returns ``path``."""
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode {path}")
    atomic_write_bytes(encoded.tobytes(), path)
    return path
