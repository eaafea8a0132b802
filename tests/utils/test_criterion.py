import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.criterion import (BoundaryLoss, CrossEntropy, OhemCrossEntropy, build_criterion, ohem_ce,
                             pixel_accuracy, weighted_bce)

# The official Cityscapes class weights (datasets/cityscapes.py of the official code).
CITYSCAPES_WEIGHTS = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
                      0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507]
CASES = ["keep131072_weighted", "keep500_unweighted"]


def _reference(ref_data, case):
    with open(ref_data("loss_expected.json")) as handle:
        expected = json.load(handle)[case]
    arrays = np.load(ref_data(f"loss_{case}.npz"))
    outputs = [torch.from_numpy(arrays[k]) for k in ("p_logits", "main_logits", "boundary_logits")]
    return expected, outputs, torch.from_numpy(arrays["labels"]), torch.from_numpy(arrays["boundary_target"])


def _official_criterion(expected):
    return build_criterion(19, 255, use_ohem=True, ohem_thres=0.9, ohem_keep=expected["min_kept"],
                           class_weights=CITYSCAPES_WEIGHTS if expected["class_weights"] else None,
                           balance_weights=[0.4, 1.0], sb_weights=1.0, align_corners=True)


@pytest.mark.parametrize("case", CASES)
def test_matches_official_reference(ref_data, case):
    expected, outputs, labels, edges = _reference(ref_data, case)
    total, parts = _official_criterion(expected)(outputs, labels, edges)
    pairs = {
        "total": total, "semantic": parts["semantic"], "aux_p_ce_over_all_pixels": parts["aux"],
        "ohem_main": parts["main"], "boundary": parts["boundary"], "bas": parts["bas"],
        "pixel_acc": parts["pixel_acc"],
    }
    for key, value in pairs.items():
        assert value.item() == pytest.approx(expected[key], rel=1e-4, abs=1e-5), key
    # The aux term is NOT the usual mean over valid pixels (that is the documented quirk).
    assert parts["aux"].item() != pytest.approx(expected["aux_p_ce_over_valid_pixels"], rel=1e-3)


@pytest.mark.parametrize("case", CASES)
def test_reference_gradients_finite_and_reach_every_output(ref_data, case):
    expected, outputs, labels, edges = _reference(ref_data, case)
    outputs = [o.clone().requires_grad_(True) for o in outputs]
    total, _ = _official_criterion(expected)(outputs, labels, edges)
    total.backward()
    for out in outputs:
        assert torch.isfinite(out.grad).all()
        assert out.grad.abs().sum() > 0


def test_outputs_are_upsampled_with_align_corners(ref_data):
    expected, outputs, labels, edges = _reference(ref_data, CASES[1])
    size = labels.shape[-2:]
    up = [F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outputs]
    crit = _official_criterion(expected)
    assert crit(outputs, labels, edges)[0].item() == pytest.approx(crit(up, labels, edges)[0].item(), rel=1e-6)
    other = build_criterion(19, 255, True, 0.9, 500, None, [0.4, 1.0], 1.0, align_corners=False)
    assert other(outputs, labels, edges)[0].item() != pytest.approx(expected["total"], rel=1e-5)


def test_ohem_hand_computed():
    # 1 image, 2 classes, 4 pixels: target probabilities 0.5, 0.731, 0.881, 0.982 (sorted).
    logits0 = torch.tensor([0.0, 1.0, 2.0, 4.0])
    score = torch.stack([logits0, torch.zeros(4)]).reshape(1, 2, 1, 4)
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    probs = torch.sigmoid(logits0)
    nll = -torch.log(probs)
    # min_kept=1 -> k=1 -> p_k=0.731 < thres 0.9: keep the pixels below 0.9 (the first three).
    assert ohem_ce(score, target, 255, 0.9, 1).item() == pytest.approx(nll[:3].mean().item(), rel=1e-6)
    # thres 0.6 -> max(0.6, 0.731): keep p < 0.731, i.e. only the first pixel.
    assert ohem_ce(score, target, 255, 0.6, 1).item() == pytest.approx(nll[0].item(), rel=1e-6)
    # min_kept=2 -> p_2=0.881: keep the first two with thres 0.6.
    assert ohem_ce(score, target, 255, 0.6, 2).item() == pytest.approx(nll[:2].mean().item(), rel=1e-6)
    # an ignored pixel is neither counted nor kept
    ignored = target.clone()
    ignored[0, 0, 0] = 255
    assert ohem_ce(score, ignored, 255, 0.9, 1).item() == pytest.approx(nll[1:3].mean().item(), rel=1e-6)


def test_ohem_min_kept_larger_than_valid_uses_the_largest_probability():
    logits0 = torch.tensor([0.0, 1.0, 2.0, 4.0])
    score = torch.stack([logits0, torch.zeros(4)]).reshape(1, 2, 1, 4)
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    nll = -torch.log(torch.sigmoid(logits0))
    # threshold = max(0.9, p_max = 0.982): all but the maximum are kept (strict <), as the official code.
    assert ohem_ce(score, target, 255, 0.9, 10 ** 6).item() == pytest.approx(nll[:3].mean().item(), rel=1e-6)


