"""tools/train.py --teacher: distillation while fine-tuning a pruned tiny PIDNet, through the real CLI.

The student is a tiny PIDNet (planes 8) pruned with PR_L2/SLAMP 0.5 and given as NetsPresso files;
the teacher is a wider tiny PIDNet body (planes 16) saved whole, so the P and D features need the
1x1 adapters. CPU, generated data at 128x64, a few seconds per run.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = "configs/cityscapes/pidnet_small_cityscapes.yaml"
EXP = os.path.join("cityscapes", "pidnet_small_cityscapes")

pytestmark = pytest.mark.slow


def _tiny(planes, seed, num_classes=19):
    from models.pidnet import PIDNet

    torch.manual_seed(seed)
    return PIDNet(m=2, n=3, num_classes=num_classes, planes=planes, ppm_planes=16, head_planes=16)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from datasets.synthetic import generate
    from models.checkpoint import official_state_dict
    from models.compression.pruner import compress_model
    from models.netspresso import export_pidnet

    base = tmp_path_factory.mktemp("distill")
    generate(str(base / "data"), num_train=4, num_val=2, num_test=0, size=(128, 64), seed=0,
             layouts=("cityscapes",))
    body, head = export_pidnet(_tiny(8, 0))
    pruned, _ = compress_model(body.eval(), "PR_L2", "slamp", ratio=0.5, trace_size=(64, 128),
                               report_sizes=((64, 128),))
    torch.save(pruned, base / "pruned_model.pt")
    torch.save(head, base / "head.pt")
    teacher_body, _ = export_pidnet(_tiny(16, 1).eval())
    torch.save(teacher_body, base / "teacher_model.pt")
    torch.save(official_state_dict(_tiny(8, 2, num_classes=11)), base / "teacher_11.pt")
    return base


def overrides(work, out, end_epoch=2, extra=()):
    return ["DATASET.ROOT", f"{work / 'data'}/", "MODEL.PRETRAINED", "", "TRAIN.IMAGE_SIZE", "[128,64]",
            "TRAIN.BASE_SIZE", "128", "TEST.IMAGE_SIZE", "[128,64]", "TEST.BASE_SIZE", "128",
            "TRAIN.BATCH_SIZE_PER_GPU", "2", "TEST.BATCH_SIZE_PER_GPU", "2", "WORKERS", "0",
            "OUTPUT_DIR", str(out), "LOG_DIR", str(out) + "_tb", "TRAIN.END_EPOCH", str(end_epoch),
            "CUDNN.DETERMINISTIC", "True", *extra]


def student_args(work, *kd):
    return ["--netspresso", "--model", str(work / "pruned_model.pt"), "--head", str(work / "head.pt"),
            "--teacher", str(work / "teacher_model.pt"), *kd]


def env_with(fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PIDNET_TEST_FAULT"):
        env.pop(name, None)
    if fault:
        env["PIDNET_TEST_FAULT"] = fault
    return env


def train(args, fault=None):
    cmd = [sys.executable, "tools/train.py", "--cfg", CFG, "--device", "cpu", "--no-progress", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env_with(fault), capture_output=True, text=True, timeout=240)


def ckpt(out):
    return torch.load(os.path.join(out, EXP, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)


KD = ["--kd-weight", "2", "--kd-temperature", "2", "--kd-features", "cs"]


@pytest.fixture(scope="module")
def reference(work):
    out = work / "reference"
    run = train([*student_args(work, *KD), *overrides(work, out)])
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_fine_tune_a_pruned_model_with_a_teacher(work, reference):
    out, run = reference
    assert " kd " in run.stderr and " kd_feat " in run.stderr  # the parts are logged
    assert "1x1 adapter for p_features (16 -> 32 channels)" in run.stderr
    state = ckpt(out)
    kd = state["distillation"]
    assert kd["settings"]["weight"] == 2.0 and kd["settings"]["temperature"] == 2.0
    assert kd["settings"]["features"] == "cs" and len(kd["settings"]["teacher_sha256"]) == 64
    assert set(kd["adapters"]) == {"p_features.weight", "d_features.weight"}
    # The adapters were trained (momentum in the optimizer, weights moved from their initialisation).
    n_student = len(state["model"]) - sum(1 for k in state["model"] if k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")))
    assert len(state["optimizer"]["state"]) == n_student + 2
    # The exported student has neither teacher nor adapters and is the pruned architecture.
    from models.netspresso import load_netspresso

    model = load_netspresso(os.path.join(out, EXP, "final_model_model.pt"), os.path.join(out, EXP,
                                                                                         "final_model_head.pt"))
    assert set(model.state_dict()) == set(state["model"])
    assert not any("adapter" in k or "teacher" in k for k in state["model"])


def test_resume_with_teacher_matches_the_uninterrupted_run(work, reference, in_process, capsys):
    out = work / "resumed"
    stopped = train([*student_args(work, *KD), *overrides(work, out)], fault="sigterm:1:0")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    before = ckpt(out)
    # Other settings: refused with one line, the checkpoint untouched.
    code = in_process(["--cfg", CFG, "--device", "cpu", "--no-progress",
                       *student_args(work, "--kd-weight", "2", "--kd-temperature", "4", "--kd-features", "cs"),
                       *overrides(work, out, extra=["TRAIN.RESUME", "True"])])
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "--kd-temperature 2.0 -> 4.0" in last
    assert (ckpt(out)["epoch"], ckpt(out)["iteration"]) == (before["epoch"], before["iteration"]) == (1, 1)
    resumed = train([*student_args(work, *KD), *overrides(work, out, extra=["TRAIN.RESUME", "True"])])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = ckpt(reference[0]), ckpt(out)
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (2, 0)
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=1e-5, atol=1e-6), key
    for key, value in a["distillation"]["adapters"].items():
        assert torch.allclose(value, b["distillation"]["adapters"][key], rtol=1e-5, atol=1e-6), key
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(mom_a) == len(mom_b) and all(torch.allclose(x, y, rtol=1e-5, atol=1e-6)
                                            for x, y in zip(mom_a, mom_b))


def test_ddp_two_processes_gloo_with_teacher(work):
    out = work / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "tools/train.py", "--cfg", CFG, "--device", "cpu", "--no-progress", *student_args(work, *KD),
           *overrides(work, out)]
    run = subprocess.run(cmd, cwd=ROOT, env=env_with(), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    state = ckpt(out)
    assert (state["epoch"], state["world_size"]) == (2, 2)
    assert set(state["distillation"]["adapters"]) == {"p_features.weight", "d_features.weight"}
    assert os.path.exists(os.path.join(out, EXP, "final_model_model.pt"))


def test_teacher_without_netspresso_trains_pidnet_s(work):
    """PIDNet-S student (heads tapped by hooks), teacher from an official-format weights file."""
    from models.checkpoint import official_state_dict
    from models.pidnet import build_pidnet

    torch.manual_seed(5)
    torch.save(official_state_dict(build_pidnet("pidnet_s", 19)), work / "teacher_s.pt")
    out = work / "pidnet_s"
    run = train(["--teacher", str(work / "teacher_s.pt"), "--kd-features", "norm_mse",
                 *overrides(work, out, end_epoch=1)])
    assert run.returncode == 0, run.stderr[-3000:]
    assert " kd_feat " in run.stderr and "adapter" not in run.stderr
    state = ckpt(out)
    assert state["distillation"]["settings"]["features"] == "norm_mse" and not state["distillation"]["adapters"]
    assert os.path.exists(os.path.join(out, EXP, "final_state.pt"))


@pytest.mark.parametrize("teacher, kd, message", [
    ("teacher_11.pt", [], "has 11 classes, the config has 19"),
    ("missing.pt", [], "--teacher file not found"),
    ("teacher_model.pt", ["--kd-weight", "-1"], "--kd-weight must be >= 0 (got -1.0)"),
    ("teacher_model.pt", ["--kd-temperature", "0"], "--kd-temperature must be > 0"),
    ("teacher_model.pt", ["--kd-features", "mse"], "--kd-features 'mse' is unknown"),
    (None, ["--kd-weight", "1"], "--kd-weight need --teacher"),
])
def test_bad_distillation_input_is_one_clear_line(work, tmp_path, capsys, in_process, teacher, kd, message):
    args = ["--netspresso", "--model", str(work / "pruned_model.pt"), "--head", str(work / "head.pt"), *kd]
    if teacher:
        args += ["--teacher", str(work / teacher)]
    code = in_process(["--cfg", CFG, "--device", "cpu", "--no-progress", *args, *overrides(work, tmp_path / "out")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-5:]
    assert not os.path.exists(tmp_path / "out")  # nothing written, not even the output folder
