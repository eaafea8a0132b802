"""A one-page report of a run: headline numbers, curves, per-class IoU, size/speed, examples.

The builder takes plain data (no config, no file layout knowledge), so any tool can use it;
``tools/demo.py`` gathers the data from the real CLIs' outputs. It writes, into one folder:

* ``index.html`` - self-contained (inline CSS, images embedded as data URIs), opens offline;
* ``report.md``  - the same tables in Markdown, images linked from ``img/``;
* ``img/*.png``  - the curves (matplotlib) and the example grids.

Modules: :mod:`~utils.report.builder` (:func:`build_report`), :mod:`~utils.report.summary`
(formatting, cards, table rows, Pareto front), :mod:`~utils.report.charts` (matplotlib),
:mod:`~utils.report.html` and :mod:`~utils.report.markdown` (the two renderings). Training
curves come from the trainer's ``history.json`` through :func:`utils.history.load_history`.
"""
from utils.report.builder import build_report

__all__ = ["build_report"]
