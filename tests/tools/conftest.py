import pytest


@pytest.fixture
def in_process(monkeypatch):
    """Run tools/train.py's main in this process (no interpreter start-up): ``in_process(argv) -> exit code``.

    The root logging it configures is put back by tests/conftest.py's autouse fixture.
    """
    from tools.train import main, parse_args
    from utils.cli import run_main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PIDNET_TEST_FAULT"):
        monkeypatch.delenv(name, raising=False)
    return lambda argv: run_main(main, parse_args(argv))
