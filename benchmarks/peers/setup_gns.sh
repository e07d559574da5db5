#!/usr/bin/env bash
# Prepares geoelements/gns (PyTorch GNS, Kumar & Vantassel; github.com/geoelements/gns) as a
# peer, run from /work/main/.venv. Idempotent; quiet; exits non-zero on any failure.
#
#   benchmarks/peers/setup_gns.sh [SOURCE]
#
# Where the peer's source comes from (nothing of it is committed here):
#   GNS_SRC (default /work/peers/gns) is the checkout the scripts run. If it has no
#   gns/train.py yet, SOURCE (argument, or env GNS_MIRROR) is used to create it:
#     * a bare git directory (e.g. a mirror of github.com/geoelements/gns): its HEAD (or
#       GNS_REF) is exported with `git archive` (only gns/ and the top-level text files:
#       the mirror may lack the large images under docs/);
#     * or an existing source tree, copied.
#   This script itself downloads nothing except absl-py from PyPI.
# Checked against commit 3b8fb5c ("fix message passing (#94)") of geoelements/gns.
#
# Dependencies: their requirements.txt lists absl-py, dm-tree, matplotlib, pyevtk,
# torch_geometric, torch_scatter, torch_sparse, torch-cluster, tqdm, ... ; gns/train.py and
# what it imports need only torch, numpy, torch_geometric, tqdm and absl-py (dm-tree,
# pyevtk and matplotlib are used by render_rollout.py only; torch_scatter/torch_sparse are
# optional for torch_geometric). torch, torch_geometric and tqdm are in .venv already;
# absl-py (pure Python) is installed here if missing. torch_cluster is not installed: the
# neighbour search is structnets' (shim/torch_cluster and gns_launch.py; see README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
GNS_SRC=${GNS_SRC:-/work/peers/gns}
SOURCE=${1:-${GNS_MIRROR:-}}
REF=${GNS_REF:-HEAD}

if [ ! -f "$GNS_SRC/gns/train.py" ]; then
  [ -n "$SOURCE" ] || { echo "no checkout at $GNS_SRC; pass a bare git dir or source tree of geoelements/gns as SOURCE" >&2; exit 1; }
  mkdir -p "$GNS_SRC"
  if git --git-dir="$SOURCE" rev-parse --verify -q "$REF^{commit}" >/dev/null 2>&1; then
    COMMIT=$(git --git-dir="$SOURCE" rev-parse "$REF^{commit}")
    PATHS=$(git --git-dir="$SOURCE" ls-tree --name-only "$COMMIT" | grep -E '^(gns|README.md|license.md|requirements.txt|run.sh)$')
    # shellcheck disable=SC2086
    # (a mirror that lacks the large docs/ blobs makes git archive print "invalid object"
    # for them even with these paths; harmless, so that message is filtered out)
    git --git-dir="$SOURCE" archive "$COMMIT" $PATHS 2> >(grep -v "invalid object" >&2 || true) | tar -x -C "$GNS_SRC"
    printf '{"source": "%s", "commit": "%s"}\n' "$SOURCE" "$COMMIT" > "$GNS_SRC/SOURCE.json"
  elif [ -f "$SOURCE/gns/train.py" ]; then
    cp -r "$SOURCE/." "$GNS_SRC/"
    printf '{"source": "%s"}\n' "$SOURCE" > "$GNS_SRC/SOURCE.json"
  else
    echo "$SOURCE is neither a git directory with $REF nor a geoelements/gns source tree" >&2; exit 1
  fi
fi

if ! "$PY" -c "import absl.flags" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check absl-py
fi

# Check: their modules import with structnets' radius_graph in place, and one tiny
# forward pass of their LearnedSimulator works.
GNS_SRC="$GNS_SRC" "$PY" - <<'EOF'
import os, sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, "benchmarks/peers/shim"); sys.path.insert(0, ".")
import torch, torch_geometric.nn, torch_geometric.nn.pool, structnets
torch_geometric.nn.radius_graph = torch_geometric.nn.pool.radius_graph = structnets.radius_graph
sys.path.insert(0, os.environ["GNS_SRC"])
import absl.flags, tqdm, torch_cluster
from gns import learned_simulator, data_loader, noise_utils, reading_utils  # noqa: F401
assert learned_simulator.radius_graph is structnets.radius_graph
import numpy as np
stats = {k: {"mean": torch.zeros(2), "std": torch.ones(2)} for k in ("acceleration", "velocity")}
sim = learned_simulator.LearnedSimulator(2, 30, 3, 128, 10, 2, 128, 0.1, np.array([[0., 1.], [0., 1.]]), stats, 9, 16)
pos = torch.rand(20, 6, 2) * 0.1 + 0.5
out = sim.predict_positions(pos, nparticles_per_example=[20], particle_types=torch.full((20,), 5))
assert out.shape == (20, 2) and torch.isfinite(out).all()
EOF
