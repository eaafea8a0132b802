"""A one-page report of a run: headline numbers, curves, per-class IoU, size/speed, examples.

The builder takes plain data (no config, no file layout knowledge), so any tool can use it;
``tools/demo.py`` gathers the data from the real CLIs' outputs. It writes, into one folder:

* ``index.html`` - self-contained (inline CSS, images embedded as data URIs), opens offline;
* ``report.md``  - the same tables in Markdown, images linked from ``img/``;
* ``img/*.png``  - the curves (matplotlib) and the example grids.

Training curves come from :func:`load_history`, which reads a trainer's ``history.json`` or,
failing that, the TensorBoard event files (``train_loss``, ``valid_loss``, ``valid_mIoU``
scalars, the official tags) with tensorboardX's protobuf definitions - no TensorBoard install
needed. A missing history only removes the curves.
"""
import base64
import glob
import html
import io
import json
import logging
import math
import os
import struct

import numpy as np

from utils.io import atomic_write_bytes, atomic_write_text
from utils.visualize import palette_for

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.json"


# --------------------------------------------------------------------------- history

def read_event_scalars(path):
    """``{tag: [(step, value), ...]}`` from one TensorBoard event file (TFRecord of ``Event`` protos)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    with open(path, "rb") as handle:
        while True:
            header = handle.read(12)  # uint64 length + uint32 length CRC
            if len(header) < 12:
                break
            (length,) = struct.unpack("<Q", header[:8])
            data = handle.read(length)
            handle.read(4)  # data CRC
            if len(data) < length:
                break  # a file still being written ends with a partial record
            event = event_pb2.Event()
            try:
                event.ParseFromString(data)
            except Exception:  # noqa: BLE001 - protobuf raises its own DecodeError; skip the record
                continue
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return scalars


def _history_from_json(obj):
    """Records ``[{"epoch": e, "train_loss": ...}, ...]`` or columns ``{"train_loss": [...]}``."""
    series = {}
    if isinstance(obj, dict) and isinstance(obj.get("epochs"), list):
        obj = obj["epochs"]
    if isinstance(obj, list):
        for index, record in enumerate(obj):
            if not isinstance(record, dict):
                continue
            step = record.get("epoch", index)
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and math.isfinite(value):
                    series.setdefault(key, []).append((step, float(value)))
    elif isinstance(obj, dict):
        steps = obj.get("epoch")
        for key, values in obj.items():
            if key == "epoch" or not isinstance(values, list):
                continue
            xs = steps if isinstance(steps, list) and len(steps) == len(values) else range(len(values))
            series[key] = [(x, float(v)) for x, v in zip(xs, values)
                           if isinstance(v, (int, float)) and math.isfinite(v)]
    return series


def load_history(path):
    """Training curves of a run, ``{name: [(step, value), ...]}``; ``{}`` when there are none.

    ``path`` is a ``history.json`` file, or a folder searched (recursively) for
    ``history.json`` first and TensorBoard event files second. Unreadable files are logged
    and ignored: a report without curves is better than no report.
    """
    if not path or not os.path.exists(path):
        return {}
    candidates = [path] if os.path.isfile(path) else sorted(
        glob.glob(os.path.join(path, "**", HISTORY_FILE), recursive=True))
    for candidate in candidates:
        if candidate.endswith(".json"):
            try:
                with open(candidate, encoding="utf-8") as handle:
                    series = _history_from_json(json.load(handle))
            except (OSError, ValueError) as exc:
                logger.warning("cannot read training history %s (%s); trying event files", candidate, exc)
                continue
            if series:
                return series
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    series = {}
    files = glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True)
    # Oldest first: a rerun or resumed run into the same folder overrides the steps it repeats.
    for event_file in sorted(files, key=lambda f: (os.path.getmtime(f), f)):
        try:
            for tag, points in read_event_scalars(event_file).items():
                series.setdefault(tag, {}).update(points)
        except (OSError, ImportError) as exc:
            logger.warning("cannot read event file %s (%s)", event_file, exc)
    return {tag: sorted(points.items()) for tag, points in series.items()}


def pick_series(history, keys):
    """The first of ``keys`` present in ``history`` (exact, then case-insensitive), else ``[]``."""
    for key in keys:
        if history.get(key):
            return history[key]
    lowered = {k.lower(): v for k, v in history.items()}
    for key in keys:
        if lowered.get(key.lower()):
            return lowered[key.lower()]
    return []


# --------------------------------------------------------------------------- plots and images

def plot_curves(series, path, title, ylabel, xlabel="epoch"):
    """Line plot of ``{label: [(x, y), ...]}`` to ``path``; returns ``path``, or None with no data."""
    series = {label: points for label, points in series.items() if points}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=110)
    colors = ("#2563eb", "#ea580c", "#16a34a", "#9333ea")
    for index, (label, points) in enumerate(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.8,
                color=colors[index % len(colors)], label=label)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=9)
    return _save_figure(fig, path)


def _save_figure(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
    return path


def write_rgb_png(image, path):
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode {path}")
    atomic_write_bytes(encoded.tobytes(), path)
    return path


def _data_uri(path):
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


# --------------------------------------------------------------------------- formatting

def fmt_count(value, unit=""):
    """1234567 -> '1.23 M'; None -> '-'."""
    if value is None:
        return "-"
    value = float(value)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {suffix}{unit}"
    return f"{value:.0f} {unit}".strip()


def fmt_pct(value, digits=1):
    return "-" if value is None else f"{100.0 * float(value):.{digits}f}%"


def fmt_ms(value):
    return "-" if value is None else f"{float(value):.1f} ms"


def fmt_seconds(value):
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.0f} s" if value < 120 else f"{int(value // 60)} min {value % 60:02.0f} s"


def _ratio(before, after):
    if before is None or after is None or not after:
        return None
    return float(before) / float(after)


def per_class_rows(runs, class_names):
    """``[(name, [iou or None per run]), ...]`` from each run's ``metrics['iou']`` (dict or list)."""
    rows = []
    for index, name in enumerate(class_names):
        values = []
        for run in runs:
            iou = (run.get("metrics") or {}).get("iou")
            if isinstance(iou, dict):
                values.append(iou.get(name))
            elif isinstance(iou, (list, tuple)) and index < len(iou):
                values.append(iou[index])
            else:
                values.append(None)
        rows.append((name, values))
    return rows


