"""End-to-end tests of tools/train.py in subprocesses (CPU, generated data, 128x64 images).

Most runs fine-tune a *tiny* PIDNet (planes 8) given as NetsPresso/torch.fx files through
``--netspresso --model/--head``: the real CLI and engine, no test-only model switch, and a few
seconds per run. One run trains the official ``pidnet_s`` to cover the PIDNet outputs.
The kills, signals and NaNs come from the documented ``PIDNET_TEST_FAULT`` hook.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = "configs/cityscapes/pidnet_small_cityscapes.yaml"
EXP = os.path.join("cityscapes", "pidnet_small_cityscapes")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Generated Cityscapes-layout data (4 train, 2 val images) and a tiny PIDNet as fx files."""
    from datasets.synthetic import generate
    from models.netspresso import export_pidnet
    from models.pidnet import PIDNet

    base = tmp_path_factory.mktemp("train")
    generate(str(base / "data"), num_train=4, num_val=2, num_test=0, size=(128, 64), seed=0,
             layouts=("cityscapes",))
    torch.manual_seed(0)
    body, head = export_pidnet(PIDNet(m=2, n=3, num_classes=19, planes=8, ppm_planes=16, head_planes=16))
    torch.save(body, base / "tiny_model.pt")
    torch.save(head, base / "tiny_head.pt")
    return base


def overrides(work, out, end_epoch=3, batch=2, extra=()):
    return ["DATASET.ROOT", f"{work / 'data'}/", "MODEL.PRETRAINED", "", "TRAIN.IMAGE_SIZE", "[128,64]",
            "TRAIN.BASE_SIZE", "128", "TEST.IMAGE_SIZE", "[128,64]", "TEST.BASE_SIZE", "128",
            "TRAIN.BATCH_SIZE_PER_GPU", str(batch), "TEST.BATCH_SIZE_PER_GPU", "2", "WORKERS", "0",
            "OUTPUT_DIR", str(out), "LOG_DIR", str(out) + "_tb", "TRAIN.END_EPOCH", str(end_epoch),
            "CUDNN.DETERMINISTIC", "True", *extra]


def tiny_args(work):
    return ["--netspresso", "--model", str(work / "tiny_model.pt"), "--head", str(work / "tiny_head.pt")]


def env_with(fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PIDNET_TEST_FAULT", None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    if fault:
        env["PIDNET_TEST_FAULT"] = fault
    return env


def train(args, fault=None, timeout=240):
    cmd = [sys.executable, "tools/train.py", "--cfg", CFG, "--device", "cpu", "--no-progress", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env_with(fault), capture_output=True, text=True, timeout=timeout)


def torchrun(args, fault=None, timeout=240, nproc=2):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(port), "tools/train.py", "--cfg", CFG, "--device", "cpu", "--no-progress", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env_with(fault), capture_output=True, text=True, timeout=timeout)


def ckpt(out):
    return torch.load(os.path.join(out, EXP, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)


def history(out):
    with open(os.path.join(str(out) + "_tb", EXP, "history.json"), encoding="utf-8") as handle:
        return json.load(handle)["epochs"]


def assert_same_training_state(a, b):
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"])
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=1e-5, atol=1e-6), key
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(mom_a) == len(mom_b) > 0
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(mom_a, mom_b))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(b["optimizer"]["param_groups"][0]["lr"])


