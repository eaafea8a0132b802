"""The one loader: every accepted format round-trips; every bad file is one clear error."""
import os

import pytest
import torch
import torch.nn as nn

from models.checkpoint import (checkpoint_filter_fn, load_for_eval, load_module_file, load_pretrained,
                               official_state_dict, read_checkpoint)
from models.pidnet import PIDNet
from utils.errors import CheckpointError
from utils.io import atomic_save

TINY = dict(m=2, n=3, planes=8, ppm_planes=16, head_planes=16)


def _randomised(num_classes=19, augment=True, seed=0, **structure):
    torch.manual_seed(seed)
    model = PIDNet(num_classes=num_classes, augment=augment, **(structure or TINY))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, list) else [out]


def _formats(model):
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    official = official_state_dict(model)
    official["sem_loss.criterion.weight"] = torch.ones(19)
    return {
        "imagenet_pth_tar": {"state_dict": plain},
        "official_finetuned": official,
        "ours_training": {"model": plain, "epoch": 3, "best_mIoU": 0.5, "config": "MODEL:\n  NAME: pidnet_s\n"},
        "ddp_module_prefix": {f"module.{k}": v for k, v in plain.items()},
        "ddp_of_official": {f"module.{k}": v for k, v in official.items()},
    }


@pytest.mark.parametrize("fmt", ["imagenet_pth_tar", "official_finetuned", "ours_training",
                                 "ddp_module_prefix", "ddp_of_official"])
@pytest.mark.parametrize("loader", [load_for_eval, load_pretrained])
def test_every_format_round_trips(tmp_path, fmt, loader):
    source = _randomised(seed=1)
    path = tmp_path / "ckpt.pt"
    atomic_save(_formats(source)[fmt], path)
    target = _randomised(seed=2)
    loaded = loader(target, str(path))
    assert loaded == len(source.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(_outputs(source, x), _outputs(target, x)):
        assert torch.equal(a, b)


def test_official_reference_checkpoint_loads_for_inference(ref_data):
    model = PIDNet(num_classes=19, augment=False, **TINY)
    assert load_for_eval(model, ref_data("tiny_sm_official_format.pt")) > 0


def test_filter_strips_prefixes_and_loss_buffers():
    state = {"module.model.conv1.0.weight": torch.zeros(1), "model.layer1.0.bn1.bias": torch.zeros(1),
             "sem_loss.criterion.weight": torch.ones(19)}
    assert sorted(checkpoint_filter_fn(state)) == ["conv1.0.weight", "layer1.0.bn1.bias"]


def test_pretrained_partial_load_skips_other_class_count(tmp_path, caplog):
    atomic_save(official_state_dict(_randomised(num_classes=19)), tmp_path / "city.pt")
    camvid = _randomised(num_classes=11)
    with caplog.at_level("INFO"):
        loaded = load_pretrained(camvid, str(tmp_path / "city.pt"))
    assert loaded == len(camvid.state_dict()) - 4  # two classifier convs (weight + bias)
    assert "final_layer.conv2.weight" in caplog.text


def test_eval_refuses_other_class_count(tmp_path):
    atomic_save(official_state_dict(_randomised(num_classes=19)), tmp_path / "city.pt")
    with pytest.raises(CheckpointError, match="19 classes but the model has 11.*NUM_CLASSES 19"):
        load_for_eval(_randomised(num_classes=11), str(tmp_path / "city.pt"))


def test_eval_refuses_other_variant(ref_data):
    large = PIDNet(num_classes=19, augment=True, m=3, n=4, planes=8, ppm_planes=16, head_planes=32)
    with pytest.raises(CheckpointError, match="another PIDNet variant.*layer3_d"):
        load_for_eval(large, ref_data("tiny_sm_official_format.pt"))


def test_eval_accepts_inference_only_file_for_augmented_model(tmp_path, caplog):
    atomic_save(official_state_dict(_randomised(augment=False)), tmp_path / "inf.pt")
    with caplog.at_level("WARNING"):
        load_for_eval(_randomised(augment=True), str(tmp_path / "inf.pt"))
    assert "auxiliary heads" in caplog.text


def test_zero_matching_tensors_is_an_error(tmp_path):
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}}, tmp_path / "resnet.pth.tar")
    with pytest.raises(CheckpointError, match="no tensor .* matches"):
        load_pretrained(_randomised(), str(tmp_path / "resnet.pth.tar"))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        read_checkpoint(str(tmp_path / "nope.pt"))


