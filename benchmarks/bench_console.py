"""How responsive the compression console is on a real model: load, preview, compress.

    python benchmarks/bench_console.py --model output/demo/netspresso/model_modelfx.pt --input-size 512 1024

Copies the body (and its head) into a temporary work directory, then times through the HTTP API
(FastAPI's TestClient, no network): loading the layer table, one preview (median of --repeat),
and the compress job (PR_L2 + SLAMP, --ratio), which also measures CPU latency before/after with
--runtime; with --eval-images N (a 19-class Cityscapes model) also the evaluate job, fp32 vs
compressed on N synthetic val scenes (datasets.synthetic) at --input-size. Needs
requirements-console.txt and httpx2.

    python benchmarks/bench_console.py --model output/demo/netspresso/model_modelfx.pt --input-size 128 256 \
        --eval-images 8
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from utils.console.app import create_app  # noqa: E402


def get_args_parser():
    parser = argparse.ArgumentParser(description="Time the console's actions on a real exported body")
    parser.add_argument("--model", required=True, help="exported body (model_modelfx.pt)")
    parser.add_argument("--input-size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runtime", default="eager")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-images", type=int, default=0,
                        help="also time the evaluate job on this many synthetic val scenes (19 classes)")
    return parser


def main(args):
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        shutil.copy(args.model, os.path.join(workdir, "model_modelfx.pt"))
        head = os.path.join(os.path.dirname(args.model), "model_headfx.pt")
        if os.path.isfile(head):
            shutil.copy(head, os.path.join(workdir, "model_headfx.pt"))
        app = create_app(workdir)
        with TestClient(app) as client:
            start = time.perf_counter()
            table = client.post("/api/model", json={"model": "model_modelfx.pt", "input_size": args.input_size})
            load_s = time.perf_counter() - start
            assert table.status_code == 200, table.text
            request = {"method": "PR_L2", "ratio": args.ratio, "runtime": args.runtime}
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                preview = client.post("/api/preview", json=request)
                times.append(time.perf_counter() - start)
                assert preview.status_code == 200, preview.text
            start = time.perf_counter()
            job = client.post("/api/jobs/compress", json=request).json()
            done = app.state.console.jobs.wait(job["id"], timeout=1800)
            job_s = time.perf_counter() - start
            assert done["state"] == "done", done
            evaluated = None
            if args.eval_images:
                from datasets.synthetic import generate

                height, width = args.input_size
                generate(os.path.join(workdir, "data"), num_train=0, num_val=args.eval_images, num_test=0,
                         size=(width, height), layouts=("cityscapes",))
                start = time.perf_counter()
                job = client.post("/api/jobs/evaluate", json={
                    "run": done["result"]["run"], "config": "builtin:configs/synthetic/pidnet_small_synthetic.yaml",
                    "dataset_root": "data", "runtime": args.runtime})
                assert job.status_code == 200, job.text
                evaluated = app.state.console.jobs.wait(job.json()["id"], timeout=1800)
                eval_s = time.perf_counter() - start
                assert evaluated["state"] == "done", evaluated
    result, preview = done["result"], preview.json()
    size = f"{args.input_size[0]}x{args.input_size[1]}"
    print(f"model {args.model}, {table.json()['totals']['layers']} layers, input {size}, "
          f"{args.threads} thread(s), runtime {args.runtime}")
    print(f"load + layer table: {load_s:.2f} s")
    print(f"preview (median of {args.repeat}): {statistics.median(times) * 1e3:.0f} ms; "
          f"MACs {preview['macs'][0] / 1e9:.3f}G -> {preview['macs'][1] / 1e9:.3f}G")
    print(f"compress job (prune + 2 latency runs + files): {job_s:.2f} s")
    print(f"params {result['before']['params'] / 1e6:.3f}M -> {result['after']['params'] / 1e6:.3f}M, "
          f"MACs {result['before']['macs'] / 1e9:.3f}G -> {result['after']['macs'] / 1e9:.3f}G, "
          f"latency {result['before']['latency_ms']:.1f} -> {result['after']['latency_ms']:.1f} ms "
          f"({result['before']['latency_ms'] / result['after']['latency_ms']:.2f}x)")
    if evaluated is not None:
        rows = ", ".join(f"{r['label']} mIoU {100 * r['miou']:.2f}% {r['latency_ms']:.1f} ms"
                         for r in evaluated["result"]["rows"])
        print(f"evaluate job ({args.eval_images} synthetic val scenes, 2 models + timing): {eval_s:.2f} s; {rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
