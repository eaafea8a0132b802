"""The training history file, ``history.json``: one record per epoch, written by the trainer and
read by the report.

The trainer (:class:`utils.engine.Trainer`) rewrites it atomically after every epoch into
``LOG_DIR/<dataset>/<cfg name>/``, beside the TensorBoard events, as
``{"epochs": [{"epoch": 0, "train_loss": ..., "lr": ..., "valid_loss": ..., "valid_mIoU": ...}, ...]}``
(the same names as the TensorBoard scalars; ``valid_*`` only in validated epochs). A resumed run
keeps the records of the epochs before the one it resumes at.
"""
import glob
import json
import logging
import math
import os

from utils.io import atomic_write_text
from utils.layout import HISTORY_FILE

logger = logging.getLogger(__name__)


def read_records(path):
    """The per-epoch records in ``path``; ``[]`` when it does not exist or cannot be read (logged)."""
    if not path or not os.path.isfile(path):
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            obj = json.load(handle)
    except (OSError, ValueError) as exc:
        logger.warning("cannot read training history %s (%s): starting a new one", path, exc)
        return []
    records = obj.get("epochs") if isinstance(obj, dict) else obj
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def write_records(records, path):
    """Write ``records`` (a list of dicts with ``epoch``) to ``path`` atomically."""
    atomic_write_text(json.dumps({"epochs": list(records)}, indent=1) + "\n", path)


def _history_from_json(obj):
    """Records ``[{"epoch": e, "train_loss": ...}, ...]`` (optionally under ``"epochs"``) or columns
    ``{"train_loss": [...]}``."""
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
    """Training curves of a run, ``{name: [(epoch, value), ...]}``; ``{}`` when there are none.

    ``path`` is a ``history.json`` file, or a folder searched (recursively) for one. A folder
    without one (a run trained before the trainer wrote it) and unreadable files are logged in
    one line and give ``{}``: a report without curves is better than no report.
    """
    if not path or not os.path.exists(path):
        return {}
    candidates = [path] if os.path.isfile(path) else sorted(
        glob.glob(os.path.join(path, "**", HISTORY_FILE), recursive=True))
    if not candidates:
        logger.warning("no %s under %s: no training curves in the report (the run predates it; "
                       "tools/train.py writes it after every epoch)", HISTORY_FILE, path)
        return {}
    for candidate in candidates:
        try:
            with open(candidate, encoding="utf-8") as handle:
                series = _history_from_json(json.load(handle))
        except (OSError, ValueError) as exc:
            logger.warning("cannot read training history %s (%s): no training curves from it", candidate, exc)
            continue
        if series:
            return series
    return {}


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
