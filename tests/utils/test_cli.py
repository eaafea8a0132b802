"""The CLI wrapper: expected errors become one line and exit code 2."""
import pytest

from utils.cli import EXIT_USER_ERROR, one_line, run_main
from utils.errors import CheckpointError, DatasetError


def test_expected_error_is_one_line(capsys):
    def main(args):
        raise CheckpointError("checkpoint not found: x.pt. Check the path")

    assert run_main(main, None) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "error: checkpoint not found: x.pt. Check the path\n"


def test_worker_reraised_error_keeps_only_the_message():
    text = ("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    raise DatasetError(...)\n'
            "utils.errors.DatasetError: corrupt image data/a.png: re-export it")
    assert one_line(DatasetError(text)) == "corrupt image data/a.png: re-export it"


def test_file_not_found_and_interrupt(capsys):
    def missing(args):
        open("/definitely/not/here.txt")

    assert run_main(missing, None) == EXIT_USER_ERROR
    assert "/definitely/not/here.txt" in capsys.readouterr().err

    def interrupted(args):
        raise KeyboardInterrupt

    assert run_main(interrupted, None) == 130


def test_unexpected_errors_are_not_hidden():
    def bug(args):
        raise ZeroDivisionError("a real bug")

    with pytest.raises(ZeroDivisionError):
        run_main(bug, None)


def test_first_line_quotes_one_line_of_a_library_error():
    from utils.cli import first_line

    assert first_line(RuntimeError("\n  boom happened  \nstack detail\nmore")) == "boom happened"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError("x" * 300), 200) == "x" * 200


def test_is_main_process_is_one_function_with_one_meaning(monkeypatch):
    import utils.distributed as du
    from utils.cli import is_main_process

    assert du.is_main_process is is_main_process
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")  # torchrun's rank before the process group is joined
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
