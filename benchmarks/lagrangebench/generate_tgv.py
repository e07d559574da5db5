"""Generate LagrangeBench's 2D Taylor-Green vortex (TGV) dataset with JAX-SPH.

Runs in /work/main/.venv-lb (see setup.sh). It follows LagrangeBench's recipe
(data_gen/lagrangebench_data/dataset_tgv.sh and gen_dataset.py in tumaer/lagrangebench,
which call JAX-SPH's cases/tgv.yaml with main.py), but drives JAX-SPH's solver in memory:

per seed
  1. relaxation: JAX-SPH's relaxation case of the TGV box (case.mode=rlx), a Cartesian
     grid with Gaussian noise of r0_noise_factor*dx, zero velocity, transport-velocity
     factor solver.tvf=1.0, dt from the CFL condition, 5000 steps (fixed in JAX-SPH);
  2. simulation: the TGV case (viscosity 0.01, u_ref 1, c_ref 10, Tait EoS, quintic
     spline kernel, density summation, tvf=0), dt=0.0004, t_end=5, one frame every
     100 steps (126 frames), starting from the relaxed positions.

then the trajectories are split by seed in order (first train, then valid, then test),
written as LagrangeBench's train.h5/valid.h5/test.h5 (groups 00000, ...: position
(T, N, dim) float32, gzip; particle_type (N,)) with metadata.json carrying the fields
gen_dataset.py writes, including vel/acc mean and std computed as it does (per-frame
displacements of fluid particles with the periodic displacement, over all three splits).

One detail of the published data is kept on purpose: in JAX-SPH 0.0.2 (the version
LagrangeBench used) the simulation run computes the initial TGV velocity on the
Cartesian grid (its r0_noise_factor is 0) and only then replaces the positions by the
relaxed ones (case.state0_keys=["r"]), so particle i starts at its relaxed position with
the velocity of grid point i. ``--velocity-at relaxed`` evaluates the TGV field at the
relaxed positions instead. (JAX-SPH 0.1.0's own state0 loading fails on JAX arrays, which
is one reason this script overwrites the positions itself.)

Example (the reduced set used here):
  nice -n 10 .venv-lb/bin/python benchmarks/lagrangebench/generate_tgv.py \\
      --out /work/lbdata/tgv2d --n-train 20 --n-valid 4 --n-test 4
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import h5py  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # JAX-SPH's default dtype is float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax_sph import partition  # noqa: E402
from jax_sph.case_setup import SimulationSetup, set_relaxation  # noqa: E402
from jax_sph.defaults import defaults as JAX_SPH_DEFAULTS  # noqa: E402
from jax_sph.integrator import si_euler  # noqa: E402
from jax_sph.jax_md import space  # noqa: E402
from jax_sph.jax_md.partition import Sparse  # noqa: E402
from jax_sph.solver import WCSPH  # noqa: E402
from jax_sph.utils import Tag  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

# Published settings (LagrangeBench 2D TGV: 2D_TGV_2500_10kevery100).
PUBLISHED = {
    "dx": 0.02,
    "dt": 0.0004,
    "t_end": 5.0,
    "write_every": 100,
    "relax_steps": 5000,  # hard-coded in JAX-SPH's SimulationSetup for case.mode=rlx
    "r0_noise_factor": 0.25,
    "relax_tvf": 1.0,
    "n_train": 100,
    "n_valid": 50,
    "n_test": 50,
}


class TGV2D(SimulationSetup):
    """The 2D Taylor-Green vortex in the periodic unit square (JAX-SPH's TGV case, 2D)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.case.mode == "rlx":
            self._set_default_rlx()

    def _box_size2D(self, n_walls):
        return np.array([1.0, 1.0])

    def _box_size3D(self, n_walls):
        raise NotImplementedError("this generator is 2D only")

    def _init_walls_2d(self):
        pass

    def _init_walls_3d(self):
        pass

    def _init_velocity2D(self, r):
        # u = -cos(2 pi x) sin(2 pi y), v = sin(2 pi x) cos(2 pi y) (Adami et al. 2013)
        x, y = r
        return jnp.array(
            [
                -jnp.cos(2.0 * jnp.pi * x) * jnp.sin(2.0 * jnp.pi * y),
                jnp.sin(2.0 * jnp.pi * x) * jnp.cos(2.0 * jnp.pi * y),
            ]
        )

    def _init_velocity3D(self, r):
        raise NotImplementedError("this generator is 2D only")

    def _external_acceleration_fn(self, r):
        return jnp.zeros_like(r)

    def _boundary_conditions_fn(self, state):
        return state


def make_cfg(mode: str, seed: int, args) -> OmegaConf:
    """JAX-SPH config = its defaults + cases/tgv.yaml + dataset_tgv.sh's overrides."""
    over = {
        "config": "cases/tgv.yaml",  # only its basename is used: case.name = "tgv"
        "seed": seed,
        "case": {"source": "tgv.py", "dim": 2, "dx": args.dx, "mode": mode},
        "solver": {"t_end": 5.0},
        "io": {"write_every": args.write_every},
    }
    if mode == "rlx":
        over["case"]["r0_noise_factor"] = args.r0_noise_factor
        over["solver"]["tvf"] = args.relax_tvf
    else:
        over["solver"]["dt"] = args.dt
        over["solver"]["t_end"] = args.t_end
    return OmegaConf.merge(JAX_SPH_DEFAULTS, OmegaConf.create(over))


def build(case, nl_skin: float):
    """Initialise a JAX-SPH case and return (cfg, state, chunk_runner, neighbor_fn)."""
    with contextlib.redirect_stdout(io.StringIO()):  # JAX-SPH prints its dt candidates
        (cfg, box, state, g_ext_fn, bc_fn, nw_fn, eos, _key, disp_fn, shift_fn) = case.initialize()
    solver = WCSPH(
        disp_fn,
        eos,
        g_ext_fn,
        cfg.case.dx,
        cfg.case.dim,
        cfg.solver.dt,
        cfg.case.c_ref,
        cfg.solver.eta_limiter,
        cfg.solver.name,
        cfg.kernel.name,
        cfg.solver.is_bc_trick,
        cfg.solver.density_evolution,
        cfg.solver.artificial_alpha,
        cfg.solver.free_slip,
        cfg.solver.density_renormalize,
        cfg.solver.heat_conduction,
    )
    neighbor_fn = partition.neighbor_list(
        disp_fn,
        box,
        r_cutoff=solver._kernel_fn.cutoff,
        backend=cfg.nl.backend,
        capacity_multiplier=1.25,
        mask_self=False,
        format=Sparse,
        num_particles_max=state["r"].shape[0],
        num_partitions=cfg.nl.num_partitions,
        pbc=np.array(cfg.case.pbc),
        dr_threshold=nl_skin,
    )
    advance = si_euler(cfg.solver.tvf, solver.forward_wrapper(), shift_fn, bc_fn, nw_fn)
    dt = cfg.solver.dt

    def run_chunk(state, nbrs, n_steps):
        # n_steps of JAX-SPH's integrator in one lax.scan; overflow is OR-ed over the chunk
        def body(carry, _):
            s, nb, ovf = carry
            s, nb = advance(dt, s, nb)
            return (s, nb, ovf | (nb.did_buffer_overflow != 0)), None

        init = (state, nbrs, jnp.array(False))
        (state, nbrs, ovf), _ = jax.lax.scan(body, init, None, length=n_steps)
        return state, nbrs, ovf

    run_chunk = jax.jit(run_chunk, static_argnums=2)
    return cfg, state, run_chunk, neighbor_fn


def integrate(state, run_chunk, neighbor_fn, n_steps, chunk, on_chunk=None):
    """Advance n_steps in chunks; redo a chunk with a re-allocated list on overflow
    (JAX-SPH's loop does the same per step)."""
    num_particles = int((state["tag"] != Tag.PAD_VALUE).sum())
    nbrs = neighbor_fn.allocate(state["r"], num_particles=num_particles)
    done = 0
    while done < n_steps:
        n = min(chunk, n_steps - done)
        new_state, new_nbrs, ovf = run_chunk(state, nbrs, n)
        if bool(ovf):
            nbrs = neighbor_fn.allocate(state["r"], num_particles=num_particles)
            print(f"    re-allocated neighbour list to {nbrs.idx.shape} at step {done}", flush=True)
            continue
        state, nbrs = new_state, new_nbrs
        done += n
        if on_chunk is not None:
            on_chunk(done, state)
    return state


def simulate_seed(seed: int, args):
    """Relaxation then simulation for one seed; returns (positions (T, N, 2), tag (N,))."""
    t0 = time.time()
    # 1. relaxation
    rcfg = make_cfg("rlx", seed, args)
    rlx_case = set_relaxation(TGV2D, rcfg)
    rcfg, rstate, run_chunk, neighbor_fn = build(rlx_case, args.nl_skin * args.dx)
    rstate = integrate(rstate, run_chunk, neighbor_fn, args.relax_steps, chunk=args.relax_chunk)
    r_relaxed, tag_relaxed = rstate["r"], rstate["tag"]
    t1 = time.time()

    # 2. simulation from the relaxed positions
    scfg = make_cfg("sim", seed, args)
    sim_case = TGV2D(scfg)
    scfg, state, run_chunk, neighbor_fn = build(sim_case, args.nl_skin * args.dx)
    assert state["r"].shape == r_relaxed.shape
    assert bool((state["tag"] == tag_relaxed).all())
    state["r"] = r_relaxed
    if args.velocity_at == "relaxed":
        v = jax.vmap(sim_case._init_velocity2D)(r_relaxed)
        state["u"], state["v"] = v, v
    # JAX-SPH writes the state after every write_every-th step up to int(t_end/dt) steps
    n_steps = (scfg.solver.sequence_length // args.write_every) * args.write_every
    frames = [np.asarray(state["r"])]
    integrate(
        state,
        run_chunk,
        neighbor_fn,
        n_steps,
        chunk=args.write_every,
        on_chunk=lambda done, s: frames.append(np.asarray(s["r"])),
    )
    t2 = time.time()
    pos = np.stack(frames)
    if not np.isfinite(pos).all():
        raise RuntimeError(f"seed {seed}: non-finite positions (the simulation blew up)")
    return pos, np.asarray(state["tag"]), scfg, (t1 - t0, t2 - t1)


def sig2(x: float) -> float:
    """Two significant digits, as gen_dataset.py formats 1.45*dx."""
    return float(np.format_float_positional(x, precision=2, unique=False, fractional=False, trim="k"))


def dataset_stats(splits: dict, box: np.ndarray):
    """vel/acc mean and std as gen_dataset.compute_statistics_h5: per-frame displacements
    (periodic) of fluid particles; mean of per-trajectory means, then the root of the mean
    of per-trajectory mean squared deviations; stds < 1e-7 set to 1."""
    disp, _ = space.periodic(side=jnp.asarray(box))
    disp_sets = jax.jit(jax.vmap(jax.vmap(disp)))
    vels = []
    for trajs in splits.values():
        for pos, tag in trajs:
            r = jnp.asarray(pos[:, tag == Tag.FLUID], dtype=jnp.float32)  # as read from the h5
            vels.append(np.asarray(disp_sets(r[1:], r[:-1])))
    vel_mean = np.stack([v.mean((0, 1)) for v in vels]).mean(0)
    acc_mean = np.stack([(v[1:] - v[:-1]).mean((0, 1)) for v in vels]).mean(0)
    vel_std = np.stack([np.square(v - vel_mean).mean((0, 1)) for v in vels]).mean(0) ** 0.5
    acc_std = np.stack([np.square(v[1:] - v[:-1] - acc_mean).mean((0, 1)) for v in vels]).mean(0) ** 0.5
    vel_std = np.where(vel_std < 1e-7, 1, vel_std)
    acc_std = np.where(acc_std < 1e-7, 1, acc_std)
    return {
        "vel_mean": vel_mean.tolist(),
        "vel_std": vel_std.tolist(),
        "acc_mean": acc_mean.tolist(),
        "acc_std": acc_std.tolist(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (train.h5, valid.h5, test.h5, metadata.json)")
    p.add_argument("--n-train", type=int, default=PUBLISHED["n_train"], help="training trajectories (published: 100)")
    p.add_argument("--n-valid", type=int, default=PUBLISHED["n_valid"], help="validation trajectories (published: 50)")
    p.add_argument("--n-test", type=int, default=PUBLISHED["n_test"], help="test trajectories (published: 50)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed; seeds are consecutive (published: 0..199)")
    p.add_argument(
        "--dx", type=float, default=PUBLISHED["dx"], help="particle spacing; (1/dx)^2 particles (published: 0.02)"
    )
    p.add_argument(
        "--dt", type=float, default=PUBLISHED["dt"], help="solver time step of the simulation run (published: 0.0004)"
    )
    p.add_argument("--t-end", type=float, default=PUBLISHED["t_end"], help="simulated time (published: 5.0)")
    p.add_argument(
        "--write-every",
        type=int,
        default=PUBLISHED["write_every"],
        help="solver steps per stored frame (published: 100)",
    )
    p.add_argument("--relax-steps", type=int, default=PUBLISHED["relax_steps"], help="relaxation steps (JAX-SPH: 5000)")
    p.add_argument(
        "--r0-noise-factor",
        type=float,
        default=PUBLISHED["r0_noise_factor"],
        help="relaxation start noise, in dx (published: 0.25)",
    )
    p.add_argument(
        "--relax-tvf",
        type=float,
        default=PUBLISHED["relax_tvf"],
        help="transport-velocity factor of the relaxation (published: 1.0)",
    )
    p.add_argument(
        "--velocity-at",
        choices=["grid", "relaxed"],
        default="grid",
        help="where the initial TGV velocity is evaluated: 'grid' as in the published data "
        "(Cartesian grid point of the same index), or 'relaxed' positions",
    )
    p.add_argument(
        "--nl-skin",
        type=float,
        default=0.4,
        help="Verlet skin of JAX-SPH's neighbour list, in dx (speed only: pairs beyond the kernel "
        "support add exact zeros; JAX-SPH itself uses 0, i.e. a rebuild every step)",
    )
    p.add_argument("--keep-raw", action="store_true", help="keep the per-seed cache OUT/raw_seeds/ after writing")
    p.add_argument(
        "--relax-chunk", type=int, default=500, help="solver steps per compiled chunk in the relaxation (speed only)"
    )
    args = p.parse_args(argv)

    n_total = args.n_train + args.n_valid + args.n_test
    if min(args.n_valid, args.n_test) < 1 or args.n_train < 1:
        p.error("each split needs at least one trajectory")
    seeds = list(range(args.seed_offset, args.seed_offset + n_total))
    settings = {
        k: getattr(args, k)
        for k in [
            "n_train",
            "n_valid",
            "n_test",
            "seed_offset",
            "dx",
            "dt",
            "t_end",
            "write_every",
            "relax_steps",
            "r0_noise_factor",
            "relax_tvf",
            "velocity_at",
        ]
    }
    reduced = {k: (v, PUBLISHED[k]) for k, v in settings.items() if k in PUBLISHED and v != PUBLISHED[k]}
    print("2D TGV with JAX-SPH; settings:", json.dumps(settings))
    print("differs from the published LagrangeBench settings (used, published):", json.dumps(reduced))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; seeds {seeds[0]}..{seeds[-1]}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    names = ["train"] * args.n_train + ["valid"] * args.n_valid + ["test"] * args.n_test
    splits = {"train": [], "valid": [], "test": []}
    t_start = time.time()
    timings = []
    raw_dir = os.path.join(args.out, "raw_seeds")
    os.makedirs(raw_dir, exist_ok=True)
    tag_of_settings = json.dumps(
        {k: v for k, v in settings.items() if k not in ("n_train", "n_valid", "n_test")}, sort_keys=True
    )
    for seed, split in zip(seeds, names):
        cache = os.path.join(raw_dir, f"seed_{seed:05d}.npz")
        if os.path.exists(cache) and str(np.load(cache)["settings"]) == tag_of_settings:
            z = np.load(cache)
            pos, tag = z["position"], z["particle_type"]
            print(f"seed {seed} ({split}): {pos.shape} from {cache}", flush=True)
        else:
            pos, tag, _, (t_rlx, t_sim) = simulate_seed(seed, args)
            pos = pos.astype(np.float32)
            np.savez(
                cache + ".tmp.npz", position=pos, particle_type=tag, settings=tag_of_settings, seconds=t_rlx + t_sim
            )
            os.replace(cache + ".tmp.npz", cache)
            timings.append(t_rlx + t_sim)
            print(f"seed {seed} ({split}): {pos.shape} relax {t_rlx:.1f} s, simulate {t_sim:.1f} s", flush=True)
        splits[split].append((pos, tag))
    scfg = make_cfg("sim", seeds[0], args)
    with contextlib.redirect_stdout(io.StringIO()):
        scfg = TGV2D(scfg).initialize()[0]  # the derived fields (dt, bounds, pbc, ...) without simulating

    for split, trajs in splits.items():
        with h5py.File(os.path.join(args.out, f"{split}.h5"), "w") as hf:
            for j, (pos, tag) in enumerate(trajs):
                key = str(j).zfill(5)
                hf.create_dataset(f"{key}/particle_type", data=tag)
                hf.create_dataset(f"{key}/position", data=pos, dtype=np.float32, compression="gzip")

    n_frames = splits["train"][0][0].shape[0]
    box = np.array(scfg.case.bounds)[:, 1] - np.array(scfg.case.bounds)[:, 0]
    metadata = {
        "case": scfg.case.name.upper(),
        "solver": scfg.solver.name,
        "density_evolution": scfg.solver.density_evolution,
        "dim": scfg.case.dim,
        "dx": scfg.case.dx,
        "dt": scfg.solver.dt,
        "t_end": scfg.solver.t_end,
        "viscosity": scfg.case.viscosity,
        "p_bg_factor": scfg.eos.p_bg_factor,
        "g_ext_magnitude": scfg.case.g_ext_magnitude,
        "artificial_alpha": scfg.solver.artificial_alpha,
        "free_slip": scfg.solver.free_slip,
        "write_every": scfg.io.write_every,
        "is_bc_trick": scfg.solver.is_bc_trick,
        # gen_dataset.py: files per trajectory folder (frames + config.yaml) - 1 = frames
        "sequence_length_train": int(n_frames),
        "num_trajs_train": len(splits["train"]),
        "sequence_length_test": int(n_frames),
        "num_trajs_test": len(splits["test"]),
        "num_particles_max": int(scfg.case.num_particles_max),
        # JAX-SPH's config always carries 3 entries (a matscipy TODO), which gen_dataset.py
        # copies; LagrangeBench only uses any() of it. One entry per dimension here, so that
        # readers checking the length (structnets) accept it.
        "periodic_boundary_conditions": [bool(b) for b in list(scfg.case.pbc)[: scfg.case.dim]],
        "bounds": np.array(scfg.case.bounds).tolist(),
        "default_connectivity_radius": sig2(1.45 * scfg.case.dx),
    }
    metadata.update(dataset_stats(splits, box))
    metadata["generation"] = {  # not in LagrangeBench's metadata: how this copy was made
        "generator": "structnets benchmarks/lagrangebench/generate_tgv.py (JAX-SPH 0.1.0 solver)",
        "settings": settings,
        "differs_from_published": {k: {"used": u, "published": pub} for k, (u, pub) in reduced.items()},
        "seconds_per_trajectory": float(np.mean(timings)) if timings else None,
    }
    with open(os.path.join(args.out, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=1)
    print(
        f"wrote {args.out}: {len(splits['train'])}/{len(splits['valid'])}/{len(splits['test'])} trajectories "
        f"of {n_frames} frames x {metadata['num_particles_max']} particles in {time.time() - t_start:.0f} s "
        f"({np.mean(timings) if timings else float('nan'):.1f} s per simulated trajectory)"
    )
    if not args.keep_raw:
        for f in os.listdir(raw_dir):
            os.remove(os.path.join(raw_dir, f))
        os.rmdir(raw_dir)
    print("metadata:", json.dumps({k: v for k, v in metadata.items() if k != "generation"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
