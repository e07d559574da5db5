"""Ground truth for the learned simulator: a weakly compressible SPH fluid in a box, in 2D or 3D.

Smoothed-particle hydrodynamics after Müller et al. (2003, "Particle-based fluid
simulation for interactive applications"): density from the poly6 kernel, pressure from
a stiff equation of state (``p = k (rho - rho0)``, negative pressures cut to zero),
pressure forces from the spiky kernel's gradient, viscosity from its Laplacian kernel,
gravity along the last axis, and walls on every axis that reflect and damp particles
leaving the box. The kernels carry the normalisation of their dimension (``SPHConfig.dim``),
so that a uniform lattice at the initial spacing has about the rest density in 2D and 3D
alike. Neighbours come from :func:`structnets.radius_graph`; everything else is vectorised
torch. Written here rather than taken from a library because none of the SPH packages on
PyPI runs on plain torch tensors on CPU and GPU alike.

:func:`generate_dataset` writes a dataset in the layout the learned simulator reads:
``metadata.json`` (bounds, dt, sequence length, connectivity radius, velocity and
acceleration statistics of the training split) and ``train.npz`` / ``valid.npz`` /
``test.npz`` in structnets' pickle-free trajectory layout
(:func:`structnets.physics.particles.write_trajectories`). Each trajectory starts from a
:class:`Scene`: a randomly placed block of fluid dropped into the box (a small "water
drop"), or a column of fluid against a wall that collapses along the floor (a dam break).
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..graphs.neighbors import radius_graph
from ..train.checkpoint import atomic_write
from ..train.threads import torch_threads
from .particles import Trajectory, write_trajectories

__all__ = ["SPHConfig", "Scene", "simulate", "initial_state", "generate_dataset", "WATER"]

#: Particle type of fluid particles, as in the WaterDrop datasets.
WATER = 5


class Scene(str, enum.Enum):
    """How each trajectory starts (a ``str`` enum: ``"drop"`` and ``"dam_break"`` name them too).

    * ``DROP``: a block of fluid at a random place in the upper part of the box falls, splashes
      and spreads over the floor (DeepMind's WaterDrop scene).
    * ``DAM_BREAK``: a column of fluid standing on the floor against the left or the right wall
      (its width, height and, in 3D, depth drawn a little differently each time) collapses and
      runs along the floor to the opposite wall.
    """

    DROP = "drop"
    DAM_BREAK = "dam_break"


@dataclass(frozen=True)
class SPHConfig:
    """Physical and numerical settings (SI-like units: metres, seconds, kg).

    The defaults are the 2D water drop structnets has always generated; :meth:`tuned` gives
    the settings of each scene and dimension. Two additions to Müller et al.'s scheme are off
    in the defaults (so that the 2D drop stays bit for bit what it was) and on in the others:

    * ``wall_images``: each particle within ``H`` of a wall is mirrored across it, and the
      image lends its density, pressure and mirrored velocity to its neighbours. Without it a
      particle at the wall misses the fluid beyond it, its density falls short of the rest
      density, nothing holds it up, and the bottom layer piles onto the floor with a gap
      above it.
    * ``repulsion``: an acceleration ``repulsion * (1 - r / (contact * spacing))^2`` between
      particles closer than ``contact * spacing``. Pressure is cut to zero below the rest
      density, so in a splash, a thin sheet or the top layers of a shallow pool (where the
      kernel sums fall short) nothing keeps particles apart; without it a fifth to a half of
      the particles of a settled 3D drop had a neighbour closer than half a spacing. It
      does nothing to fluid at rest on the lattice, and like every pair force here it
      conserves momentum.
    """

    spacing: float = 0.02  # initial particle spacing
    smoothing: float = 0.045  # kernel radius H (about 2.25 spacings)
    rest_density: float = 1000.0
    stiffness: float = 400.0  # k in p = k (rho - rho0); sqrt(k) is the speed of sound
    viscosity: float = 20.0
    gravity: float = -9.81  # along the last axis
    box: tuple[float, float] = (0.1, 0.9)  # the walls, the same on every axis
    wall_damping: float = 0.5
    frame_dt: float = 0.0025  # time between recorded frames (WaterDrop's dt)
    substeps: int = 20
    dim: int = 2
    wall_images: bool = False
    repulsion: float = 0.0  # m/s^2 at contact; 0 turns it off
    contact: float = 1.0  # its reach, in spacings

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim!r}")

    @property
    def mass(self) -> float:
        return self.rest_density * self.spacing**self.dim

    @classmethod
    def tuned(cls, scene: Scene | str = Scene.DROP, dim: int = 2) -> SPHConfig:
        """The settings structnets generates ``scene`` with in ``dim`` dimensions.

        * 2D drop: ``SPHConfig()``, unchanged.
        * 2D dam break: half the spacing (80 particles across the box), so that the column
          holds over a thousand particles; 10 substeps keep the speed of sound's CFL number
          ``sqrt(k) dt / H`` at 0.22; half the viscosity, as SPH's artificial viscosity
          scales with ``H``.
        * 3D, both scenes: 2.5 times the 2D spacing (16 particles across the box) so that a
          scene of about a thousand particles still makes a pool four to six layers deep on
          the floor, thick enough for SPH to resolve; 5 substeps (CFL 0.09); twice the 2D
          viscosity, which lets a splash settle within a second of simulated time.

        The stiffness stays 400 (a speed of sound of 20 m/s, five times the fastest flow, so
        density varies by a few per cent). The repulsion is a barrier of the same height in
        both, ``repulsion * contact * spacing / 3`` = 50 J/kg: with no pressure to help, it
        stops two particles meeting head-on at the speed of a fall across the box about a
        third of a spacing apart.
        """
        scene = Scene(scene)
        if dim == 2:
            if scene is Scene.DROP:
                return cls()
            return cls(spacing=0.01, smoothing=0.0225, viscosity=10.0, substeps=10, wall_images=True, repulsion=15000.0)
        if dim == 3:
            return cls(
                spacing=0.05, smoothing=0.1125, viscosity=40.0, substeps=5, dim=3, wall_images=True, repulsion=3000.0
            )
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")


# Müller et al.'s kernels with the constants that make them integrate to one in two and in
# three dimensions (poly6 and spiky), and the Laplacian of the viscosity kernel that does.


def _poly6(r2: Tensor, h: float, dim: int) -> Tensor:
    """Density kernel ``W(r) = c (H^2 - r^2)^3`` of the squared distances ``r2``."""
    c = 4.0 / (math.pi * h**8) if dim == 2 else 315.0 / (64.0 * math.pi * h**9)
    return c * (h * h - r2).clamp(min=0) ** 3


def _spiky_gradient(r: Tensor, h: float, dim: int) -> Tensor:
    """``dW/dr`` of the spiky kernel ``W(r) = c (H - r)^3``, for pressure (it does not vanish at 0)."""
    c = -30.0 / (math.pi * h**5) if dim == 2 else -45.0 / (math.pi * h**6)
    return c * (h - r) ** 2


def _viscosity_laplacian(r: Tensor, h: float, dim: int) -> Tensor:
    """Laplacian ``c (H - r)`` of the viscosity kernel (positive everywhere inside ``H``)."""
    c = 40.0 / (math.pi * h**5) if dim == 2 else 45.0 / (math.pi * h**6)
    return c * (h - r)


def _wall_images(pos: Tensor, vel: Tensor, config: SPHConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Mirror images ``[M, dim]`` of the particles within ``H`` of a wall, their velocities
    mirrored too, and the index ``[M]`` of the particle each one images.

    Mirroring the images again along the later axes adds those of edges and corners. An image
    stands for the fluid beyond the wall: with its particle's density and pressure it completes
    the density of the particles near the wall and pushes them away from it as the fluid
    around them does, and its mirrored velocity makes the wall slip-free but impermeable.
    """
    low, high = config.box
    h = config.smoothing
    points, velocities, source = pos, vel, torch.arange(pos.shape[0])
    for axis in range(pos.shape[1]):
        for wall in (low, high):
            near = (points[:, axis] - wall).abs() < h
            image, image_vel = points[near].clone(), velocities[near].clone()
            image[:, axis] = 2 * wall - image[:, axis]
            image_vel[:, axis] = -image_vel[:, axis]
            points = torch.cat([points, image])
            velocities = torch.cat([velocities, image_vel])
            source = torch.cat([source, source[near]])
    n = pos.shape[0]
    return points[n:], velocities[n:], source[n:]


def _forces(pos: Tensor, vel: Tensor, config: SPHConfig) -> Tensor:
    """Accelerations ``[N, dim]`` of the particles at ``pos`` ``[N, dim]`` moving at ``vel``:
    pressure, viscosity, gravity and, if the config turns them on, the walls' images and the
    short-range repulsion (see :class:`SPHConfig`)."""
    h = config.smoothing
    n = pos.shape[0]
    if config.wall_images:
        image_pos, image_vel, source = _wall_images(pos, vel, config)
        everything, vel = torch.cat([pos, image_pos]), torch.cat([vel, image_vel])
    else:
        everything, source = pos, torch.zeros(0, dtype=torch.long)
    senders, receivers = radius_graph(everything, h, loop=True, max_num_neighbors=None)
    if source.numel():  # images only send
        keep = receivers < n
        senders, receivers = senders[keep], receivers[keep]
    delta = everything[receivers] - everything[senders]  # from neighbour j to centre i
    r2 = (delta**2).sum(1)
    r = r2.sqrt()
    m = config.mass
    density = torch.zeros(n, dtype=pos.dtype).index_add(0, receivers, m * _poly6(r2, h, config.dim))
    pressure = (config.stiffness * (density - config.rest_density)).clamp(min=0)
    if source.numel():
        density, pressure = torch.cat([density, density[source]]), torch.cat([pressure, pressure[source]])
    pair = senders != receivers
    s, t, d, dist = senders[pair], receivers[pair], delta[pair], r[pair].clamp(min=1e-9)
    gradient = _spiky_gradient(dist, h, config.dim).unsqueeze(1) * d / dist.unsqueeze(1)
    # The symmetric pressure mean and the velocity difference make pair forces equal and
    # opposite (m a_i from j is minus m a_j from i), so momentum is conserved.
    pressure_term = -m * ((pressure[t] + pressure[s]) / (2 * density[s])).unsqueeze(1) * gradient
    laplacian = _viscosity_laplacian(dist, h, config.dim)
    viscous_term = config.viscosity * m * ((vel[s] - vel[t]) / density[s].unsqueeze(1)) * laplacian.unsqueeze(1)
    force = torch.zeros_like(pos).index_add(0, t, pressure_term + viscous_term)
    acceleration = force / density[:n].unsqueeze(1)
    if config.repulsion > 0:
        reach = config.contact * config.spacing
        close = dist < reach
        push = config.repulsion * (1 - dist[close] / reach) ** 2 / dist[close]
        acceleration.index_add_(0, t[close], push.unsqueeze(1) * d[close])
    acceleration[:, -1] += config.gravity
    return acceleration


def simulate(initial: Tensor, frames: int, config: SPHConfig = SPHConfig()) -> Tensor:
    """Positions ``[frames, N, dim]`` of the fluid starting at rest at ``initial`` ``[N, dim]``.

    Symplectic Euler with ``config.substeps`` steps per recorded frame.

    Raises:
        ValueError: ``initial`` is not ``[N, config.dim]``.
        FloatingPointError: the simulation diverged.
    """
    if initial.dim() != 2 or initial.shape[1] != config.dim:
        raise ValueError(f"initial must be [num_particles, {config.dim}], got {tuple(initial.shape)}")
    pos = initial.to(torch.float64).clone()
    vel = torch.zeros_like(pos)
    low, high = config.box
    dt = config.frame_dt / config.substeps
    out = [pos.clone()]
    # One thread: a substep is dozens of operations on a few thousand rows, too small to split,
    # and on a busy two-core machine two threads each ran several times slower than one.
    with torch_threads(1):
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


def _lattice(axes: list[np.ndarray], rng: np.random.Generator, spacing: float) -> Tensor:
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    grid += rng.normal(0, spacing * 0.01, grid.shape)  # break the perfect lattice
    return torch.from_numpy(grid)


def _drop(rng: np.random.Generator, config: SPHConfig, max_particles: int) -> Tensor:
    low, high, s = *config.box, config.spacing
    # Sides in particles: 6 to 15 across and 6 to 19 high in 2D (the original ranges); 9 to 12
    # across and 9 to 10 high in 3D (about 700 to 1,450 particles, enough to make a pool).
    smallest, widest, tallest = (6, 16, 20) if config.dim == 2 else (9, 13, 11)
    tallest = min(tallest, int((0.7 * (high - low) - s) / s) + 1)  # it starts in the upper 70%
    sides = [int(rng.integers(smallest, widest)) for _ in range(config.dim - 1)]
    footprint = math.prod(sides)
    height = int(rng.integers(smallest, max(smallest + 1, min(tallest, max_particles // footprint))))
    corner = [rng.uniform(low + s, high - n * s - s) for n in sides]
    corner.append(rng.uniform(low + (high - low) * 0.3, high - height * s - s))
    return _lattice([c + s * np.arange(n) for c, n in zip(corner, [*sides, height])], rng, s)


def _dam_break(rng: np.random.Generator, config: SPHConfig, max_particles: int | None) -> Tensor:
    low, high, s = *config.box, config.spacing
    cells = int((high - low) / s + 1e-9)  # lattice cells across the box
    # Fractions of the box: width, height and (3D) depth of the column. At the tuned spacings
    # that is 24-32 x 44-56 particles in 2D and 5-8 x 11-16 x 9-12 in 3D.
    if config.dim == 2:
        fractions = [(0.3, 0.4), (0.55, 0.7)]
    else:
        fractions = [(0.35, 0.5), (0.7, 1.0), (0.6, 0.8)]
    sides = [max(1, int(rng.uniform(*f) * cells)) for f in fractions]
    if max_particles is not None:
        sides[-1] = max(1, min(sides[-1], max_particles // math.prod(sides[:-1])))
    # Cell-centred: the column stands half a spacing off the walls and the floor it touches.
    centres = [s * (np.arange(n) + 0.5) for n in sides]
    axes = [high - centres[0] if rng.integers(2) else low + centres[0]]  # the left or the right wall
    if config.dim == 3:  # a part of the tank's depth, so that the flow spreads sideways too
        axes.append(low + s * int(rng.integers(0, cells - sides[1] + 1)) + centres[1])
    axes.append(low + centres[-1])
    return _lattice(axes, rng, s)


def initial_state(
    scene: Scene | str, rng: np.random.Generator, config: SPHConfig = SPHConfig(), max_particles: int | None = None
) -> Tensor:
    """Positions ``[N, config.dim]`` (float64) of one random start of ``scene``, drawn from ``rng``.

    Args:
        max_particles: a bound on the particles: it caps a drop's block height (300 in 2D and
            1,500 in 3D by default; a block is never lower than its smallest side allows, so a
            small bound is loose) and shortens a dam break's column (which has none by default).
    """
    scene = Scene(scene)
    if scene is Scene.DROP:
        default = 300 if config.dim == 2 else 1500
        return _drop(rng, config, default if max_particles is None else max_particles)
    return _dam_break(rng, config, max_particles)


def generate_dataset(
    out_dir: str | Path,
    *,
    trajectories: dict[str, int] | None = None,
    frames: int = 200,
    max_particles: int | None = None,
    seed: int = 0,
    config: SPHConfig | None = None,
    scene: Scene | str = Scene.DROP,
    dim: int | None = None,
) -> dict:
    """Simulates and writes a dataset; returns its metadata.

    Args:
        trajectories: how many per split (default train 8, valid 2, test 2).
        frames: recorded frames per trajectory (``sequence_length`` is ``frames - 1``).
        max_particles: the bound :func:`initial_state` takes (drop: 300 in 2D, 1,500 in 3D
            by default; dam break: none).
        config: the physics; by default :meth:`SPHConfig.tuned` for ``scene`` and ``dim``.
        scene: a :class:`Scene` or its name, ``"drop"`` (default) or ``"dam_break"``.
        dim: 2 or 3; by default ``config.dim``, or 2 without a config.

    Raises:
        ValueError: ``dim`` differs from ``config.dim``, or an unknown scene.
    """
    scene = Scene(scene)
    if config is None:
        config = SPHConfig.tuned(scene, 2 if dim is None else dim)
    elif dim is not None and dim != config.dim:
        raise ValueError(f"dim={dim} but config.dim={config.dim}; pass one of them, or both the same")
    counts = trajectories or {"train": 8, "valid": 2, "test": 2}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in counts.items():
        runs = []
        for k in range(count):
            position = simulate(initial_state(scene, rng, config, max_particles), frames, config).numpy()
            runs.append(Trajectory(f"trajectory_{k}", position, np.full(position.shape[1], WATER, dtype=np.int64)))
        splits[split] = runs
        write_trajectories(out_dir / f"{split}.npz", runs)
    # Normalisation statistics of per-frame velocities and accelerations, training split only.
    dim = config.dim
    velocities = np.concatenate([np.diff(t.position, axis=0).reshape(-1, dim) for t in splits["train"]])
    accelerations = np.concatenate([np.diff(t.position, n=2, axis=0).reshape(-1, dim) for t in splits["train"]])
    metadata = {
        "bounds": [list(config.box) for _ in range(dim)],
        "dt": config.frame_dt,
        "sequence_length": frames - 1,
        "default_connectivity_radius": config.smoothing,
        "dim": dim,
        "vel_mean": velocities.mean(0).tolist(),
        "vel_std": velocities.std(0).tolist(),
        "acc_mean": accelerations.mean(0).tolist(),
        "acc_std": accelerations.std(0).tolist(),
        "generator": {"name": "structnets.sph", "seed": seed, "scene": scene.value, "config": asdict(config)},
    }
    atomic_write(out_dir / "metadata.json", json.dumps(metadata, indent=2) + "\n")  # last: marks the set whole
    return metadata
