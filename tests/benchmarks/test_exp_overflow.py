"""The official exp-then-argmax rule ties on float32 overflow; our argmax of the logits does not."""
import importlib.util
import os

import torch

from utils.evaluate import evaluate


def _bench(repo_root):
    path = os.path.join(repo_root, "benchmarks", "bench_exp_overflow.py")
    spec = importlib.util.spec_from_file_location("bench_exp_overflow", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exp_argmax_ties_on_overflow_where_logits_argmax_does_not(repo_root):
    bench = _bench(repo_root)
    assert 88.7 < bench.EXP_OVERFLOW < 88.8
    # Pixel 0: classes 0 and 2 overflow (class 2 is larger); pixel 1: nothing overflows.
    logits = torch.tensor([[[[100.0, 1.0]], [[5.0, 3.0]], [[300.0, 2.0]]]])  # 1 x 3 x 1 x 2
    assert bench.overflow_ties(logits).tolist() == [[[True, False]]]
    assert bench.exp_argmax(logits).tolist() == [[[0, 1]]]  # the tie goes to the lowest index
    assert logits.argmax(1).tolist() == [[[2, 1]]]          # ours keeps the largest logit
    # Below the overflow the two rules agree everywhere.
    small = torch.randn(2, 5, 4, 6, generator=torch.Generator().manual_seed(0)) * 20
    assert not bench.overflow_ties(small).any()
    assert torch.equal(bench.exp_argmax(small), small.argmax(1))


def test_both_rules_through_our_evaluator(repo_root):
    """The benchmark's wrapper gives the official rule's mIoU and ours from utils.evaluate."""
    bench = _bench(repo_root)

    class Overconfident(torch.nn.Module):
        def forward(self, images):  # class 2 wins by far, class 0 also overflows
            n, _, h, w = images.shape
            logits = torch.zeros(n, 3, h // 2, w // 2)
            logits[:, 0], logits[:, 2] = 100.0, 300.0
            return [logits * 0, logits, logits * 0]

    images = torch.zeros(1, 3, 8, 8)
    labels = torch.full((1, 8, 8), 2, dtype=torch.long)
    loader = [(images, labels, torch.zeros_like(labels), torch.tensor([[8, 8]]), ["x"])]
    stats = {}
    official = evaluate(bench.AtLabelSize(Overconfident(), 1, True, bench.official_scores), loader, 3,
                        progress=False)
    ours = evaluate(bench.AtLabelSize(Overconfident(), 1, True, None, stats), loader, 3, progress=False)
    assert official["mean_iou"] == 0.0 and ours["mean_iou"] == 1.0 / 3
    assert stats["ties"] == stats["pixels"] == 64 and abs(stats["max_logit"] - 300.0) < 1e-3
