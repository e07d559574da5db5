#!/usr/bin/env bash
# The benchmarks that need a GPU, as one script for one lease of a GPU machine.
#
# Prepare on a machine with the project's environment (the GPU machine itself has torch and
# torch_geometric but no rdkit and no network):
#   python -c "from structnets.chem import write_qm9_npz; write_qm9_npz('.gpu/qm9_full.npz', compact=True)"
#   mkdir -p .gpu/qm9 .gpu/sst && cp "$STRUCTNETS_DATA_DIR/qm9/qm9_subset5000.npz" .gpu/qm9/
#   cp "$STRUCTNETS_DATA_DIR"/sst/{train,dev}.txt .gpu/sst/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl rdkit
# Then, on the GPU machine, from the repository root:
#   OUT=runs/gpu bash benchmarks/gpu_suite.sh
# SMOKE=1 runs every step for a few seconds on the CPU, to check the script itself.
# STEPS picks steps (default "throughput core sst qm9full qm9subset"); BUDGET the trainings' seconds;
# WORKERS the processes that featurise QM9 (1 on machines whose process pools break).
#
# Steps (each under its own time limit, so that one failure leaves the others' results):
#   1. MPNN training throughput against torch_geometric's NNConv + GRU + Set2Set;
#   2. the core's LSTM and Tree-LSTM speed table, and SST's Tree-LSTM seconds per epoch;
#   3. three QM9 trainings at once: all of QM9 with Gilmer et al.'s 110k/10k split, the
#      12 targets jointly and the gap alone; and the 5,000-molecule subset (4,000 training
#      molecules, the CPU benchmark's split) with Gilmer's complete graph.
set -u
OUT=${OUT:-runs/gpu}
SMOKE=${SMOKE:-0}
STEPS=${STEPS:-throughput core sst qm9full qm9subset}
has() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
PY=${PY:-python3}
if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu; BUDGET=20; LIMIT=120; FULL="--sample 600 --split-sizes 400 100 --skip-invalid"; SUB="--sample 300"; REPEATS=1
  THROUGHPUT="--molecules 128"; CORE="--repeats 1"
else
  DEVICE=cuda; BUDGET=${BUDGET:-250}; LIMIT=$((BUDGET + 80)); FULL="--split-sizes 110000 10000 --skip-invalid"; SUB=""; REPEATS=3
  THROUGHPUT=""; CORE="--repeats 3"
fi
{
  date -u
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, torch_geometric, rdkit; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'rdkit', rdkit.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

if has throughput; then
  echo "== 1. MPNN throughput"
  timeout 120 $PY benchmarks/mpnn_throughput.py --device $DEVICE --data-dir .gpu $THROUGHPUT \
    --out "$OUT/mpnn_throughput.json" || echo "throughput FAILED ($?)"
fi
if has core; then
  echo "== 2. core speed"
  timeout 120 $PY benchmarks/core_speed.py --device $DEVICE $CORE --out "$OUT/core_speed.json" || echo "core speed FAILED ($?)"
fi

if has sst; then
  echo "== 2b. SST Tree-LSTM epoch time"
  timeout 200 $PY benchmarks/sst_tree_lstm.py --device $DEVICE --data-dir .gpu --skip-training \
    --out "$OUT/sst_tree_lstm.json" || echo "sst FAILED ($?)"
fi

echo "== 3. QM9 trainings (concurrent)"
COMMON=(--device $DEVICE --max-seconds $BUDGET --seed 0 --no-progress --explicit-hydrogens --distances ${WORKERS:+--workers $WORKERS})
WIDE=(--hidden-size 128 --edge-hidden-size 128 --readout-hidden-size 256 --batch-size 128 --epochs 200 --patience 30)
RUNS=""
if has qm9full; then
  RUNS="full12 fullgap"
  timeout $LIMIT $PY -m structnets molprop train --dataset qm9 --qm9-npz .gpu/qm9_full.npz $FULL "${COMMON[@]}" "${WIDE[@]}" \
    --out "$WORK/full12" > "$WORK/full12.log" 2>&1 &
  timeout $LIMIT $PY -m structnets molprop train --dataset qm9 --qm9-npz .gpu/qm9_full.npz $FULL "${COMMON[@]}" "${WIDE[@]}" \
    --target-column gap --out "$WORK/fullgap" > "$WORK/fullgap.log" 2>&1 &
fi
if has qm9subset; then
  RUNS="$RUNS subgap"
  timeout $LIMIT $PY -m structnets molprop train --dataset qm9-subset --data-dir .gpu $SUB "${COMMON[@]}" --complete-graph \
    --target-column gap --epochs 2000 --patience 80 --out "$WORK/subgap" > "$WORK/subgap.log" 2>&1 &
fi
wait
for run in $RUNS; do
  echo "-- $run"; grep -v "^ *\^*$" "$WORK/$run.log" | tail -n 40
  cp "$WORK/$run/metrics.json" "$OUT/qm9_$run.json" 2>/dev/null || echo "$run wrote no metrics"
done
cp "$WORK/full12/parity.png" "$OUT/qm9_full12_parity.png" 2>/dev/null || true
echo "== done"; date -u
