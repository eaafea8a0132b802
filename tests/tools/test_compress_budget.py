"""tools/compress.py: PR_NN over an images folder, --target-macs and --target-latency."""
import json
import re

import cv2
import numpy as np
import pytest
import torch

import tools.compress as compress
from models.checkpoint import load_module_file
from models.compression.report import count_macs
from utils.cli import run_main
from utils.io import atomic_save

FAST = ["--trace-size", "64", "64", "--input-size", "64", "128"]


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (48 + 16 * i, 64, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def _cli(argv, capsys):
    code = run_main(compress.main, compress.get_args_parser().parse_intermixed_args(argv))
    return code, capsys.readouterr()


def test_pr_nn_reads_the_images_folder(tiny_body, images_dir, tmp_path, capsys):
    out = tmp_path / "nn.pt"
    code, io = _cli(["--model", tiny_body[0], "--method", "PR_NN", "--images", str(images_dir), "--num-images", "2",
                     "--ratio", "0.4", "--output", str(out)] + FAST, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "nn.json").read_text())
    assert report["method"] == "PR_NN" and report["images"] == 2 and report["ratio_achieved"] >= 0.4
    assert report["images_dir"] == str(images_dir)


def test_target_macs_is_a_complete_command(tiny_body, tmp_path, capsys):
    out = tmp_path / "m.pt"
    code, io = _cli(["--model", tiny_body[0], "--method", "PR_L2", "--target-macs", "0.55", "--output", str(out)]
                    + FAST, capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "m.json").read_text())
    pruned = load_module_file(str(out), what="model")
    kept = count_macs(pruned, (64, 128)) / count_macs(load_module_file(tiny_body[0], what="model"), (64, 128))
    assert 0.98 * 0.55 <= kept <= 0.55
    assert report["budget"] == {"kind": "macs", "asked": 0.55, "achieved": pytest.approx(kept),
                                "input_size": [64, 128], "macs_kept": pytest.approx(kept)}
    assert "budget: macs 0.55 asked" in io.out


@pytest.fixture(scope="module")
def conv_net(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(24, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 8, 1)).eval()
    path = tmp_path_factory.mktemp("conv") / "net.pt"
    atomic_save(net, path)
    return str(path)


def test_fd_tk_target_macs(conv_net, tmp_path, capsys):
    out = tmp_path / "tk.pt"
    code, io = _cli(["--model", conv_net, "--method", "FD_TK", "--target-macs", "0.5", "--input-size", "32", "32",
                     "--output", str(out)], capsys)
    assert code == 0, io.err
    report = json.loads((tmp_path / "tk.json").read_text())
    kept = count_macs(load_module_file(str(out), what="model"), (32, 32)) / count_macs(
        load_module_file(conv_net, what="model"), (32, 32))
    assert 0.98 * 0.5 <= kept <= 0.5 and report["budget"]["achieved"] == pytest.approx(kept)
    assert report["method"] == "FD_TK" and report["decomposed_layers"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("runtime, trials", [("onnxruntime", 2), ("eager", 4)])
def test_target_latency_end_to_end(runtime, trials, tiny_body, tmp_path, capsys):
    """Reports measured times. Speed is not asserted: on a busy machine a tiny body's timings are
    noise, so the search may also end with its one-line refusal, which is checked instead."""
    out = tmp_path / "l.pt"
    code, io = _cli(["--model", tiny_body[0], "--target-latency", "0.9", "--runtime", runtime, "--threads", "1",
                     "--latency-trials", str(trials), "--output", str(out), "--trace-size", "64", "64",
                     "--input-size", "96", "192"], capsys)
    if code != 0:
        lines = [line for line in io.err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and f"--target-latency 0.9 was not reached with {runtime}" in lines[0], io.err
        assert not out.exists()
        return
    budget = json.loads((tmp_path / "l.json").read_text())["budget"]
    assert budget["kind"] == "latency" and budget["runtime"] == runtime and budget["threads"] == 1
    assert budget["asked"] == 0.9 and budget["achieved"] <= 0.9
    assert budget["latency_ms"]["before"] > 0 and budget["latency_ms"]["after"] > 0
    assert budget["achieved"] == pytest.approx(budget["latency_ms"]["after"] / budget["latency_ms"]["before"])
    assert 1 <= len(budget["trials"]) <= trials
    assert f"budget: latency 0.9 asked, {budget['achieved']:.4f} achieved" in io.out


@pytest.mark.parametrize("argv, match", [
    (["--method", "PR_NN", "--ratio", "0.5"], "PR_NN .* pass --images DIR"),
    (["--method", "PR_NN", "--ratio", "0.5", "--images", "EMPTY"], "no readable image in .*: put"),
    (["--method", "PR_NN", "--ratio", "0.5", "--images", "BROKEN"], r"no readable image in .* \(1 could not be"),
    (["--method", "PR_NN", "--ratio", "0.5", "--images", "MISSING"], "--images folder not found"),
    (["--target-macs", "1"], r"--target-macs must be in \(0, 1\)"),
    (["--target-macs", "0"], r"--target-macs must be in \(0, 1\)"),
    (["--target-macs", "nan"], r"--target-macs must be in \(0, 1\)"),
    (["--target-latency", "-0.5"], r"--target-latency must be in \(0, 1\)"),
    (["--target-macs", "0.5", "--target-latency", "0.5"], "not both"),
    (["--target-macs", "0.5", "--ratio", "0.5"], "replaces --ratio"),
    (["--target-macs", "0.5", "--recommendation", "manual"], "drop --recommendation manual"),
    (["--target-latency", "0.5", "--runtime", "tvm"], "unknown --runtime 'tvm'"),
    (["--target-macs", "0.01"], "below what pruning can reach"),
    (["--target-macs", "0.5", "--backend", "netspresso"], "offline only"),
    (["--method", "FD_CP", "--target-macs", "0.5"], "which CP has not: use FD_TK or FD_SVD"),
    (["--method", "FD_TK", "--target-macs", "0.5", "--recommendation", "vbmf"], "drop --recommendation vbmf"),
    (["--method", "FD_TK", "--target-latency", "1.5"], r"--target-latency must be in \(0, 1\)"),
    (["--method", "FD_SVD", "--target-macs", "0.01"], "below what FD_SVD can reach"),
])
def test_bad_budgets_and_images_are_one_line(tiny_body, tmp_path, capsys, argv, match):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "BROKEN").mkdir()
    (tmp_path / "BROKEN" / "x.png").write_bytes(b"not a png")
    argv = [str(tmp_path / a) if a in ("EMPTY", "BROKEN", "MISSING") else a for a in argv]
    output = tmp_path / "out.pt"
    code, io = _cli(["--model", tiny_body[0], "--output", str(output)] + argv + FAST, capsys)
    assert code == 2
    lines = [line for line in io.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(match, lines[0]), io.err
    assert "Traceback" not in io.err
    assert not output.exists() and not (tmp_path / "out.json").exists()
