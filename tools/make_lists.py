"""Write dataset list files (``image label`` lines) for a folder of images and labels.

    # Cityscapes: ROOT/cityscapes/leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine labelIds
    python tools/make_lists.py --root data --layout cityscapes
    # CamVid-style: ROOT/camvid/images/x.png + ROOT/camvid/labels/x_L.png, random 80/20 split
    python tools/make_lists.py --root data --layout camvid --val-fraction 0.2
    # your data: ROOT/images/**/x.jpg + ROOT/labels/**/x.png (class-index PNGs), matched by stem
    python tools/make_lists.py --root data/mydata --layout pairs --val-fraction 0.1 --check

Lists go to ``ROOT/list/<cityscapes|camvid|custom>/{train,val,trainval,test}.lst`` (``--out`` to
change), with paths relative to where the dataset reads them (``ROOT/cityscapes``,
``ROOT/camvid``, ``ROOT`` for pairs). Use them as ``DATASET.TRAIN_SET list/custom/train.lst``
etc. with ``DATASET.ROOT ROOT``. Existing, different lists are only replaced with ``--force``
(the official lists shipped in data/list/ stay as they are). Exit codes: 0 done, 2 bad input.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import DatasetError, UsageError  # noqa: E402
from utils.io import atomic_write_text, check_writable  # noqa: E402

logger = logging.getLogger("tools.make_lists")
_SHOWN = 5
# As datasets.base_dataset.IMAGE_EXTENSIONS (not imported: this tool runs without torch).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds.png"


def _first(items):
    more = f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _require_dir(path, what):
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found: {path}. Check --root and --layout (see data/README.md)")


def _walk(folder, accept):
    """Sorted paths (relative to ``folder``, '/'-separated) of files accepted by ``accept``."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        for name in sorted(files):
            if accept(name):
                rel = os.path.relpath(os.path.join(directory, name), folder)
                found.append(rel.replace(os.sep, "/"))
    return found


def _line(*paths):
    # Tabs only where a path holds a space (the readers split on tabs when present).
    return ("\t" if any(" " in p for p in paths) else " ").join(paths)


def cityscapes_lists(root):
    """{split: lines} from ``root/cityscapes``; test splits are image-only as the official lists."""
    base = os.path.join(root, "cityscapes")
    images_dir = os.path.join(base, "leftImg8bit")
    _require_dir(images_dir, "Cityscapes image folder")
    lists = {}
    for split in sorted(os.listdir(images_dir)):
        if not os.path.isdir(os.path.join(images_dir, split)):
            continue
        images = _walk(os.path.join(images_dir, split), lambda n: n.endswith(CITYSCAPES_IMAGE_SUFFIX))
        if not images:
            continue
        lines, missing = [], []
        for rel in images:
            image = f"leftImg8bit/{split}/{rel}"
            if split == "test":
                lines.append(image)
                continue
            label = f"gtFine/{split}/{rel[:-len(CITYSCAPES_IMAGE_SUFFIX)]}{CITYSCAPES_LABEL_SUFFIX}"
            if not os.path.isfile(os.path.join(base, label)):
                missing.append(label)
            lines.append(f"{image}\t{label}")  # the official lists are tab-separated
        if missing:
            raise DatasetError(f"{len(missing)} Cityscapes label(s) missing under {base}: "
                               f"{_first(missing)}. Unpack gtFine_trainvaltest.zip into {base}")
        lists[split] = lines
    if not lists:
        raise DatasetError(f"no *{CITYSCAPES_IMAGE_SUFFIX} images under {images_dir}/<split>/<city>/. "
                           "Unpack leftImg8bit_trainvaltest.zip there")
    if "train" in lists and "val" in lists:
        lists["trainval"] = lists["train"] + lists["val"]
    return lists