def test_empty_path():
    with pytest.raises(CheckpointError, match="TEST.MODEL_FILE"):
        read_checkpoint("")


def test_truncated_file(tmp_path):
    atomic_save(official_state_dict(_randomised()), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        read_checkpoint(str(tmp_path / "cut.pt"))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pt").write_text("hello, I am a text file")
    with pytest.raises(CheckpointError, match="notes.pt"):
        read_checkpoint(str(tmp_path / "notes.pt"))


def test_state_dict_without_tensors(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="no state dict|no tensors"):
        load_for_eval(_randomised(), str(tmp_path / "meta.pt"))


def test_whole_module_pickle_points_to_netspresso_path(tmp_path):
    traced = torch.fx.symbolic_trace(_randomised(augment=False))
    torch.save(traced, tmp_path / "model_modelfx.pt")
    with pytest.raises(CheckpointError, match="--netspresso"):
        read_checkpoint(str(tmp_path / "model_modelfx.pt"))
    module = load_module_file(str(tmp_path / "model_modelfx.pt"))
    assert isinstance(module, nn.Module)


def test_module_file_must_be_a_module(tmp_path):
    atomic_save(official_state_dict(_randomised()), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not a whole-module file"):
        load_module_file(str(tmp_path / "weights.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        load_module_file(str(tmp_path / "missing.pt"))


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path):
    path = tmp_path / "best.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["best.pt"]


# --------------------------------------------------------------------------- non-finite weights

def _poison(state, key, value=float("nan")):
    state = {k: v.clone() for k, v in state.items()}
    state[key].view(-1)[3] = value
    return state


@pytest.mark.parametrize("fmt", ["imagenet_pth_tar", "official_finetuned", "ours_training",
                                 "ddp_module_prefix", "ddp_of_official"])
@pytest.mark.parametrize("loader", [load_for_eval, load_pretrained])
def test_nan_in_every_state_dict_format_names_file_and_tensor(tmp_path, fmt, loader):
    source = _randomised(seed=1)
    key = "layer3.0.conv1.weight"
    source.load_state_dict(_poison(source.state_dict(), key))
    path = tmp_path / f"{fmt}.pt"
    atomic_save(_formats(source)[fmt], path)
    with pytest.raises(CheckpointError, match=rf"{path} holds non-finite weights: tensor '[\w.]*{key}' has 1 "):
        loader(_randomised(seed=2), str(path))


def test_inf_in_optimizer_state_of_a_training_checkpoint(tmp_path):
    from utils.checkpointing import load_checkpoint

    state = {"model": _randomised().state_dict(), "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}},
             "scheduler": {}, "epoch": 2}
    state["optimizer"]["state"][0]["momentum_buffer"][1] = float("inf")
    atomic_save(state, tmp_path / "checkpoint.pth.tar")
    with pytest.raises(CheckpointError, match="tensor 'optimizer.state.0.momentum_buffer' has 1 NaN/inf"):
        load_checkpoint(str(tmp_path / "checkpoint.pth.tar"))


@pytest.mark.parametrize("part", ["body", "head"])
def test_nan_in_whole_module_files(tmp_path, part):
    from models.netspresso import export_pidnet, load_netspresso

    body, head = export_pidnet(_randomised())
    module = body if part == "body" else head
    name, param = next((n, p) for n, p in module.named_parameters() if n.endswith("weight"))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    torch.save(body, tmp_path / "model_modelfx.pt")
    torch.save(head, tmp_path / "model_headfx.pt")
    bad = tmp_path / ("model_modelfx.pt" if part == "body" else "model_headfx.pt")
    with pytest.raises(CheckpointError, match=rf"{bad} holds non-finite weights: tensor '{name}'"):
        load_netspresso(str(tmp_path / "model_modelfx.pt"), str(tmp_path / "model_headfx.pt"))


def test_finite_integer_and_empty_tensors_pass(tmp_path):
    torch.save({"model": _randomised().state_dict(), "rng": [torch.zeros(5, dtype=torch.uint8)],
                "empty": torch.empty(0)}, tmp_path / "ok.pt")
    assert "model" in read_checkpoint(str(tmp_path / "ok.pt"))


def test_folder_given_as_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path} is a folder: .*best.pt"):
        read_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match=f"--model {tmp_path} is a folder"):
        load_module_file(str(tmp_path))
