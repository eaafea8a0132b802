"""Inference speed of PIDNet, measured the way the official script does, on the real model.

The official ``models/speed/pidnet_speed.py`` times a copy of PIDNet with the conv-following
BatchNorms commented out. Here the same :class:`models.pidnet.PIDNet` gets its conv -> BN pairs
folded (``models.deploy``), and the folded output is checked against the unfolded one.

Protocol (official): batch 1, 10 warm-up runs, a calibration loop that doubles the iteration
count until one loop takes >= 1 s, then a timed run of about 6 s; ``torch.cuda.synchronize``
around every timed region on CUDA.

Examples::

    python models/speed/pidnet_speed.py --a pidnet-s --c 19 --r 1024 2048
    python models/speed/pidnet_speed.py --a pidnet-l --r 720 960 --device cpu --backend onnxruntime
    python models/speed/pidnet_speed.py --a pidnet-s --r 256 512 --warmup 2 --seconds 1
    python models/speed/pidnet_speed.py --model output/compress/best_model_model.pt --r 1024 2048
    python models/speed/pidnet_speed.py --a pidnet-s --p pretrained_models/cityscapes/PIDNet_S_Cityscapes_val.pt
    python models/speed/pidnet_speed.py --onnx pidnet_s_int8.onnx --r 512 1024 --runtime openvino --threads 1
    python models/speed/pidnet_speed.py --onnx pidnet_s.onnx --r 1024 2048 --device cuda --precision fp16  # TensorRT
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from configs.build import apply_cudnn  # noqa: E402
from models.deploy import BACKENDS, PRECISIONS, prepare_inference, select_output  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.errors import UsageError  # noqa: E402

logger = logging.getLogger(__name__)


def get_args_parser():
    parser = argparse.ArgumentParser(description="PIDNet speed measurement (official protocol, BN folded)")
    parser.add_argument("--a", default="pidnet-s", help="pidnet-s, pidnet-m or pidnet-l")
    parser.add_argument("--c", type=int, default=19, help="number of classes")
    parser.add_argument("--r", type=int, nargs="+", default=(1024, 2048), help="input resolution H W")
    parser.add_argument("--p", default="", help="optional weights (any checkpoint format) for --a")
    parser.add_argument("--model", default="",
                        help="time a whole-module file (NetsPresso/fx compressed model) instead of --a")
    parser.add_argument("--onnx", default="",
                        help="time an ONNX file (fp32, fp16 or int8, e.g. from tools/quantize.py) instead of --a")
    parser.add_argument("--runtime", default=None, help="with --onnx: onnxruntime (default) or openvino")
    parser.add_argument("--output-index", type=int, default=1,
                        help="which output is the main logits when the model returns a list (PIDNet: 1)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend")
    parser.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS),
                        help="autocast precision (eager/fused/compile); with --onnx, fp16 builds TensorRT "
                             "fp16 kernels (CUDA)")
    parser.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the fused model as a CUDA graph")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch and ORT (0 = default)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs (official: 10)")
    parser.add_argument("--calib-seconds", type=float, default=1.0,
                        help="grow the iteration count until a loop takes this long (official: 1)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the timed run (official: 6)")
    parser.add_argument("--iters", type=int, default=0,
                        help="time exactly this many iterations (skips the calibration)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the comparison of the backend's output with the eager model")
    return parser


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(runner, images, iterations):
    _sync(images.device)
    start = time.perf_counter()
    for _ in range(iterations):
        runner(images)
    _sync(images.device)
    return time.perf_counter() - start


def measure_speed(runner, images, warmup=10, calib_seconds=1.0, seconds=6.0, iters=0, start_iters=None):
    """The official protocol; returns ``(latency_ms, fps, iterations)``.

    The iteration count starts at ``start_iters`` (official: 100 on CUDA; 1 here on CPU, where
    one PIDNet forward can take a second) and doubles until a loop takes ``calib_seconds``; the
    timed run then has ``fps * seconds`` iterations. Unlike the official script, the FPS used to
    size the timed run is computed before the count is doubled.
    """
    for _ in range(warmup):
        runner(images)
    if iters <= 0:
        iterations = start_iters or (100 if images.device.type == "cuda" else 1)
        while True:
            elapsed = _timed(runner, images, iterations)
            if elapsed >= calib_seconds:
                break
            iterations *= 2
        iters = max(1, int(round(iterations / elapsed * seconds)))
    elapsed = _timed(runner, images, iters)
    latency_ms = elapsed / iters * 1000.0
    return latency_ms, 1000.0 / latency_ms, iters


def _resolution(values):
    if len(values) != 2 or min(values) <= 0:
        raise UsageError(f"--r expects two positive integers H W (got {' '.join(map(str, values))}): "
                          "e.g. --r 1024 2048")
    return int(values[0]), int(values[1])


def build_speed_model(args):
    """The model to time: ``--model`` file, or ``--a``/``--c`` (+ ``--p`` weights), in eval mode."""
    from configs import build

    if args.model:
        return build.load_body(args.model).eval()
    if args.c <= 0:
        raise UsageError(f"--c must be a positive number of classes (got {args.c})")
    return build.load_pidnet(args.a, args.c, args.p, augment=False,
                             module_hint="time such files with --model FILE instead of --p",
                             classes_fix="pass --c {n}", variant_fix="set --a to the checkpoint's variant").eval()


def build_onnx_runner(args, device):
    """The ``--onnx`` file as a runner; the options of a PyTorch model do not apply to it."""
    if args.model or args.p or args.backend != "auto" or args.cuda_graphs:
        raise UsageError("--onnx FILE is timed as it is: drop --model/--p/--backend/--cuda-graphs "
                          "(choose the runtime with --runtime onnxruntime|openvino)")
    from models.deploy import prepare_onnx_file

    return prepare_onnx_file(args.onnx, args.runtime or "onnxruntime", device, threads=args.threads or None,
                             precision=args.precision, output_index=args.output_index)


def main(args):
    from utils.device import resolve_device

    height, width = _resolution(args.r)
    if args.warmup < 0 or args.seconds <= 0 or args.calib_seconds <= 0 or args.iters < 0:
        raise UsageError("--warmup/--iters must be >= 0 and --seconds/--calib-seconds > 0")
    if args.threads < 0:
        raise UsageError(f"--threads must be >= 0 (got {args.threads})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    # As the official speed script: one fixed input size, so let cuDNN pick the fastest kernels.
    apply_cudnn(benchmark=True)
    images = torch.randn(1, 3, height, width, device=device)
    if args.onnx:
        model, runner = None, build_onnx_runner(args, device)
        name = os.path.basename(args.onnx)
    else:
        if args.runtime:
            raise UsageError(f"--runtime {args.runtime} is for --onnx FILE; a model takes --backend")
        model = build_speed_model(args)
        runner = prepare_inference(model, args.backend, device, images, output_index=args.output_index,
                                   precision=args.precision, channels_last=not args.no_channels_last,
                                   cuda_graphs=args.cuda_graphs, threads=args.threads or None)
        name = os.path.basename(args.model) if args.model else args.a
    print(f"model: {name} | input: 1x3x{height}x{width} | device: {device} | backend: {runner.backend} "
          f"({runner.details})")
    if model is not None and not args.no_check:
        with torch.inference_mode():
            reference = select_output(model.to(device)(images), args.output_index).float()
        diff = (runner(images).float() - reference).abs().max().item()
        print(f"max abs diff vs eager (unfolded) model: {diff:.2e} (largest logit {reference.abs().max().item():.3g})")

    print("=========Speed Testing=========")
    latency_ms, fps, iterations = measure_speed(runner, images, args.warmup, args.calib_seconds,
                                                args.seconds, args.iters)
    print(f"backend: {runner.backend} | iterations: {iterations} | latency: {latency_ms:.2f} ms | "
          f"FPS: {fps:.3f}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_main(main, get_args_parser().parse_args()))
