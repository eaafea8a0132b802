"""The benchmark scripts run end to end (one iteration, tiny sizes); their figures are not checked."""
import importlib.util
import os
import re

import pytest
import torch
import torch.fx

from models.pidnet import PIDNet


def _load(repo_root, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(repo_root, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(module, argv):
    return module.main(module.get_args_parser().parse_args(argv))


def test_bench_inference_smoke(repo_root, tmp_path, capsys):
    bench = _load(repo_root, "bench_inference")
    compressed = tmp_path / "compressed.pt"
    net = bench.condition(PIDNet(m=2, n=3, num_classes=19, planes=8, ppm_planes=16, head_planes=16, augment=True))
    torch.save(torch.fx.symbolic_trace(net), compressed)
    table = tmp_path / "table.md"
    assert _main(bench, ["--size", "64", "96", "--runs", "1", "--warmup", "0", "--threads", "1",
                         "--backends", "eager", "fused", "onnxruntime", "openvino", "--compressed", str(compressed),
                         "--output", str(table)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| PIDNet-S") or line.startswith("| compressed")]
    assert len(rows) == 8
    assert rows[0].startswith("| PIDNet-S | eager | 1x3x64x96 |") and "| 1.00x | 1.00x |" in rows[0]
    for row in rows:
        diff = float(re.search(r"\| ([\d.e+-]+) \([\d.e+-]+\) \|", row).group(1))
        assert diff < 1e-3, row  # conditioned random weights: every backend equals eager
    assert table.read_text().count("\n| ") == 9  # header + 8 rows


def test_bench_inference_bad_input(repo_root, capsys):
    from utils.cli import run_main

    bench = _load(repo_root, "bench_inference")
    assert run_main(bench.main, bench.get_args_parser().parse_args(["--runs", "0"])) == 2
    assert capsys.readouterr().err.startswith("error: --runs")


@pytest.mark.slow
def test_bench_train_smoke(repo_root, capsys):
    bench = _load(repo_root, "bench_train")
    assert _main(bench, ["--iters", "1", "--warmup", "0", "--batch", "2", "--crop", "64", "64",
                         "--image-size", "128", "64", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"images/s: [\d.]+ \| step: \d+ ms \| data loading: [\d.]+% .* peak memory: \d+ MB", out)


@pytest.mark.slow
def test_bench_eval_smoke(repo_root, capsys):
    bench = _load(repo_root, "bench_eval")
    assert _main(bench, ["--image-size", "128", "64", "--images", "2", "--backend", "eager", "--workers", "0",
                         "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "backend eager" in out
    assert re.search(r"pipeline: [\d.]+ images/s \| model only: [\d.]+ images/s \| ratio: [\d.]+x", out)


def test_bench_distill_bad_input(repo_root, capsys):
    from utils.cli import run_main

    bench = _load(repo_root, "bench_distill")
    args = bench.get_args_parser().parse_args(["--cfg", "configs/synthetic/pidnet_small_synthetic.yaml",
                                               "--workdir", "unused", "--epochs", "0"])
    assert run_main(bench.main, args) == 2
    assert capsys.readouterr().err.startswith("error: --epochs must be >= 1")



@pytest.mark.parametrize("case, message", [
    ("missing", "missing.pt: no such file"),
    ("no_head", "--compressed needs --head"),
    ("no_checkpoint", "--compressed needs --checkpoint"),
    ("same_stem", "--compressed file stems must be distinct"),
    ("head_alone", "--head is only used with --compressed"),
])
def test_bench_distill_compressed_bad_input(repo_root, tmp_path, capsys, case, message):
    from utils.cli import run_main

    bench = _load(repo_root, "bench_distill")
    for name in ("body.pt", "head.pt", "best.pt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "body.pt").write_bytes(b"x")
    body, head, best = (str(tmp_path / n) for n in ("body.pt", "head.pt", "best.pt"))
    extra = {"missing": ["--compressed", body, str(tmp_path / "missing.pt"), "--head", head, "--checkpoint", best],
             "no_head": ["--compressed", body, "--checkpoint", best],
             "no_checkpoint": ["--compressed", body, "--head", head],
             "same_stem": ["--compressed", body, str(tmp_path / "other" / "body.pt"), "--head", head,
                           "--checkpoint", best],
             "head_alone": ["--head", head, "--checkpoint", best]}[case]
    work = tmp_path / "work"
    args = bench.get_args_parser().parse_intermixed_args(
        ["--cfg", "configs/synthetic/pidnet_small_synthetic.yaml", "--workdir", str(work), "--output",
         str(tmp_path / "out.md"), *extra, "WORKERS", "0"])
    assert run_main(bench.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    # Checked before any subprocess: nothing was run or written.
    assert not work.exists() and not (tmp_path / "out.md").exists()


def test_bench_compress_smoke(repo_root, tmp_path, capsys):
    from models.netspresso import export_pidnet

    bench = _load(repo_root, "bench_compress")
    torch.manual_seed(0)
    body, _ = export_pidnet(PIDNet(m=2, n=3, num_classes=19, planes=8, ppm_planes=16, head_planes=16).eval())
    torch.save(body, tmp_path / "body.pt")
    assert _main(bench, ["--model", str(tmp_path / "body.pt"), "--size", "64", "128", "--mac-sizes", "64", "128",
                         "--runs", "1", "--warmup", "0", "--threads", "1", "--backends", "eager",
                         "--work-dir", str(tmp_path / "work")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| original", "| FD_TK vbmf 0", "| FD_TK vbmf 0.5",
                                                       "| FD_SVD vbmf 0"]
    assert (tmp_path / "work" / "FD_TK_vbmf_0.json").exists()


@pytest.mark.slow
def test_bench_compress_budget_smoke(repo_root, tmp_path, capsys):
    import cv2
    import numpy as np

    from models.netspresso import export_pidnet

    bench = _load(repo_root, "bench_compress_budget")
    torch.manual_seed(0)
    body, _ = export_pidnet(PIDNet(m=2, n=3, num_classes=19, planes=8, ppm_planes=16, head_planes=16).eval())
    torch.save(body, tmp_path / "body.pt")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8))
    assert _main(bench, ["--model", str(tmp_path / "body.pt"), "--images", str(tmp_path / "images"),
                         "--sizes", "64", "128", "--latency-size", "64", "128", "--threads", "1",
                         "--runtimes", "eager", "--rounds", "1", "--min-run-time", "0.01",
                         "--out-dir", str(tmp_path / "work")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| uncompressed", "| PR_NN slamp 0.6", "| PR_L2 --target-macs 0.4"]
    assert "(0.400x)" in rows[-1] or "(0.39" in rows[-1]


@pytest.mark.slow
def test_bench_quantize_smoke(repo_root, tmp_path, capsys):
    bench = _load(repo_root, "bench_quantize")
    table = tmp_path / "table.md"
    assert _main(bench, ["--size", "64", "128", "--runs", "1", "--warmup", "0", "--threads", "1", "--calib", "1",
                         "--calib-images", "2", "--output", str(table)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| PIDNet-S")]
    assert len(rows) == 2 and rows[0].startswith("| PIDNet-S | fp32 eager | 1 |") and rows[0].endswith("| 1.00x |")
    assert "| PIDNet-S | int8 QDQ (onnxruntime) | 1 |" in rows[1]
    assert re.search(r"on 2 images at 64x128 .*: [\d.]+ s wall, [\d.]+ s CPU", out)
    assert table.read_text().count("\n| PIDNet-S") == 2


def test_bench_distill_table_sizes(repo_root):
    bench = _load(repo_root, "bench_distill")
    rows = [{"model": "teacher (unpruned, trained)", "mIoU": 0.25},
            {"model": "pr_nn_06, not fine-tuned", "params_M": 1.2, "GMACs_128x256": 0.4, "mIoU": 0.031},
            {"model": "pr_nn_06 + 3 epochs, plain", "seed": 304, "mIoU": 0.2, "finetune_s": 98.5}]
    lines = bench._table(rows).splitlines()
    assert lines[0] == "| model | params (M) | GMACs 128x256 | seed | mIoU (%) | fine-tune wall time (s) |"
    assert lines[3] == "| pr_nn_06, not fine-tuned | 1.2 | 0.4 |  | 3.10 |  |"
    assert all(line.count("|") == 7 for line in lines)
    assert "params" not in bench._table([rows[0], rows[2]])
