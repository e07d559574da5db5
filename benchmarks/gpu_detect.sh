#!/usr/bin/env bash
# Point-GNN on a GPU, as one script for one lease of a GPU machine (which has torch and
# torch_geometric but not shapely, and no network).
#
# Prepare here (the folder is git-ignored and travels with `carry`):
#   mkdir -p .gpu2/whl && cp -r "$STRUCTNETS_DATA_DIR/kitti_sample" .gpu2/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .gpu2/whl shapely==2.2.0
# Then there:  OUT=runs/gpu-detect bash benchmarks/gpu_detect.sh
#
# 1. time per real KITTI frame (graph construction and the paper-size network), camera view and full scan;
# 2. synthetic scenes generated once (3,000 training, 200 test), then two detectors trained side by side
#    under the same time budget (states of 64, the CPU run's size, and of 128), each evaluated with
#    box merging and with NMS.
# SMOKE=1 runs it all on the CPU in a few minutes, to check the script itself.
set -u
OUT=${OUT:-runs/gpu-detect}
BUDGET=${BUDGET:-240}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then DEVICE=cpu; TRAIN=16; TEST=4; BUDGET=10; FRAMES="--frames 1"; else DEVICE=cuda; TRAIN=${TRAIN:-3000}; TEST=200; FRAMES=""; fi
SIZES=${SIZES:-64 128}
mkdir -p "$OUT"
if [ "$SMOKE" = 1 ]; then
  export PYTHONPATH=$PWD
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu2/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PY:-python3}
mkdir -p /tmp/data && ln -sfn "$PWD/.gpu2/kitti_sample" /tmp/data/kitti_sample
cd benchmarks
timeout 150 $PY kitti_graph.py --data-dir /tmp/data --device $DEVICE $FRAMES --out "$OUT/kitti_graph_cuda.json" 2>&1 | tee "$OUT/kitti_graph.log"
rm -rf /tmp/detect
$PY -c "
from structnets.lidar.scenes import generate_scenes
generate_scenes('/tmp/detect/train', $TRAIN, seed=0, workers=16)
generate_scenes('/tmp/detect/test', $TEST, seed=1, workers=16)
"
for size in $SIZES; do
  timeout $((BUDGET + 200)) $PY detect_synthetic.py --work /tmp/detect --tag "s$size" --state-size "$size" \
    --batch-size 8 --epochs 40 --max-seconds "$BUDGET" --device $DEVICE --workers 8 \
    --out "$OUT/detect_synthetic_cuda_s$size.json" > "$OUT/detect_s$size.log" 2>&1 &
done
wait
for size in $SIZES; do cp "/tmp/detect/s$size/loss.png" "$OUT/loss_s$size.png"; cp "/tmp/detect/s$size/metrics.json" "$OUT/train_metrics_s$size.json"; cp "/tmp/detect/s$size-eval-merge/bev.png" "$OUT/bev_s$size.png"; done
grep -v "graphs:\|detect:" "$OUT"/detect_s*.log | tail -60
