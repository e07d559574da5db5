import gzip
import json
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tfrecord.reader import tfrecord_loader
from tfrecord.writer import TFRecordWriter

from structnets.physics.formats import (
    detect_format,
    open_dataset,
    read_lagrangebench,
    read_tfrecord,
)
from structnets.physics.particles import SimulationMetadata, read_metadata
from structnets.train.checkpoint import load_checkpoint

_STATS = {name: [0.0, 0.0] for name in ("vel_mean", "acc_mean")} | {"vel_std": [1e-3] * 2, "acc_std": [1e-4] * 2}
# LagrangeBench's metadata: no sequence_length, the frames per split instead; dx, write_every, periodicity.
_LAGRANGEBENCH = {
    "case": "TGV", "solver": "SPH", "dim": 2, "dx": 0.02, "dt": 0.0004, "t_end": 5.0, "write_every": 100,
    "sequence_length_train": 12, "num_trajs_train": 2, "sequence_length_test": 12, "num_trajs_test": 1,
    "num_particles_max": 5, "periodic_boundary_conditions": [False, False], "bounds": [[0.0, 1.0], [0.0, 1.0]],
    "default_connectivity_radius": 0.029, **_STATS,
}  # fmt: skip
# DeepMind's learning_to_simulate metadata (the GNS one); positions have sequence_length + 1 frames.
_DEEPMIND = {
    "bounds": [[0.1, 0.9], [0.1, 0.9]], "sequence_length": 11, "default_connectivity_radius": 0.05, "dim": 2,
    "dt": 0.0025, **_STATS,
}  # fmt: skip


def _inside(rng, frames, particles, dim=2):
    return rng.uniform(0.2, 0.8, (frames, particles, dim)).astype(np.float32)


def _write_h5(path, trajectories):
    """A split file as LagrangeBench's gen_dataset writes it: gzip'd float32 positions, the types as given."""
    with h5py.File(path, "w") as file:
        for name, (position, kinds) in trajectories.items():
            file.create_dataset(f"{name}/particle_type", data=kinds)
            file.create_dataset(f"{name}/position", data=position, dtype=np.float32, compression="gzip")


def _example(key, position, kinds, step_context=None):
    """The context and feature lists of one trajectory in learning_to_simulate's SequenceExample schema."""
    sequence = {"position": ([frame.astype("<f4").tobytes() for frame in position], "byte")}
    if step_context is not None:
        sequence["step_context"] = ([row.astype("<f4").tobytes() for row in step_context], "byte")
    return {"key": (key, "int"), "particle_type": (kinds.astype("<i8").tobytes(), "byte")}, sequence


def _write_tfrecord(path, trajectories, context=None):
    """A split file of those SequenceExamples, by the tfrecord package's writer."""
    writer = TFRecordWriter(str(path))
    for k, (position, kinds) in enumerate(trajectories):
        writer.write(*_example(k, position, kinds, None if context is None else context[k]))
    writer.close()


def _record(payload: bytes) -> bytes:
    """One TFRecord frame around ``payload``, with valid checksums."""
    length = struct.pack("<Q", len(payload))
    return length + TFRecordWriter.masked_crc(length) + payload + TFRecordWriter.masked_crc(payload)


# The real LagrangeBench test set: 3 Lennard-Jones particles in a periodic box.


@pytest.fixture
def lennard_jones(data_dir):
    return data_dir / "lagrangebench_3D_LJ_3"


