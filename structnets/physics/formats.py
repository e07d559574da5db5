"""The community's particle datasets: LagrangeBench's HDF5, DeepMind's TFRecord, and which a folder holds.

A dataset is a folder with ``metadata.json`` and one file per split (``train``, ``valid``,
``test``), in one of three formats:

* ``structnets``: ``SPLIT.npz`` in structnets' plain-array layout (:mod:`.particles`).
* ``lagrangebench``: ``SPLIT.h5`` as LagrangeBench (Toshev et al. 2023) writes it: one HDF5
  group per trajectory, named ``00000``, ``00001``, ..., holding ``position`` ``[T, N, D]``
  (float) and ``particle_type`` ``[N]`` (int); other members are ignored. Its
  ``metadata.json`` gives the frames per split (``sequence_length_train``,
  ``sequence_length_test``) where the GNS metadata has ``sequence_length``:
  ``sequence_length_train`` is read as ``sequence_length``. ``dt`` is the solver's step
  (frames lie ``write_every`` steps apart); the velocity and acceleration statistics are,
  as in the GNS metadata, of one frame's displacement. Read with h5py.
* ``tfrecord``: ``SPLIT.tfrecord`` of DeepMind's learning_to_simulate (Sanchez-Gonzalez et
  al. 2020): one ``tf.train.SequenceExample`` per trajectory, with the context features
  ``key`` (int64, the trajectory's name here) and ``particle_type`` (bytes: the raw int64
  types), the feature list ``position`` (per frame one bytes value, ``N * D`` raw float32)
  and, in datasets with global features, ``step_context`` (per frame raw float32, kept as
  :attr:`Trajectory.step_context`). The metadata is the GNS one. Read with the
  ``tfrecord`` package, without TensorFlow; the records' checksums are verified.

h5py and tfrecord come with the ``[physics]`` extra (``pip install 'structnets[physics]'``)
and are imported only when such a file is read. Every reader refuses what the npz readers
refuse (:func:`.particles.read_trajectories`), naming the file, the trajectory and the
field, and refuses a damaged or foreign file with a ValueError that names it.

A dataset whose metadata has a periodic axis (``periodic_boundary_conditions``, as the
LagrangeBench datasets have) keeps it in its metadata, and the learned simulator wraps
across those axes (:class:`structnets.models.gns.LearnedSimulator`).
"""

from __future__ import annotations

import importlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .particles import SimulationMetadata, Trajectory, _check, read_metadata, read_trajectories

__all__ = [
    "FORMATS",
    "DatasetFolder",
    "detect_format",
    "open_dataset",
    "read_lagrangebench",
    "read_tfrecord",
]

FORMATS = ("auto", "structnets", "lagrangebench", "tfrecord")
SPLITS = ("train", "valid", "test")
_SUFFIX = {"structnets": ".npz", "lagrangebench": ".h5", "tfrecord": ".tfrecord"}
_LAGRANGEBENCH_ALIASES = {"sequence_length": "sequence_length_train"}
# Deflate compresses at most about 1032:1, so no genuine HDF5 dataset holds more than this
# many times its file's size; a header that says more is damaged (and reading it would
# try to allocate all of it).
_MAX_EXPANSION = 1100


def _require(module: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs {module}, which the [physics] extra installs: pip install 'structnets[physics]'",
            name=module,
        ) from error


def detect_format(folder: str | Path) -> str:
    """The format of a dataset folder by its split files' names; ``structnets`` when it has none.

    Raises:
        ValueError: split files of more than one format.
    """
    folder = Path(folder)
    found = {
        name: [f"{split}{suffix}" for split in SPLITS if (folder / f"{split}{suffix}").is_file()]
        for name, suffix in _SUFFIX.items()
    }
    found = {name: files for name, files in found.items() if files}
    if len(found) > 1:
        listed = "; ".join(f"{name}: {', '.join(files)}" for name, files in found.items())
        raise ValueError(f"{folder} holds the split files of several formats ({listed}); choose one with --format")
    return next(iter(found), "structnets")


