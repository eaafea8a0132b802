"""The numbers a report shows, as text: formatting, headline cards, table rows, the Pareto front.

Shared by the HTML and Markdown renderers, so both pages say the same thing.
"""


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


def tradeoff_rows(points):
    """``[[model, latency, mIoU, on the front]]`` for the report tables."""
    front = {id(p) for p in pareto_front(points)}
    return [[p["label"], fmt_ms(p.get("latency_ms")), fmt_pct(p.get("miou"), 2), "yes" if id(p) in front else ""]
            for p in points]
