"""PIDNet architecture: official keys/shapes, parameter counts, outputs, gradients, fx, conformance."""
import json

import numpy as np
import pytest
import torch
import torch.fx

from models.pidnet import PIDNet, VARIANTS, build_pidnet, canonical_name, get_pred_model
from utils.errors import ModelError

TINY_SM = dict(m=2, n=3, planes=8, ppm_planes=16, head_planes=16)
TINY_L = dict(m=3, n=4, planes=8, ppm_planes=16, head_planes=32)

# Paper / official figures (millions), with and without the auxiliary heads.
PARAMS = {"pidnet_s": (7.72, 7.63), "pidnet_m": (28.76, 28.54), "pidnet_l": (37.31, 36.94)}


def _n_params(model):
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("num_classes", [19, 11])
def test_state_dict_keys_and_shapes_equal_official(name, num_classes, ref_data):
    with open(ref_data("official_state_dict_keys.json")) as handle:
        official = json.load(handle)[f"{name}-{num_classes}classes"]
    ours = {k: list(v.shape) for k, v in build_pidnet(name, num_classes).state_dict().items()}
    assert ours == official


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_counts(name):
    with_aux, without_aux = PARAMS[name]
    assert _n_params(build_pidnet(name, 19, augment=True)) == pytest.approx(with_aux, abs=0.005)
    assert _n_params(build_pidnet(name, 19, augment=False)) == pytest.approx(without_aux, abs=0.005)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_full_variants_forward_shapes(name):
    torch.manual_seed(0)
    model = build_pidnet(name, 19, augment=True).eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        p, main, boundary = model(x)
    assert p.shape == (1, 19, 8, 16)
    assert main.shape == (1, 19, 8, 16)
    assert boundary.shape == (1, 1, 8, 16)
    assert all(torch.isfinite(t).all() for t in (p, main, boundary))


@pytest.mark.parametrize("structure", [TINY_SM, TINY_L], ids=["sm", "l"])
@pytest.mark.parametrize("size", [(64, 64), (72, 136), (100, 150)])
def test_inference_output_is_one_eighth(structure, size):
    model = PIDNet(num_classes=5, augment=False, **structure).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, -(-size[0] // 8), -(-size[1] // 8))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("structure", [TINY_SM, TINY_L], ids=["sm", "l"])
def test_every_parameter_gets_a_gradient(structure):
    torch.manual_seed(0)
    model = PIDNet(num_classes=4, augment=True, **structure).train()
    outputs = model(torch.randn(2, 3, 64, 64))
    sum(o.float().pow(2).mean() for o in outputs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    # A bias feeding only BatchNorms (in training mode) gets an exactly-zero gradient: the
    # next BN subtracts any constant shift. Every weight must still learn.
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0 and not n.endswith("bias")]
    assert not zero


@pytest.mark.parametrize("augment", [True, False])
@pytest.mark.parametrize("structure", [TINY_SM, TINY_L], ids=["sm", "l"])
def test_fx_trace_matches_eager(structure, augment):
    torch.manual_seed(0)
    model = PIDNet(num_classes=6, augment=augment, **structure).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        expected, got = model(x), traced(x)
    expected = expected if augment else [expected]
    got = got if augment else [got]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_body_plus_heads_equals_forward():
    torch.manual_seed(0)
    model = PIDNet(num_classes=6, augment=True, **TINY_SM).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        full = model(x)
        split = model.forward_aux_heads(model.forward_body(x))
    for a, b in zip(full, split):
        assert torch.equal(a, b)


@pytest.mark.parametrize("tag,structure", [("sm", TINY_SM), ("l", TINY_L)])
def test_outputs_match_official_code(tag, structure, ref_data):
    """Official-format checkpoint + outputs computed with the official code (tests/data/REFERENCE.md).

    The logits reach several hundred with these random weights, so float32 summation order
    alone (CPU kernels differ between machines) moves them by ~1e-5 relative: compare
    relative to each output's magnitude.
    """
    state = torch.load(ref_data(f"tiny_{tag}_official_format.pt"), map_location="cpu", weights_only=True)
    net_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    ref = np.load(ref_data(f"tiny_{tag}_forward.npz"))
    x = torch.from_numpy(ref["input"])
    model = PIDNet(num_classes=19, augment=True, **structure).eval()
    model.load_state_dict(net_state)
    inference = PIDNet(num_classes=19, augment=False, **structure).eval()
    inference.load_state_dict(net_state, strict=False)
    with torch.no_grad():
        outputs = dict(zip(["p_logits", "main_logits", "boundary_logits"], model(x)))
        outputs["inference_logits"] = inference(x)
    for key, value in outputs.items():
        expected = torch.from_numpy(ref[key])
        scale = expected.abs().max().item()
        assert (value - expected).abs().max().item() <= 1e-4 * scale, key
        # The predicted classes agree (a structural error would scramble them).
        if value.shape[1] > 1:
            agree = (value.argmax(1) == expected.argmax(1)).float().mean().item()
            assert agree > 0.99, key


@pytest.mark.parametrize("spelling,expected", [
    ("pidnet_s", "pidnet_s"), ("pidnet-s", "pidnet_s"), ("pidnet_small", "pidnet_s"), ("PIDNet-S", "pidnet_s"),
    ("pidnet_m", "pidnet_m"), ("pidnet-medium", "pidnet_m"), ("pidnet_l", "pidnet_l"), ("pidnet_large", "pidnet_l"),
])
def test_accepted_names(spelling, expected):
    assert canonical_name(spelling) == expected


@pytest.mark.parametrize("bad", ["pidnet_sm", "pidnets", "resnet18", "small", ""])
def test_unknown_names_are_rejected_not_guessed(bad):
    with pytest.raises(ModelError, match="unknown model name.*pidnet_s"):
        build_pidnet(bad, 19)


def test_get_pred_model_is_inference_model():
    model = get_pred_model("pidnet-s", 11)
    assert not model.augment
    assert not hasattr(model, "seghead_p")
    assert model.final_layer.conv2.out_channels == 11
