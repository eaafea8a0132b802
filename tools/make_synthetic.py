"""Write synthetic street scenes in the official Cityscapes and CamVid layouts.

    # 100 train / 20 val / 20 test scenes at 512x256 under data/synthetic/
    python tools/make_synthetic.py --root data/synthetic --num-train 100 --num-val 20 --size 512 256 --seed 0
    # then any official config runs on them, e.g.
    python tools/train.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml DATASET.ROOT data/synthetic/ ...
    # a few plain images for tools/custom.py
    python tools/make_synthetic.py --num-train 0 --num-val 0 --samples samples --num-samples 4

Output (``--layouts`` picks which): ``ROOT/cityscapes/{leftImg8bit,gtFine}/<split>/synth/...``,
``ROOT/camvid/{images,labels}/...``, optionally ``ROOT/custom/{images,labels}/...`` (19 train-ID
class indices), and the lists ``ROOT/list/<layout>/{train,val,trainval,test}.lst``.
Scenes are deterministic in ``--seed`` and ``--size``. Exit codes: 0 done, 2 bad input.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import DatasetError, UsageError  # noqa: E402
from utils.io import check_writable  # noqa: E402

logger = logging.getLogger("tools.make_synthetic")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Generate synthetic street-scene segmentation data.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", default="data/synthetic", help="output folder (use as DATASET.ROOT)")
    parser.add_argument("--num-train", type=int, default=100, help="training scenes")
    parser.add_argument("--num-val", type=int, default=20, help="validation scenes")
    parser.add_argument("--num-test", type=int, default=None, help="test scenes (None: as many as --num-val)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 256), metavar=("W", "H"),
                        help="image width and height")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    parser.add_argument("--layouts", nargs="+", default=["cityscapes", "camvid"],
                        choices=["cityscapes", "camvid", "custom"], help="dataset layouts to write")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="parallel threads (the output does not depend on it)")
    parser.add_argument("--samples", default=None, metavar="DIR",
                        help="also write plain scene images (no labels) into DIR, e.g. samples/")
    parser.add_argument("--num-samples", type=int, default=4, help="images written by --samples")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow replacing list files in a --root this tool did not create")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(args):
    from datasets.synthetic import generate, write_samples

    if args.num_train == 0 and args.num_val == 0 and not args.samples:
        raise UsageError("nothing to do: --num-train and --num-val are 0 and no --samples DIR given")
    if args.num_train or args.num_val:
        check_writable(args.root, "--root", is_dir=True)
    if args.samples:
        check_writable(args.samples, "--samples", is_dir=True)
    if args.num_train or args.num_val:
        lists = generate(args.root, num_train=args.num_train, num_val=args.num_val,
                         num_test=args.num_test, size=args.size, seed=args.seed,
                         layouts=args.layouts, workers=args.workers,
                         progress=not args.no_progress, overwrite=args.overwrite)
        for path in lists:
            logger.info("list: %s", path)
        logger.info("use it with: DATASET.ROOT %s/", args.root.rstrip("/"))
    if args.samples:
        if args.num_samples < 1:
            raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
        paths = write_samples(args.samples, args.num_samples, args.size, args.seed)
        logger.info("wrote %d sample image(s) to %s", len(paths), args.samples)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_args()))
