"""Export a PIDNet checkpoint to NetsPresso's torch.fx format (body + auxiliary heads).

    python tools/export_netspresso.py --cfg configs/cityscapes/pidnet_small_cityscapes.yaml \
        TEST.MODEL_FILE pretrained_models/cityscapes/PIDNet_S_Cityscapes_val.pt
    python tools/export_netspresso.py --cfg configs/camvid/pidnet_small_camvid.yaml \
        TEST.MODEL_FILE output/camvid/pidnet_small_camvid/best.pt --output-dir export/camvid_s

Writes ``model_modelfx.pt`` (the body, which NetsPresso compresses) and ``model_headfx.pt``
(the auxiliary heads), checks that the two composed reproduce the network's outputs
exactly, and prints the ``input_shapes`` to give NetsPresso (from TEST.IMAGE_SIZE).
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from configs import build  # noqa: E402
from configs.default import load_config  # noqa: E402
from models.netspresso import export_pidnet, input_shapes  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.errors import CheckpointError, ModelError  # noqa: E402
from utils.io import atomic_save, check_writable  # noqa: E402
from utils.layout import EXPORT_BODY, EXPORT_HEAD  # noqa: E402

logger = logging.getLogger("export_netspresso")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Export PIDNet to NetsPresso fx files (model + head)")
    parser.add_argument("--cfg", required=True, help="experiment YAML (MODEL.NAME, DATASET.NUM_CLASSES, TEST.*)")
    parser.add_argument("--output-dir", default=None,
                        help="folder for model_modelfx.pt / model_headfx.pt "
                             "(default: OUTPUT_DIR/<dataset>/<cfg name>/netspresso)")
    parser.add_argument("--device", default="cpu", help="device used for tracing and the check (auto, cpu, cuda)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides, e.g. TEST.MODEL_FILE path.pt")
    return parser


def check_composition(net, body, head, image_size, device):
    """``Sequential(body, head)`` must equal the network, in eval and in train mode."""
    height, width = image_size
    x = torch.randn(2, 3, min(height, 128), min(width, 128), device=device)
    modes = [False, True]
    for training in modes:
        for module in (net, body, head):
            module.train(training)
        # Train mode updates BN statistics: compare on copies of the same state.
        state = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            expected = net(x)
            net.load_state_dict(state)
            got = nn.Sequential(body, head)(x)
            net.load_state_dict(state)
        if not all(torch.equal(a, b) for a, b in zip(expected, got)):
            raise ModelError("the exported model+head do not reproduce the network's outputs; "
                             "please report this with the config used")
    for module in (net, body, head):
        module.eval()


def main(args):
    setup_logging()
    cfg = load_config(args.cfg, args.opts)
    device = resolve_device(args.device)
    if not cfg.TEST.MODEL_FILE:
        raise CheckpointError("no checkpoint given: add TEST.MODEL_FILE path/to/weights.pt to the command")
    out_dir = args.output_dir or build.run_layout(cfg, args.cfg).export_dir
    check_writable(out_dir, "--output-dir" if args.output_dir else "OUTPUT_DIR", is_dir=True)
    net = build.build_model(cfg, cfg.TEST.MODEL_FILE, augment=True).to(device).eval()
    body, head = export_pidnet(net)
    check_composition(net, body, head, build.image_hw(cfg.TEST.IMAGE_SIZE), device)

    model_path, head_path = os.path.join(out_dir, EXPORT_BODY), os.path.join(out_dir, EXPORT_HEAD)
    atomic_save(body.cpu(), model_path)
    atomic_save(head.cpu(), head_path)
    shapes = input_shapes(cfg.TEST.IMAGE_SIZE)
    logger.info("wrote %s and %s", model_path, head_path)
    print(f"model: {model_path}")
    print(f"head:  {head_path}")
    print(f"input_shapes: {json.dumps(shapes)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_intermixed_args()))
