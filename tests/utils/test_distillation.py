"""Distillation loss, teacher loading and resume checks (utils/distillation.py), on tiny PIDNets."""
import copy

import pytest
import torch

from models.netspresso import NetsPressoPIDNet, PIDNetBody, export_pidnet
from models.pidnet import PIDNet
from utils.distillation import (Distiller, check_resume, check_settings, cosine_distance, kl_distillation,
                                load_teacher, normalized_mse, restore_distillation, weights_fingerprint)
from utils.errors import CheckpointError, UsageError


def tiny(planes=8, num_classes=5, seed=0):
    torch.manual_seed(seed)
    net = PIDNet(m=2, n=3, num_classes=num_classes, planes=planes, ppm_planes=16, head_planes=16)
    # Non-trivial BN statistics so that eval-mode outputs are not degenerate.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net


def frozen_body(net):
    body = PIDNetBody(copy.deepcopy(net)).eval()
    for p in body.parameters():
        p.requires_grad_(False)
    return body


def batch(seed=1, num_classes=5, ignore=255):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 64, 64, generator=g)
    labels = torch.randint(0, num_classes, (2, 64, 64), generator=g)
    labels[:, :8] = ignore
    return images, labels


@pytest.mark.parametrize("features", [None, "cs", "norm_mse"])
def test_loss_is_zero_when_student_equals_teacher(features, one_thread):
    student = tiny().eval()
    distiller = Distiller(frozen_body(student), student, weight=2.0, temperature=3.0, features=features)
    assert len(distiller.adapters) == 0  # same channels: no adapter
    distiller.body.always = True  # eval-mode student, so that its BN matches the teacher's
    images, labels = batch()
    loss, parts = distiller(images, student(images), labels)
    assert abs(loss.item()) < 1e-5
    assert set(parts) == ({"kd"} if features is None else {"kd", "kd_feat"})
    assert all(abs(v.item()) < 1e-5 for v in parts.values())


def test_losses_are_positive_for_different_inputs_and_ignore_ignored_pixels():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 5, 8, 8, generator=g)
    s = torch.randn(2, 5, 8, 8, generator=g)
    assert cosine_distance(s, t) > 0.1 and normalized_mse(s, t) > 0.1
    # Zero channel vectors on both sides (dead ReLU pixels) count as equal.
    zeros = torch.zeros(1, 4, 3, 3)
    assert cosine_distance(zeros, zeros) == 0
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    assert kl_distillation(s, t, labels) > 0.01
    # Differences only at ignored pixels: zero loss.
    s2 = t.clone()
    s2[:, :, :4] += 5 * torch.randn(2, 5, 4, 8, generator=g)
    labels[:, :4] = 255
    assert kl_distillation(s2, t, labels).item() == pytest.approx(0.0, abs=1e-6)
    labels[:, 4:] = 255
    assert kl_distillation(s2, t, labels).item() == 0.0  # no valid pixel: an exact, graph-connected 0


def test_temperature_scaling_is_hinton():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(1, 4, 2, 2, generator=g), torch.randn(1, 4, 2, 2, generator=g)
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    p_t = torch.softmax(t / 2, 1)
    expected = (p_t * (torch.log_softmax(t / 2, 1) - torch.log_softmax(s / 2, 1))).sum(1).mean() * 4
    assert kl_distillation(s, t, labels, temperature=2.0, align_corners=False).item() == pytest.approx(
        expected.item(), rel=1e-5)


def test_gradient_reaches_the_student_and_adapters_only(one_thread):
    # A wider teacher (planes 16 vs 8): the P and D features need 1x1 adapters, the logits do not.
    teacher_net = tiny(planes=16, seed=3)
    student = tiny(planes=8, seed=4).train()
    distiller = Distiller(frozen_body(teacher_net), student, features="cs")
    assert sorted(distiller.adapters) == ["d_features", "p_features"]
    assert student.training and not distiller.teacher.training
    images, labels = batch()
    loss, _ = distiller(images, student(images), labels)
    assert loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.adapters.parameters())
    body_grads = [p.grad for n, p in student.named_parameters() if not n.startswith(("seghead_p", "seghead_d"))]
    assert all(g is not None for g in body_grads) and sum(g.abs().sum() for g in body_grads) > 0
    distiller.train()
    assert not distiller.teacher.training  # the teacher stays frozen whatever the caller does


def test_netspresso_student_body_outputs_are_tapped(one_thread):
    net = tiny()
    body, head = export_pidnet(copy.deepcopy(net))
    student = NetsPressoPIDNet(body, head).eval()
    distiller = Distiller(frozen_body(net), student, features="norm_mse")
    distiller.body.always = True
    images, labels = batch()
    loss, _ = distiller(images, student(images), labels)
    assert abs(loss.item()) < 1e-5