def headline(runs, total_seconds=None):
    """Cards ``[(label, value, detail)]``: mIoU per run, size/MACs/latency change, time."""
    cards = []
    for run in runs:
        miou = (run.get("metrics") or {}).get("mean_iou")
        if miou is not None:
            cards.append((f"mIoU - {run['label']}", fmt_pct(miou), "validation set"))
    if len(runs) >= 2:
        first, last = runs[0].get("stats") or {}, runs[-1].get("stats") or {}
        for key, label, fmt, better in (("params", "Parameters", fmt_count, "smaller"),
                                        ("macs", "MACs", fmt_count, "fewer"),
                                        ("latency_ms", "Latency", fmt_ms, "faster")):
            ratio = _ratio(first.get(key), last.get(key))
            if ratio is not None:
                cards.append((label, fmt(last.get(key)),
                              f"{ratio:.2f}&times; {better} (was {fmt(first.get(key))})"))
    if total_seconds is not None:
        cards.append(("Total time", fmt_seconds(total_seconds), "all steps"))
    return cards


# --------------------------------------------------------------------------- HTML

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#1f2937;font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",
Roboto,Helvetica,Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:34px 0 12px;padding-bottom:6px;border-bottom:1px solid #e5e7eb}
.sub{color:#6b7280;margin:0 0 20px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(165px,1fr));gap:12px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:14px 16px}
.card .k{color:#6b7280;font-size:13px;font-weight:500}
.card .v{font-size:24px;font-weight:650;margin-top:2px;white-space:nowrap}
.card .d{color:#059669;font-size:13px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
.plots figure,.panel{background:#fff;border:1px solid #e5e7eb;border-radius:10px;margin:0;padding:10px}
.plots img{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e5e7eb;border-radius:10px;
overflow:hidden;font-size:14px}
th,td{padding:7px 12px;text-align:right;border-bottom:1px solid #f0f1f3}
th{background:#f9fafb;font-weight:600;color:#374151}
th:first-child,td:first-child{text-align:left}
tr:last-child td{border-bottom:none}
tfoot td{font-weight:650;background:#f9fafb}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:8px;vertical-align:-1px;
border:1px solid rgba(0,0,0,.15)}
.bar{display:inline-block;height:8px;border-radius:4px;background:#93c5fd;vertical-align:middle;margin-left:8px}
.up{color:#059669}.down{color:#dc2626}.muted{color:#9ca3af}
.grid{width:100%;border:none;background:none;table-layout:fixed}
.grid td{padding:4px;border:none;text-align:center;vertical-align:top;background:none}
.grid th{background:none;text-align:center;border:none;font-size:13px;color:#6b7280}
.grid img{width:100%;height:auto;border-radius:6px;display:block;image-rendering:pixelated}
.grid .name{font-size:12px;color:#6b7280;text-align:left;padding-top:0}
code{background:#eef0f3;padding:1px 5px;border-radius:4px;font-size:13px}
.ok{color:#059669}.fail{color:#dc2626}.nw{white-space:nowrap}
footer{margin-top:36px;color:#6b7280;font-size:13px}
"""


def _esc(text):
    return html.escape(str(text))


def _cards_html(cards):
    items = "".join(f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{v}</div>'
                    f'<div class="d">{d}</div></div>' for k, v, d in cards)
    return f'<div class="cards">{items}</div>'


def _iou_table_html(runs, class_names, class_colors=None):
    palette = palette_for(len(class_names), class_colors)
    head = "".join(f"<th>{_esc(r['label'])}</th>" for r in runs)
    delta_head = "<th>&Delta;</th>" if len(runs) >= 2 else ""
    body = []
    for (name, values), color in zip(per_class_rows(runs, class_names), palette):
        cells = []
        for value in values:
            if value is None:
                cells.append('<td class="muted">-</td>')
            else:
                width = max(1, int(round(80 * float(value))))
                cells.append(f'<td>{fmt_pct(value)}<span class="bar" style="width:{width}px"></span></td>')
        delta = ""
        if len(values) >= 2:
            if values[0] is None or values[-1] is None:
                delta = '<td class="muted">-</td>'
            else:
                change = 100.0 * (float(values[-1]) - float(values[0]))
                cls = "up" if change > 0.05 else "down" if change < -0.05 else "muted"
                delta = f'<td class="{cls}">{change:+.1f}</td>'
        swatch = f'<span class="sw" style="background:rgb({color[0]},{color[1]},{color[2]})"></span>'
        body.append(f"<tr><td>{swatch}{_esc(name)}</td>{''.join(cells)}{delta}</tr>")
    means = [(r.get("metrics") or {}).get("mean_iou") for r in runs]
    foot = "".join(f"<td>{fmt_pct(m)}</td>" for m in means)
    if len(runs) >= 2:
        foot += ('<td>-</td>' if None in (means[0], means[-1])
                 else f"<td>{100.0 * (means[-1] - means[0]):+.1f}</td>")
    return (f"<table><thead><tr><th>Class</th>{head}{delta_head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"<tfoot><tr><td>mean IoU</td>{foot}</tr></tfoot></table>")


_STAT_ROWS = (
    ("Parameters", "params", fmt_count),
    ("MACs (per image)", "macs", fmt_count),
    ("Latency (batch 1)", "latency_ms", fmt_ms),
    ("Throughput", "fps", lambda v: "-" if v is None else f"{float(v):.1f} img/s"),
    ("Pixel accuracy", "pixel_acc", fmt_pct),
    ("Mean accuracy", "mean_acc", fmt_pct),
    ("Mean IoU", "mean_iou", fmt_pct),
)


def _stat_value(run, key):
    stats = run.get("stats") or {}
    return stats[key] if stats.get(key) is not None else (run.get("metrics") or {}).get(key)


def stats_rows(runs):
    """``[(label, [formatted per run], ratio text)]`` for the size/speed/accuracy table."""
    rows = []
    for label, key, fmt in _STAT_ROWS:
        values = [_stat_value(r, key) for r in runs]
        if all(v is None for v in values):
            continue
        change = ""
        if len(runs) >= 2 and values[0] is not None and values[-1] is not None:
            if key in ("params", "macs", "latency_ms"):
                ratio = _ratio(values[0], values[-1])
                change = f"{ratio:.2f}x smaller" if ratio else ""
                if key == "latency_ms" and ratio:
                    change = f"{ratio:.2f}x faster"
            elif key == "fps":
                ratio = _ratio(values[-1], values[0])
                change = f"{ratio:.2f}x" if ratio else ""
            else:
                change = f"{100.0 * (float(values[-1]) - float(values[0])):+.1f} pts"
        rows.append((label, [fmt(v) for v in values], change))
    return rows


def _stats_table_html(runs, note=""):
    head = "".join(f"<th>{_esc(r['label'])}</th>" for r in runs)
    change_head = "<th>Change</th>" if len(runs) >= 2 else ""
    body = "".join(f"<tr><td>{_esc(label)}</td>{''.join(f'<td>{_esc(v)}</td>' for v in values)}"
                   + (f"<td>{_esc(change)}</td>" if len(runs) >= 2 else "") + "</tr>"
                   for label, values, change in stats_rows(runs))
    extra = f'<p class="sub" style="margin-top:8px">{_esc(note)}</p>' if note else ""
    return f"<table><thead><tr><th></th>{head}{change_head}</tr></thead><tbody>{body}</tbody></table>{extra}"


def _grid_html(rows, img_dir_paths):
    """``rows``: [{'name': str, 'images': [(column, rgb)]}] -> HTML table of embedded images."""
    if not rows:
        return ""
    columns = [c for c, _ in rows[0]["images"]]
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    for row, paths in zip(rows, img_dir_paths):
        cells = "".join(f'<td><img src="{_data_uri(p)}" alt="{_esc(row["name"])} {_esc(c)}"></td>'
                        for (c, _), p in zip(row["images"], paths))
        body.append(f"<tr>{cells}</tr><tr><td class=\"name\" colspan=\"{len(columns)}\">"
                    f"{_esc(row['name'])}</td></tr>")
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _steps_table_html(steps):
    body = []
    for step in steps:
        status = step.get("status", "ok")
        cls = "ok" if status == "ok" else "fail"
        log = f"<code>{_esc(step['log'])}</code>" if step.get("log") else ""
        body.append(f"<tr><td>{_esc(step['name'])}</td><td class=\"{cls}\">{_esc(status)}</td>"
                    f"<td class=\"nw\">{fmt_seconds(step.get('seconds'))}</td>"
                    f"<td class=\"nw\">{fmt_seconds(step.get('cpu_seconds'))}</td>"
                    f"<td style=\"text-align:left\">{log}</td></tr>")
    return ("<table><thead><tr><th>Step</th><th>Status</th><th>Wall time</th><th>CPU time</th>"
            f"<th style=\"text-align:left\">Log</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


def _kv_table_html(pairs):
    body = "".join(f"<tr><td>{_esc(k)}</td><td style=\"text-align:left\">{_esc(v)}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------- Markdown

def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_iou_rows(runs, class_names):
    rows = []
    for name, values in per_class_rows(runs, class_names):
        row = [name] + [fmt_pct(v) for v in values]
        if len(values) >= 2:
            row.append("-" if None in (values[0], values[-1])
                       else f"{100.0 * (float(values[-1]) - float(values[0])):+.1f}")
        rows.append(row)
    means = [(r.get("metrics") or {}).get("mean_iou") for r in runs]
    row = ["**mean IoU**"] + [f"**{fmt_pct(m)}**" for m in means]
    if len(runs) >= 2:
        row.append("-" if None in (means[0], means[-1]) else f"**{100.0 * (means[-1] - means[0]):+.1f}**")
    rows.append(row)
    return rows


# --------------------------------------------------------------------------- builder

def pareto_front(points):
    """The points no other point beats on both latency (lower) and mIoU (higher), fastest first.

    ``points``: dicts with ``latency_ms`` and ``miou``; points missing either are ignored.
    """
    usable = sorted((p for p in points if p.get("latency_ms") is not None and p.get("miou") is not None),
                    key=lambda p: (p["latency_ms"], -p["miou"]))
    front, best = [], float("-inf")
    for point in usable:
        if point["miou"] > best:
            front.append(point)
            best = point["miou"]
    return front


def plot_tradeoff(points, path, title="Accuracy vs latency"):
    """Scatter of mIoU (%) against latency (ms), one labelled point per model, the Pareto front
    drawn as a step line; returns ``path``, or None when fewer than two points have both values."""
    usable = [p for p in points if p.get("latency_ms") is not None and p.get("miou") is not None]
    if len(usable) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(usable)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    on_front = {id(p) for p in front}
    for point in usable:
        star = id(point) in on_front
        ax.scatter(point["latency_ms"], 100.0 * point["miou"], s=46 if star else 30, zorder=3,
                   color="#2563eb" if star else "#94a3b8", edgecolors="#1e293b", linewidths=0.6)
        ax.annotate(point["label"], (point["latency_ms"], 100.0 * point["miou"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
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


def tradeoff_rows(points):
    """``[[model, latency, mIoU, on the front]]`` for the report tables."""
    front = {id(p) for p in pareto_front(points)}
    return [[p["label"], fmt_ms(p.get("latency_ms")), fmt_pct(p.get("miou"), 2), "yes" if id(p) in front else ""]
            for p in points]


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
        curves: ``{'loss': {series label: [(x, y)]}, 'mIoU': {...}}`` (empty series are dropped).
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
    sample_paths = save_rows(samples, "sample")
    gallery_paths = save_rows(gallery, "custom")
    cards = headline(runs, total_seconds)

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{_esc(title)}</h1><p class=\"sub\">{_esc(subtitle)}</p>", _cards_html(cards)]
    if plots:
        figures = "".join(f'<figure><img src="{_data_uri(p)}" alt="{_esc(k)} curve"></figure>' for k, p in plots)
        parts.append(f'<h2>Training curves</h2><div class="plots">{figures}</div>')
    if runs and class_names:
        parts.append(f"<h2>Per-class IoU</h2>{_iou_table_html(runs, class_names, class_colors)}")
    if runs:
        parts.append(f"<h2>Size, speed and accuracy</h2>{_stats_table_html(runs, speed_note)}")
    if tradeoff:
        figure = f'<figure><img src="{_data_uri(tradeoff_path)}" alt="accuracy vs latency"></figure>' \
            if tradeoff_path else ""
        rows = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in tradeoff_rows(tradeoff))
        parts.append(f'<h2>Accuracy vs latency</h2><div class="plots">{figure}</div>'
                     f"<table><tr><th>Model</th><th>Latency</th><th>mIoU</th><th>Pareto front</th></tr>{rows}</table>"
                     f'<p class="sub">{_esc(tradeoff_note)}</p>')
    if samples:
        parts.append(f"<h2>Validation examples</h2>{_grid_html(samples, sample_paths)}")
    if gallery:
        parts.append(f"<h2>Custom images (tools/custom.py)</h2>{_grid_html(gallery, gallery_paths)}")
    if steps:
        parts.append(f"<h2>Steps</h2>{_steps_table_html(steps)}")
    if settings:
        parts.append(f"<h2>Settings</h2>{_kv_table_html(settings)}")
    if outputs:
        items = "".join(f"<li>{_esc(k)}: <code>{_esc(v)}</code></li>" for k, v in outputs)
        parts.append(f"<h2>Outputs</h2><ul>{items}</ul>")
    parts.append("<footer>Generated by the PIDNet toolkit (utils/report.py).</footer></main></body></html>")
    html_path = os.path.join(report_dir, "index.html")
    atomic_write_text("\n".join(parts), html_path)

    md = [f"# {title}", "", subtitle, ""]
    md += [f"- **{k}**: {v.replace('&rarr;', '->').replace('&times;', 'x')} - {d.replace('&times;', 'x')}"
           for k, v, d in cards]
    if plots:
        md += ["", "## Training curves", ""] + [f"![{k}](img/{os.path.basename(p)})" for k, p in plots]
    if runs and class_names:
        header = ["Class"] + [r["label"] for r in runs] + (["Δ (pts)"] if len(runs) >= 2 else [])
        md += ["", "## Per-class IoU", "", _md_table(header, _md_iou_rows(runs, class_names))]
    if runs:
        header = [""] + [r["label"] for r in runs] + (["Change"] if len(runs) >= 2 else [])
        rows = [[label] + values + ([change] if len(runs) >= 2 else []) for label, values, change in stats_rows(runs)]
        md += ["", "## Size, speed and accuracy", "", _md_table(header, rows)]
        if speed_note:
            md += ["", speed_note]
    if tradeoff:
        md += ["", "## Accuracy vs latency", ""]
        if tradeoff_path:
            md += [f"![accuracy vs latency](img/{os.path.basename(tradeoff_path)})", ""]
        md += [_md_table(["Model", "Latency", "mIoU", "Pareto front"], tradeoff_rows(tradeoff))]
        if tradeoff_note:
            md += ["", tradeoff_note]
    for heading, rows, paths in (("Validation examples", samples, sample_paths),
                                 ("Custom images (tools/custom.py)", gallery, gallery_paths)):
        if rows:
            md += ["", f"## {heading}", "", _md_table(["Image"] + [c for c, _ in rows[0]["images"]],
                   [[row["name"]] + [f"![{c}](img/{os.path.basename(p)})" for (c, _), p in zip(row["images"], ps)]
                    for row, ps in zip(rows, paths)])]
    if steps:
        md += ["", "## Steps", "", _md_table(["Step", "Status", "Wall time", "CPU time", "Log"],
                                             [[s["name"], s.get("status", "ok"), fmt_seconds(s.get("seconds")),
                                               fmt_seconds(s.get("cpu_seconds")),
                                               f"`{s['log']}`" if s.get("log") else ""] for s in steps])]
    if settings:
        md += ["", "## Settings", "", _md_table(["Setting", "Value"], [[k, v] for k, v in settings])]
    if outputs:
        md += ["", "## Outputs", ""] + [f"- {k}: `{v}`" for k, v in outputs]
    atomic_write_text("\n".join(md) + "\n", os.path.join(report_dir, "report.md"))
    logger.info("report written to %s", html_path)
    return html_path
