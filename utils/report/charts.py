"""The report's matplotlib charts: training curves and accuracy vs latency with its Pareto front.

Each function writes one PNG (atomically) and returns its path, or ``None`` when there is
nothing to draw. matplotlib is imported on first use, with the ``Agg`` backend (no display).
"""
import io
import math

from utils.io import atomic_write_bytes
from utils.report.summary import pareto_front

_COLORS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(series, path, title, ylabel, xlabel="epoch"):
    """Line plot of ``{label: [(x, y), ...]}`` to ``path``; returns ``path``, or None with no data."""
    series = {label: points for label, points in series.items() if points}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=110)
    for index, (label, points) in enumerate(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.8,
                color=_COLORS[index % len(_COLORS)], label=label)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=9)
    return _save_figure(fig, path)


def label_offsets(points, near_decades=0.25, near_fraction=0.04):
    """Text offsets (points) of the labels of ``points`` in the tradeoff chart: a label whose point
    sits near an earlier one (within ``near_decades`` of latency on the log axis and
    ``near_fraction`` of the mIoU span) is stacked above it, so that models of equal accuracy and
    similar speed (fp32 eager / fused / onnxruntime) stay readable."""
    xs = [math.log10(p["latency_ms"]) for p in points]
    ys = [100.0 * p["miou"] for p in points]
    span = (max(ys) - min(ys)) or 1.0
    offsets = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        stacked = sum(1 for j in range(i) if abs(xs[j] - x) < near_decades and abs(ys[j] - y) < near_fraction * span)
        offsets.append((5, 4 + 10 * stacked))
    return offsets


def plot_tradeoff(points, path, title="Accuracy vs latency"):
    """Scatter of mIoU (%) against latency (ms), one labelled point per model, the Pareto front
    drawn as a step line; returns ``path``, or None when fewer than two points have both values."""
    usable = [p for p in points if p.get("latency_ms") is not None and p.get("miou") is not None]
    if len(usable) < 2:
        return None
    plt = _pyplot()
    front = pareto_front(usable)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    on_front = {id(p) for p in front}
    for point, offset in zip(usable, label_offsets(usable)):
        star = id(point) in on_front
        ax.scatter(point["latency_ms"], 100.0 * point["miou"], s=46 if star else 30, zorder=3,
                   color="#2563eb" if star else "#94a3b8", edgecolors="#1e293b", linewidths=0.6)
        ax.annotate(point["label"], (point["latency_ms"], 100.0 * point["miou"]), textcoords="offset points",
                    xytext=offset, fontsize=8)
    xs = [p["latency_ms"] for p in front]
    ys = [100.0 * p["miou"] for p in front]
    ax.step(xs, ys, where="post", color="#2563eb", linewidth=1.4, alpha=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, batch 1, this machine; log scale)")
    ax.set_ylabel("mIoU on val (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(frameon=False, fontsize=9, loc="best")
    return _save_figure(fig, path)


def _save_figure(fig, path):
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    return path