@dataclass(frozen=True)
class DatasetFolder:
    """A dataset folder, its format (never ``auto``) and its checked metadata."""

    folder: Path
    format: str
    metadata: SimulationMetadata

    def split_file(self, split: str) -> Path:
        return self.folder / f"{split}{_SUFFIX[self.format]}"

    def has(self, split: str) -> bool:
        return self.split_file(split).is_file()

    def read(
        self,
        split: str,
        *,
        min_length: int = 7,
        bounds_tolerance: float = 1e-3,
        particle_types: int | None = None,
    ) -> list[Trajectory]:
        """The split's trajectories, checked against the metadata (see :func:`.particles.read_trajectories`)."""
        reader = {"structnets": read_trajectories, "lagrangebench": read_lagrangebench, "tfrecord": read_tfrecord}
        checks = {"min_length": min_length, "bounds_tolerance": bounds_tolerance, "particle_types": particle_types}
        return reader[self.format](self.split_file(split), self.metadata, **checks)


def open_dataset(folder: str | Path, format: str = "auto") -> DatasetFolder:
    """A dataset folder in one of :data:`FORMATS` (``auto``: by :func:`detect_format`), its metadata read."""
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    folder = Path(folder)
    format = detect_format(folder) if format == "auto" else format
    aliases = _LAGRANGEBENCH_ALIASES if format == "lagrangebench" else None
    metadata = read_metadata(folder, aliases=aliases)
    return DatasetFolder(folder, format, metadata)


def _guarded(where: str, what: str, call):
    """``call()``, or a ValueError starting with ``where``: a damaged HDF5 file fails inside h5py in many ways."""
    try:
        return call()
    except Exception as error:  # OSError, KeyError, RuntimeError, OverflowError, MemoryError, ... from h5py
        raise ValueError(f"{where}: {what} ({type(error).__name__}: {error})") from None