def test_real_lagrangebench_dataset(lennard_jones):
    dataset = open_dataset(lennard_jones)
    assert dataset.format == "lagrangebench" and detect_format(lennard_jones) == "lagrangebench"
    metadata, raw = dataset.metadata, json.loads((lennard_jones / "metadata.json").read_text())
    assert metadata.dim == 3 and metadata.dt == 0.005 and metadata.dx == 1.4 and metadata.write_every is None
    assert metadata.bounds == [[0.0, 5.0]] * 3 and metadata.default_connectivity_radius == 3.0
    assert metadata.periodic_boundary_conditions == [True, True, True] and metadata.periodic
    assert metadata.sequence_length == raw["sequence_length_train"] == 1214
    for name in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
        assert getattr(metadata, name) == raw[name]
    for split, frames in (("train", 1214), ("valid", 405), ("test", 405)):
        (trajectory,) = dataset.read(split, particle_types=9)
        assert trajectory.name == "00000" and trajectory.position.shape == (frames, 3, 3)
        assert trajectory.position.dtype == np.float32 and trajectory.particle_type.dtype == np.int64
        assert trajectory.particle_type.tolist() == [0, 0, 0] and trajectory.step_context is None
        assert trajectory.position.min() >= 0 and trajectory.position.max() <= 5
        with h5py.File(lennard_jones / f"{split}.h5", "r") as file:
            np.testing.assert_array_equal(trajectory.position, file["00000/position"][()])
    # The statistics are of one frame's displacement, wrapped across the periodic box, over all splits.
    steps = [np.diff(dataset.read(s)[0].position.astype(np.float64), axis=0) for s in ("train", "valid", "test")]
    steps = np.concatenate(steps).reshape(-1, 3)
    np.testing.assert_allclose((steps - 5.0 * np.round(steps / 5.0)).std(0), metadata.vel_std, rtol=0.1)
    # The simulator's run keeps the periodic axes in its checkpoint's metadata.
    assert SimulationMetadata(**metadata.to_json()) == metadata


def test_lagrangebench_2d_metadata_lists_three_periodic_axes(tmp_path):
    # LagrangeBench's 2D TGV and RPF metadata say [true, true, true]: JAX-SPH's box is 3D.
    (tmp_path / "metadata.json").write_text(json.dumps({**_LAGRANGEBENCH, "periodic_boundary_conditions": [True] * 3}))
    metadata = read_metadata(tmp_path, aliases={"sequence_length": "sequence_length_train"})
    assert metadata.periodic_boundary_conditions == [True, True] and metadata.periodic


