import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.metrics import ConfusionMatrix, logits_to_pred, metrics_from_matrix


def _official_confusion(label, pred, num_classes, ignore):
    """The official get_confusion_matrix loop (numpy), for comparison."""
    keep = label != ignore
    index = (label[keep] * num_classes + pred[keep]).astype(np.int64)
    counts = np.bincount(index)
    matrix = np.zeros((num_classes, num_classes))
    for i in range(num_classes):
        for j in range(num_classes):
            if i * num_classes + j < len(counts):
                matrix[i, j] = counts[i * num_classes + j]
    return matrix


def test_known_matrix_metrics():
    # rows: labels, columns: predictions
    matrix = np.array([[3, 1, 0],
                       [2, 4, 0],
                       [0, 0, 0]])
    m = metrics_from_matrix(matrix)
    # class 0: tp 3, pos 4, res 5 -> 3 / 6; class 1: tp 4, pos 6, res 5 -> 4 / 7; class 2 absent -> 0
    assert m["iou"] == pytest.approx([3 / 6, 4 / 7, 0.0])
    assert m["mean_iou"] == pytest.approx((3 / 6 + 4 / 7) / 3)
    assert m["pixel_acc"] == pytest.approx(7 / 10)
    assert m["mean_acc"] == pytest.approx((3 / 4 + 4 / 6 + 0) / 3)


def test_update_counts_match_official_and_skip_ignore():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, size=(2, 7, 9))
    label[0, :2] = 255
    pred = rng.integers(0, 5, size=(2, 7, 9))
    cm = ConfusionMatrix(5, ignore_label=255)
    cm.update(torch.from_numpy(pred), torch.from_numpy(label))
    expected = _official_confusion(label, pred, 5, 255)
    np.testing.assert_array_equal(cm.mat.numpy(), expected)
    assert cm.mat.sum().item() == (label != 255).sum()
    # accumulation over batches
    cm.update(torch.from_numpy(pred), torch.from_numpy(label))
    np.testing.assert_array_equal(cm.mat.numpy(), 2 * expected)
    cm.reset()
    assert cm.mat.sum().item() == 0


def test_perfect_prediction():
    label = torch.tensor([[[0, 1], [2, 2]]])
    cm = ConfusionMatrix(3)
    cm.update(label.clone(), label)
    m = cm.compute()
    assert m["mean_iou"] == pytest.approx(1.0)
    assert m["pixel_acc"] == pytest.approx(1.0)
    assert m["mean_acc"] == pytest.approx(1.0)


def test_out_of_range_labels_are_not_counted():
    label = torch.tensor([[[0, 1, 7, -1]]])
    pred = torch.tensor([[[0, 0, 1, 1]]])
    cm = ConfusionMatrix(2, ignore_label=255)
    cm.update(pred, label)
    assert cm.mat.tolist() == [[1, 0], [1, 0]]


def test_update_with_logits_upsamples_with_align_corners_then_argmax():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 3, 5)
    label = torch.randint(0, 4, (1, 9, 13))
    for align in (True, False):
        cm = ConfusionMatrix(4, align_corners=align)
        cm.update(logits, label)
        up = F.interpolate(logits, size=(9, 13), mode="bilinear", align_corners=align).argmax(1)
        direct = ConfusionMatrix(4)
        direct.update(up, label)
        assert torch.equal(cm.mat, direct.mat)
        assert torch.equal(logits_to_pred(logits, (9, 13), align), up)
    with pytest.raises(ValueError, match="does not match"):
        ConfusionMatrix(4).update(torch.zeros(1, 3, 3, dtype=torch.long), label)


def test_empty_matrix_is_finite():
    m = ConfusionMatrix(3).compute()
    assert m["mean_iou"] == 0.0 and m["pixel_acc"] == 0.0 and m["mean_acc"] == 0.0
    assert m["iou"] == [0.0, 0.0, 0.0]


def test_all_reduce_without_distributed_is_a_no_op():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    before = cm.mat.clone()
    assert cm.all_reduce() is cm
    assert torch.equal(cm.mat, before)


@pytest.mark.gpu
def test_bincount_on_cuda():
    label = torch.randint(0, 6, (2, 32, 32))
    pred = torch.randint(0, 6, (2, 32, 32))
    cpu = ConfusionMatrix(6)
    cpu.update(pred, label)
    gpu = ConfusionMatrix(6, device="cuda")
    gpu.update(pred.cuda(), label.cuda())
    assert gpu.mat.device.type == "cuda"
    assert torch.equal(gpu.mat.cpu(), cpu.mat)