def _h5_array(h5py, group, field: str, where: str, kinds: str, limit: int) -> np.ndarray:
    if not _guarded(where, f"cannot look up field {field!r}", lambda: field in group):
        raise ValueError(f"{where}: missing field {field!r}")
    node = _guarded(where, f"field {field!r} cannot be opened", lambda: group[field])
    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"{where}: field {field!r} is a {type(node).__name__}, not an array")
    dtype, shape = _guarded(where, f"field {field!r} has an unreadable header", lambda: (node.dtype, node.shape))
    if shape is None:
        raise ValueError(f"{where}: field {field!r} holds no data (an empty dataspace)")
    if dtype.kind not in kinds:
        wanted = "real numbers" if "f" in kinds else "integers"
        raise ValueError(f"{where}: {field} must be an array of {wanted}, got dtype {dtype}, shape {shape}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > limit:
        raise ValueError(f"{where}: field {field!r} declares shape {shape} ({size} bytes), more than the file can hold")
    return np.asarray(_guarded(where, f"field {field!r} cannot be read", lambda: node[()]))


def read_lagrangebench(
    path: str | Path,
    metadata: SimulationMetadata | None = None,
    *,
    min_length: int = 7,
    bounds_tolerance: float = 1e-3,
    particle_types: int | None = None,
) -> list[Trajectory]:
    """Trajectories of a LagrangeBench ``.h5`` split file, in the file's group order (see the module docstring).

    The arguments are those of :func:`.particles.read_trajectories`.

    Raises:
        ImportError: h5py is not installed (the ``[physics]`` extra).
        ValueError: a damaged or foreign file, or bad contents, named with the file, the
            trajectory and the field.
    """
    h5py = _require("h5py", "reading LagrangeBench's HDF5 files")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file at {path}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty file, so no trajectories")
    where = str(path)
    file = _guarded(where, "not a readable HDF5 file", lambda: h5py.File(path, "r"))
    raw = []
    try:
        names = _guarded(where, "cannot list its groups", lambda: list(file.keys()))
        if not names:
            raise ValueError(
                f"{path}: holds no trajectories; LagrangeBench's layout has one group per trajectory ('00000', ...) "
                "with 'position' [frames, particles, dim] and 'particle_type' [particles]"
            )
        for name in names:
            here = f"{path}, trajectory {name!r}"
            group = _guarded(here, "cannot be opened", lambda: file[name])  # noqa: B023 (called at once)
            if not isinstance(group, h5py.Group):
                raise ValueError(f"{here}: is a {type(group).__name__}, not a group of 'position' and 'particle_type'")
            arrays = [
                _h5_array(h5py, group, field, here, kinds, _MAX_EXPANSION * size + 2**20)
                for field, kinds in (("position", "iuf"), ("particle_type", "iu"))
            ]
            raw.append(Trajectory(name, *arrays))
    finally:
        _guarded(where, "cannot be closed", file.close)
    return _check_all(raw, [f"{path}, trajectory {t.name!r}" for t in raw], metadata, min_length, bounds_tolerance,
                      particle_types)  # fmt: skip


def _check_all(raw: list[Trajectory], wheres: list[str], metadata, *checks) -> list[Trajectory]:
    """Each trajectory through :func:`.particles._check`, and all of one dimension."""
    out = []
    for trajectory, where in zip(raw, wheres):
        out.append(_check(trajectory, where, metadata, *checks))
        dims = out[0].position.shape[2], out[-1].position.shape[2]
        if dims[0] != dims[1]:
            raise ValueError(f"{where}: positions are {dims[1]}-dimensional, those of {out[0].name!r} {dims[0]}")
    return out


def _records(path: Path, masked_crc):
    """The records of a TFRecord file, their length and data checksums verified."""
    size = path.stat().st_size
    with path.open("rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
        file.seek(0)
        offset, index = 0, 0
        while offset < size:
            header = file.read(12)
            if len(header) < 12:
                raise ValueError(f"{path}: record {index} is cut short in its header (a truncated file?)")
            if masked_crc(header[:8]) != header[8:]:
                hint = "; it is gzip-compressed, which DeepMind's files are not: gunzip it" if gzipped else ""
                raise ValueError(
                    f"{path}: record {index}: the length's checksum does not match: not a TFRecord file, "
                    f"or a damaged one{hint}"
                )
            (length,) = struct.unpack("<Q", header[:8])
            if length > size - offset - 16:
                raise ValueError(
                    f"{path}: record {index} declares {length} bytes, more than the {max(size - offset - 16, 0)} "
                    "left in the file (a truncated file?)"
                )
            data, checksum = file.read(length), file.read(4)
            if masked_crc(data) != checksum:
                raise ValueError(f"{path}: record {index}: the data's checksum does not match (a damaged file)")
            yield data
            offset, index = offset + length + 16, index + 1


def _feature(feature, where: str, field: str, kind: str) -> list:
    found = feature.WhichOneof("kind")
    if found != kind:
        raise ValueError(f"{where}: field {field!r} must be a {kind}, got {found or 'an empty feature'}")
    return list(getattr(feature, kind).value)


def _frames(features, where: str, field: str) -> list[bytes]:
    """One raw float32 blob per frame, all of one length."""
    blobs = [b"".join(_feature(f, where, f"{field}[{t}]", "bytes_list")) for t, f in enumerate(features)]
    for t, blob in enumerate(blobs):
        if len(blob) != len(blobs[0]) or len(blob) % 4:
            raise ValueError(
                f"{where}: field {field!r} frame {t} holds {len(blob)} bytes, frame 0 {len(blobs[0])}; "
                "each frame is the same number of raw float32 values"
            )
    return blobs


def _sequence_example(record: bytes, where: str, example_pb2) -> tuple[int | None, Trajectory]:
    """The ``key`` and the (unchecked) trajectory of one DeepMind SequenceExample record."""
    example = example_pb2.SequenceExample()
    try:
        example.ParseFromString(record)
    except Exception as error:  # protobuf's DecodeError, or whatever its parser raises
        raise ValueError(f"{where}: not a tf.train.SequenceExample ({type(error).__name__}: {error})") from None
    context, lists = example.context.feature, example.feature_lists.feature_list
    key = None
    if "key" in context:
        values = _feature(context["key"], where, "key", "int64_list")
        if len(values) != 1:
            raise ValueError(f"{where}: field 'key' must be one int64, got {len(values)}")
        key = values[0]
    for name, holder in (("particle_type", context), ("position", lists)):
        if name not in holder:
            kind = "context feature" if holder is context else "feature list"
            raise ValueError(
                f"{where}: missing {kind} {name!r} (learning_to_simulate's SequenceExample has the context "
                "features 'key' and 'particle_type' and the feature list 'position')"
            )
    blob = b"".join(_feature(context["particle_type"], where, "particle_type", "bytes_list"))
    if len(blob) % 8 or not blob:
        raise ValueError(f"{where}: field 'particle_type' holds {len(blob)} bytes, not one or more raw int64 values")
    kinds = np.frombuffer(blob, "<i8").astype(np.int64)
    frames = _frames(lists["position"].feature, where, "position")
    if not frames:
        raise ValueError(f"{where}: field 'position' has no frames")
    particles = kinds.size
    dim, rest = divmod(len(frames[0]), 4 * particles)
    if rest or not dim:
        raise ValueError(
            f"{where}: field 'position' frame 0 holds {len(frames[0])} bytes, not dim float32 coordinates for each "
            f"of the {particles} particles of particle_type"
        )
    position = np.frombuffer(b"".join(frames), "<f4").reshape(len(frames), particles, dim).astype(np.float32)
    step_context = None
    if "step_context" in lists:
        blobs = _frames(lists["step_context"].feature, where, "step_context")
        if len(blobs) != len(frames):
            raise ValueError(f"{where}: field 'step_context' has {len(blobs)} frames, 'position' {len(frames)}")
        width = len(blobs[0]) // 4 if blobs else 0
        step_context = np.frombuffer(b"".join(blobs), "<f4").reshape(len(blobs), width).astype(np.float32)
        bad = ~np.isfinite(step_context)
        if bad.any():
            raise ValueError(f"{where}: step_context is NaN or infinite at frame {np.argwhere(bad)[0][0]}")
    return key, Trajectory("", position, kinds, step_context)


def read_tfrecord(
    path: str | Path,
    metadata: SimulationMetadata | None = None,
    *,
    min_length: int = 7,
    bounds_tolerance: float = 1e-3,
    particle_types: int | None = None,
) -> list[Trajectory]:
    """Trajectories of a DeepMind ``.tfrecord`` split file, in record order (see the module docstring).

    A trajectory is named by its ``key`` (the record's index when it has none); keys are
    unique. The arguments are those of :func:`.particles.read_trajectories`.

    Raises:
        ImportError: the tfrecord package is not installed (the ``[physics]`` extra).
        ValueError: a damaged or foreign file, or bad contents, named with the file, the
            trajectory and the field.
    """
    purpose = "reading DeepMind's TFRecord files"
    example_pb2 = _require("tfrecord.example_pb2", purpose)
    masked_crc = _require("tfrecord.writer", purpose).TFRecordWriter.masked_crc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file at {path}")
    raw, seen = [], {}
    for index, record in enumerate(_records(path, masked_crc)):
        key, trajectory = _sequence_example(record, f"{path}, record {index}", example_pb2)
        name = str(index if key is None else key)
        if name in seen:
            raise ValueError(f"{path}, record {index}: key {name} repeats that of record {seen[name]}")
        seen[name] = index
        raw.append(Trajectory(name, trajectory.position, trajectory.particle_type, trajectory.step_context))
    if not raw:
        raise ValueError(f"{path}: holds no records, so no trajectories")
    wheres = [f"{path}, trajectory {t.name!r} (record {seen[t.name]})" for t in raw]
    return _check_all(raw, wheres, metadata, min_length, bounds_tolerance, particle_types)
