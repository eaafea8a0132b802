"""The one deliberate difference from the official evaluation: argmax of the logits, not of exp().

The official ``inference`` returns ``pred.exp()`` (float32) and the confusion matrix takes
``np.argmax`` of that. ``exp`` overflows to ``inf`` above ~88.72, so wherever two or more classes
have such logits they tie at ``inf`` and the argmax picks the lowest class index. We take the
argmax of the logits; the two agree wherever nothing overflows.

This script measures the effect on a trained checkpoint with our evaluator
(``utils.evaluate.evaluate``) run twice over the config's ``DATASET.TEST_SET``: once with the
official exp-then-argmax rule, once with ours. It reports the largest logit, the fraction of
labelled pixels that tie after the overflow, and both mIoUs::

    python benchmarks/bench_exp_overflow.py --cfg configs/synthetic/pidnet_small_synthetic.yaml \\
        DATASET.ROOT DEMO/data/ TEST.MODEL_FILE DEMO/output/cityscapes/pidnet_small_synthetic/best.pt
"""
import argparse
import json
import logging
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from configs.default import load_config  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.errors import ConfigError  # noqa: E402

logger = logging.getLogger(__name__)

# The largest float32 x with a finite exp(x): above it exp overflows to inf.
EXP_OVERFLOW = math.log(torch.finfo(torch.float32).max)


def official_scores(logits):
    """The official ``inference``'s return value: ``exp`` of float32 logits (``inf`` on overflow)."""
    return logits.float().exp()


def exp_argmax(logits):
    """Class map by the official rule: argmax of ``exp(logits)``; ties at ``inf`` -> lowest index."""
    return official_scores(logits).argmax(dim=1)


def overflow_ties(logits):
    """Pixels (``N x H x W`` bool) where two or more classes overflow to ``inf`` and so tie."""
    return torch.isinf(official_scores(logits)).sum(dim=1) >= 2


class AtLabelSize(torch.nn.Module):
    """The main logits upsampled to the input size, as the official ``inference`` does before
    ``exp``; ``transform`` (``exp`` for the official rule) is applied after the upsampling.
    Test images are not resized, so the evaluator's own upsampling to the label size is a no-op."""

    def __init__(self, model, output_index, align_corners, transform=None, stats=None):
        super().__init__()
        self.model = model
        self.output_index = output_index
        self.align_corners = align_corners
        self.transform = transform
        self.stats = stats

    def forward(self, images):
        outputs = self.model(images)
        logits = outputs[self.output_index] if isinstance(outputs, (list, tuple)) else outputs
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear",
                               align_corners=self.align_corners)
        if self.stats is not None:
            self.stats["max_logit"] = max(self.stats.get("max_logit", -math.inf), float(logits.max()))
            self.stats["ties"] = self.stats.get("ties", 0) + int(overflow_ties(logits).sum())
            self.stats["pixels"] = self.stats.get("pixels", 0) + logits.shape[0] * logits[0, 0].numel()
            self.stats["changed"] = self.stats.get("changed", 0) + int((exp_argmax(logits) != logits.argmax(1)).sum())
        return self.transform(logits) if self.transform is not None else logits


def get_args_parser():
    parser = argparse.ArgumentParser(description="exp-overflow ties of the official evaluation vs argmax of logits")
    parser.add_argument("--cfg", required=True, help="experiment YAML (model, dataset, TEST.MODEL_FILE)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides as KEY VALUE pairs")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    return parser


def measure(cfg, device):
    from configs.build import build_eval_model, build_test_dataset
    from utils.evaluate import evaluate

    if not cfg.TEST.MODEL_FILE:
        raise ConfigError("set TEST.MODEL_FILE to the trained checkpoint to measure")
    dataset = build_test_dataset(cfg)  # exactly the dataset tools/eval.py evaluates
    model = build_eval_model(cfg, device, weights=cfg.TEST.MODEL_FILE)  # as tools/eval.py builds it
    index = cfg.TEST.OUTPUT_INDEX
    results, stats = {}, {}
    for rule, transform in (("official_exp_argmax", official_scores), ("logits_argmax", None)):
        loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
        wrapped = AtLabelSize(model, index, cfg.MODEL.ALIGN_CORNERS, transform,
                              stats if transform is None else None)
        results[rule] = evaluate(wrapped, loader, cfg.DATASET.NUM_CLASSES, cfg.TRAIN.IGNORE_LABEL, device=device,
                                 align_corners=cfg.MODEL.ALIGN_CORNERS, progress=False)
    # Our evaluator on the plain model: the logits rule above must reproduce it exactly.
    plain = evaluate(model, DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0),
                     cfg.DATASET.NUM_CLASSES, cfg.TRAIN.IGNORE_LABEL, device=device, output_index=index,
                     align_corners=cfg.MODEL.ALIGN_CORNERS, progress=False)
    return {
        "images": len(dataset),
        "max_logit": stats["max_logit"],
        "exp_overflow_threshold": EXP_OVERFLOW,
        "tie_fraction": stats["ties"] / stats["pixels"],
        "changed_fraction": stats["changed"] / stats["pixels"],
        "miou_official_exp_argmax": results["official_exp_argmax"]["mean_iou"],
        "miou_logits_argmax": results["logits_argmax"]["mean_iou"],
        "miou_evaluator": plain["mean_iou"],
    }


def main(args):
    cfg = load_config(args.cfg, args.opts)
    figures = measure(cfg, resolve_device(args.device))
    print(f"images: {figures['images']}, max logit {figures['max_logit']:.1f} "
          f"(exp overflows above {figures['exp_overflow_threshold']:.2f})")
    print(f"pixels tied at inf after exp: {figures['tie_fraction']:.1%}; "
          f"predictions changed by the exp rule: {figures['changed_fraction']:.1%}")
    print(f"mIoU official exp-argmax {figures['miou_official_exp_argmax']:.4f} | logits argmax "
          f"{figures['miou_logits_argmax']:.4f} (our evaluator on the model: {figures['miou_evaluator']:.4f})")
    if args.json:
        from utils.io import atomic_write_text

        atomic_write_text(json.dumps(figures, indent=2) + "\n", args.json)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_intermixed_args()))
