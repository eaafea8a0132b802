import copy

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from models.netspresso import (NetsPressoPIDNet, export_pidnet, input_shapes, load_netspresso,
                               save_netspresso)
from models.pidnet import PIDNet
from utils.errors import CheckpointError, ModelError
from utils.io import atomic_save

TINY = {
    "sm": dict(m=2, n=3, planes=8, ppm_planes=16, head_planes=16, num_classes=5),
    "l": dict(m=3, n=4, planes=8, ppm_planes=16, head_planes=16, num_classes=5),
}


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    yield


def _randomise_bn(net):
    # Non-trivial BN statistics so that a wrong wiring cannot hide behind identity BNs.
    gen = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    return net


@pytest.fixture(params=sorted(TINY))
def tiny(request):
    torch.manual_seed(0)
    return _randomise_bn(PIDNet(**TINY[request.param])).eval()


@pytest.mark.parametrize("training", [False, True])
def test_export_composes_to_the_full_network_exactly(tiny, training):
    reference = copy.deepcopy(tiny)
    body, head = export_pidnet(copy.deepcopy(tiny))
    assert isinstance(body, fx.GraphModule) and isinstance(head, fx.GraphModule)
    x = torch.randn(2, 3, 64, 96)
    reference.train(training)
    composed = nn.Sequential(body, head).train(training)
    expected, got = reference(x), composed(x)
    assert len(got) == 3
    for a, b in zip(expected, got):
        assert torch.equal(a, b)
    p_features, main, d_features = body(x)
    assert torch.equal(main, expected[1])
    assert p_features.shape[1] == tiny.seghead_p.bn1.num_features
    assert d_features.shape[1] == tiny.seghead_d.bn1.num_features


def test_export_keeps_official_submodule_names(tiny):
    body, head = export_pidnet(copy.deepcopy(tiny))
    body_keys = set(body.state_dict())
    official = {k for k in tiny.state_dict() if not k.startswith(("seghead_p.", "seghead_d."))}
    assert body_keys == official
    assert set(head.state_dict()) == {k for k in tiny.state_dict() if k.startswith(("seghead_p.", "seghead_d."))}
    assert not any(k.startswith("seghead") for k in body_keys)


def test_export_requires_heads():
    net = PIDNet(**TINY["sm"], augment=False)
    with pytest.raises(ModelError, match="augment=True"):
        export_pidnet(net)
    with pytest.raises(ModelError, match="expects a PIDNet"):
        export_pidnet(nn.Conv2d(3, 3, 1))


def test_input_shapes_swap_width_height():
    assert input_shapes([2048, 1024]) == [{"batch": 1, "channel": 3, "dimension": [1024, 2048]}]
    assert input_shapes([960, 720])[0]["dimension"] == [720, 960]


def _export_files(net, tmp_path):
    body, head = export_pidnet(copy.deepcopy(net))
    atomic_save(body, tmp_path / "model_modelfx.pt")
    atomic_save(head, tmp_path / "model_headfx.pt")
    return tmp_path / "model_modelfx.pt", tmp_path / "model_headfx.pt"


def test_load_with_head_behaves_like_training_pidnet(tiny, tmp_path):
    model_path, head_path = _export_files(tiny, tmp_path)
    module = load_netspresso(model_path, head_path)
    assert isinstance(module, NetsPressoPIDNet) and module.augment
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = tiny(x)
        got = module.eval()(x)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))

    module.train()
    assert all(m.training for m in module.modules())
    outputs = module(x)
    sum(o.float().mean() for o in outputs).backward()
    params = list(module.parameters())
    assert params and all(p.requires_grad for p in params)
    assert all(p.grad is not None for p in params)
    module.eval()
    assert not any(m.training for m in module.modules())


def test_load_without_head_returns_main_logits(tiny, tmp_path):
    model_path, _ = _export_files(tiny, tmp_path)
    module = load_netspresso(model_path).eval()
    assert not module.augment
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(module(x), tiny(x)[1])


def test_save_netspresso_round_trip(tiny, tmp_path):
    model_path, head_path = _export_files(tiny, tmp_path)
    module = load_netspresso(model_path, head_path)
    with torch.no_grad():
        for p in module.parameters():  # "fine-tuning" changes the weights
            p.add_(0.01)
    paths = save_netspresso(module, tmp_path / "out", "best_model")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["best_model_model.pt", "best_model_head.pt"]
    again = load_netspresso(*paths).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(module.eval()(x), again(x)))
    only_body = save_netspresso(load_netspresso(model_path), tmp_path / "out2", "final_model")
    assert [p.rsplit("/", 1)[-1] for p in only_body] == ["final_model_model.pt"]
    with pytest.raises(ModelError, match="load_netspresso"):
        save_netspresso(tiny, tmp_path, "x")


def test_load_netspresso_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_netspresso(tmp_path / "missing.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not a whole-module"):
        load_netspresso(tmp_path / "weights.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_netspresso(tmp_path / "junk.pt")


def test_head_as_model_and_swapped_files_are_named(tiny, tmp_path):
    """The one check behind train, eval, custom, export_onnx and compress."""
    body, head = export_pidnet(tiny)
    torch.save(body, tmp_path / "model_modelfx.pt")
    torch.save(head, tmp_path / "model_headfx.pt")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'model_headfx.pt'} holds the auxiliary heads.*as --model"):
        load_netspresso(tmp_path / "model_headfx.pt")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'model_headfx.pt'} holds the auxiliary heads"):
        load_netspresso(tmp_path / "model_headfx.pt", tmp_path / "model_modelfx.pt")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'model_modelfx.pt'} given as --head is a model body"):
        load_netspresso(tmp_path / "model_modelfx.pt", tmp_path / "model_modelfx.pt")
    assert load_netspresso(tmp_path / "model_modelfx.pt", tmp_path / "model_headfx.pt").augment