def _leaf(*shape):
    torch.manual_seed(0)
    return torch.randn(*shape, requires_grad=True)


def test_ohem_all_ignored_is_zero_with_gradient():
    score = _leaf(2, 3, 4, 4)
    target = torch.full((2, 4, 4), 255, dtype=torch.long)
    loss = OhemCrossEntropy(255, 0.9, 100)(score, target)
    assert loss.item() == 0.0
    loss.backward()
    assert score.grad is not None and torch.isfinite(score.grad).all()


def test_ohem_single_easy_pixel_is_zero_not_nan():
    # The official code returns NaN here (nothing below the threshold).
    score = torch.zeros(1, 2, 2, 2)
    score[0, 0, 0, 0] = 10.0
    target = torch.full((1, 2, 2), 255, dtype=torch.long)
    target[0, 0, 0] = 0
    loss = ohem_ce(score, target, 255, 0.9, 100)
    assert loss.item() == 0.0


def test_ohem_few_valid_pixels_is_finite():
    score = _leaf(1, 3, 8, 8)
    target = torch.full((1, 8, 8), 255, dtype=torch.long)
    target[0, 0, :3] = torch.tensor([0, 1, 2])
    loss = OhemCrossEntropy(255, 0.7, 100000)(score, target)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert torch.isfinite(score.grad).all()


