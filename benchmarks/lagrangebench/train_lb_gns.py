"""Train LagrangeBench's GNS on a LagrangeBench dataset for a wall-time budget, then score it.

Runs in /work/main/.venv-lb (see setup.sh):

  .venv-lb/bin/python benchmarks/lagrangebench/train_lb_gns.py \\
      --data /work/lbdata/tgv2d --out runs/lb_gns_tgv2d --max-seconds 1800

Configuration: LagrangeBench's configs/tgv_2d/gns.yaml on top of its base.yaml and its
defaults (lagrangebench.defaults), as its main.py merges them: GNS-10-128 (10 message
passing steps, latent 128, 2-layer MLPs), input_seq_length 6, noise_std 3e-4, pushforward
steps [-1, 20000, 300000, 400000] / unrolls [0, 1, 2, 3] / probs [18, 2, 1, 1], AdamW
(weight decay 1e-8) with lr 5e-4 decaying exponentially (rate 0.1 per 1e5 steps) to 1e-6,
batch size 1, acceleration loss, float64 preprocessing. --set KEY=VALUE overrides any
of it (OmegaConf dotlist, e.g. --set train.noise_std=1e-3).

Training goes through LagrangeBench's own code: lagrangebench.runner's setup_data and
setup_model, case_builder, and Trainer.train. LagrangeBench trains to a step count; here
Trainer.train is stopped at the wall-time deadline (--max-seconds, counted from the call
to Trainer.train, so JIT compilation and any in-training validation are inside the
budget). The parameters used afterwards are the LAST ones (those after the last finished
update), not LagrangeBench's "best" checkpoint: a best checkpoint only exists after a
validation (every logging.eval_steps=10000 steps), which a short CPU budget may never
reach. They are obtained by wrapping lagrangebench.train.trainer._update (which the
training loop looks up when it starts) so that it keeps a reference to its outputs, and
the deadline is raised from a wrapper around the training DataLoader. The last parameters
are saved in LagrangeBench's checkpoint format to OUT/ckp/last.

Then the test split is rolled out with lagrangebench.evaluate.infer (its own rollout code,
batch eval.infer.batch_size=2), over the full trajectory length (n_rollout_steps =
sequence length - input_seq_length), and scored with LagrangeBench's inference metrics
(mse with horizons 1/5/10/20/50/100 and full, e_kin, Sinkhorn; stride 1) computed by its
MetricsComputer on the rollouts (lb_metrics.score: the same code lb_metrics.py runs on
other models' rollouts; infer's own full-rollout MSE is kept as a cross-check).
OUT/metrics.json gets the training steps, wall seconds, steps/s, rollout steps/s and those
metrics; OUT/rollouts.npz the rollouts as lb_metrics.py reads them (predicted_K, truth_K:
[T, N, D], rollout frames only; history_K: the input_seq_length initial frames;
particle_type_K).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import sys
import time
import warnings
from functools import partial

os.environ.setdefault("JAX_PLATFORMS", "cpu")
warnings.filterwarnings("ignore", category=FutureWarning, module="jax")  # int64->int32 scatter in jax-md

import cloudpickle  # noqa: E402
import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jmp  # noqa: E402
import lagrangebench.train.trainer as lb_trainer  # noqa: E402
import numpy as np  # noqa: E402
from lagrangebench import Trainer, infer  # noqa: E402
from lagrangebench.case_setup import case_builder  # noqa: E402
from lagrangebench.data import H5Dataset  # noqa: E402
from lagrangebench.defaults import check_cfg, defaults  # noqa: E402
from lagrangebench.runner import setup_data, setup_model  # noqa: E402
from lagrangebench.utils import save_pytree  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lb_metrics  # noqa: E402

# configs/tgv_2d/base.yaml and configs/tgv_2d/gns.yaml of tumaer/lagrangebench v0.2.0
# (not shipped in the wheel); main.py merges: defaults <- base.yaml <- gns.yaml <- CLI.
TGV2D_BASE_YAML = """
dataset:
  src: datasets/2D_TGV_2500_10kevery100
logging:
  wandb_project: tgv_2d
"""
TGV2D_GNS_YAML = """
model:
  name: gns
  num_mp_steps: 10
  latent_dim: 128
train:
  optimizer:
    lr_start: 5.e-4
