"""Particle trajectories in the layouts of the learned-simulator literature.

Sanchez-Gonzalez et al. (2020) describe each dataset by a ``metadata.json`` (``bounds``,
``dt``, ``sequence_length``, ``default_connectivity_radius``, ``dim`` and the velocity and
acceleration statistics used for normalisation) beside its trajectories. Two trajectory
layouts are read here:

* the PyTorch GNS layout, ``train.npz`` / ``valid.npz`` / ``test.npz``, each mapping a
  simulation name to ``(positions [T, N, D], particle_type [N])``. Those files store
  Python objects, which ``numpy`` can only load by unpickling, and unpickling runs code
  from the file. So they are read only with ``allow_pickle=True``, the user's statement
  that the file is trusted; :func:`convert_gns_npz` rewrites one in structnets' layout;
* structnets' own layout, also ``.npz``, with plain arrays only (``<name>/position``,
  ``<name>/particle_type``), which loads without unpickling. :func:`write_trajectories`
  writes it;
* the memory-mapped layout of the DeepMind-to-numpy converters: ``<split>_offset.json``
  with ``<split>_position.dat`` (float32) and ``<split>_particle_type.dat`` (int64).

Every reader checks what it returns against the metadata. It refuses, naming the file and
the field, a missing metadata field, NaN positions, particles outside the bounds, and
trajectories shorter than the history window.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..train.checkpoint import atomic_write

__all__ = [
    "SimulationMetadata",
    "Trajectory",
    "PickledDataError",
    "read_metadata",
    "read_trajectories",
    "write_trajectories",
    "convert_gns_npz",
    "read_memmap_split",
]

WATERDROP_URL = "https://storage.googleapis.com/learning-to-simulate-complex-physics/Datasets/WaterDropSample/"
_LAYOUT = "structnets-trajectories-v1"
_REQUIRED = (
    "bounds",
    "dt",
    "sequence_length",
    "default_connectivity_radius",
    "dim",
    "vel_mean",
    "vel_std",
    "acc_mean",
    "acc_std",
)


class PickledDataError(ValueError):
    """A trajectory file that can only be read by unpickling, which was not allowed."""


@dataclass(frozen=True)
class SimulationMetadata:
    bounds: list[list[float]]
    dt: float
    sequence_length: int
    default_connectivity_radius: float
    dim: int
    vel_mean: list[float]
    vel_std: list[float]
    acc_mean: list[float]
    acc_std: list[float]

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in _REQUIRED}


def read_metadata(path: str | Path) -> SimulationMetadata:
    """``metadata.json`` of a dataset (or the folder that holds it).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a required field is missing or malformed; the message names it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"no metadata file at {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    missing = [name for name in _REQUIRED if name not in raw]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    dim = raw["dim"]
    if dim not in (1, 2, 3):
        raise ValueError(f"{path}: field 'dim' must be 1, 2 or 3, got {dim!r}")
    bounds = raw["bounds"]
    if not (isinstance(bounds, list) and len(bounds) == dim and all(len(b) == 2 and b[0] < b[1] for b in bounds)):
        raise ValueError(f"{path}: field 'bounds' must be {dim} [low, high] pairs with low < high, got {bounds!r}")
    for name in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
        value = raw[name]
        if not (isinstance(value, list) and len(value) == dim and all(math.isfinite(v) for v in value)):
            raise ValueError(f"{path}: field {name!r} must be {dim} finite numbers, got {value!r}")
        if name.endswith("std") and any(v <= 0 for v in value):
            raise ValueError(f"{path}: field {name!r} must be positive, got {value!r}")
    for name in ("dt", "default_connectivity_radius"):
        if not (isinstance(raw[name], (int, float)) and raw[name] > 0):
            raise ValueError(f"{path}: field {name!r} must be a positive number, got {raw[name]!r}")
    if not (isinstance(raw["sequence_length"], int) and raw["sequence_length"] > 0):
        raise ValueError(f"{path}: field 'sequence_length' must be a positive integer, got {raw['sequence_length']!r}")
    return SimulationMetadata(**{name: raw[name] for name in _REQUIRED})


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One simulation: ``position`` ``[T, N, D]`` float32 and ``particle_type`` ``[N]`` int64."""

    name: str
    position: np.ndarray
    particle_type: np.ndarray


def _check(
    trajectory: Trajectory,
    where: str,
    metadata: SimulationMetadata | None,
    min_length: int,
    bounds_tolerance: float,
) -> Trajectory:
    position, kinds = trajectory.position, trajectory.particle_type
    if position.ndim != 3:
        raise ValueError(f"{where}: position must be [frames, particles, dim], got shape {position.shape}")
    frames, particles, dim = position.shape
    if kinds.shape != (particles,):
        raise ValueError(f"{where}: particle_type has shape {kinds.shape}, expected ({particles},)")
    if metadata is not None and dim != metadata.dim:
        raise ValueError(f"{where}: positions are {dim}-dimensional, the metadata says dim {metadata.dim}")
    if frames < min_length:
        raise ValueError(f"{where}: {frames} frames, shorter than the {min_length} the history window needs")
    bad = ~np.isfinite(position)
    if bad.any():
        frame, particle, _ = np.argwhere(bad)[0]
        raise ValueError(f"{where}: position is NaN or infinite at frame {frame}, particle {particle}")
    if metadata is not None:
        low = np.array([b[0] for b in metadata.bounds]) - bounds_tolerance
        high = np.array([b[1] for b in metadata.bounds]) + bounds_tolerance
        outside = (position < low) | (position > high)
        if outside.any():
            frame, particle, axis = np.argwhere(outside)[0]
            raise ValueError(
                f"{where}: particle {particle} at frame {frame} is outside the metadata bounds on axis {axis} "
                f"({position[frame, particle, axis]:.4g} not in {metadata.bounds[axis]})"
            )
    return trajectory


def write_trajectories(path: str | Path, trajectories: list[Trajectory]) -> None:
    """Writes trajectories in structnets' npz layout (plain arrays, no pickles), atomically."""
    arrays = {"__layout__": np.array(_LAYOUT)}
    for trajectory in trajectories:
        if "/" in trajectory.name:
            raise ValueError(f"trajectory name {trajectory.name!r} may not contain '/'")
        arrays[f"{trajectory.name}/position"] = np.asarray(trajectory.position, dtype=np.float32)
        arrays[f"{trajectory.name}/particle_type"] = np.asarray(trajectory.particle_type, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(path)
    atomic_write(path if path.suffix == ".npz" else path.with_name(path.name + ".npz"), buffer.getvalue())  # as numpy


def read_trajectories(
    path: str | Path,
    metadata: SimulationMetadata | None = None,
    *,
    allow_pickle: bool = False,
    min_length: int = 7,
    bounds_tolerance: float = 1e-3,
) -> list[Trajectory]:
    """Trajectories of one split file, in either npz layout (see the module docstring).

    Args:
        metadata: checked against when given (dimension, bounds).
        allow_pickle: read the PyTorch GNS layout, whose object arrays need unpickling;
            only for files you trust.
        min_length: fewest frames a trajectory may have: the history window (6
            positions for 5 velocities) plus the target frame.
        bounds_tolerance: how far outside the metadata bounds a particle may stray.

    Raises:
        PickledDataError: a GNS-layout file without ``allow_pickle``.
        ValueError: bad contents, named with the file and the trajectory.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file at {path}")
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if "__layout__" in names:
            layout = str(archive["__layout__"])
            if layout != _LAYOUT:
                raise ValueError(f"{path}: unknown layout {layout!r}")
            simulations = sorted({n.split("/")[0] for n in names if "/" in n})
            out = []
            for name in simulations:
                trajectory = Trajectory(name, archive[f"{name}/position"], archive[f"{name}/particle_type"])
                out.append(_check(trajectory, f"{path}, trajectory {name!r}", metadata, min_length, bounds_tolerance))
            return out
    if not allow_pickle:
        raise PickledDataError(
            f"{path} is in the PyTorch GNS layout, whose arrays are Python objects that only unpickling can read, "
            "and unpickling runs code from the file. If you trust it, pass allow_pickle=True (or convert it once with "
            "structnets.particles.convert_gns_npz) and read the converted file from then on."
        )
    with np.load(path, allow_pickle=True) as archive:
        out = []
        for name in archive.keys():
            entry = archive[name]
            if entry.dtype != object or len(entry) != 2:
                raise ValueError(f"{path}, trajectory {name!r}: expected (positions, particle_type), got {entry.dtype}")
            position = np.asarray(entry[0], dtype=np.float32)
            kinds = np.asarray(entry[1], dtype=np.int64)
            where = f"{path}, trajectory {name!r}"
            out.append(_check(Trajectory(name, position, kinds), where, metadata, min_length, bounds_tolerance))
        return out


def convert_gns_npz(source: str | Path, destination: str | Path) -> int:
    """Rewrites a (trusted) PyTorch GNS npz in structnets' layout; returns the trajectory count."""
    trajectories = read_trajectories(source, allow_pickle=True, min_length=1)
    write_trajectories(destination, trajectories)
    return len(trajectories)


def read_memmap_split(
    folder: str | Path,
    split: str,
    metadata: SimulationMetadata | None = None,
    *,
    min_length: int = 7,
    bounds_tolerance: float = 1e-3,
) -> list[Trajectory]:
    """A split in the memory-mapped layout: ``<split>_offset.json`` describing slices of
    ``<split>_position.dat`` (float32) and ``<split>_particle_type.dat`` (int64)."""
    folder = Path(folder)
    offsets_path = folder / f"{split}_offset.json"
    if not offsets_path.is_file():
        raise FileNotFoundError(f"no {offsets_path}")
    offsets = json.loads(offsets_path.read_text())
    files = {kind: folder / f"{split}_{kind}.dat" for kind in ("position", "particle_type")}
    for file in files.values():
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found; the {split} positions of WaterDrop-style datasets come from the tfrecords at "
                f"{WATERDROP_URL} (convert them, or generate data with the project's own simulator)"
            )
    positions = np.memmap(files["position"], dtype=np.float32, mode="r")
    kinds = np.memmap(files["particle_type"], dtype=np.int64, mode="r")
    out = []
    for name, entry in offsets.items():
        where = f"{offsets_path}, trajectory {name!r}"
        try:
            p_offset, p_shape = entry["position"]["offset"], tuple(entry["position"]["shape"])
            k_offset, k_shape = entry["particle_type"]["offset"], tuple(entry["particle_type"]["shape"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"{where}: missing field {error}") from None
        p_size, k_size = math.prod(p_shape), math.prod(k_shape)
        if p_offset + p_size > positions.size or k_offset + k_size > kinds.size:
            raise ValueError(f"{where}: offsets run past the end of the .dat files")
        trajectory = Trajectory(
            name,
            np.array(positions[p_offset : p_offset + p_size]).reshape(p_shape),
            np.array(kinds[k_offset : k_offset + k_size]).reshape(k_shape),
        )
        out.append(_check(trajectory, where, metadata, min_length, bounds_tolerance))
    return out