def test_ohem_ignore_minus_one():
    score = _leaf(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0] = -1
    ce = F.cross_entropy(score, target, ignore_index=-1, reduction="none")
    expected = ce[target != -1]
    # thres 1.1 keeps every valid pixel: plain mean over valid pixels
    assert ohem_ce(score, target, -1, 1.1, 1).item() == pytest.approx(expected.mean().item(), rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_with_gradient():
    score = _leaf(1, 3, 4, 4)
    target = torch.full((1, 4, 4), 255, dtype=torch.long)
    loss = CrossEntropy(255, weight=torch.ones(3))([score], target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(score.grad).all()


def test_cross_entropy_matches_torch_weighted_mean():
    score = _leaf(2, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    target[0, :2] = 255
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0])
    expected = F.cross_entropy(score, target, weight=weight, ignore_index=255)
    crit = CrossEntropy(255, weight, balance_weights=[0.4, 1.0], sb_weights=0.7)
    assert crit([score, score], target).item() == pytest.approx(1.4 * expected.item(), rel=1e-5)
    assert crit(score, target).item() == pytest.approx(0.7 * expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="BALANCE_WEIGHTS"):
        crit([score, score, score], target)


def test_ohem_multi_output_aux_uses_all_pixel_mean():
    score_aux, score_main = _leaf(1, 3, 4, 4), _leaf(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0] = 255
    crit = OhemCrossEntropy(255, thres=1.1, min_kept=1, balance_weights=[0.4, 1.0], sb_weights=0.5)
    aux = F.cross_entropy(score_aux, target, ignore_index=255, reduction="none").mean()
    main = F.cross_entropy(score_main, target, ignore_index=255)
    assert crit([score_aux, score_main], target).item() == pytest.approx(0.4 * aux.item() + main.item(), rel=1e-5)
    assert crit(score_main, target).item() == pytest.approx(0.5 * main.item(), rel=1e-5)


def test_class_weights_change_the_loss_as_expected():
    score = _leaf(1, 2, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    plain = build_criterion(2, 255, use_ohem=True, ohem_thres=1.1, ohem_keep=1)
    boundary = torch.zeros(1, 1, 4, 4)
    outputs = [score, score, boundary]
    edges = torch.zeros(1, 4, 4)
    doubled = build_criterion(2, 255, use_ohem=True, ohem_thres=1.1, ohem_keep=1, class_weights=[2.0, 1.0])
    _, p_plain = plain(outputs, target, edges)
    _, p_doubled = doubled(outputs, target, edges)
    # Every pixel is class 0: OHEM (weighted mean of kept losses) and the all-pixel aux mean double.
    assert p_doubled["main"].item() == pytest.approx(2 * p_plain["main"].item(), rel=1e-6)
    assert p_doubled["aux"].item() == pytest.approx(2 * p_plain["aux"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        build_criterion(2, 255, class_weights=[1.0, 1.0, 1.0])


def test_weighted_bce_hand_computed():
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0]).reshape(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 2, 2)
    bce = F.binary_cross_entropy_with_logits(logits.reshape(-1), target.reshape(-1), reduction="none")
    # 1 positive, 3 negatives: positive weight 3/4, negative weight 1/4, mean over the 4 pixels.
    expected = (0.75 * bce[0] + 0.25 * bce[1:].sum()) / 4
    assert weighted_bce(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert BoundaryLoss()(logits, target).item() == pytest.approx(20 * expected.item(), rel=1e-6)


def test_boundary_loss_without_boundary_pixels_is_zero_and_finite():
    logits = _leaf(2, 1, 4, 4)
    loss = BoundaryLoss()(logits, torch.zeros(2, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_bas_uses_only_confident_boundary_pixels():
    torch.manual_seed(1)
    main = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    edges = torch.zeros(1, 4, 4)
    boundary = torch.full((1, 1, 4, 4), -5.0)
    boundary[0, 0, 0] = 5.0  # sigmoid > 0.8 on the first row only
    crit = build_criterion(3, 255, use_ohem=True, ohem_thres=1.1, ohem_keep=1)
    _, parts = crit([main, main, boundary], target, edges)
    expected = F.cross_entropy(main[..., :1, :], target[:, :1])
    assert parts["bas"].item() == pytest.approx(expected.item(), rel=1e-5)
    # no confident boundary pixel: the BAS term is 0, not NaN
    _, parts = crit([main, main, torch.full((1, 1, 4, 4), -5.0)], target, edges)
    assert parts["bas"].item() == 0.0


def test_total_is_sum_of_parts_and_edge_batches_stay_finite():
    torch.manual_seed(2)
    outputs = [torch.randn(2, 4, 4, 4, requires_grad=True) for _ in range(2)] + [torch.randn(2, 1, 4, 4, requires_grad=True)]
    labels = torch.randint(0, 4, (2, 16, 16))
    edges = (torch.rand(2, 16, 16) > 0.8).float()
    crit = build_criterion(4, 255, True, 0.9, 50, None, [0.4, 1.0], 1.0, True)
    total, parts = crit(outputs, labels, edges)
    assert total.item() == pytest.approx((parts["semantic"] + parts["boundary"] + parts["bas"]).item(), rel=1e-6)
    assert parts["semantic"].item() == pytest.approx(0.4 * parts["aux"].item() + parts["main"].item(), rel=1e-6)
    # A batch whose labels are all ignored (e.g. a crop of void only) must still train.
    total, parts = crit(outputs, torch.full_like(labels, 255), torch.zeros_like(edges))
    assert math.isfinite(total.item())
    total.backward()
    for out in outputs:
        assert torch.isfinite(out.grad).all()


def test_plain_ce_criterion_and_single_output_error():
    outputs = [torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), torch.randn(1, 1, 4, 4)]
    labels = torch.randint(0, 3, (1, 8, 8))
    crit = build_criterion(3, 255, use_ohem=False)
    total, parts = crit(outputs, labels, torch.zeros(1, 8, 8))
    assert math.isfinite(total.item())
    up = F.interpolate(outputs[0], size=(8, 8), mode="bilinear", align_corners=True)
    assert parts["aux"].item() == pytest.approx(F.cross_entropy(up, labels).item(), rel=1e-5)
    with pytest.raises(ValueError, match="augment=True"):
        crit(outputs[1], labels, torch.zeros(1, 8, 8))


def test_pixel_accuracy_counts_ignore_as_official():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, :2] = 1.0  # predicts 1, 1, 0, 0
    labels = torch.tensor([[[1, 0, 0, 255]]])
    # official: labels >= 0 are counted, so the 255 pixel is a miss: 2 / 4
    assert pixel_accuracy(logits, labels).item() == pytest.approx(0.5)
    labels = torch.tensor([[[1, 0, 0, -1]]])
    assert pixel_accuracy(logits, labels).item() == pytest.approx(2 / 3)


@pytest.mark.gpu
def test_ohem_on_cuda_matches_cpu(ref_data):
    expected, outputs, labels, edges = _reference(ref_data, CASES[0])
    crit = _official_criterion(expected)
    cpu_total, _ = crit(outputs, labels, edges)
    gpu_total, _ = crit.cuda()([o.cuda() for o in outputs], labels.cuda(), edges.cuda())
    assert gpu_total.item() == pytest.approx(cpu_total.item(), rel=1e-4)


def _official_ohem(score, target, ignore, thres, min_kept, weight):
    """The official _ohem_forward, step by step (CPU sort of the valid probabilities)."""
    losses = F.cross_entropy(score, target, weight=weight, ignore_index=ignore, reduction="none").reshape(-1)
    mask = target.reshape(-1) != ignore
    safe = target.clone()
    safe[safe == ignore] = 0
    prob = F.softmax(score, dim=1).gather(1, safe.unsqueeze(1)).reshape(-1)[mask]
    prob, order = prob.sort()
    threshold = max(prob[min(min_kept, prob.numel() - 1)].item(), thres)
    return losses[mask][order][prob < threshold].mean()


def test_ohem_equals_official_formula_on_random_batches():
    torch.manual_seed(0)
    for trial in range(60):
        classes = 2 + trial % 4
        score = torch.randn(2, classes, 5, 7) * 3
        target = torch.randint(0, classes, (2, 5, 7))
        target[torch.rand(2, 5, 7) < 0.3] = 255
        weight = torch.rand(classes) + 0.5 if trial % 2 else None
        min_kept, thres = 1 + (trial * 7) % 80, (0.3, 0.7, 0.9)[trial % 3]
        expected = _official_ohem(score, target, 255, thres, min_kept, weight)
        got = ohem_ce(score, target, 255, thres, min_kept, weight)
        if torch.isnan(expected):  # official: nothing kept -> NaN; ours: 0
            assert got.item() == 0.0
        else:
            assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
