"""tools/compress.py --dry-run: the per-layer plan, the totals the real run reports, nothing written."""
import json
import os
import re

import pytest
import torch

import tools.compress as compress
from models.netspresso import export_pidnet
from models.pidnet import PIDNet
from utils.cli import run_main
from utils.io import atomic_save

FAST = ["--trace-size", "64", "64", "--input-size", "64", "128"]


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    yield


def _cli(argv, capsys):
    code = run_main(compress.main, compress.get_args_parser().parse_intermixed_args(argv))
    return code, capsys.readouterr()


def test_dry_run_prints_the_plan_the_real_run_applies(tmp_path, capsys):
    torch.manual_seed(0)
    body, _ = export_pidnet(PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5).eval())
    model = tmp_path / "model_modelfx.pt"
    atomic_save(body, model)
    out = tmp_path / "c.pt"
    argv = ["--model", str(model), "--method", "PR_L2", "--ratio", "0.5", *FAST, "--output", str(out)]
    code, io = _cli(argv + ["--dry-run"], capsys)
    assert code == 0, io.err
    assert sorted(os.listdir(tmp_path)) == ["model_modelfx.pt"]
    planned = re.search(r"MACs@64x128 ([\d.]+)G -> ([\d.]+)G, filters removed ([\d.]+)", io.out)
    assert planned and "layer3.0.conv1" in io.out
    code, io = _cli(argv, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "c.json").read_text())
    assert float(planned.group(2)) == pytest.approx(report["after"]["macs"]["64x128"] / 1e9, abs=6e-4)
    assert float(planned.group(3)) == pytest.approx(report["ratio_achieved"], abs=6e-4)


def test_dry_run_of_pr_nn_ranks_on_the_images_as_the_real_run(tmp_path, capsys):
    import cv2
    import numpy as np

    torch.manual_seed(0)
    body, _ = export_pidnet(PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5).eval())
    atomic_save(body, tmp_path / "model_modelfx.pt")
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), rng.integers(0, 255, (64, 128, 3), dtype=np.uint8))
    argv = ["--model", str(tmp_path / "model_modelfx.pt"), "--method", "PR_NN", "--ratio", "0.5", *FAST,
            "--output", str(tmp_path / "c.pt")]
    code, io = _cli(argv + ["--dry-run"], capsys)
    assert code == 2 and "pass --images DIR" in io.err and io.err.count("\n") == 1
    argv += ["--images", str(tmp_path / "images"), "--num-images", "2"]
    code, io = _cli(argv + ["--dry-run"], capsys)
    assert code == 0, io.err
    assert not (tmp_path / "c.pt").exists()
    planned = re.search(r"MACs@64x128 ([\d.]+)G -> ([\d.]+)G, filters removed ([\d.]+)", io.out)
    code, io = _cli(argv, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "c.json").read_text())
    assert float(planned.group(2)) == pytest.approx(report["after"]["macs"]["64x128"] / 1e9, abs=6e-4)
    assert float(planned.group(3)) == pytest.approx(report["ratio_achieved"], abs=6e-4)


def test_dry_run_bad_ratio_is_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    body, _ = export_pidnet(PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5).eval())
    atomic_save(body, tmp_path / "m.pt")
    code, io = _cli(["--model", str(tmp_path / "m.pt"), "--ratio", "2", "--dry-run", *FAST], capsys)
    assert code == 2 and io.err.strip().startswith("error:") and io.err.count("\n") == 1 and "(0, 1)" in io.err


def test_dry_run_of_a_decomposition_prints_ranks(tmp_path, capsys):
    pytest.importorskip("models.compression.decompose", reason="filter decomposition not merged")
    torch.manual_seed(0)
    body, _ = export_pidnet(PIDNet(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5).eval())
    atomic_save(body, tmp_path / "m.pt")
    code, io = _cli(["--model", str(tmp_path / "m.pt"), "--method", "FD_SVD", "--ratio", "0.5", "--dry-run",
                     *FAST], capsys)
    assert code == 0, io.err
    assert re.search(r"dry run: MACs@64x128 [\d.]+G -> [\d.]+G, \d+ layers decomposed", io.out)
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]
    code, io = _cli(["--model", str(tmp_path / "m.pt"), "--target-macs", "0.5", "--dry-run", *FAST], capsys)
    assert code == 2 and "drop --dry-run" in io.err