def _pairs(image_dir, label_dir, label_suffix, allow_unlabeled, prefix_img, prefix_lab):
    _require_dir(image_dir, "image folder")
    _require_dir(label_dir, "label folder")
    images = _walk(image_dir, lambda n: n.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {image_dir}")
    labels = {os.path.splitext(rel)[0]: rel for rel in
              _walk(label_dir, lambda n: n.lower().endswith(".png"))}
    pairs, unlabeled = [], []
    used = set()
    for rel in images:
        key = os.path.splitext(rel)[0] + label_suffix
        if key in labels:
            used.add(key)
            pairs.append((prefix_img + rel, prefix_lab + labels[key]))
        else:
            unlabeled.append(prefix_img + rel)
    if unlabeled and not allow_unlabeled:
        raise DatasetError(f"{len(unlabeled)} image(s) have no label <stem>{label_suffix}.png in "
                           f"{label_dir}: {_first(unlabeled)}. Add the labels, fix --label-suffix, or "
                           "pass --allow-unlabeled to list them in test.lst (images only)")
    orphans = sorted(set(labels) - used)
    if orphans:
        logger.warning("%d label(s) in %s have no image and are skipped: %s", len(orphans), label_dir,
                       _first([labels[k] for k in orphans]))
    if not pairs:
        raise DatasetError(f"no image/label pairs matched between {image_dir} and {label_dir}; labels "
                           f"must be PNGs named <image stem>{label_suffix}.png")
    return pairs, unlabeled


def split_pairs(pairs, val_fraction, test_fraction, seed):
    """Deterministic random split into {'train', 'val', 'test'} lists of pairs."""
    for name, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DatasetError(f"{name} must be in [0, 1), got {value}")
    n = len(pairs)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = int(round(n * test_fraction)) if test_fraction > 0 else 0
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    if n - n_val - n_test < 1:
        raise DatasetError(f"only {n} pair(s): nothing left for training with --val-fraction "
                           f"{val_fraction} and --test-fraction {test_fraction}; lower them or add data")
    shuffled = [pairs[i] for i in order]
    val = sorted(shuffled[:n_val])
    test = sorted(shuffled[n_val:n_val + n_test])
    train = sorted(shuffled[n_val + n_test:])
    return {"train": train, "val": val, "test": test}


def pair_lists(root, layout, images="images", labels="labels", label_suffix="", val_fraction=0.2,
               test_fraction=0.0, seed=0, allow_unlabeled=False):
    """{split: lines} for the camvid layout (``root/camvid``) or image/label pairs (``root``)."""
    if layout == "camvid":
        base, label_suffix = os.path.join(root, "camvid"), label_suffix or "_L"
        prefix_img, prefix_lab = f"{images}/", f"{labels}/"
    else:
        base = root
        prefix_img, prefix_lab = f"{images.strip('/')}/", f"{labels.strip('/')}/"
    _require_dir(root, "dataset root")
    pairs, unlabeled = _pairs(os.path.join(base, images), os.path.join(base, labels), label_suffix,
                              allow_unlabeled, prefix_img, prefix_lab)
    splits = split_pairs(pairs, val_fraction, test_fraction, seed)
    lists = {split: [_line(*pair) for pair in items] for split, items in splits.items() if items}
    if "val" in lists:
        lists["trainval"] = sorted(lists["train"] + lists["val"])
    if unlabeled:
        if "test" in lists:
            raise UsageError("--allow-unlabeled puts unlabeled images in test.lst; use it without "
                             "--test-fraction")
        lists["test"] = unlabeled
    return lists


def check_pairs(base, lines, limit=None):
    """Decode every listed file and compare image/label sizes; returns problem strings."""
    import cv2

    problems = []
    for line in lines[:limit]:
        fields = line.split("\t") if "\t" in line else line.split()
        shapes = []
        for rel, flag in zip(fields, (cv2.IMREAD_COLOR, cv2.IMREAD_UNCHANGED)):
            path = os.path.join(base, rel)
            array = cv2.imdecode(np.fromfile(path, np.uint8), flag) if os.path.isfile(path) else None
            if array is None:
                problems.append(f"unreadable: {path}")
            shapes.append(None if array is None else array.shape[:2])
        if len(shapes) == 2 and None not in shapes and shapes[0] != shapes[1]:
            problems.append(f"size mismatch: {fields[0]} {shapes[0]} vs {fields[1]} {shapes[1]}")
    return problems


def write_lists(lists, out_dir, force=False):
    """Write ``<out_dir>/<split>.lst`` atomically; refuse to change existing lists without force."""
    texts = {split: "".join(line + "\n" for line in lines) for split, lines in lists.items()}
    if not force:
        changed = []
        for split, text in texts.items():
            path = os.path.join(out_dir, f"{split}.lst")
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    if handle.read() != text:
                        changed.append(path)
        if changed:
            raise DatasetError(f"would replace existing list(s) with different content: {_first(changed)}. "
                               "Pass --force to overwrite, or --out another folder")
    written = []
    for split, text in texts.items():
        path = os.path.join(out_dir, f"{split}.lst")
        atomic_write_text(text, path)  # a reader never sees half a list; a full disk leaves no temp file
        written.append(path)
    return written


def get_args_parser():
    parser = argparse.ArgumentParser(description="Write dataset list files.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", required=True, help="dataset root (DATASET.ROOT)")
    parser.add_argument("--layout", choices=["cityscapes", "camvid", "pairs"], default="pairs",
                        help="cityscapes: ROOT/cityscapes/{leftImg8bit,gtFine}; camvid: ROOT/camvid/"
                             "{images,labels}; pairs: ROOT/<images>/ + ROOT/<labels>/")
    parser.add_argument("--images", default="images", help="image folder (camvid/pairs)")
    parser.add_argument("--labels", default="labels", help="label folder (camvid/pairs)")
    parser.add_argument("--label-suffix", default="",
                        help="label stem = image stem + this (camvid default: _L)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of pairs for val.lst")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="share of pairs for test.lst")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split")
    parser.add_argument("--allow-unlabeled", action="store_true",
                        help="list images without labels in test.lst instead of failing")
    parser.add_argument("--check", action="store_true",
                        help="decode every file and compare image/label sizes (slow)")
    parser.add_argument("--out", default=None, help="output folder (None: ROOT/list/<cityscapes|camvid|custom>)")
    parser.add_argument("--force", action="store_true", help="overwrite different existing lists")
    return parser