@pytest.fixture(scope="module")
def reference(work):
    """3 uninterrupted epochs of the tiny model (TRAIN.RESUME True without a checkpoint: fresh start)."""
    out = work / "reference"
    run = train([*tiny_args(work), *overrides(work, out, extra=["TRAIN.RESUME", "True"])])
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_reference_run_outputs(reference):
    out, run = reference
    assert "TRAIN.RESUME is True but" in run.stderr and "starting a fresh run" in run.stderr
    files = set(os.listdir(os.path.join(out, EXP)))
    assert {"checkpoint.pth.tar", "best_model_model.pt", "best_model_head.pt", "final_model_model.pt",
            "final_model_head.pt"} <= files
    assert any(f.endswith("_train.log") for f in files)
    state = ckpt(out)
    assert (state["epoch"], state["iteration"], state["world_size"]) == (3, 0, 1)
    assert "END_EPOCH: 3" in state["config"]
    assert set(state["rng"][0]) >= {"python", "numpy", "torch", "cuda"}
    assert os.listdir(str(out) + "_tb/" + EXP)  # TensorBoard event file
    assert [r["epoch"] for r in history(out)] == [0, 1, 2]  # LOG_DIR/.../history.json, for the report

    from models.netspresso import load_netspresso

    model = load_netspresso(os.path.join(out, EXP, "final_model_model.pt"),
                            os.path.join(out, EXP, "final_model_head.pt"))
    outputs = model.eval()(torch.zeros(1, 3, 64, 128))
    assert [o.shape[1] for o in outputs] == [19, 19, 1]
    state_model = {k: v for k, v in model.state_dict().items()}
    for key, value in state["model"].items():
        assert torch.equal(value, state_model[key]), key


def test_sigterm_and_sigkill_then_resume_match_the_uninterrupted_run(work, reference):
    out = work / "interrupted"
    # SIGTERM in the middle of epoch 1: finish the step, save a mid-epoch checkpoint, exit 143.
    stopped = train([*tiny_args(work), *overrides(work, out)], fault="sigterm:1:0")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert (ckpt(out)["epoch"], ckpt(out)["iteration"]) == (1, 1)
    # Resume, then SIGKILL (no chance to save anything) at the first step of epoch 2.
    killed = train([*tiny_args(work), *overrides(work, out, extra=["TRAIN.RESUME", "True"])], fault="sigkill:2:0")
    assert killed.returncode == -signal.SIGKILL
    assert "resumed from" in killed.stderr and "epoch 1, iteration 1" in killed.stderr
    assert (ckpt(out)["epoch"], ckpt(out)["iteration"]) == (2, 0)  # the last completed epoch survived
    resumed = train([*tiny_args(work), *overrides(work, out, extra=["TRAIN.RESUME", "True"])])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 2, best mIoU" in resumed.stderr
    # Same weights, momentum, LR position as the run that was never interrupted.
    assert_same_training_state(ckpt(reference[0]), ckpt(out))
    # One history record per epoch: the killed epoch 2 is trained (and recorded) once. Epoch 1's loss
    # is the mean over the batches trained after the mid-epoch resume only.
    records, expected = history(out), history(reference[0])
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [records[0]["train_loss"], records[2]["train_loss"]] == pytest.approx(
        [expected[0]["train_loss"], expected[2]["train_loss"]], rel=1e-4)


