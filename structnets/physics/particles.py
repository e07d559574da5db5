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

LagrangeBench's HDF5 and DeepMind's TFRecord files are read by :mod:`structnets.physics.formats`,
into the same types and through the same checks. ``metadata.json`` may also give
``periodic_boundary_conditions`` (one boolean per axis), ``dx`` and ``write_every``, as
LagrangeBench's do; they are checked and kept, and the simulator wraps across the periodic
axes.

Every reader checks what it returns against the metadata. It refuses, naming the file and
the field, a missing or malformed metadata field (``dim`` is the integer 2 or 3, never a
JSON boolean; vectors have ``dim`` finite numbers; standard deviations are positive), a
file with no trajectories, a trajectory with no particles, non-numeric or non-finite
positions, particles outside the bounds, trajectories shorter than the history window,
and particle types that are not integers or lie outside ``0 .. particle_types - 1``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
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
    "convert_gns",
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
_OPTIONAL = ("periodic_boundary_conditions", "dx", "write_every")


_EXPECTED = (
    "expected structnets' layout ('__layout__', then '<name>/position' and '<name>/particle_type' per trajectory, "
    "as write_trajectories writes it) or the PyTorch GNS layout (one (positions, particle_type) object array per "
    "trajectory)"
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
    # Optional (LagrangeBench's metadata has them); None when the file does not say.
    periodic_boundary_conditions: list[bool] | None = None
    dx: float | None = None
    write_every: int | None = None

    @property
    def periodic(self) -> bool:
        """Whether any axis is periodic."""
        return bool(self.periodic_boundary_conditions and any(self.periodic_boundary_conditions))

    def to_json(self) -> dict:
        optional = {name: getattr(self, name) for name in _OPTIONAL if getattr(self, name) is not None}
        return {**{name: getattr(self, name) for name in _REQUIRED}, **optional}


def _show(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut short: a message quotes what it refuses, not a megabyte of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(value: object) -> float | None:
    """``value`` as a float when it is a finite JSON number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range
        return None
    return number if math.isfinite(number) else None


def _numbers(value: object, count: int) -> list[float] | None:
    """``value`` as ``count`` finite floats when it is a JSON list of them, else None."""
    if not (isinstance(value, list) and len(value) == count):
        return None
    numbers = [_finite(v) for v in value]
    return None if None in numbers else numbers


def read_metadata(path: str | Path, *, aliases: dict[str, str] | None = None) -> SimulationMetadata:
    """``metadata.json`` of a dataset (or the folder that holds it).

    The fields are those of DeepMind's learning_to_simulate and PyTorch GNS datasets, and
    optionally ``periodic_boundary_conditions``, ``dx`` and ``write_every``; other fields
    are ignored. ``aliases`` maps a required field to the field read in its place when it
    is missing (LagrangeBench's ``sequence_length_train`` for ``sequence_length``).

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
        raw = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object with the fields {', '.join(_REQUIRED)}, got {_show(raw)}")
    aliases = aliases or {}
    raw.update({name: raw[alias] for name, alias in aliases.items() if name not in raw and alias in raw})
    missing = [name + (f" (or {aliases[name]})" if name in aliases else "") for name in _REQUIRED if name not in raw]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    dim = raw["dim"]
    if type(dim) is not int or dim not in (2, 3):  # type(True) is bool: a JSON boolean is no dimension
        raise ValueError(f"{path}: field 'dim' must be the integer 2 or 3, got {_show(dim)}")
    pairs = raw["bounds"]
    bounds = [_numbers(pair, 2) for pair in pairs] if isinstance(pairs, list) and len(pairs) == dim else None
    if bounds is None or not all(pair is not None and pair[0] < pair[1] for pair in bounds):
        raise ValueError(
            f"{path}: field 'bounds' must be {dim} [low, high] pairs of finite numbers with low < high, "
            f"got {_show(pairs)}"
        )
    fields: dict[str, object] = {"dim": dim, "bounds": bounds}
    for name in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
        numbers = _numbers(raw[name], dim)
        if numbers is None:
            raise ValueError(f"{path}: field {name!r} must be {dim} finite numbers, got {_show(raw[name])}")
        if name.endswith("std") and any(v <= 0 for v in numbers):
            raise ValueError(f"{path}: field {name!r} must be positive, got {_show(raw[name])}")
        fields[name] = numbers
    for name in ("dt", "default_connectivity_radius"):
        number = _finite(raw[name])
        if number is None or number <= 0:
            raise ValueError(f"{path}: field {name!r} must be a positive finite number, got {_show(raw[name])}")
        fields[name] = number
    length = raw["sequence_length"]
    if type(length) is not int or length <= 0:
        raise ValueError(f"{path}: field 'sequence_length' must be a positive integer, got {_show(length)}")
    fields["sequence_length"] = length
    periodic = raw.get("periodic_boundary_conditions")
    if periodic is not None:
        # LagrangeBench's 2D datasets list three axes (JAX-SPH's boxes are 3D); the third names
        # no axis of the data. It is read only when it agrees with the others, so a 2D
        # file that wraps neither axis but says [false, false, true] is still refused.
        if dim == 2 and isinstance(periodic, list) and len(periodic) == 3 and periodic[2] in periodic[:2]:
            periodic = periodic[:2]
        if not (isinstance(periodic, list) and len(periodic) == dim and all(type(v) is bool for v in periodic)):
            raise ValueError(
                f"{path}: field 'periodic_boundary_conditions' must be {dim} booleans, got {_show(periodic)}"
            )
        fields["periodic_boundary_conditions"] = periodic
    if raw.get("dx") is not None:
        fields["dx"] = _finite(raw["dx"])
        if fields["dx"] is None or fields["dx"] <= 0:
            raise ValueError(f"{path}: field 'dx' must be a positive finite number, got {_show(raw['dx'])}")
    if raw.get("write_every") is not None:
        fields["write_every"] = raw["write_every"]
        if type(raw["write_every"]) is not int or raw["write_every"] <= 0:
            raise ValueError(f"{path}: field 'write_every' must be a positive integer, got {_show(raw['write_every'])}")
    return SimulationMetadata(**fields)


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One simulation: ``position`` ``[T, N, D]`` float32 and ``particle_type`` ``[N]`` int64.

    ``step_context`` ``[T, C]`` float32: the per-frame global features of DeepMind's TFRecord
    datasets that have them (the simulator does not use them); None elsewhere.
    """

    name: str
    position: np.ndarray
    particle_type: np.ndarray
    step_context: np.ndarray | None = None


def _check(
    trajectory: Trajectory,
    where: str,
    metadata: SimulationMetadata | None,
    min_length: int,
    bounds_tolerance: float,
    particle_types: int | None = None,
) -> Trajectory:
    """The trajectory with float32 positions and int64 types, or a ValueError starting with ``where``."""
    position, kinds = trajectory.position, trajectory.particle_type
    if not isinstance(position, np.ndarray) or position.dtype.kind not in "iuf":
        raise ValueError(f"{where}: position must be an array of real numbers, got {_describe(position)}")
    if position.ndim != 3:
        raise ValueError(f"{where}: position must be [frames, particles, dim], got shape {position.shape}")
    frames, particles, dim = position.shape
    if frames == 0 or particles == 0:
        raise ValueError(f"{where}: position has no {'particles' if frames else 'frames'} (shape {position.shape})")
    if metadata is not None and dim != metadata.dim:
        raise ValueError(f"{where}: positions are {dim}-dimensional, the metadata says dim {metadata.dim}")
    if dim not in (2, 3):
        raise ValueError(f"{where}: positions are {dim}-dimensional, not 2 or 3 (position has shape {position.shape})")
    if not isinstance(kinds, np.ndarray) or kinds.dtype.kind not in "iu":
        raise ValueError(f"{where}: particle_type must be an array of integers, got {_describe(kinds)}")
    if kinds.shape != (particles,):
        raise ValueError(f"{where}: particle_type has shape {kinds.shape}, expected ({particles},)")
    wrong = kinds < 0 if particle_types is None else (kinds < 0) | (kinds >= particle_types)
    if wrong.any():
        particle = int(np.argmax(wrong))
        allowed = "negative" if particle_types is None else f"out of range 0 to {particle_types - 1}"
        raise ValueError(
            f"{where}: particle_type {kinds[particle]} of particle {particle} is {allowed}"
            + ("" if particle_types is None else f" (the simulator has {particle_types} particle types)")
        )
    if frames < min_length:
        raise ValueError(f"{where}: {frames} frames, shorter than the {min_length} the history window needs")
    with np.errstate(over="ignore"):
        single = position.astype(np.float32, copy=False)
    bad = ~np.isfinite(single)
    if bad.any():
        frame, particle, _ = np.argwhere(bad)[0]
        beyond = " (beyond float32's range)" if np.isfinite(position[frame, particle]).all() else ""
        raise ValueError(f"{where}: position is NaN or infinite{beyond} at frame {frame}, particle {particle}")
    if metadata is not None:
        low = np.array([b[0] for b in metadata.bounds]) - bounds_tolerance
        high = np.array([b[1] for b in metadata.bounds]) + bounds_tolerance
        outside = (single < low) | (single > high)
        if outside.any():
            frame, particle, axis = np.argwhere(outside)[0]
            raise ValueError(
                f"{where}: particle {particle} at frame {frame} is outside the metadata bounds on axis {axis} "
                f"({single[frame, particle, axis]:.4g} not in {metadata.bounds[axis]})"
            )
    return Trajectory(trajectory.name, single, kinds.astype(np.int64, copy=False), trajectory.step_context)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"dtype {value.dtype}, shape {value.shape}"
    return type(value).__name__


def write_trajectories(path: str | Path, trajectories: list[Trajectory]) -> None:
    """Writes trajectories in structnets' npz layout (plain arrays, no pickles), atomically."""
    if not trajectories:
        raise ValueError(f"{path}: no trajectories to write")
    arrays = {"__layout__": np.array(_LAYOUT)}
    for trajectory in trajectories:
        if not trajectory.name or "/" in trajectory.name:
            raise ValueError(f"trajectory name {trajectory.name!r} must be non-empty and may not contain '/'")
        arrays[f"{trajectory.name}/position"] = np.asarray(trajectory.position, dtype=np.float32)
        arrays[f"{trajectory.name}/particle_type"] = np.asarray(trajectory.particle_type, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(_npz_name(path), buffer.getvalue())


def _npz_name(path: str | Path) -> Path:
    """``path``, with ``.npz`` appended as numpy does when it has another suffix."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


_UNREADABLE = (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    try:
        archive = np.load(path, allow_pickle=False)
    except _UNREADABLE as error:
        raise ValueError(f"{path}: not a readable npz archive ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds one bare array ({_describe(archive)}), not an npz archive of trajectories")
    return archive


def _holds_objects(archive: np.lib.npyio.NpzFile, key: str) -> bool:
    """Whether member ``key`` is an array of Python objects, read from its header alone."""
    member = key + ".npy" if key + ".npy" in archive.zip.namelist() else key
    try:
        with archive.zip.open(member) as file:
            version = np.lib.format.read_magic(file)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return header(file)[2].hasobject
    except _UNREADABLE:
        return False  # not an npy member at all; reading it will say so


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        value = archive[key]
    except _UNREADABLE as error:
        if _holds_objects(archive, key):
            raise ValueError(
                f"{path}: array {key!r} holds Python objects, which structnets' layout never does; "
                "it is not unpickled (unpickling runs code from the file)"
            ) from None
        raise ValueError(f"{path}: array {key!r} cannot be read ({error})") from None
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: member {key!r} is not a numpy array")
    return value


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _own_layout(archive: np.lib.npyio.NpzFile, path: Path) -> list[Trajectory]:
    """The trajectories of a file in structnets' layout, unchecked."""
    layout = _member(archive, "__layout__", path)
    if not (layout.shape == () and layout.dtype.kind == "U" and str(layout) == _LAYOUT):
        raise ValueError(
            f"{path}: unknown layout {_show(layout.tolist() if layout.size < 100 else layout)}, expected {_LAYOUT!r}"
        )
    fields: dict[str, dict[str, str]] = {}
    for key in archive.files:
        if key == "__layout__":
            continue
        name, slash, field = key.rpartition("/")
        if not slash or not name or "/" in name or field not in ("position", "particle_type"):
            raise ValueError(
                f"{path}: unexpected array {key!r}; structnets' layout holds '__layout__' and, per trajectory, "
                "'<name>/position' and '<name>/particle_type'"
            )
        fields.setdefault(name, {})[field] = key
    if not fields:
        raise ValueError(f"{path}: no trajectories (the file holds only '__layout__')")
    out = []
    for name in sorted(fields):
        for field in ("position", "particle_type"):
            if field not in fields[name]:
                raise ValueError(f"{path}, trajectory {name!r}: missing field {field!r}")
        position, kinds = (_member(archive, fields[name][field], path) for field in ("position", "particle_type"))
        out.append(Trajectory(name, position, kinds))
    return out


def _gns_layout(path: Path) -> list[Trajectory]:
    """The trajectories of a (trusted) PyTorch GNS file, unchecked: this unpickles."""
    out = []
    with np.load(path, allow_pickle=True) as archive:
        for name in archive.files:
            where = f"{path}, trajectory {name!r}"
            try:
                entry = archive[name]
            except Exception as error:  # unpickling can fail in any way the file's objects choose
                raise ValueError(f"{where}: cannot be read ({type(error).__name__}: {error})") from None
            if not (isinstance(entry, np.ndarray) and entry.dtype == object and entry.shape == (2,)):
                raise ValueError(
                    f"{where}: expected an object array (positions, particle_type), got {_describe(entry)}"
                )
            arrays = []
            for field, value in zip(("position", "particle_type"), entry):
                try:
                    arrays.append(np.asarray(value))
                except Exception as error:  # ragged lists and the like
                    raise ValueError(f"{where}: field {field!r} is not an array ({error})") from None
            out.append(Trajectory(name, *arrays))
    return out


def read_trajectories(
    path: str | Path,
    metadata: SimulationMetadata | None = None,
    *,
    allow_pickle: bool = False,
    min_length: int = 7,
    bounds_tolerance: float = 1e-3,
    particle_types: int | None = None,
) -> list[Trajectory]:
    """Trajectories of one split file, in either npz layout (see the module docstring).

    Args:
        metadata: checked against when given (dimension, bounds).
        allow_pickle: read the PyTorch GNS layout, whose object arrays need unpickling;
            only for files you trust.
        min_length: fewest frames a trajectory may have: the history window (6
            positions for 5 velocities) plus the target frame.
        bounds_tolerance: how far outside the metadata bounds a particle may stray.
        particle_types: how many particle types the simulator embeds (its
            ``GNSConfig.particle_types``); types must lie in ``0 .. particle_types - 1``.
            None: only negative types are refused.

    Raises:
        PickledDataError: a file holding Python objects (the GNS layout) without ``allow_pickle``.
        ValueError: bad contents, named with the file, the trajectory and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file at {path}")
    with _open_npz(path) as archive:
        names = list(archive.files)
        if not names:
            raise ValueError(f"{path}: holds no arrays, so no trajectories; {_EXPECTED}")
        own = "__layout__" in names
        if own:
            raw = _own_layout(archive, path)
        else:
            pickled = [name for name in names if _holds_objects(archive, name)]
            if not pickled:
                raise ValueError(
                    f"{path}: not a trajectory file: it holds the plain arrays {_listing(names)}, "
                    f"with no '__layout__' and no Python objects; {_EXPECTED}"
                )
            if not allow_pickle:
                raise PickledDataError(
                    f"{path} holds arrays of Python objects ({_listing(pickled, 3)}), as the pickled PyTorch GNS "
                    "layout does; only unpickling can read them, and unpickling runs code from the file. If you "
                    f"trust it, convert it once (`structnets simulate convert {path.parent} DST` converts its "
                    "dataset folder; structnets.physics.particles.convert_gns_npz one file; or pass "
                    "allow_pickle=True) and read the converted files from then on."
                )
    if not own:
        raw = _gns_layout(path)
    out = []
    for trajectory in raw:
        where = f"{path}, trajectory {trajectory.name!r}"
        out.append(_check(trajectory, where, metadata, min_length, bounds_tolerance, particle_types))
        dims = out[0].position.shape[2], out[-1].position.shape[2]
        if dims[0] != dims[1]:
            raise ValueError(f"{where}: positions are {dims[1]}-dimensional, those of {out[0].name!r} {dims[0]}")
    return out


def convert_gns_npz(source: str | Path, destination: str | Path, metadata: SimulationMetadata | None = None) -> int:
    """Rewrites a (trusted) PyTorch GNS npz in structnets' layout; returns the trajectory count.

    Converting unpickles ``source``, which can run code from it: only convert files you
    trust. The trajectories are checked (against ``metadata`` when given) before anything
    is written, and an existing ``destination`` is refused, not overwritten.
    """
    destination = _npz_name(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} exists; convert writes new files and overwrites none")
    trajectories = read_trajectories(source, metadata, allow_pickle=True, min_length=1)
    write_trajectories(destination, trajectories)
    return len(trajectories)


def convert_gns(source: str | Path, destination: str | Path) -> dict[Path, int]:
    """Converts a (trusted) PyTorch GNS dataset or split file; returns the trajectories per written file.

    ``source`` is one ``.npz`` (written to the file ``destination``, or under its own name
    into the folder ``destination``) or a dataset folder: its ``metadata.json`` (the GNS
    metadata is this library's, so it is checked and copied unchanged, last) and every
    ``*.npz`` in it, checked against that metadata, go to the folder ``destination``, ready
    for ``structnets simulate train --data destination``. Unpickles, so only for files you
    trust.
    """
    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        destination = destination / source.name if destination.is_dir() else destination
        return {_npz_name(destination): convert_gns_npz(source, destination)}
    metadata = read_metadata(source)
    splits = sorted(p for p in source.glob("*.npz") if p.is_file())
    if not splits:
        raise FileNotFoundError(f"{source}: no .npz split files to convert")
    targets = [destination / "metadata.json"] + [destination / split.name for split in splits]
    taken = [str(target) for target in targets if target.exists()]
    if taken:
        raise FileExistsError(f"{', '.join(taken)} exist(s); convert writes new files and overwrites none")
    destination.mkdir(parents=True, exist_ok=True)
    counts = {destination / split.name: convert_gns_npz(split, destination / split.name, metadata) for split in splits}
    atomic_write(destination / "metadata.json", (source / "metadata.json").read_bytes())  # last: marks the set whole
    return {**counts, destination / "metadata.json": 0}


def read_memmap_split(
    folder: str | Path,
    split: str,
    metadata: SimulationMetadata | None = None,
    *,
    min_length: int = 7,
    bounds_tolerance: float = 1e-3,
    particle_types: int | None = None,
) -> list[Trajectory]:
    """A split in the memory-mapped layout: ``<split>_offset.json`` describing slices of
    ``<split>_position.dat`` (float32) and ``<split>_particle_type.dat`` (int64)."""
    folder = Path(folder)
    offsets_path = folder / f"{split}_offset.json"
    if not offsets_path.is_file():
        raise FileNotFoundError(f"no {offsets_path}")
    try:
        offsets = json.loads(offsets_path.read_bytes())
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{offsets_path}: not valid JSON ({error})") from None
    if not isinstance(offsets, dict) or not offsets:
        raise ValueError(f"{offsets_path}: expected a JSON object of trajectories, got {_show(offsets)}")
    files = {kind: folder / f"{split}_{kind}.dat" for kind in ("position", "particle_type")}
    for file in files.values():
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found; the {split} positions of WaterDrop-style datasets come from the tfrecords at "
                f"{WATERDROP_URL} (convert them, or generate data with the project's own simulator)"
            )
    mapped = {}
    for kind, dtype in (("position", np.float32), ("particle_type", np.int64)):
        try:
            mapped[kind] = np.memmap(files[kind], dtype=dtype, mode="r")
        except (ValueError, OSError) as error:  # an empty file, or one of a partial element
            raise ValueError(f"{files[kind]}: cannot be read as {np.dtype(dtype)} ({error})") from None
    positions, kinds = mapped["position"], mapped["particle_type"]
    out = []
    for name, entry in offsets.items():
        where = f"{offsets_path}, trajectory {name!r}"
        try:
            p_offset, p_shape = entry["position"]["offset"], entry["position"]["shape"]
            k_offset, k_shape = entry["particle_type"]["offset"], entry["particle_type"]["shape"]
        except KeyError as error:
            raise ValueError(f"{where}: missing field {error}") from None
        except TypeError:
            raise ValueError(f"{where}: expected {{position: {{offset, shape}}, particle_type: ...}}") from None
        for field, offset, shape in (("position", p_offset, p_shape), ("particle_type", k_offset, k_shape)):
            if not (isinstance(shape, list) and all(type(v) is int and v >= 0 for v in [offset, *shape])):
                raise ValueError(f"{where}: field {field!r}: offset and shape must be non-negative integers")
        p_size, k_size = math.prod(p_shape), math.prod(k_shape)
        if p_offset + p_size > positions.size or k_offset + k_size > kinds.size:
            raise ValueError(f"{where}: offsets run past the end of the .dat files")
        trajectory = Trajectory(
            name,
            np.array(positions[p_offset : p_offset + p_size]).reshape(p_shape),
            np.array(kinds[k_offset : k_offset + k_size]).reshape(k_shape),
        )
        out.append(_check(trajectory, where, metadata, min_length, bounds_tolerance, particle_types))
    return out