def test_load_teacher_from_every_supported_file(tmp_path, one_thread):
    from models.checkpoint import official_state_dict

    net = tiny(num_classes=19)
    torch.save(official_state_dict(net), tmp_path / "best.pt")
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth.tar")
    torch.save(net, tmp_path / "whole.pt")
    torch.save(export_pidnet(copy.deepcopy(net))[0], tmp_path / "model_modelfx.pt")
    images = torch.randn(1, 3, 64, 64)
    reference = PIDNetBody(net).eval()(images)[1]
    fingerprints = set()
    for name in ("best.pt", "checkpoint.pth.tar", "whole.pt", "model_modelfx.pt"):
        if name in ("best.pt", "checkpoint.pth.tar"):
            # The loader builds the variant from MODEL.NAME; plant the tiny one under that name.
            with pytest.MonkeyPatch.context() as mp:
                import models.pidnet as pidnet

                mp.setitem(pidnet.VARIANTS, "pidnet_s", dict(m=2, n=3, planes=8, ppm_planes=16, head_planes=16))
                body, fp = load_teacher(tmp_path / name, "pidnet_s", 19)
        else:
            body, fp = load_teacher(tmp_path / name, "pidnet_s", 19)
        assert not body.training and not any(p.requires_grad for p in body.parameters())
        assert torch.allclose(body(images)[1], reference, rtol=1e-4, atol=1e-5), name
        fingerprints.add(fp)
    assert len(fingerprints) == 1  # identity of the weights, not of the file
    assert weights_fingerprint(PIDNetBody(net)) in fingerprints


def test_load_teacher_bad_input(tmp_path):
    from models.checkpoint import official_state_dict

    with pytest.raises(CheckpointError, match="--teacher file not found: .*nope.pt"):
        load_teacher(tmp_path / "nope.pt", "pidnet_s", 19)
    torch.save(official_state_dict(tiny(num_classes=11)), tmp_path / "c11.pt")
    with pytest.raises(CheckpointError, match="teacher .*c11.pt has 11 classes, the config has 19"):
        load_teacher(tmp_path / "c11.pt", "pidnet_s", 19)
    torch.save(tiny(num_classes=11), tmp_path / "whole11.pt")
    with pytest.raises(CheckpointError, match="whole11.pt has 11 classes, the config has 19"):
        load_teacher(tmp_path / "whole11.pt", "pidnet_s", 19)
    torch.save(official_state_dict(tiny(num_classes=19)), tmp_path / "tiny19.pt")
    with pytest.raises(CheckpointError, match="teacher: .*another PIDNet variant"):
        load_teacher(tmp_path / "tiny19.pt", "pidnet_s", 19)


@pytest.mark.parametrize("args, message", [
    ((-0.1, 1.0, None), "--kd-weight must be >= 0"),
    ((float("nan"), 1.0, None), "--kd-weight must be >= 0"),
    ((1.0, 0.0, None), "--kd-temperature must be > 0"),
    ((1.0, 1.0, "l2"), "--kd-features 'l2' is unknown: use one of cs, norm_mse"),
])
def test_bad_settings(args, message):
    with pytest.raises(UsageError, match=message):
        check_settings(*args)


def test_resume_checks_and_restores_adapters(one_thread):
    teacher = frozen_body(tiny(planes=16, seed=3))
    make = lambda **kw: Distiller(teacher, tiny(seed=4), fingerprint="abc", features="cs", **kw)  # noqa: E731
    saved = make()
    with torch.no_grad():
        for p in saved.adapters.parameters():
            p.add_(1.0)
    state = {"distillation": saved.checkpoint_state()}
    fresh = make()
    restore_distillation(state, fresh)
    for a, b in zip(saved.adapters.parameters(), fresh.adapters.parameters()):
        assert torch.equal(a, b)
    check_resume(None, None)
    with pytest.raises(CheckpointError, match="trained without --teacher"):
        restore_distillation({}, fresh)
    with pytest.raises(CheckpointError, match="trained with --teacher"):
        restore_distillation(state, None)
    with pytest.raises(CheckpointError, match="--kd-temperature 1.0 -> 2.0"):
        restore_distillation(state, make(temperature=2.0))
    other = Distiller(teacher, tiny(seed=4), fingerprint="xyz", features="cs")
    with pytest.raises(CheckpointError, match="teacher weights abc -> xyz"):
        restore_distillation(state, other)


@pytest.mark.gpu
def test_distiller_on_cuda_student_equals_teacher():
    student = tiny().cuda().eval()
    distiller = Distiller(frozen_body(student), student, features="cs")
    distiller.body.always = True
    images, labels = (t.cuda() for t in batch())
    loss, _ = distiller(images, student(images), labels)
    assert loss.device.type == "cuda" and abs(loss.item()) < 1e-4
