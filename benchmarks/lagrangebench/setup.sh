#!/usr/bin/env bash
# Creates /work/main/.venv-lb: a separate environment with LagrangeBench 0.2.0, JAX-SPH 0.1.0
# and JAX 0.4.29 (CPU), used by the scripts in this folder to run LagrangeBench as a peer.
# Idempotent: re-running only re-checks the imports. Quiet; exits non-zero on any failure.
#
# Why --no-deps --ignore-requires-python for lagrangebench and jax-sph: both declare
# Requires-Python "<=3.11", which pip reads as "<=3.11.0", so it refuses them on 3.11.7
# although they run fine. Their own dependency lists also pin torch==2.3.1+cpu, which is
# not on PyPI (PyPI's torch==2.3.1 is the multi-GB CUDA build). So the two packages are
# installed without their dependencies, and the dependencies are installed here, pinned
# to the versions in LagrangeBench 0.2.0's poetry.lock, except torch, which is the CPU
# build that /work/main/.ci/setup installs (LagrangeBench uses torch only for its
# DataLoader).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${STRUCTNETS_TORCH:-torch==2.13.0}
VENV=.venv-lb

check() {
  "$VENV/bin/python" - <<'EOF'
import jax, jaxlib, haiku, jraph, optax, ott, e3nn_jax, jmp, omegaconf, h5py, wandb, torch
import lagrangebench, jax_sph
from jax_sph.solver import WCSPH
import matscipy.neighbours
from lagrangebench.evaluate.metrics import MetricsComputer
assert jax.__version__ == "0.4.29", jax.__version__
import numpy; assert numpy.__version__ == "1.26.4", numpy.__version__
assert lagrangebench.__version__ == "0.2.0"
assert "cpu" in torch.__version__ or not torch.cuda.is_available(), torch.__version__
EOF
}

if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)

# CPU torch first, so nothing below can pull a CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "$TORCH_SPEC" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -W ignore -c "import torch" 2>/dev/null || { echo "torch failed to install ($TORCH_SPEC)" >&2; exit 1; }
fi

# Dependencies of lagrangebench 0.2.0 and jax-sph 0.1.0, pinned as in LagrangeBench's
# poetry.lock (the jax-adjacent packages too: newer ml-dtypes/flax/equinox/lineax break
# with jax 0.4.29), except numpy: the lock's numpy 2.0.0 cannot load matscipy 1.0.0's
# binary (built for numpy 1.x; JAX-SPH's matscipy neighbour backend), so numpy 1.26.4. pyvista+vtk and wandb are imported at module level (jax_sph.io_state,
# lagrangebench.train.trainer), so they are needed although nothing here uses them.
"${PIP[@]}" \
  "$TORCH_SPEC" \
  "jax[cpu]==0.4.29" jaxlib==0.4.29 ml-dtypes==0.4.0 numpy==1.26.4 scipy==1.13.1 \
  dm-haiku==0.0.12 e3nn-jax==0.20.3 jraph==0.0.6.dev0 optax==0.1.7 chex==0.1.86 \
  ott-jax==0.4.6 jaxopt==0.8.3 lineax==0.0.5 equinox==0.11.4 jaxtyping==0.2.30 \
  flax==0.8.4 orbax-checkpoint==0.5.20 tensorstore==0.1.63 etils==1.5.2 opt-einsum==3.3.0 \
  toolz==0.12.1 jmp==0.0.4 omegaconf==2.3.0 h5py==3.11.0 PyYAML==6.0.1 cloudpickle==3.0.0 \
  matscipy==1.0.0 wget==3.2 wandb==0.17.2 pyvista==0.43.10 vtk==9.3.0 pandas==2.2.2 \
  absl-py==2.1.0 \
  2>&1 | grep -v "is ignored" || true

"${PIP[@]}" --no-deps --ignore-requires-python lagrangebench==0.2.0 jax-sph==0.1.0 \
  2>&1 | grep -v "is ignored" || true

check || { echo "LagrangeBench environment set-up failed ($VENV)" >&2; exit 1; }
