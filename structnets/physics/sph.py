"""Ground truth for the learned simulator: a 2D weakly compressible SPH fluid in a box.

Smoothed-particle hydrodynamics after Müller et al. (2003, "Particle-based fluid
simulation for interactive applications"): density from the poly6 kernel, pressure from
a stiff equation of state (``p = k (rho - rho0)``, negative pressures cut to zero),
pressure forces from the spiky kernel's gradient, viscosity from its Laplacian kernel,
gravity, and walls that reflect and damp particles leaving the box. Neighbours come from
:func:`structnets.radius_graph`; everything else is vectorised torch. Written here rather
than taken from a library because none of the SPH packages on PyPI runs on plain torch
tensors on CPU and GPU alike.

:func:`generate_dataset` writes a dataset in the layout the learned simulator reads:
``metadata.json`` (bounds, dt, sequence length, connectivity radius, velocity and
acceleration statistics of the training split) and ``train.npz`` / ``valid.npz`` /
``test.npz`` in structnets' pickle-free trajectory layout
(:func:`structnets.physics.particles.write_trajectories`). Each trajectory drops a randomly
placed block of fluid into the box, a small "water drop" scene.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..graphs.neighbors import radius_graph
from ..train.checkpoint import atomic_write
from .particles import Trajectory, write_trajectories

__all__ = ["SPHConfig", "simulate", "generate_dataset", "WATER"]

#: Particle type of fluid particles, as in the WaterDrop datasets.
WATER = 5


@dataclass(frozen=True)
class SPHConfig:
    """Physical and numerical settings (SI-like units: metres, seconds, kg)."""

    spacing: float = 0.02  # initial particle spacing
    smoothing: float = 0.045  # kernel radius H (about 2.25 spacings)
    rest_density: float = 1000.0
    stiffness: float = 400.0  # k in p = k (rho - rho0)
    viscosity: float = 20.0
    gravity: float = -9.81
    box: tuple[float, float] = (0.1, 0.9)  # the walls, the same on both axes
    wall_damping: float = 0.5
    frame_dt: float = 0.0025  # time between recorded frames (WaterDrop's dt)
    substeps: int = 20

    @property
    def mass(self) -> float:
        return self.rest_density * self.spacing**2


def _forces(pos: Tensor, vel: Tensor, config: SPHConfig) -> Tensor:
    h = config.smoothing
    senders, receivers = radius_graph(pos, h, loop=True, max_num_neighbors=None)
    delta = pos[receivers] - pos[senders]  # from neighbour j to centre i
    r2 = (delta**2).sum(1)
    r = r2.sqrt()
    m = config.mass
    poly6 = 4.0 / (math.pi * h**8) * (h * h - r2).clamp(min=0) ** 3
    density = torch.zeros(pos.shape[0], dtype=pos.dtype).index_add(0, receivers, m * poly6)
    pressure = (config.stiffness * (density - config.rest_density)).clamp(min=0)
    pair = senders != receivers
    s, t, d, dist = senders[pair], receivers[pair], delta[pair], r[pair].clamp(min=1e-9)
    spiky = -30.0 / (math.pi * h**5) * (h - dist) ** 2  # dW/dr
    gradient = spiky.unsqueeze(1) * d / dist.unsqueeze(1)
    pressure_term = -m * ((pressure[t] + pressure[s]) / (2 * density[s])).unsqueeze(1) * gradient
    laplacian = 40.0 / (math.pi * h**5) * (h - dist)
    viscous_term = config.viscosity * m * ((vel[s] - vel[t]) / density[s].unsqueeze(1)) * laplacian.unsqueeze(1)
    force = torch.zeros_like(pos).index_add(0, t, pressure_term + viscous_term)
    acceleration = force / density.unsqueeze(1)
    acceleration[:, 1] += config.gravity
    return acceleration


def simulate(initial: Tensor, frames: int, config: SPHConfig = SPHConfig()) -> Tensor:
    """Positions ``[frames, N, 2]`` of the fluid starting at rest at ``initial`` ``[N, 2]``."""
    pos = initial.to(torch.float64).clone()
    vel = torch.zeros_like(pos)
    low, high = config.box
    dt = config.frame_dt / config.substeps
    out = [pos.clone()]
    for _ in range(frames - 1):
        for _ in range(config.substeps):
            vel = vel + dt * _forces(pos, vel, config)
            pos = pos + dt * vel
            # Walls: put escaped particles back and reflect their normal velocity, damped.
            below, above = pos < low, pos > high
            pos = torch.where(below, 2 * low - pos, torch.where(above, 2 * high - pos, pos)).clamp(low, high)
            vel = torch.where(below | above, -config.wall_damping * vel, vel)
        if not bool(torch.isfinite(pos).all()):
            raise FloatingPointError("the SPH simulation diverged; lower frame_dt or raise substeps")
        out.append(pos.clone())
    return torch.stack(out).to(torch.float32)


def _block(rng: np.random.Generator, config: SPHConfig, max_particles: int) -> Tensor:
    low, high = config.box
    width = int(rng.integers(6, 16))
    height = int(rng.integers(6, max(7, min(20, max_particles // width))))
    x0 = rng.uniform(low + config.spacing, high - width * config.spacing - config.spacing)
    y0 = rng.uniform(low + (high - low) * 0.3, high - height * config.spacing - config.spacing)
    xs = x0 + config.spacing * np.arange(width)
    ys = y0 + config.spacing * np.arange(height)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    grid += rng.normal(0, config.spacing * 0.01, grid.shape)  # break the perfect lattice
    return torch.from_numpy(grid)


def generate_dataset(
    out_dir: str | Path,
    *,
    trajectories: dict[str, int] | None = None,
    frames: int = 200,
    max_particles: int = 300,
    seed: int = 0,
    config: SPHConfig = SPHConfig(),
) -> dict:
    """Simulates and writes a dataset; returns its metadata.

    Args:
        trajectories: how many per split (default train 8, valid 2, test 2).
        frames: recorded frames per trajectory (``sequence_length`` is ``frames - 1``).
    """
    counts = trajectories or {"train": 8, "valid": 2, "test": 2}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in counts.items():
        runs = []
        for k in range(count):
            position = simulate(_block(rng, config, max_particles), frames, config).numpy()
            runs.append(Trajectory(f"trajectory_{k}", position, np.full(position.shape[1], WATER, dtype=np.int64)))
        splits[split] = runs
        write_trajectories(out_dir / f"{split}.npz", runs)
    # Normalisation statistics of per-frame velocities and accelerations, training split only.
    velocities = np.concatenate([np.diff(t.position, axis=0).reshape(-1, 2) for t in splits["train"]])
    accelerations = np.concatenate([np.diff(t.position, n=2, axis=0).reshape(-1, 2) for t in splits["train"]])
    metadata = {
        "bounds": [list(config.box), list(config.box)],
        "dt": config.frame_dt,
        "sequence_length": frames - 1,
        "default_connectivity_radius": config.smoothing,
        "dim": 2,
        "vel_mean": velocities.mean(0).tolist(),
        "vel_std": velocities.std(0).tolist(),
        "acc_mean": accelerations.mean(0).tolist(),
        "acc_std": accelerations.std(0).tolist(),
        "generator": {"name": "structnets.sph", "seed": seed, "config": asdict(config)},
    }
    atomic_write(out_dir / "metadata.json", json.dumps(metadata, indent=2) + "\n")  # last: marks the set whole
    return metadata
