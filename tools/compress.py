"""Structured pruning or filter decomposition of an exported PIDNet body (NetsPresso's methods).

    # SLAMP recommendation, 60% of the prunable filters removed by L2 norm
    python tools/compress.py --model model_modelfx.pt --method PR_L2 --recommendation slamp \
        --ratio 0.6 --output compressed_pidnet.pt
    # geometric median, channel counts rounded to multiples of 8
    python tools/compress.py --model model_modelfx.pt --method PR_GM --ratio 0.5 --round-to 8 \
        --output compressed_gm.pt
    # manual per-layer ratios / explicit channel indices (JSON {"layer.name": value})
    python tools/compress.py --model model_modelfx.pt --method PR_L2 --recommendation manual \
        --layer-ratios ratios.json --output compressed_manual.pt
    python tools/compress.py --model model_modelfx.pt --method PR_ID --indices ids.json --output c.pt
    # preview the per-layer plan (kept channels, MACs) without pruning or writing anything
    python tools/compress.py --model model_modelfx.pt --method PR_L2 --ratio 0.6 --dry-run
    # nuclear norm of each filter's feature maps over 32 of your images (preprocessed as tools/custom.py)
    python tools/compress.py --model model_modelfx.pt --method PR_NN --images samples/ --ratio 0.6 \
        --output compressed_nn.pt
    # to a budget instead of a ratio: at most 40% of the MACs at --input-size, or 50% of the
    # latency measured here (onnxruntime by default, or --runtime eager)
    python tools/compress.py --model model_modelfx.pt --method PR_L2 --target-macs 0.4 --output c.pt
    python tools/compress.py --model model_modelfx.pt --method PR_L2 --target-latency 0.5 \
        --input-size 512 1024 --threads 1 --output c.pt
    # filter decomposition: Tucker-2 / SVD with VBMF ranks (--ratio in [-1, 1] calibrates them:
    # 0 = VBMF rank, 1 = full rank, -1 = smallest), CP with a fraction of the full rank or per-layer ranks
    python tools/compress.py --model model_modelfx.pt --method FD_TK --recommendation vbmf --ratio 0 \
        --output decomposed_tk.pt
    python tools/compress.py --model model_modelfx.pt --method FD_SVD --output decomposed_svd.pt
    python tools/compress.py --model model_modelfx.pt --method FD_CP --recommendation manual --ratio 0.25 \
        --output decomposed_cp.pt
    python tools/compress.py --model model_modelfx.pt --method FD_TK --recommendation manual \
        --layer-ranks ranks.json --output decomposed_manual.pt   # {"layer.name": [r_in, r_out]}
    # the same request on NetsPresso (pip install netspresso separately; NETSPRESSO_API_KEY set)
    python tools/compress.py --backend netspresso --model model_modelfx.pt --method PR_L2 \
        --recommendation slamp --ratio 0.6 --output compressed_pidnet.pt

Writes the compressed whole module (load it with ``--netspresso --model FILE --head
model_headfx.pt`` in tools/train.py / tools/eval.py, or compress it again) and a JSON
report (``<output>.json`` unless ``--report``): per-layer channels (pruning) or ranks
(decomposition), parameters, MACs at the export input size and the ratio achieved; with a
budget, the budget asked for and achieved (MACs counted, or latency measured with the
runtime, threads and times).
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import build  # noqa: E402
from models.checkpoint import load_module_file  # noqa: E402
from models.compression import cloud  # noqa: E402
from models.compression import plan as plan_lib  # noqa: E402
from models.compression import decompose  # noqa: E402
from models.compression.checks import check_budget  # noqa: E402
from models.compression.decompose_budget import decompose_to_budget  # noqa: E402
from models.compression.latency import RUNTIMES, check_runtime  # noqa: E402
from models.compression.pruner import check_method, check_recommendation, compress_model  # noqa: E402
from models.compression import recommend, vbmf  # noqa: E402
from models.compression.recommend import check_ratio, load_layer_indices, load_layer_ratios  # noqa: E402
from models.compression.report import summary  # noqa: E402
from models.netspresso import input_shapes  # noqa: E402
from utils.images import load_images  # noqa: E402
from utils.cli import run_main, setup_logging  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.errors import CompressionError  # noqa: E402
from utils.io import atomic_save, atomic_write_text, check_writable  # noqa: E402
from utils.layout import COMPRESSED_BODY, compression_report  # noqa: E402

logger = logging.getLogger("compress")


def get_args_parser():
    parser = argparse.ArgumentParser(description="Prune an exported PIDNet (NetsPresso-style compression)")
    parser.add_argument("--model", required=True, help="whole-module file, e.g. model_modelfx.pt (trusted files only)")
    parser.add_argument("--method", default="PR_L2", help="PR_L2 (L2 norm), PR_GM (geometric median), "
                                                          "PR_NN (feature-map nuclear norm, needs --images), "
                                                          "PR_ID (channel indices from --indices); FD_TK (Tucker-2), "
                                                          "FD_CP (CP), FD_SVD (SVD) filter decomposition")
    parser.add_argument("--recommendation", default=None,
                        help="pruning: slamp (needs --ratio or a budget) or manual (needs --layer-ratios), default "
                             "slamp, manual for PR_ID; decomposition: vbmf (FD_TK, FD_SVD; default) or manual "
                             "(--layer-ranks and/or --ratio; default for FD_CP)")
    parser.add_argument("--ratio", type=float, default=None,
                        help="pruning: fraction of prunable filters to remove, in (0, 1); vbmf: calibration in "
                             "[-1, 1] (0 = VBMF rank, default); manual decomposition: fraction of full rank kept")
    parser.add_argument("--target-macs", type=float, default=None,
                        help="instead of --ratio: keep at most this fraction of the MACs at --input-size, in (0, 1)")
    parser.add_argument("--target-latency", type=float, default=None,
                        help="instead of --ratio: keep at most this fraction of the latency at --input-size, "
                             "measured on this machine with --runtime, in (0, 1)")
    parser.add_argument("--runtime", default="onnxruntime",
                        help=f"what --target-latency is measured with: {', '.join(RUNTIMES)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the latency measurement (default: torch's setting)")
    parser.add_argument("--latency-trials", type=int, default=6,
                        help="at most this many pruned candidates are timed for --target-latency")
    parser.add_argument("--images", default=None,
                        help="folder of images for PR_NN (read and normalised as tools/custom.py does)")
    parser.add_argument("--num-images", type=int, default=32, help="how many images of --images PR_NN uses")
    parser.add_argument("--layer-ratios", default=None, help="JSON {\"conv name\": ratio} for manual compression")
    parser.add_argument("--layer-ranks", default=None,
                        help="JSON {\"layer name\": [r_in, r_out]} (FD_TK) or {\"layer name\": r} (FD_CP, FD_SVD)")
    parser.add_argument("--indices", default=None, help="JSON {\"conv name\": [channel indices]} for PR_ID")
    parser.add_argument("--round-to", type=int, default=1, help="kept channels become multiples of this (step size)")
    parser.add_argument("--input-size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"),
                        help="export input size (height width) for MACs and NetsPresso's input_shapes")
    parser.add_argument("--extra-size", type=int, nargs=2, action="append", default=None, metavar=("H", "W"),
                        help="more sizes at which MACs are reported (repeatable)")
    parser.add_argument("--trace-size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"),
                        help="dummy input used to trace channel dependencies")
    parser.add_argument("--output", default=COMPRESSED_BODY, help=f"compressed model file (default {COMPRESSED_BODY})")
    parser.add_argument("--report", default=None, help="JSON report path (default: <output>.json)")
    parser.add_argument("--backend", default="offline", help="offline (torch-pruning, here) or netspresso (cloud)")
    parser.add_argument("--device", default="cpu", help="device for tracing/pruning (auto, cpu, cuda)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the per-layer plan (kept channels, MACs at --input-size) and write nothing")
    return parser


# compress.py has no option for a state dict: it is turned into the body file by the export tool.
_EXPORT_HINT = ("compress.py takes the exported body: run tools/export_netspresso.py on the checkpoint "
                "and pass its model_modelfx.pt as --model")


def _report_path(args):
    return args.report or compression_report(args.output)


def _sizes(args):
    sizes = [tuple(args.input_size)] + [tuple(s) for s in (args.extra_size or [])]
    for h, w in sizes + [tuple(args.trace_size)]:
        if h < 32 or w < 32:
            raise CompressionError(f"input sizes must be at least 32x32, got {h}x{w}")
    return sizes


def _check_budget_args(args, method, recommendation):
    """Budget flags, checked before any model or image is read; True when a budget is given."""
    given = [flag for flag, value in (("--target-macs", args.target_macs), ("--target-latency", args.target_latency))
             if value is not None]
    if len(given) > 1:
        raise CompressionError("give one budget: --target-macs or --target-latency, not both")
    if not given:
        return False
    flag = given[0]
    check_budget(args.target_macs if flag == "--target-macs" else args.target_latency, flag)
    if method == "PR_ID":
        raise CompressionError(f"PR_ID removes the indices you list; {flag} needs PR_L2, PR_GM or PR_NN")
    if method == "FD_CP":
        raise CompressionError(f"{flag} chooses ranks by singular-value energy, which CP has not: use FD_TK or "
                               "FD_SVD, or FD_CP with --ratio / --layer-ranks")
    if recommendation not in (None, "slamp") or (method.startswith("FD_") and recommendation is not None):
        raise CompressionError(f"{flag} chooses the per-layer amounts itself: drop --recommendation {recommendation}")
    if args.ratio is not None:
        raise CompressionError(f"{flag} replaces --ratio: give one of them")
    if flag == "--target-latency":
        check_runtime(args.runtime)
        if args.threads is not None and args.threads < 1:
            raise CompressionError(f"--threads must be at least 1, got {args.threads}")
        if args.latency_trials < 1:
            raise CompressionError(f"--latency-trials must be at least 1, got {args.latency_trials}")
    return True


def _is_decomposition(method):
    return str(method).strip().upper() in decompose.METHODS


def run_decompose(args, sizes):
    method = decompose.check_method(args.method)
    for flag, value in (("--layer-ratios", args.layer_ratios), ("--indices", args.indices)):
        if value:
            raise CompressionError(f"{flag} is for pruning; {method} takes --layer-ranks FILE or --ratio R")
    if args.round_to != 1:
        raise CompressionError(f"--round-to applies to pruned channels; {method} keeps the ranks asked for: drop it")
    recommendation = args.recommendation and str(args.recommendation).strip().lower()
    if _check_budget_args(args, method, recommendation or None):
        if args.layer_ranks:
            raise CompressionError("a budget chooses the ranks itself: drop --layer-ranks")
        device = resolve_device(args.device)
        model = load_body(args.model)
        decomposed, report = decompose_to_budget(model, method, target_macs=args.target_macs,
                                                 target_latency=args.target_latency, runtime=args.runtime,
                                                 threads=args.threads, latency_trials=args.latency_trials,
                                                 report_sizes=sizes, device=device)
        report["model"] = os.path.abspath(args.model)
        report["backend"] = "offline"
        return decomposed, report
    recommendation = decompose.check_recommendation(method, args.recommendation)
    layer_ranks = recommend.load_layer_ranks(args.layer_ranks) if args.layer_ranks else None
    ratio = args.ratio
    if recommendation == "vbmf":
        ratio = vbmf.check_vbmf_ratio(0.0 if ratio is None else ratio)
        if layer_ranks:
            raise CompressionError("--layer-ranks sets ranks by hand: use it with --recommendation manual")
    elif ratio is not None:
        ratio = decompose.check_manual_ratio(ratio)
    elif not layer_ranks:
        raise CompressionError(f"manual decomposition needs ranks: pass --layer-ranks FILE or --ratio R "
                               f"(fraction of the full rank kept, in (0, 1])")
    device = resolve_device(args.device)
    model = load_body(args.model)
    decomposed, report = decompose.compress_model(model, method, recommendation, ratio=ratio, layer_ranks=layer_ranks,
                                                  report_sizes=sizes, device=device)
    report["model"] = os.path.abspath(args.model)
    report["backend"] = "offline"
    return decomposed, report


def run_offline(args, sizes):
    if _is_decomposition(args.method):
        return run_decompose(args, sizes)
    if args.layer_ranks:
        raise CompressionError(f"--layer-ranks is for decomposition (FD_TK, FD_CP, FD_SVD), not {args.method}: "
                               "use --layer-ratios for manual pruning")
    method = check_method(args.method)
    recommendation = check_recommendation(method, args.recommendation)
    budget = _check_budget_args(args, method, recommendation)
    if method == "PR_NN" and not args.images:
        raise CompressionError("PR_NN ranks filters by their feature maps on real images: pass --images DIR "
                               "(a folder of images like the ones the model will see)")
    layer_ratios = load_layer_ratios(args.layer_ratios) if args.layer_ratios else None
    layer_indices = load_layer_indices(args.indices) if args.indices else None
    if recommendation == "slamp" and not budget:
        check_ratio(args.ratio)
    elif args.ratio is not None:
        logger.warning("--ratio is ignored with --recommendation manual / PR_ID (per-layer values come from the JSON)")
    device = resolve_device(args.device)
    images = load_images(args.images, args.num_images) if method == "PR_NN" else None
    model = load_body(args.model)
    pruned, report = compress_model(model, method, recommendation, ratio=args.ratio, layer_ratios=layer_ratios,
                                    layer_indices=layer_indices, round_to=args.round_to,
                                    trace_size=tuple(args.trace_size), report_sizes=sizes, device=device,
                                    images=images, target_macs=args.target_macs,
                                    target_latency=args.target_latency, runtime=args.runtime, threads=args.threads,
                                    latency_trials=args.latency_trials)
    report["model"] = os.path.abspath(args.model)
    if images is not None:
        report["images_dir"] = os.path.abspath(args.images)
    report["backend"] = "offline"
    return pruned, report


def load_body(path):
    """The exported body to compress (a whole-module file), refused with one line if it is a head or weights."""
    return build.load_body(path, state_dict_hint=_EXPORT_HINT)


def print_dry_run(preview, size):
    """``--dry-run``'s table of the layers that change and its totals line, for a channel plan
    (:func:`models.compression.plan.preview`) or decomposition ranks (``preview_ranks``)."""
    first = f"{size[0]}x{size[1]}"
    ranks = "decomposed_layers" in preview
    columns = f"{'rank':>12s}" if ranks else f"{'in':>11s} {'out':>11s}"
    print(f"{'layer':40s} {columns} {'MACs@' + first:>22s}")
    for name, row in preview["layers"].items():
        if ranks and "ranks" in row:
            change = f"{str(row['ranks']):>12s}"
        elif not ranks and "in" in row and (row["in"][0] != row["in"][1] or row["out"][0] != row["out"][1]):
            change = f"{row['in'][0]:>4d} -> {row['in'][1]:<4d} {row['out'][0]:>4d} -> {row['out'][1]:<4d}"
        else:
            continue
        note = f"  ({row['reason']})" if ranks and "reason" in row else ""
        print(f"{name:40s} {change} {row['macs'][0] / 1e6:>9.2f}M -> {row['macs'][1] / 1e6:.2f}M{note}")
    before, after = preview["macs"]
    result = (f"{preview['decomposed_layers']} layers decomposed" if ranks
              else f"filters removed {preview['ratio_achieved']:.3f}")
    print(f"dry run: MACs@{first} {before / 1e9:.3f}G -> {after / 1e9:.3f}G, {result} (nothing written)")
    return 0


def dry_run(args, sizes):
    """Print what ``run_offline`` would do to each layer; compress and write nothing."""
    if _is_decomposition(args.method):
        layer_ranks = recommend.load_layer_ranks(args.layer_ranks) if args.layer_ranks else None
        method = decompose.check_method(args.method)
        model = load_body(args.model)
        ranks, vbmf_ranks = plan_lib.plan_ranks(model, method, args.recommendation, args.ratio, layer_ranks)
        return print_dry_run(plan_lib.preview_ranks(model, method, ranks, sizes[0], vbmf_ranks), sizes[0])
    if args.target_macs is not None or args.target_latency is not None:
        raise CompressionError("--dry-run previews a ratio or manual values; a budget is searched while "
                               "compressing: drop --dry-run")
    layer_ratios = load_layer_ratios(args.layer_ratios) if args.layer_ratios else None
    layer_indices = load_layer_indices(args.indices) if args.indices else None
    images = load_images(args.images, args.num_images) if args.images else None
    method, recommendation, _, _ = plan_lib.check_request(args.method, args.recommendation, args.ratio,
                                                          layer_ratios, layer_indices, args.round_to, images)
    model = load_body(args.model)
    analysis = plan_lib.analyse(model, tuple(args.trace_size), resolve_device(args.device),
                                images if method == "PR_NN" else None)
    channel_plan = plan_lib.plan(analysis, method, recommendation, args.ratio, layer_ratios, layer_indices,
                                 args.round_to)
    return print_dry_run(plan_lib.preview(analysis, channel_plan, sizes[0]), sizes[0])


def run_netspresso(args, sizes):
    if _is_decomposition(args.method):
        raise CompressionError(f"{args.method} runs offline here: drop --backend netspresso")
    method = check_method(args.method)
    if args.target_macs is not None or args.target_latency is not None:
        raise CompressionError("--target-macs / --target-latency run offline only: drop --backend netspresso")
    if method == "PR_NN":
        raise CompressionError("PR_NN on NetsPresso needs a dataset upload, which this tool does not do: "
                               "use --backend offline with --images DIR")
    recommendation = check_recommendation(method, args.recommendation)
    ratio = check_ratio(args.ratio)
    height, width = sizes[0]
    shapes = input_shapes([width, height])
    work_dir = os.path.splitext(args.output)[0] + "_netspresso"
    path = cloud.compress_in_cloud(args.model, work_dir, method, recommendation, ratio, shapes)
    original = load_body(args.model)
    compressed = load_module_file(path, what="compressed model")
    report = {"backend": "netspresso", "method": method, "recommendation": recommendation,
              "ratio_requested": ratio, "input_size": [height, width], "model": os.path.abspath(args.model),
              "service_output": os.path.abspath(path),
              "before": summary(original, sizes), "after": summary(compressed, sizes)}
    return compressed, report


def main(args):
    setup_logging()
    backend = str(args.backend).lower()
    runners = {"offline": run_offline, "netspresso": run_netspresso}
    if backend not in runners:
        raise CompressionError(f"unknown --backend '{args.backend}': use offline or netspresso")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise CompressionError("--output must differ from --model (the input would be overwritten)")
    # Both outputs are checked before the pruning runs, not after it.
    check_writable(args.output, "--output")
    check_writable(_report_path(args), "--report" if args.report else "--output")
    sizes = _sizes(args)
    if args.dry_run:
        if backend != "offline":
            raise CompressionError("--dry-run plans offline: drop --backend netspresso")
        return dry_run(args, sizes)
    pruned, report = runners[backend](args, sizes)
    report_path = _report_path(args)
    atomic_save(pruned, args.output)
    atomic_write_text(json.dumps(report, indent=2) + "\n", report_path)
    first = f"{sizes[0][0]}x{sizes[0][1]}"
    before, after = report["before"], report["after"]
    print(f"compressed model: {args.output}  report: {report_path}")
    print(f"params {before['params'] / 1e6:.3f}M -> {after['params'] / 1e6:.3f}M, "
          f"MACs@{first} {before['macs'][first] / 1e9:.2f}G -> {after['macs'][first] / 1e9:.2f}G"
          + (f", filters removed {report['ratio_achieved']:.3f}" if "ratio_achieved" in report else "")
          + (f", layers decomposed {report['decomposed_layers']}" if "decomposed_layers" in report else ""))
    if "budget" in report:
        budget = report["budget"]
        detail = (f" ({budget['latency_ms']['after']:.2f} ms vs {budget['latency_ms']['before']:.2f} ms, "
                  f"{budget['runtime']}, {budget['threads']} thread(s))" if budget["kind"] == "latency" else "")
        print(f"budget: {budget['kind']} {budget['asked']} asked, {budget['achieved']:.4f} achieved{detail}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
