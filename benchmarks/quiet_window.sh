#!/usr/bin/env bash
# The speed figures of issue #11 that a shared machine cannot give, in one go on a quiet one
# (nothing else running; about 5 minutes on 2 cores, under 10 in all):
#   1. PIDNet-S eager fp32 vs int8 QDQ (onnxruntime), and the pruned body (PR_L2 + SLAMP 0.6,
#      fine-tuned) eager and int8, ratios to the unpruned eager model, on 1 and 2 threads:
#      one process, all models alternating call by call (benchmarks/bench_quantize.py);
#   2. calibration + int8 quantization of PIDNet-S on 100 images at 512x1024 (wall and CPU time);
#   3. PIDNet-M and PIDNet-L eager vs int8, 1 thread (reported, no target).
# Everything is at batch 1, 1x3x512x1024; the figures go to OUT (markdown), with the machine
# load at the start and the end of each part so a disturbed run shows.
#
# Usage:
#   benchmarks/quiet_window.sh OUT.md PRUNED_BODY
#   benchmarks/quiet_window.sh /tmp/quiet.md \
#       /work/artifacts/long/finetune/cityscapes/pidnet_small_synthetic/best_model_model.pt
#   RUNS=2 ML_RUNS=1 SIZE="64 128" CALIB_IMAGES=2 benchmarks/quiet_window.sh /tmp/smoke.md P.pt  # smoke
#
# PRUNED_BODY is a compressed NetsPresso body (tools/compress.py, then tools/train.py --netspresso
# -> best_model_model.pt). Environment: PYTHON (default python), RUNS (timed rounds for S,
# default 5), ML_RUNS (for M and L, default 3), SIZE ("H W", default "512 1024"), CALIB_IMAGES
# (default 100).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: benchmarks/quiet_window.sh OUT.md PRUNED_BODY (a tools/compress.py body, fine-tuned)" >&2
    exit 2
fi
out=$1
pruned=$2
if [ ! -f "$pruned" ]; then
    echo "error: pruned body '$pruned' not found: give the fine-tuned best_model_model.pt of tools/train.py --netspresso" >&2
    exit 2
fi
py=${PYTHON:-python}
runs=${RUNS:-5}
ml_runs=${ML_RUNS:-3}
calib_images=${CALIB_IMAGES:-100}
read -r height width <<< "${SIZE:-512 1024}"
pruned=$(cd "$(dirname "$pruned")" && pwd)/$(basename "$pruned")
out_dir=$(cd "$(dirname "$out")" && pwd)
out=$out_dir/$(basename "$out")
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
start=$(date +%s)
{
    echo "# quiet_window.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average at start $(load)"
    echo "pruned body: $pruned"
} > "$tmp/head.md"

echo "1+2/3: PIDNet-S + pruned, 1 and 2 threads, calibration on $calib_images images (load $(load))" >&2
"$py" benchmarks/bench_quantize.py --variants s --threads 1 2 --runs "$runs" --size "$height" "$width" \
    --pruned "$pruned" --calib-images "$calib_images" --output "$tmp/s.md"
echo "3/3: PIDNet-M and PIDNet-L, 1 thread (load $(load))" >&2
"$py" benchmarks/bench_quantize.py --variants m l --threads 1 --runs "$ml_runs" --size "$height" "$width" \
    --output "$tmp/ml.md"

{
    cat "$tmp/head.md"
    echo
    echo "## PIDNet-S and pruned PIDNet-S (PR_L2 + SLAMP 0.6, fine-tuned), $runs rounds"
    echo
    cat "$tmp/s.md"
    echo
    echo "## PIDNet-M and PIDNet-L, $ml_runs rounds"
    echo
    cat "$tmp/ml.md"
    echo
    echo "total $(( $(date +%s) - start )) s wall, load average at the end $(load)"
} > "$tmp/all.md"
mv "$tmp/all.md" "$out"
echo "figures written to $out" >&2