def test_lagrangebench_round_trip_and_detection(tmp_path):
    rng = np.random.default_rng(0)
    written = {
        "00000": (_inside(rng, 13, 5), np.array([0, 0, 1, 0, 1], dtype=np.int32)),
        "00001": (_inside(rng, 13, 4), np.zeros(4, dtype=np.int32)),
    }
    for split in ("train", "valid", "test"):
        _write_h5(tmp_path / f"{split}.h5", written)
    (tmp_path / "metadata.json").write_text(json.dumps(_LAGRANGEBENCH))
    dataset = open_dataset(tmp_path)
    assert dataset.format == "lagrangebench" and dataset.metadata.sequence_length == 12
    assert dataset.metadata.write_every == 100 and not dataset.metadata.periodic
    back = dataset.read("valid")
    assert [t.name for t in back] == ["00000", "00001"]
    for trajectory, (position, kinds) in zip(back, written.values()):
        np.testing.assert_array_equal(trajectory.position, position)
        np.testing.assert_array_equal(trajectory.particle_type, kinds)
        assert trajectory.particle_type.dtype == np.int64
    assert [t.position.shape for t in read_lagrangebench(tmp_path / "test.h5")] == [(13, 5, 2), (13, 4, 2)]
    (tmp_path / "train.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"several formats \(structnets: train.npz; lagrangebench: train.h5, "):
        open_dataset(tmp_path)
    assert open_dataset(tmp_path, "lagrangebench").format == "lagrangebench"
    with pytest.raises(ValueError, match="unknown dataset format 'hdf5'; expected one of auto, structnets"):
        open_dataset(tmp_path, "hdf5")
    assert detect_format(tmp_path / "nothing") == "structnets"  # the npz readers then say what is missing


def test_lagrangebench_metadata_fields(tmp_path):
    for changes, message in (
        ({"periodic_boundary_conditions": [True]}, "'periodic_boundary_conditions' must be 2 booleans, got [True]"),
        ({"periodic_boundary_conditions": [False, False, True]}, "must be 2 booleans, got [False, False, True]"),
        ({"periodic_boundary_conditions": [True, True, True, True]}, "must be 2 booleans"),
        ({"periodic_boundary_conditions": [1, 0]}, "'periodic_boundary_conditions' must be 2 booleans"),
        ({"dx": -0.1}, "field 'dx' must be a positive finite number, got -0.1"),
        ({"write_every": 1.5}, "field 'write_every' must be a positive integer, got 1.5"),
        ({"sequence_length_train": None}, r"missing field\(s\) sequence_length \(or sequence_length_train\)"),
    ):
        raw = {k: v for k, v in {**_LAGRANGEBENCH, **changes}.items() if v is not None}
        (tmp_path / "metadata.json").write_text(json.dumps(raw))
        with pytest.raises(ValueError, match=str(tmp_path / "metadata.json") + ".*" + message.replace("[", r"\[")):
            open_dataset(tmp_path, "lagrangebench")
    (tmp_path / "metadata.json").write_text(json.dumps(_DEEPMIND))
    metadata = read_metadata(tmp_path)  # a GNS file without the optional fields reads as before
    assert (metadata.periodic_boundary_conditions, metadata.dx, metadata.write_every) == (None, None, None)
    assert not metadata.periodic and set(metadata.to_json()) == set(_DEEPMIND)


def _lagrangebench_case(tmp_path, case):
    rng = np.random.default_rng(1)
    path = tmp_path / f"{case}.h5"
    good = _inside(rng, 9, 3)
    if case == "empty":
        path.write_bytes(b"")
    elif case == "not hdf5":
        path.write_text("position,particle_type\n")
    elif case == "truncated":
        _write_h5(path, {"00000": (good, np.zeros(3, np.int32))})
        path.write_bytes(path.read_bytes()[:1000])
    elif case == "no groups":
        h5py.File(path, "w").close()
    else:
        with h5py.File(path, "w") as file:
            if case == "top-level array":
                file.create_dataset("00000", data=good)
            elif case == "missing type":
                file.create_dataset("00000/position", data=good)
            elif case == "float types":
                file.create_dataset("00000/position", data=good)
                file.create_dataset("00000/particle_type", data=np.zeros(3))
            elif case == "huge header":  # chunks never written: a small file that claims 12 GB
                file.create_dataset("00000/position", shape=(10**6, 1000, 3), dtype=np.float32, chunks=(1, 1000, 3))
                file.create_dataset("00000/particle_type", data=np.zeros(1000, np.int32))
            elif case == "string positions":
                file.create_dataset("00000/position", data=np.array([b"ab", b"cd"]))
                file.create_dataset("00000/particle_type", data=np.zeros(3, np.int32))
            else:
                position, kinds = good.copy(), np.zeros(3, np.int32)
                if case == "nan":
                    position[4, 2, 1] = np.nan
                elif case == "outside":
                    position[3, 1, 0] = 1.5
                elif case == "type 9":
                    kinds[1] = 9
                elif case == "short":
                    position = position[:5]
                file.create_dataset("00000/position", data=position)
                file.create_dataset("00000/particle_type", data=kinds)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "empty file, so no trajectories"),
        ("not hdf5", "not a readable HDF5 file"),
        ("truncated", r"(not a readable HDF5 file|cannot)"),
        ("no groups", r"holds no trajectories; LagrangeBench's layout has one group per trajectory"),
        ("top-level array", r"trajectory '00000': is a Dataset, not a group of 'position' and 'particle_type'"),
        ("missing type", r"trajectory '00000': missing field 'particle_type'"),
        ("float types", r"trajectory '00000': particle_type must be an array of integers, got dtype float64"),
        (
            "huge header",
            r"'00000': field 'position' declares shape \(1000000, 1000, 3\) \(12000000000 bytes\), more than",
        ),
        ("string positions", r"trajectory '00000': position must be an array of real numbers, got dtype \|S2"),
        ("nan", r"trajectory '00000': position is NaN or infinite at frame 4, particle 2"),
        ("outside", r"trajectory '00000': particle 1 at frame 3 is outside the metadata bounds on axis 0"),
        ("type 9", r"trajectory '00000': particle_type 9 of particle 1 is out of range 0 to 8"),
        ("short", r"trajectory '00000': 5 frames, shorter than the 7 the history window needs"),
    ],
)
def test_lagrangebench_refusals_name_file_trajectory_and_field(tmp_path, case, message):
    path = _lagrangebench_case(tmp_path, case)
    metadata = SimulationMetadata(**{**_DEEPMIND, "bounds": [[0.0, 1.0], [0.0, 1.0]]})
    with pytest.raises(ValueError, match=message) as error:
        read_lagrangebench(path, metadata, particle_types=9)
    assert str(error.value).startswith(str(path) + ("," if "'00000'" in message else ":"))
    with pytest.raises(FileNotFoundError, match="no trajectory file at"):
        read_lagrangebench(tmp_path / "absent.h5")