def test_sigint_before_the_first_epoch_ends_exits_130_with_a_checkpoint(work):
    out = work / "sigint"
    stopped = train([*tiny_args(work), *overrides(work, out, end_epoch=1)], fault="sigint:0:0")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    state = ckpt(out)
    assert (state["epoch"], state["iteration"]) == (0, 1)
    assert not os.path.exists(os.path.join(out, EXP, "final_model_model.pt"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(work):
    out = work / "nan"
    run = train([*tiny_args(work), *overrides(work, out)], fault="nan:1:0")
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss") and "epoch 1, iteration 0" in last
    assert f"{os.path.join(out, EXP, 'checkpoint.pth.tar')} is untouched: the last good state" in last
    assert "Traceback" not in run.stderr
    state = ckpt(out)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_at_the_first_step_names_the_model_files_and_no_checkpoint(work):
    out = work / "nan_first"
    run = train([*tiny_args(work), *overrides(work, out)], fault="nan:0:0")
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss") and "no checkpoint was written yet" in last
    assert "intact" not in last and f"--model file {work / 'tiny_model.pt'}" in last
    assert not os.path.exists(os.path.join(out, EXP, "checkpoint.pth.tar"))


def test_pidnet_s_trains_and_writes_official_format(work):
    """The official model: validation logs, best.pt/final_state.pt in the official format, loadable for eval."""
    out = work / "pidnet_s"
    first = train(overrides(work, out, end_epoch=1))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "MODEL.PRETRAINED is empty" in first.stderr
    exp = os.path.join(out, EXP)
    for name in ("best.pt", "final_state.pt"):
        weights = torch.load(os.path.join(exp, name), weights_only=True)
        assert all(k.startswith("model.") for k in weights) and "model.final_layer.conv2.weight" in weights
    assert "MeanIU" in first.stderr and "per-class IoU: road" in first.stderr
    state = ckpt(out)
    assert (state["epoch"], state["scheduler"]["last_epoch"]) == (1, 2)

    from models.checkpoint import load_for_eval
    from models.pidnet import build_pidnet

    model = build_pidnet("pidnet_s", 19, augment=False)
    assert load_for_eval(model, os.path.join(exp, "final_state.pt")) > 0  # what tools/eval.py loads
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key


def test_ddp_two_processes_gloo_dead_rank_then_resume(work):
    out = work / "ddp"
    # Rank 1 is SIGKILLed at the first step of epoch 1: rank 0 must not hang (torchrun's timeout of 240 s
    # is the hang guard), torchrun ends non-zero.
    failed = torchrun([*tiny_args(work), *overrides(work, out), "--dist-timeout", "20"], fault="sigkill:1:0:1")
    assert failed.returncode != 0
    state = ckpt(out)  # intact, from the last completed epoch
    assert (state["epoch"], state["iteration"], state["world_size"], len(state["rng"])) == (1, 0, 2, 2)
    assert state["scheduler"]["last_epoch"] == 1  # 4 images / (2 processes x 2) = 1 iteration per epoch
    resumed = torchrun([*tiny_args(work), *overrides(work, out, extra=["TRAIN.RESUME", "True"])])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert (ckpt(out)["epoch"], ckpt(out)["scheduler"]["last_epoch"]) == (3, 3)
    assert os.path.exists(os.path.join(out, EXP, "final_model_model.pt"))


def test_stop_epoch_ends_early_on_the_full_lr_schedule(work, tmp_path):
    """The official CamVid recipe: stop at epoch 121 of a 200-epoch poly schedule (here 1 of 3)."""
    out = tmp_path / "stop"
    run = train([*tiny_args(work), *overrides(work, out, end_epoch=3, extra=["TRAIN.STOP_EPOCH", "1"])])
    assert run.returncode == 0, run.stderr[-3000:]
    state = ckpt(out)
    assert state["epoch"] == 1
    # 2 of 6 iterations done: the LR is still high (a 1-epoch schedule would have decayed to ~0).
    assert 0.005 < state["optimizer"]["param_groups"][0]["lr"] < 0.01
    assert os.path.exists(os.path.join(out, EXP, "final_model_model.pt"))


@pytest.mark.parametrize("extra, message", [
    (["TRAIN.BATCH_SIZE_PER_GPU", "8"], "too few for one batch of TRAIN.BATCH_SIZE_PER_GPU 8"),
    (["TRAIN.BATCH_SIZE_PER_GPU", "1"], "TRAIN.BATCH_SIZE_PER_GPU 1"),
    (["MODEL.PRETRAINED", "no/such/file.pth"], "MODEL.PRETRAINED file not found: no/such/file.pth"),
    (["TRAIN.OPTIMIZER", "adam"], "TRAIN.OPTIMIZER 'adam'"),
    (["TRAIN.END_EPOCH", "0"], "need 0 <= BEGIN_EPOCH < END_EPOCH"),
    (["TRAIN.NO_SUCH_KEY", "1"], "unknown config key"),
    (["TRAIN.STOP_EPOCH", "9"], "TRAIN.STOP_EPOCH 9 must be 0"),
])
def test_bad_input_is_one_clear_line(work, tmp_path, capsys, in_process, extra, message):
    code = in_process(["--cfg", CFG, "--device", "cpu", "--no-progress", *overrides(work, tmp_path / "out"), *extra])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-5:]
    assert not os.path.exists(tmp_path / "out" / EXP / "checkpoint.pth.tar")
    assert not any(f.endswith(".log") for f in os.listdir(tmp_path / "out" / EXP)) \
        if os.path.isdir(tmp_path / "out" / EXP) else True


def test_unwritable_output_dir_is_one_clear_line(work, tmp_path, capsys, in_process):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = in_process(["--cfg", CFG, "--device", "cpu", *overrides(work, blocker / "out")])
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: OUTPUT_DIR ") and f"{blocker} is a file, not a folder" in last