def main(args):
    if not os.path.isdir(args.root):
        raise DatasetError(f"dataset root not found: {args.root}. Pass the folder holding your data as --root")
    name = {"cityscapes": "cityscapes", "camvid": "camvid"}.get(args.layout, "custom")
    out_dir = args.out or os.path.join(args.root, "list", name)
    check_writable(out_dir, "--out", is_dir=True)
    if args.layout == "cityscapes":
        lists, base, name = cityscapes_lists(args.root), os.path.join(args.root, "cityscapes"), "cityscapes"
    else:
        lists = pair_lists(args.root, args.layout, args.images, args.labels, args.label_suffix,
                           args.val_fraction, args.test_fraction, args.seed, args.allow_unlabeled)
        base = os.path.join(args.root, "camvid") if args.layout == "camvid" else args.root
        name = "camvid" if args.layout == "camvid" else "custom"
    if args.check:
        labelled = sorted({line for split, lines in lists.items() if split != "trainval" for line in lines})
        problems = check_pairs(base, labelled)
        if problems:
            raise DatasetError(f"{len(problems)} problem(s) found by --check: {_first(problems)}")
        logger.info("checked %d entries: all readable, sizes match", len(labelled))
    for path in write_lists(lists, out_dir, force=args.force):
        with open(path, encoding="utf-8") as handle:
            count = sum(1 for _ in handle)
        logger.info("wrote %s (%d lines)", path, count)
    rel = os.path.relpath(out_dir, args.root).replace(os.sep, "/")
    logger.info("use: DATASET.ROOT %s DATASET.DATASET %s DATASET.TRAIN_SET %s/train.lst "
                "DATASET.TEST_SET %s/val.lst", args.root, name, rel, rel)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_args()))