def test_tfrecord_round_trip_in_deepmind_schema(tmp_path):
    rng = np.random.default_rng(2)
    written = [(_inside(rng, 12, 5), np.array([5, 5, 3, 5, 3])), (_inside(rng, 12, 2), np.array([6, 6]))]
    context = [rng.normal(size=(12, 1)).astype(np.float32) for _ in written]
    for split in ("train", "valid", "test"):
        _write_tfrecord(tmp_path / f"{split}.tfrecord", written, context if split == "test" else None)
    (tmp_path / "metadata.json").write_text(json.dumps(_DEEPMIND))
    dataset = open_dataset(tmp_path)
    assert dataset.format == "tfrecord" and dataset.metadata == read_metadata(tmp_path)
    back = dataset.read("train", particle_types=9)
    assert [t.name for t in back] == ["0", "1"] and all(t.step_context is None for t in back)
    for trajectory, (position, kinds) in zip(back, written):
        np.testing.assert_array_equal(trajectory.position, position)
        np.testing.assert_array_equal(trajectory.particle_type, kinds)
        assert trajectory.position.dtype == np.float32 and trajectory.particle_type.dtype == np.int64
        trajectory.position[0, 0, 0] = 0.5  # writable, not a view of the file's bytes
    for trajectory, expected in zip(dataset.read("test"), context):
        np.testing.assert_array_equal(trajectory.step_context, expected)
    # The tfrecord package's own reader sees the same file.
    loaded = tfrecord_loader(
        str(tmp_path / "test.tfrecord"), None, {"key": "int", "particle_type": "byte"},
        sequence_description={"position": "byte", "step_context": "byte"},
    )  # fmt: skip
    for (ctx, features), trajectory in zip(loaded, dataset.read("test")):
        assert str(int(ctx["key"][0])) == trajectory.name
        np.testing.assert_array_equal(np.frombuffer(ctx["particle_type"], "<i8"), trajectory.particle_type)
        frames = np.stack([np.frombuffer(f, "<f4") for f in features["position"]])
        np.testing.assert_array_equal(frames.reshape(trajectory.position.shape), trajectory.position)
    # 3D, without metadata: the dimension follows from the bytes per frame and the particle count.
    _write_tfrecord(tmp_path / "three.tfrecord", [(_inside(rng, 8, 4, dim=3), np.zeros(4, int))])
    assert read_tfrecord(tmp_path / "three.tfrecord")[0].position.shape == (8, 4, 3)


def _tfrecord_case(tmp_path, case):
    rng = np.random.default_rng(3)
    path = tmp_path / f"{case.replace(' ', '_')}.tfrecord"
    good, kinds = _inside(rng, 9, 3), np.full(3, 5)
    _write_tfrecord(path, [(good, kinds)])
    data = path.read_bytes()
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(data[:-7])
    elif case == "cut header":
        path.write_bytes(data + data[:5])
    elif case == "flipped byte":
        spoiled = bytearray(data)
        spoiled[40] ^= 0xFF
        path.write_bytes(bytes(spoiled))
    elif case == "gzipped":
        path.write_bytes(gzip.compress(data))
    elif case == "not a proto":
        path.write_bytes(_record(b"\xff\xff\xff\xff"))
    elif case == "two keys":
        _write_tfrecord(path, [(good, kinds), (good, kinds)])
        path.write_bytes(path.read_bytes() + data)  # record 2 has key 0 again
    else:
        writer = TFRecordWriter(str(path))
        ctx, seq = _example(0, good, kinds)
        if case == "no position":
            seq = {"velocity": seq["position"]}
        elif case == "int types":
            ctx["particle_type"] = (kinds.tolist(), "int")
        elif case == "ragged frames":
            seq["position"][0][3] = seq["position"][0][3][:-8]
        elif case == "wrong bytes":
            seq["position"] = ([frame.tobytes()[:-4] for frame in good], "byte")
        elif case == "nan":
            spoiled = good.copy()
            spoiled[2, 1, 0] = np.inf
            seq["position"] = ([frame.tobytes() for frame in spoiled], "byte")
        elif case == "short context":
            seq["step_context"] = ([np.zeros(2, np.float32).tobytes()] * 4, "byte")
        elif case == "nan context":
            seq["step_context"] = ([np.array([0.0, np.nan], np.float32).tobytes()] * 9, "byte")
        elif case == "type 9":
            ctx["particle_type"] = (np.array([5, 9, 5], "<i8").tobytes(), "byte")
        writer.write(ctx, seq)
        writer.close()
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", r": holds no records, so no trajectories"),
        ("truncated", r": record 0 declares \d+ bytes, more than the \d+ left in the file \(a truncated file\?\)"),
        ("cut header", r": record 1 is cut short in its header"),
        ("flipped byte", r": record 0: the data's checksum does not match \(a damaged file\)"),
        ("gzipped", r": record 0: the length's checksum does not match: .*it is gzip-compressed"),
        ("not a proto", r", record 0: not a tf.train.SequenceExample"),
        ("two keys", r", record 2: key 0 repeats that of record 0"),
        ("no position", r", record 0: missing feature list 'position'"),
        ("int types", r", record 0: field 'particle_type' must be a bytes_list, got int64_list"),
        ("ragged frames", r", record 0: field 'position' frame 3 holds 16 bytes, frame 0 24"),
        ("wrong bytes", r", record 0: field 'position' frame 0 holds 20 bytes, not dim float32 coordinates"),
        ("nan", r", trajectory '0' \(record 0\): position is NaN or infinite at frame 2, particle 1"),
        ("short context", r", record 0: field 'step_context' has 4 frames, 'position' 9"),
        ("nan context", r", record 0: step_context is NaN or infinite at frame 0"),
        ("type 9", r", trajectory '0' \(record 0\): particle_type 9 of particle 1 is out of range 0 to 8"),
    ],
)
def test_tfrecord_refusals_name_file_record_and_field(tmp_path, case, message):
    path = _tfrecord_case(tmp_path, case)
    with pytest.raises(ValueError, match=re.escape(str(path)) + message):
        read_tfrecord(path, SimulationMetadata(**_DEEPMIND), particle_types=9)