"""


class Deadline(Exception):
    pass


class DeadlineLoader:
    """The training DataLoader, raising Deadline from its iterator once time is up."""

    def __init__(self, loader):
        self._loader = loader
        self.deadline = None  # time.monotonic() value; None: not armed

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __iter__(self):
        for batch in self._loader:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise Deadline()
            yield batch


class UpdateRecorder:
    """Wraps lagrangebench.train.trainer._update: counts updates, keeps the latest outputs."""

    def __init__(self, update):
        self._update = update
        self.n = 0
        self.latest = None
        self.times = []

    def __call__(self, *args, **kwargs):
        out = self._update(*args, **kwargs)
        self.latest = out  # (loss, params, state, opt_state)
        self.n += 1
        self.times.append(time.monotonic())
        return out


def rollout_speed(model, case, params, state, history, truth, particle_type, n_steps: int) -> dict:
    """Steady-state rollout speed of one trajectory with LagrangeBench's own per-step
    functions (case.preprocess_eval and evaluate.rollout._forward_eval, vmapped over a batch
    of one as infer does), after two compiled warm-up steps."""
    import jax.numpy as jnp
    from lagrangebench.evaluate.rollout import _forward_eval
    from lagrangebench.utils import broadcast_from_batch, broadcast_to_batch

    model_apply = jax.jit(model.apply)
    fwd = jax.vmap(
        partial(_forward_eval, model_apply=model_apply, case_integrate=case.integrate), in_axes=(None, None, 0, 0, 0)
    )
    prep = jax.vmap(case.preprocess_eval, in_axes=(0, 0))
    cur = jnp.asarray(history.transpose(1, 0, 2))[None]  # (1, N, isl, D)
    ptype = jnp.asarray(particle_type)[None]
    target = jnp.asarray(truth)  # (T, N, D)
    _, nbrs = case.allocate_eval(broadcast_from_batch((cur, ptype), 0))
    nbrs = broadcast_to_batch(nbrs, 1)
    times, step = [], 0
    while step < n_steps + 2:
        features, nbrs_new = prep((cur, ptype), nbrs)
        if nbrs_new.did_buffer_overflow.sum() > 0:
            _, nb = case.allocate_eval(broadcast_from_batch((cur, ptype), 0))
            nbrs = broadcast_to_batch(nb, 1)
            times = []  # re-compiles: restart the clock
            continue
        nbrs = nbrs_new
        cur, _ = fwd(params, state, (features, ptype), cur, target[min(step, len(target) - 1)][None])
        cur.block_until_ready()
        times.append(time.monotonic())
        step += 1
    n = len(times) - 2
    return {"steps": n, "steps_per_second": round(n / (times[-1] - times[1]), 3) if n > 0 else None}


def build_cfg(data: str, overrides: list[str], out: str):
    cfg = OmegaConf.merge(defaults, OmegaConf.create(TGV2D_BASE_YAML), OmegaConf.create(TGV2D_GNS_YAML))
    cfg.dataset.src = os.path.abspath(data)
    cfg.logging.ckp_dir = os.path.join(os.path.abspath(out), "ckp")
    cfg.logging.run_name = "gns"
    cfg.mode = "all"
    cfg.eval.test = True
    cli = OmegaConf.from_dotlist(overrides)
    cfg = OmegaConf.merge(cfg, cli)
    if cfg.dataset.name is None:  # LagrangeBench infers it from the folder name, with a warning
        cfg.dataset.name = os.path.basename(os.path.normpath(cfg.dataset.src))
    return cfg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data", required=True, help="LagrangeBench dataset folder (train.h5, valid.h5, test.h5, metadata.json)"
    )
    p.add_argument("--out", required=True, help="output folder (metrics.json, rollouts.npz, ckp/, rollout/)")
    p.add_argument("--max-seconds", type=float, required=True, help="training wall-time budget in seconds")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="also stop after this many steps (default: LagrangeBench's train.step_max, 500000)",
    )
    p.add_argument("--seed", type=int, default=0, help="LagrangeBench's seed (model init, noise, data order)")
    p.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="DataLoader workers (LagrangeBench's default train.num_workers is 4; 0 here: 2 CPU cores, and "
        "forking a process that runs JAX is unsafe)",
    )
    p.add_argument("--n-test", type=int, default=-1, help="test trajectories to roll out (-1: all)")
    p.add_argument(
        "--n-rollout-steps",
        type=int,
        default=None,
        help="rollout length (default: the full trajectory, sequence length - input_seq_length)",
    )
    p.add_argument(
        "--metrics-stride",
        type=int,
        default=lb_metrics.LB_INFER_STRIDE,
        help="frame stride of e_kin and Sinkhorn (LagrangeBench inference: 1; its in-training validation: "
        "10). Sinkhorn takes seconds per frame on this CPU",
    )
    p.add_argument("--speed-steps", type=int, default=20, help="rollout steps timed for the steady rollout speed")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a LagrangeBench config entry (OmegaConf dotlist), repeatable",
    )
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    cfg = build_cfg(args.data, args.overrides, args.out)
    cfg.seed = args.seed
    cfg.train.num_workers = args.num_workers
    if args.max_steps is not None:
        cfg.train.step_max = args.max_steps
    cfg.eval.train.n_trajs = -1  # validate on every valid sample (default 50 > our valid split)
    check_cfg(cfg)
    if cfg.dtype == "float64":
        jax.config.update("jax_enable_x64", True)

    # --- LagrangeBench's runner.train_or_infer, up to the trainer -------------------------
    data_train, data_valid, _ = setup_data(cfg)
    metadata = data_train.metadata
    bounds = np.array(metadata["bounds"])
    box = bounds[:, 1] - bounds[:, 0]
    case = case_builder(
        box=box,
        metadata=metadata,
        input_seq_length=cfg.model.input_seq_length,
        cfg_neighbors=cfg.neighbors,
        cfg_model=cfg.model,
        noise_std=cfg.train.noise_std,
        external_force_fn=data_train.external_force_fn,
        dtype=cfg.dtype,
    )
    _, particle_type = data_train[0]
    model, MODEL = setup_model(
        cfg,
        metadata=metadata,
        homogeneous_particles=particle_type.max() == particle_type.min(),
        has_external_force=data_train.external_force_fn is not None,
        normalization_stats=case.normalization_stats,
    )
    model = hk.without_apply_rng(hk.transform_with_state(model))
    hk.mixed_precision.set_policy(MODEL, jmp.get_policy("params=float32,compute=float32,output=float32"))

    print(OmegaConf.to_yaml(cfg), flush=True)
    store_ckp = os.path.join(cfg.logging.ckp_dir, cfg.logging.run_name)
    os.makedirs(os.path.join(store_ckp, "best"), exist_ok=True)
    OmegaConf.save(config=cfg, f=os.path.join(store_ckp, "config.yaml"))

    trainer = Trainer(
        model,
        case,
        data_train,
        data_valid,
        cfg.train,
        cfg.eval,
        cfg.logging,
        input_seq_length=cfg.model.input_seq_length,
        seed=cfg.seed,
    )
    loader = DeadlineLoader(trainer.loader_train)
    trainer.loader_train = loader
    recorder = UpdateRecorder(lb_trainer._update)
    lb_trainer._update = recorder

    print(f"training LagrangeBench GNS for {args.max_seconds:.0f} s (or {cfg.train.step_max} steps)", flush=True)
    t0 = time.monotonic()
    loader.deadline = t0 + args.max_seconds
    stopped_by = "step_max"
    try:
        trainer.train(step_max=cfg.train.step_max, store_ckp=store_ckp, wandb_config=OmegaConf.to_container(cfg))
    except Deadline:
        stopped_by = "deadline"
    finally:
        lb_trainer._update = recorder._update
    if recorder.latest is None:
        raise SystemExit("no training step finished within the budget")
    loss, params, state, opt_state = recorder.latest
    jax.block_until_ready(params)
    train_seconds = time.monotonic() - t0
    steps = recorder.n
    first_step_s = recorder.times[0] - t0
    k = min(10, steps - 1)
    steady = (steps - 1 - k) / (recorder.times[-1] - recorder.times[k]) if steps - 1 - k > 0 else None
    print(
        f"stopped by {stopped_by} after {steps} steps, {train_seconds:.1f} s "
        f"({steps / train_seconds:.2f} steps/s overall, {steady or float('nan'):.2f} steps/s after step {k}); "
        f"last loss {float(loss):.5f}",
        flush=True,
    )

    # the last parameters, in LagrangeBench's checkpoint format (load_haiku reads it)
    last_dir = os.path.join(store_ckp, "last")
    os.makedirs(last_dir, exist_ok=True)
    save_pytree(last_dir, params, "params")
    save_pytree(last_dir, state, "state")
    with open(os.path.join(last_dir, "opt_state.pkl"), "wb") as f:
        cloudpickle.dump(opt_state, f)
    with open(os.path.join(last_dir, "metadata_ckp.json"), "w") as f:
        json.dump({"step": steps, "loss": None}, f)

    # --- test rollouts with LagrangeBench's infer --------------------------------------
    isl = cfg.model.input_seq_length
    n_rollout = args.n_rollout_steps or (metadata["sequence_length_test"] - isl)
    data_test = H5Dataset(
        "test",
        dataset_path=cfg.dataset.src,
        name=cfg.dataset.name,
        input_seq_length=isl,
        extra_seq_length=n_rollout,
        nl_backend=cfg.neighbors.backend,
    )
    rollout_dir = os.path.join(os.path.abspath(args.out), "rollout")
    os.makedirs(rollout_dir, exist_ok=True)
    for f in glob.glob(os.path.join(rollout_dir, "*.pkl")):
        os.remove(f)
    n_traj = data_test.num_samples if args.n_test == -1 else min(args.n_test, data_test.num_samples)
    # LagrangeBench's infer (its rollout code) with only the cheap mse metric, writing the
    # rollouts as pkl; e_kin and Sinkhorn are computed below from those rollouts with
    # LagrangeBench's MetricsComputer (lb_metrics.score), so they need no second rollout.
    cfg_infer = OmegaConf.merge(cfg.eval.infer, {"n_trajs": n_traj, "out_type": "pkl", "metrics": ["mse"]})
    t = time.monotonic()
    eval_mse = infer(
        model,
        case,
        data_test,
        params=params,
        state=state,
        cfg_eval_infer=cfg_infer,
        rollout_dir=rollout_dir,
        n_rollout_steps=n_rollout,
        seed=cfg.seed,
    )
    infer_s = time.monotonic() - t

    arrays = {}
    for kk in range(n_traj):
        with open(os.path.join(rollout_dir, f"rollout_{kk}.pkl"), "rb") as f:
            r = pickle.load(f)
        pred = np.asarray(r["predicted_rollout"])  # (isl + T, N, D), history included
        truth = np.asarray(r["ground_truth_rollout"])  # (isl + T, N, D)
        arrays[f"predicted_{kk}"] = pred[isl : isl + n_rollout]
        arrays[f"truth_{kk}"] = truth[isl : isl + n_rollout]
        arrays[f"history_{kk}"] = truth[:isl]
        arrays[f"particle_type_{kk}"] = np.asarray(r["particle_type"])
    np.savez_compressed(os.path.join(args.out, "rollouts.npz"), **arrays)

    steady_rollout = rollout_speed(
        model,
        case,
        params,
        state,
        arrays["history_0"],
        arrays["truth_0"],
        arrays["particle_type_0"],
        n_steps=min(args.speed_steps, n_rollout),
    )

    t = time.monotonic()
    summary = lb_metrics.score(
        [arrays[f"predicted_{kk}"] for kk in range(n_traj)],
        [arrays[f"truth_{kk}"] for kk in range(n_traj)],
        metadata,
        stride=args.metrics_stride,
    )
    metrics_s = time.monotonic() - t
    # cross-check: the per-step MSE of infer and of lb_metrics on the saved rollouts
    mse_infer = np.array([float(np.mean(eval_mse[f"rollout_{kk}"]["mse"])) for kk in range(n_traj)])
    mse_score = np.array([row["mse"] for row in summary["per_trajectory"]])
    mse_rel = float(np.max(np.abs(mse_infer - mse_score) / np.maximum(np.abs(mse_infer), 1e-30)))
    print(f"full-rollout MSE, infer vs lb_metrics on rollouts.npz: max relative difference {mse_rel:.2e}")

    n_particles = int(arrays["predicted_0"].shape[1])
    result = {
        "model": "LagrangeBench 0.2.0 GNS (configs/tgv_2d/gns.yaml)",
        "data": os.path.abspath(args.data),
        "train": {
            "steps": steps,
            "wall_seconds": round(train_seconds, 2),
            "steps_per_second": round(steps / train_seconds, 3),
            "steps_per_second_after_warmup": round(steady, 3) if steady else None,
            "first_step_seconds": round(first_step_s, 2),
            "stopped_by": stopped_by,
            "max_seconds": args.max_seconds,
            "last_loss": float(loss),
            "checkpoint": "last (parameters after the last update before the deadline)",
            "batch_size": int(loader.batch_size),
            "train_samples": len(data_train),
        },
        "rollout": {
            "n_trajectories": n_traj,
            "n_rollout_steps": n_rollout,
            "n_particles": n_particles,
            "infer_batch_size": int(cfg_infer.batch_size),
            "infer_wall_seconds": round(infer_s, 2),
            "infer_steps_per_second": round(n_traj * n_rollout / infer_s, 3),
            "steps_per_second": steady_rollout["steps_per_second"],
            "note": "steps_per_second: one trajectory, LagrangeBench's preprocess_eval + _forward_eval per step, "
            f"compiled, over {steady_rollout['steps']} steps; infer_*: lagrangebench infer over all test "
            "trajectories, including JIT compilation and neighbour-list re-allocations",
        },
        "metrics_seconds": round(metrics_s, 2),
        "metrics_stride": args.metrics_stride,
        "mse_infer_vs_lb_metrics_max_rel_diff": mse_rel,
        "metrics": {k: v for k, v in summary.items() if k not in ("lb_averaged_metrics", "per_trajectory")},
        "lb_averaged_metrics": summary["lb_averaged_metrics"],
        "per_trajectory": summary["per_trajectory"],
        "config": OmegaConf.to_container(cfg),
        "rollouts_npz": os.path.join(os.path.abspath(args.out), "rollouts.npz"),
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({"train": result["train"], "rollout": result["rollout"], "metrics": result["metrics"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
