"""The report as Markdown (``report.md``): the same tables as the HTML page, images linked from ``img/``."""
import os

from utils.report.summary import fmt_pct, fmt_seconds, per_class_rows, stats_rows, tradeoff_rows


def render_markdown(page):
    """The page's ``report.md`` text (``page``: a :class:`utils.report.builder.Page`)."""
    runs = page.runs
    md = [f"# {page.title}", "", page.subtitle, ""]
    md += [f"- **{k}**: {v.replace('&rarr;', '->').replace('&times;', 'x')} - {d.replace('&times;', 'x')}"
           for k, v, d in page.cards]
    if page.plots:
        md += ["", "## Training curves", ""] + [f"![{k}](img/{os.path.basename(p)})" for k, p in page.plots]
    if runs and page.class_names:
        header = ["Class"] + [r["label"] for r in runs] + (["Δ (pts)"] if len(runs) >= 2 else [])
        md += ["", "## Per-class IoU", "", _md_table(header, _md_iou_rows(runs, page.class_names))]
    if runs:
        header = [""] + [r["label"] for r in runs] + (["Change"] if len(runs) >= 2 else [])
        rows = [[label] + values + ([change] if len(runs) >= 2 else []) for label, values, change in stats_rows(runs)]
        md += ["", "## Size, speed and accuracy", "", _md_table(header, rows)]
        if page.speed_note:
            md += ["", page.speed_note]
    if page.tradeoff:
        md += ["", "## Accuracy vs latency", ""]
        if page.tradeoff_path:
            md += [f"![accuracy vs latency](img/{os.path.basename(page.tradeoff_path)})", ""]
        md += [_md_table(["Model", "Latency", "mIoU", "Pareto front"], tradeoff_rows(page.tradeoff))]
        if page.tradeoff_note:
            md += ["", page.tradeoff_note]
    for heading, rows, paths in (("Validation examples", page.samples, page.sample_paths),
                                 ("Custom images (tools/custom.py)", page.gallery, page.gallery_paths)):
        if rows:
            md += ["", f"## {heading}", "", _md_table(["Image"] + [c for c, _ in rows[0]["images"]],
                   [[row["name"]] + [f"![{c}](img/{os.path.basename(p)})" for (c, _), p in zip(row["images"], ps)]
                    for row, ps in zip(rows, paths)])]
    if page.steps:
        md += ["", "## Steps", "", _md_table(["Step", "Status", "Wall time", "CPU time", "Log"],
                                             [[s["name"], s.get("status", "ok"), fmt_seconds(s.get("seconds")),
                                               fmt_seconds(s.get("cpu_seconds")),
                                               f"`{s['log']}`" if s.get("log") else ""] for s in page.steps])]
    if page.settings:
        md += ["", "## Settings", "", _md_table(["Setting", "Value"], [[k, v] for k, v in page.settings])]
    if page.outputs:
        md += ["", "## Outputs", ""] + [f"- {k}: `{v}`" for k, v in page.outputs]
    return "\n".join(md) + "\n"


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
