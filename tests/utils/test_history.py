import json
import logging

from utils.history import HISTORY_FILE, load_history, pick_series, read_records, write_records


def test_history_json_records_and_columns(tmp_path):
    records = [{"epoch": 0, "train_loss": 2.0, "valid_mIoU": None}, {"epoch": 1, "train_loss": 1.5, "valid_mIoU": 0.3}]
    (tmp_path / "history.json").write_text(json.dumps(records))
    history = load_history(str(tmp_path))
    assert history["train_loss"] == [(0, 2.0), (1, 1.5)]
    assert history["valid_mIoU"] == [(1, 0.3)]
    columns = tmp_path / "cols.json"
    columns.write_text(json.dumps({"epoch": [3, 4], "train_loss": [1.0, 0.5]}))
    assert load_history(str(columns))["train_loss"] == [(3, 1.0), (4, 0.5)]
    assert pick_series({"Valid_MIoU": [(0, 1.0)]}, ("valid_mIoU",)) == [(0, 1.0)]


def test_written_records_read_back_and_load_as_curves(tmp_path):
    path = tmp_path / "log" / "run" / HISTORY_FILE
    records = [{"epoch": 0, "train_loss": 3.0, "lr": 0.01}, {"epoch": 1, "train_loss": 2.0, "lr": 0.005,
                                                              "valid_loss": None, "valid_mIoU": 0.25}]
    write_records(records, str(path))
    assert read_records(str(path)) == records
    history = load_history(str(tmp_path / "log"))  # found recursively, as the demo looks for it
    assert history["train_loss"] == [(0, 3.0), (1, 2.0)] and history["valid_mIoU"] == [(1, 0.25)]
    assert "valid_loss" not in history


def test_missing_or_unreadable_history_is_one_line_and_no_curves(tmp_path, caplog):
    assert load_history(str(tmp_path / "missing")) == {}
    (tmp_path / "old_run").mkdir()
    (tmp_path / "old_run" / "events.out.tfevents.1.host").write_bytes(b"\0" * 16)  # TensorBoard only
    with caplog.at_level(logging.WARNING, logger="utils.history"):
        assert load_history(str(tmp_path / "old_run")) == {}
    assert [r.getMessage() for r in caplog.records] == [
        f"no history.json under {tmp_path / 'old_run'}: no training curves in the report (the run predates it; "
        "tools/train.py writes it after every epoch)"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / HISTORY_FILE).write_text("{not json")
    assert load_history(str(tmp_path / "broken")) == {}
    assert read_records(str(tmp_path / "broken" / HISTORY_FILE)) == []