def test_commands_read_lagrangebench_and_tfrecord_folders(lennard_jones, tmp_path, one_thread, capsys):
    from structnets.cli import main

    small = ["--latent-size", "16", "--message-passing-steps", "2", "--steps", "3", "--no-progress"]
    run = str(tmp_path / "lj")
    # Its connectivity radius, 3.0, is not below half the box (5): a pair would have two nearest images.
    assert main(["simulate", "train", "--data", str(lennard_jones), "--out", run, *small]) == 2
    assert "radius 3 is not below half the periodic box's side on axis 0 (5)" in capsys.readouterr().err
    small += ["--connectivity-radius", "2.4"]
    assert main(["simulate", "train", "--data", str(lennard_jones), "--out", run, *small]) == 0
    assert load_checkpoint(run).extra["metadata"]["periodic_boundary_conditions"] == [True, True, True]
    assert load_checkpoint(run).model_config["connectivity_radius"] == 2.4
    args = ["--data", str(lennard_jones), "--format", "lagrangebench", "--out", str(tmp_path / "ev")]
    assert main(["simulate", "evaluate", "--model", run, *args]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["trajectories"] == 1 and np.isfinite(metrics["rollout_mse"])

    rng = np.random.default_rng(4)
    data = tmp_path / "deepmind"
    data.mkdir()
    for split in ("train", "valid", "test"):
        _write_tfrecord(data / f"{split}.tfrecord", [(_inside(rng, 12, 6), np.full(6, 5)) for _ in range(2)])
    (data / "metadata.json").write_text(json.dumps(_DEEPMIND))
    run = str(tmp_path / "dm")
    assert main(["simulate", "train", "--data", str(data), "--format", "tfrecord", "--out", run, *small]) == 0
    one = tmp_path / "one.npz"
    assert (
        main(["simulate", "rollout", "--model", run, "--data", str(data), "--trajectory", "1", "--out", str(one)]) == 0
    )
    with np.load(one) as rollout:
        assert rollout["truth"].shape == rollout["predicted"].shape and rollout["truth"].shape[1:] == (6, 2)
    assert main(["simulate", "evaluate", "--model", run, "--data", str(data), "--format", "lagrangebench",
                 "--out", str(tmp_path / "ev2")]) == 2  # fmt: skip


_WITHOUT_PHYSICS = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("h5py", "tfrecord"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
sys.meta_path.insert(0, Missing())
import structnets.physics.simulate
from structnets.physics.formats import read_lagrangebench, read_tfrecord
for reader in (read_lagrangebench, read_tfrecord):
    try:
        reader("train")
    except ImportError as error:
        assert "pip install 'structnets[physics]'" in str(error), error
    else:
        raise AssertionError(reader.__name__ + " ran without its package")
assert "h5py" not in sys.modules and "tfrecord" not in sys.modules
print("ok")
"""


def test_physics_imports_without_its_extra_and_the_readers_name_it():
    result = subprocess.run([sys.executable, "-c", _WITHOUT_PHYSICS], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# Fuzz: a random or damaged file either reads, and then as checked trajectories, or is
# refused with a ValueError naming it.


def _assert_checked(trajectories):
    assert trajectories
    for trajectory in trajectories:
        position, kinds = trajectory.position, trajectory.particle_type
        assert position.dtype == np.float32 and kinds.dtype == np.int64 and position.ndim == 3
        assert position.shape[0] >= 7 and position.shape[1] == kinds.shape[0] > 0 and position.shape[2] in (2, 3)
        assert np.isfinite(position).all() and (kinds >= 0).all()


_dtypes = st.sampled_from(["float32", "float64", "int32", "int64", "uint8", "bool", "S3"])
_shapes = st.lists(st.integers(0, 9), max_size=4).map(tuple)


def _random_array(draw, rng):
    dtype, shape = np.dtype(draw(_dtypes)), draw(_shapes)
    if dtype.kind == "S":
        return np.full(shape, b"abc", dtype)
    return rng.uniform(-0.5, 1.5, shape).astype(dtype)


def _mutate(draw, data: bytes) -> bytes:
    how = draw(st.sampled_from(["keep", "keep", "flip", "cut", "append"]))
    if how == "cut":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if how == "flip" and data:
        spoiled = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            spoiled[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(spoiled)
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_lagrangebench_reader_fuzz(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.h5"
        with h5py.File(path, "w") as file:
            for k in range(data.draw(st.integers(0, 3))):
                name = f"{k:05d}"
                if data.draw(st.integers(0, 2)):  # a well-formed trajectory, twice in three
                    frames, particles = data.draw(st.integers(5, 12)), data.draw(st.integers(1, 4))
                    file.create_dataset(f"{name}/position", data=_inside(rng, frames, particles), compression="gzip")
                    file.create_dataset(f"{name}/particle_type", data=rng.integers(0, 9, particles, dtype=np.int32))
                else:  # anything at all
                    for field in data.draw(st.lists(st.sampled_from(["position", "particle_type", "x"]), max_size=3)):
                        if f"{name}/{field}" not in file:
                            file.create_dataset(f"{name}/{field}", data=_random_array(data.draw, rng))
        path.write_bytes(_mutate(data.draw, path.read_bytes()))
        metadata = SimulationMetadata(**{**_DEEPMIND, "bounds": [[0.0, 1.0], [0.0, 1.0]]})
        try:
            trajectories = read_lagrangebench(path, metadata, particle_types=9)
        except ValueError as error:
            assert str(path) in str(error)
            return
    _assert_checked(trajectories)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_tfrecord_reader_fuzz(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    blob = st.binary(max_size=48) | st.integers(0, 10).map(lambda n: rng.uniform(0.2, 0.8, n).astype("<f4").tobytes())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.tfrecord"
        writer = TFRecordWriter(str(path))
        for k in range(data.draw(st.integers(0, 3))):
            frames, particles = data.draw(st.integers(5, 12)), data.draw(st.integers(1, 4))
            if data.draw(st.integers(0, 2)):  # a well-formed trajectory, twice in three
                writer.write(*_example(k, _inside(rng, frames, particles), np.full(particles, 5)))
                continue
            context = {"key": (data.draw(st.integers(0, 2)), "int"), "particle_type": (data.draw(blob), "byte")}
            if data.draw(st.booleans()):
                context["particle_type"] = (data.draw(st.lists(st.integers(-2, 12), max_size=4)), "int")
            sequence = {"position": ([data.draw(blob) for _ in range(frames)], "byte")}
            if data.draw(st.booleans()):
                sequence["step_context"] = ([data.draw(blob) for _ in range(data.draw(st.integers(0, 10)))], "byte")
            writer.write(context, sequence)
        writer.close()
        path.write_bytes(_mutate(data.draw, path.read_bytes()))
        try:
            trajectories = read_tfrecord(path, SimulationMetadata(**_DEEPMIND), particle_types=9)
        except ValueError as error:
            assert str(path) in str(error)
            return
    _assert_checked(trajectories)
