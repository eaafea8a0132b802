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


@pytest.fixture(scope="session")
def tiny_body(tmp_path_factory):
    """A tiny PIDNet (5 classes) exported as a NetsPresso pair: ``(body path, head path)``."""
    import torch

    from models.netspresso import export_pidnet
    from models.pidnet import PIDNet
    from utils.io import atomic_save

    torch.manual_seed(0)
    body, head = export_pidnet(PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5).eval())
    folder = tmp_path_factory.mktemp("tiny")
    atomic_save(body, folder / "model_modelfx.pt")
    atomic_save(head, folder / "model_headfx.pt")
    return str(folder / "model_modelfx.pt"), str(folder / "model_headfx.pt")
