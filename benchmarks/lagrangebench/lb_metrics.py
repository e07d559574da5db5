"""Score rollouts with LagrangeBench's own metric code (lagrangebench.evaluate.metrics).

Runs in /work/main/.venv-lb (see setup.sh):

  .venv-lb/bin/python benchmarks/lagrangebench/lb_metrics.py \\
      --rollouts ROLLOUTS.npz --metadata DATA/metadata.json --out metrics.json

Input npz layout (one pair of arrays per test trajectory K = 0, 1, 2, ...):
  predicted_K  float, [T, N, D]: the model's rollout frames only, i.e. the positions it
               predicted for frames input_seq_length .. input_seq_length+T-1 of test
               trajectory K (the initial history of input_seq_length frames, 6 in
               LagrangeBench, is NOT included);
  truth_K      float, [T, N, D]: the ground-truth positions of the same frames.
Other arrays (e.g. history_K, particle_type_K) are ignored. K must run 0..n-1 without gaps.
Positions are in the dataset's coordinates (the box of metadata["bounds"]).

What is computed, as LagrangeBench's inference does it (lagrangebench.evaluate.rollout.infer
with the defaults of eval.infer): a MetricsComputer with metrics ["mse", "e_kin",
"sinkhorn"], the displacement function of its case_builder (periodic when any entry of
metadata["periodic_boundary_conditions"] is true, else free), metrics_stride=1 for
e_kin and Sinkhorn (LagrangeBench's eval.infer.metrics_stride; --stride changes it), the
default horizons [1, 5, 10, 20, 50, 100] (mse5 = mean of the first 5 per-step MSEs, ...),
Sinkhorn divergence of ott-jax with LagrangeBench's settings (squared periodic distance as
cost, uniform weights, threshold 1e-4), e_kin = MSE between predicted and true kinetic
energy (velocities from consecutive frames / (dt*write_every), times dx^dim), and
averaged over trajectories as lagrangebench.evaluate.averaged_metrics does. As in
LagrangeBench's runs (dtype float64), 64-bit JAX is on and both rollouts are cast to
float64 first.

Output json: "mse1", "mse5", "mse10", "mse20", "mse50", "mse100" (where the rollout is
longer than the horizon), "mse" (full rollout), "sinkhorn", "e_kin" (means over
trajectories) and "std_*" of each, "lb_averaged_metrics" (LagrangeBench's own dict),
"per_trajectory" and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax_sph.jax_md import space  # noqa: E402
from lagrangebench.evaluate.metrics import MetricsComputer, averaged_metrics  # noqa: E402

LB_INFER_METRICS = ["mse", "e_kin", "sinkhorn"]  # lagrangebench.defaults: eval.infer.metrics
LB_INFER_STRIDE = 1  # lagrangebench.defaults: eval.infer.metrics_stride
LB_INPUT_SEQ_LENGTH = 6  # lagrangebench.defaults: model.input_seq_length (not used by the metrics)


def displacement_fn(metadata: dict):
    """The displacement of LagrangeBench's case_builder for this metadata."""
    bounds = np.array(metadata["bounds"])
    box = bounds[:, 1] - bounds[:, 0]
    if np.array(metadata["periodic_boundary_conditions"]).any():
        disp, _ = space.periodic(side=jnp.array(box))
    else:
        disp, _ = space.free()
    return disp


def metrics_computer(metadata: dict, stride: int = LB_INFER_STRIDE, metrics=None) -> MetricsComputer:
    return MetricsComputer(
        list(LB_INFER_METRICS if metrics is None else metrics),
        dist_fn=displacement_fn(metadata),
        metadata=metadata,
        input_seq_length=LB_INPUT_SEQ_LENGTH,
        stride=stride,
    )


def summarise(eval_metrics: dict) -> dict:
    """LagrangeBench's averaged_metrics plus plain names for the usual numbers."""
    lb = averaged_metrics(eval_metrics)
    out = {}
    for k, v in lb.items():
        name = k[len("val/") :]
        std = name.startswith("std")
        if std:
            name = name[3:]
        name = "mse" if name == "loss" else name
        out[("std_" if std else "") + name] = v
    per_traj = []
    for key in sorted(eval_metrics, key=lambda s: int(s.split("_")[-1])):
        m = eval_metrics[key]
        row = {}
        for k, v in m.items():
            if k == "e_kin":
                row["e_kin"] = float(v["mse"])
            else:
                row[k] = float(jnp.mean(v))
        per_traj.append(row)
    return {**dict(sorted(out.items())), "lb_averaged_metrics": lb, "per_trajectory": per_traj}


def score(predicted: list, truth: list, metadata: dict, stride: int = LB_INFER_STRIDE, metrics=None) -> dict:
    """Metrics of rollouts [T, N, D] (rollout frames only) against the truth, LagrangeBench's way."""
    mc = metrics_computer(metadata, stride, metrics)
    eval_metrics = {}
    for k, (p, t) in enumerate(zip(predicted, truth)):
        p = jnp.asarray(np.asarray(p), dtype=jnp.float64)
        t = jnp.asarray(np.asarray(t), dtype=jnp.float64)
        if p.shape != t.shape or p.ndim != 3:
            raise ValueError(f"trajectory {k}: predicted {p.shape} and truth {t.shape} must both be [T, N, D]")
        m = mc(p, t)
        eval_metrics[f"rollout_{k}"] = jax.tree_util.tree_map(np.asarray, m)
    return summarise(eval_metrics)


def read_rollouts(path: str):
    z = np.load(path)
    ks = sorted(int(m.group(1)) for n in z.files if (m := re.fullmatch(r"predicted_(\d+)", n)))
    if not ks or ks != list(range(len(ks))):
        raise ValueError(f"{path}: expected predicted_0..predicted_{{n-1}}, found {sorted(z.files)}")
    missing = [k for k in ks if f"truth_{k}" not in z.files]
    if missing:
        raise ValueError(f"{path}: no truth_K for K in {missing}")
    return [z[f"predicted_{k}"] for k in ks], [z[f"truth_{k}"] for k in ks]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rollouts", required=True, help="npz with predicted_K and truth_K, [T, N, D] each")
    p.add_argument("--metadata", required=True, help="the dataset's metadata.json (bounds, periodicity, dt, dx, ...)")
    p.add_argument("--out", required=True, help="where to write the metrics json")
    p.add_argument(
        "--stride",
        type=int,
        default=LB_INFER_STRIDE,
        help="frame stride of e_kin and Sinkhorn (LagrangeBench inference: 1; its in-training validation: 10)",
    )
    p.add_argument("--metrics", default=",".join(LB_INFER_METRICS), help="subset of mse,e_kin,sinkhorn")
    args = p.parse_args(argv)

    with open(args.metadata) as f:
        metadata = json.load(f)
    predicted, truth = read_rollouts(args.rollouts)
    t0 = time.time()
    result = score(predicted, truth, metadata, args.stride, args.metrics.split(","))
    result["settings"] = {
        "rollouts": os.path.abspath(args.rollouts),
        "metadata": os.path.abspath(args.metadata),
        "n_trajectories": len(predicted),
        "rollout_shape": list(np.shape(predicted[0])),
        "metrics": args.metrics.split(","),
        "metrics_stride": args.stride,
        "periodic": bool(np.array(metadata["periodic_boundary_conditions"]).any()),
        "seconds": round(time.time() - t0, 2),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_trajectory", "lb_averaged_metrics")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
