import json
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from structnets.physics.particles import (
    PickledDataError,
    SimulationMetadata,
    Trajectory,
    convert_gns,
    convert_gns_npz,
    read_memmap_split,
    read_metadata,
    read_trajectories,
    write_trajectories,
)


@pytest.fixture
def waterdrop(data_dir):
    return data_dir / "gns_waterdropsample_meta"


def _inside(rng, frames, particles):
    return rng.uniform(0.1, 0.9, (frames, particles, 2)).astype(np.float32)


def test_real_metadata(waterdrop):
    metadata = read_metadata(waterdrop)
    assert metadata.dim == 2 and metadata.dt == 0.0025 and metadata.sequence_length == 1000
    assert metadata.bounds == [[0.1, 0.9], [0.1, 0.9]] and metadata.default_connectivity_radius == 0.015


def test_metadata_errors_name_the_field(tmp_path, waterdrop):
    raw = json.loads((waterdrop / "metadata.json").read_text())
    del raw["acc_std"]
    (tmp_path / "metadata.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"metadata.json: missing field\(s\) acc_std"):
        read_metadata(tmp_path)
    raw["acc_std"] = [1.0]
    (tmp_path / "metadata.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="field 'acc_std' must be 2 finite numbers"):
        read_metadata(tmp_path)


def test_safe_layout_round_trip_and_checks(tmp_path, waterdrop):
    metadata = read_metadata(waterdrop)
    rng = np.random.default_rng(0)
    good = Trajectory("a", _inside(rng, 10, 5), np.full(5, 5))
    write_trajectories(tmp_path / "train.npz", [good, Trajectory("b", _inside(rng, 8, 3), np.zeros(3, int))])
    back = read_trajectories(tmp_path / "train.npz", metadata)
    assert [t.name for t in back] == ["a", "b"]
    np.testing.assert_array_equal(back[0].position, good.position)

    nan = good.position.copy()
    nan[4, 2, 1] = np.nan
    write_trajectories(tmp_path / "nan.npz", [Trajectory("a", nan, good.particle_type)])
    with pytest.raises(
        ValueError, match=r"nan.npz, trajectory 'a': position is NaN or infinite at frame 4, particle 2"
    ):
        read_trajectories(tmp_path / "nan.npz", metadata)
    outside = good.position.copy()
    outside[3, 1, 0] = 1.5
    write_trajectories(tmp_path / "out.npz", [Trajectory("a", outside, good.particle_type)])
    with pytest.raises(ValueError, match="particle 1 at frame 3 is outside the metadata bounds on axis 0"):
        read_trajectories(tmp_path / "out.npz", metadata)
    write_trajectories(tmp_path / "short.npz", [Trajectory("a", good.position[:4], good.particle_type)])
    with pytest.raises(ValueError, match="4 frames, shorter than the 7 the history window needs"):
        read_trajectories(tmp_path / "short.npz", metadata)


def test_gns_layout_needs_consent(tmp_path, waterdrop):
    rng = np.random.default_rng(1)
    entry = np.empty(2, dtype=object)
    entry[0], entry[1] = _inside(rng, 9, 4), np.full(4, 5)
    np.savez(tmp_path / "gns.npz", simulation_trajectory_0=entry)
    with pytest.raises(PickledDataError, match="allow_pickle=True"):
        read_trajectories(tmp_path / "gns.npz")
    trusted = read_trajectories(tmp_path / "gns.npz", read_metadata(waterdrop), allow_pickle=True)
    assert trusted[0].name == "simulation_trajectory_0" and trusted[0].position.shape == (9, 4, 2)
    assert convert_gns_npz(tmp_path / "gns.npz", tmp_path / "safe.npz") == 1
    np.testing.assert_array_equal(read_trajectories(tmp_path / "safe.npz")[0].position, entry[0])


def test_memmap_layout_with_the_real_offsets_and_particle_types(tmp_path, waterdrop):
    for name in ("test_offset.json", "test_particle_type.dat"):
        shutil.copy(waterdrop / name, tmp_path / name)
    offsets = json.loads((waterdrop / "test_offset.json").read_text())
    total = sum(int(np.prod(v["position"]["shape"])) for v in offsets.values())
    with pytest.raises(FileNotFoundError, match="test_position.dat not found.*WaterDropSample"):
        read_memmap_split(tmp_path, "test")
    # The real positions are not in the data directory: stand-ins inside the bounds.
    np.random.default_rng(2).uniform(0.1, 0.9, total).astype(np.float32).tofile(tmp_path / "test_position.dat")
    trajectories = read_memmap_split(tmp_path, "test", read_metadata(waterdrop))
    assert [t.position.shape for t in trajectories] == [(1001, 295, 2), (1001, 803, 2)]
    assert all((t.particle_type == 5).all() for t in trajectories)  # WaterDrop: all water


# Item 6 of "Nothing silent, nothing lost": every malformed particle file is refused,
# naming the file and the field.

_METADATA = {
    "bounds": [[0.1, 0.9], [0.1, 0.9]],
    "sequence_length": 10,
    "default_connectivity_radius": 0.015,
    "dim": 2,
    "dt": 0.0025,
    "vel_mean": [0.0, 0.0],
    "vel_std": [0.001, 0.001],
    "acc_mean": [0.0, 0.0],
    "acc_std": [1e-4, 1e-4],
}


def _metadata_file(folder, **changes):
    path = folder / "metadata.json"
    path.write_text(json.dumps({**_METADATA, **changes}))
    return path


def _gns_entry(position, kinds):
    entry = np.empty(2, dtype=object)
    entry[0], entry[1] = position, kinds
    return entry


def test_particle_type_out_of_range_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    position = _inside(rng, 8, 3)
    cases = {
        "negative": (np.array([5, -1, 5]), None, r"particle_type -1 of particle 1 is negative"),
        "too large": (np.array([5, 5, 9]), 9, r"particle_type 9 of particle 2 is out of range 0 to 8 \(the simu"),
        "float": (np.array([5.0, 5.5, 5.0]), 9, r"particle_type must be an array of integers, got dtype float64"),
        "bool": (np.array([True, False, True]), 9, r"particle_type must be an array of integers, got dtype bool"),
    }
    for case, (kinds, limit, message) in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.npz"
        np.savez(
            path,
            __layout__=np.array("structnets-trajectories-v1"),
            **{"a/position": position, "a/particle_type": kinds},
        )
        with pytest.raises(ValueError, match=rf"{path.name}, trajectory 'a': {message}"):
            read_trajectories(path, particle_types=limit)
        np.savez(tmp_path / "gns.npz", sim=_gns_entry(position, kinds))
        with pytest.raises(ValueError, match=rf"gns.npz, trajectory 'sim': {message}"):
            read_trajectories(tmp_path / "gns.npz", allow_pickle=True, particle_types=limit)
    write_trajectories(tmp_path / "ok.npz", [Trajectory("a", position, np.array([0, 8, 3]))])
    assert read_trajectories(tmp_path / "ok.npz", particle_types=9)[0].particle_type.tolist() == [0, 8, 3]


def test_missing_particle_type_is_refused(tmp_path):
    position = _inside(np.random.default_rng(4), 8, 3)
    np.savez(tmp_path / "own.npz", __layout__=np.array("structnets-trajectories-v1"), **{"a/position": position})
    with pytest.raises(ValueError, match=r"own.npz, trajectory 'a': missing field 'particle_type'"):
        read_trajectories(tmp_path / "own.npz")
    entry = np.empty(1, dtype=object)
    entry[0] = position
    np.savez(tmp_path / "gns.npz", sim=entry)
    with pytest.raises(ValueError, match=r"gns.npz, trajectory 'sim': expected an object array \(positions, parti"):
        read_trajectories(tmp_path / "gns.npz", allow_pickle=True)


def test_npz_without_trajectories_is_refused(tmp_path):
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match=r"empty.npz: holds no arrays, so no trajectories; expected structnets'"):
        read_trajectories(tmp_path / "empty.npz", allow_pickle=True)
    np.savez(tmp_path / "bare.npz", __layout__=np.array("structnets-trajectories-v1"))
    with pytest.raises(ValueError, match=r"bare.npz: no trajectories \(the file holds only '__layout__'\)"):
        read_trajectories(tmp_path / "bare.npz")
    with pytest.raises(ValueError, match="none.npz: no trajectories to write"):
        write_trajectories(tmp_path / "none.npz", [])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk.npz: not a readable npz archive"):
        read_trajectories(tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"one.npy: holds one bare array \(dtype float64, shape \(3,\)\)"):
        read_trajectories(tmp_path / "one.npy")


def test_zero_particle_trajectory_is_refused(tmp_path):
    empty = Trajectory("a", np.zeros((10, 0, 2), np.float32), np.zeros(0, np.int64))
    write_trajectories(tmp_path / "train.npz", [empty])
    with pytest.raises(
        ValueError, match=r"train.npz, trajectory 'a': position has no particles \(shape \(10, 0, 2\)\)"
    ):
        read_trajectories(tmp_path / "train.npz")
    no_frames = Trajectory("b", np.zeros((0, 4, 2), np.float32), np.zeros(4, np.int64))
    write_trajectories(tmp_path / "frames.npz", [no_frames])
    with pytest.raises(ValueError, match=r"frames.npz, trajectory 'b': position has no frames"):
        read_trajectories(tmp_path / "frames.npz", min_length=0)


def test_non_finite_positions_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    position = _inside(rng, 8, 3)
    position[2, 1, 0] = np.inf
    np.savez(tmp_path / "gns.npz", sim=_gns_entry(position, np.full(3, 5)))
    with pytest.raises(ValueError, match=r"gns.npz, trajectory 'sim': position is NaN or infinite at frame 2, parti"):
        read_trajectories(tmp_path / "gns.npz", allow_pickle=True)
    huge = _inside(rng, 8, 3).astype(np.float64)
    huge[3, 2, 1] = 1e300  # finite in float64, infinite in the float32 the simulator uses
    np.savez(
        tmp_path / "own.npz",
        __layout__=np.array("structnets-trajectories-v1"),
        **{"a/position": huge, "a/particle_type": np.full(3, 5)},
    )
    with pytest.raises(ValueError, match=r"own.npz, trajectory 'a': position is NaN or infinite \(beyond float32's"):
        read_trajectories(tmp_path / "own.npz")
    strings = np.array([[["a", "b"]] * 3] * 8)
    np.savez(
        tmp_path / "text.npz",
        __layout__=np.array("structnets-trajectories-v1"),
        **{"a/position": strings, "a/particle_type": np.full(3, 5)},
    )
    with pytest.raises(ValueError, match=r"text.npz, trajectory 'a': position must be an array of real numbers, got d"):
        read_trajectories(tmp_path / "text.npz")


@pytest.mark.parametrize(
    "bounds",
    [
        [[0.1, 0.9]],  # one pair for dim 2
        [[0.1, 0.9], [0.9, 0.1]],  # low > high
        [[0.1, 0.9], [0.1]],
        [[0.1, 0.9], ["0.1", 0.9]],
        [[0.1, 0.9], [True, 2]],
        [[0.1, 0.9], [float("nan"), 0.9]],
        [[0.1, 0.9], [0.1, float("inf")]],
        [[[0.1], [0.9]], [0.1, 0.9]],
        {"low": [0.1, 0.1], "high": [0.9, 0.9]},
        "0.1 0.9",
        None,
    ],
)
def test_malformed_bounds_is_refused(tmp_path, bounds):
    path = _metadata_file(tmp_path, bounds=bounds)
    with pytest.raises(ValueError, match=r"metadata.json: field 'bounds' must be 2 \[low, high\] pairs of finite num"):
        read_metadata(path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([0.001], "must be 2 finite numbers, got [0.001]"),
        ([0.001, 0.0], "must be positive, got [0.001, 0.0]"),
        ([0.001, -1.0], "must be positive"),
        ([0.001, float("nan")], "must be 2 finite numbers, got [0.001, nan]"),
        ([0.001, "0.001"], "must be 2 finite numbers"),
        ([0.001, True], "must be 2 finite numbers, got [0.001, True]"),
        ([0.001, [0.001]], "must be 2 finite numbers"),
        (0.001, "must be 2 finite numbers, got 0.001"),
        ({"x": 0.001, "y": 0.001}, "must be 2 finite numbers"),
        ([0.001, 10**400], "must be 2 finite numbers"),
    ],
)
def test_malformed_vel_std_is_refused(tmp_path, value, message):
    path = _metadata_file(tmp_path, vel_std=value)
    with pytest.raises(ValueError, match=r"metadata.json: field 'vel_std' " + re.escape(message)):
        read_metadata(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("acc_std", [1e-4, -1e-4], "must be positive"),
        ("acc_mean", [0.0, 0.0, 0.0], "must be 2 finite numbers"),
        ("vel_mean", [0.0, float("-inf")], "must be 2 finite numbers"),
        ("dt", 0, "must be a positive finite number, got 0"),
        ("dt", "0.0025", "must be a positive finite number, got '0.0025'"),
        ("dt", True, "must be a positive finite number, got True"),
        ("default_connectivity_radius", float("nan"), "must be a positive finite number, got nan"),
        ("sequence_length", 10.5, "must be a positive integer, got 10.5"),
        ("sequence_length", True, "must be a positive integer, got True"),
        ("dim", 1, "must be the integer 2 or 3, got 1"),
        ("dim", 2.0, "must be the integer 2 or 3, got 2.0"),
        ("dim", "2", "must be the integer 2 or 3, got '2'"),
    ],
)
def test_malformed_statistics_dim_dt_and_lengths_are_refused(tmp_path, field, value, message):
    path = _metadata_file(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=rf"metadata.json: field '{field}' " + re.escape(message)):
        read_metadata(path)


def test_dim_true_is_refused(tmp_path):
    # True == 1 in Python; a JSON boolean is no dimension, whatever the vectors' lengths.
    one_d = {"bounds": [[0.1, 0.9]], "vel_mean": [0.0], "vel_std": [1.0], "acc_mean": [0.0], "acc_std": [1.0]}
    for extra in ({}, one_d):
        path = _metadata_file(tmp_path, dim=True, **extra)
        with pytest.raises(ValueError, match=r"metadata.json: field 'dim' must be the integer 2 or 3, got True"):
            read_metadata(path)


def test_metadata_that_is_no_object_or_no_json_is_refused(tmp_path):
    path = tmp_path / "metadata.json"
    for text, message in (("[1, 2]", "expected a JSON object with the fields bounds"), ('"bounds"', "expected a JSON"),
                          ("{", "not valid JSON"), (b"\xff\xfe\x00", "not valid JSON")):  # fmt: skip
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ValueError, match=rf"metadata.json: {message}"):
            read_metadata(tmp_path)


def test_metadata_values_come_back_as_floats(tmp_path):
    metadata = read_metadata(_metadata_file(tmp_path, bounds=[[0, 1], [0, 1]], dt=1, extra_field="ignored"))
    assert metadata.bounds == [[0.0, 1.0], [0.0, 1.0]] and all(isinstance(b, float) for b in metadata.bounds[0])
    assert isinstance(metadata.dt, float) and metadata.dim == 2


def test_plain_npz_is_not_called_pickled(tmp_path):
    np.savez(tmp_path / "plain.npz", positions=np.zeros((8, 3, 2)), types=np.zeros(3, int))
    for allow_pickle in (False, True):
        with pytest.raises(ValueError) as caught:
            read_trajectories(tmp_path / "plain.npz", allow_pickle=allow_pickle)
        message = str(caught.value)
        assert not isinstance(caught.value, PickledDataError) and "pickled" not in message.lower()
        assert "plain.npz: not a trajectory file: it holds the plain arrays 'positions', 'types'" in message
        assert "'__layout__'" in message and "'<name>/position' and '<name>/particle_type'" in message
    # Only a file with object arrays is said to be in the pickled GNS layout.
    np.savez(tmp_path / "gns.npz", sim=_gns_entry(np.zeros((8, 3, 2)), np.zeros(3, int)))
    with pytest.raises(PickledDataError, match=r"gns.npz holds arrays of Python objects \('sim'\), as the pickled"):
        read_trajectories(tmp_path / "gns.npz")
    with pytest.raises(PickledDataError, match=r"structnets simulate convert .* DST` converts its dataset folder"):
        read_trajectories(tmp_path / "gns.npz")


def test_own_layout_with_stray_or_object_arrays_is_refused(tmp_path):
    layout = np.array("structnets-trajectories-v1")
    position, kinds = np.full((8, 3, 2), 0.5), np.full(3, 5)
    np.savez(
        tmp_path / "stray.npz", __layout__=layout, **{"a/position": position, "a/particle_type": kinds, "a/v": kinds}
    )
    with pytest.raises(ValueError, match=r"stray.npz: unexpected array 'a/v'; structnets' layout holds"):
        read_trajectories(tmp_path / "stray.npz")
    np.savez(
        tmp_path / "objects.npz",
        __layout__=layout,
        **{"a/position": _gns_entry(position, kinds), "a/particle_type": kinds},
    )
    with pytest.raises(ValueError, match=r"objects.npz: array 'a/position' holds Python objects.*not unpickled"):
        read_trajectories(tmp_path / "objects.npz", allow_pickle=True)
    np.savez(tmp_path / "other.npz", __layout__=np.array("v0"), **{"a/position": position, "a/particle_type": kinds})
    with pytest.raises(ValueError, match=r"other.npz: unknown layout 'v0', expected 'structnets-trajectories-v1'"):
        read_trajectories(tmp_path / "other.npz")


def test_trajectories_of_one_file_share_their_dimension(tmp_path):
    flat, deep = np.full((8, 3, 2), 0.5, np.float32), np.full((8, 3, 3), 0.5, np.float32)
    write_trajectories(
        tmp_path / "mixed.npz", [Trajectory("a", flat, np.zeros(3, int)), Trajectory("b", deep, np.zeros(3, int))]
    )
    with pytest.raises(ValueError, match=r"mixed.npz, trajectory 'b': positions are 3-dimensional, those of 'a' 2"):
        read_trajectories(tmp_path / "mixed.npz")


def test_convert_gns_dataset_folder(tmp_path):
    source = tmp_path / "gns"
    source.mkdir()
    _metadata_file(source)
    rng = np.random.default_rng(6)
    for split in ("train", "test"):
        np.savez(source / f"{split}.npz", sim_0=_gns_entry(_inside(rng, 9, 4).astype(np.float64), np.full(4, 5)))
    written = convert_gns(source, tmp_path / "out")
    assert written == {
        tmp_path / "out" / "test.npz": 1,
        tmp_path / "out" / "train.npz": 1,
        tmp_path / "out" / "metadata.json": 0,
    }
    assert (tmp_path / "out" / "metadata.json").read_bytes() == (source / "metadata.json").read_bytes()
    back = read_trajectories(tmp_path / "out" / "train.npz", read_metadata(tmp_path / "out"))
    assert back[0].position.dtype == np.float32 and back[0].particle_type.dtype == np.int64
    with pytest.raises(FileExistsError, match="convert writes new files and overwrites none"):
        convert_gns(source, tmp_path / "out")
    with pytest.raises(FileExistsError, match="train.npz exists"):
        convert_gns(source / "train.npz", tmp_path / "out" / "train.npz")
    # Trajectories are checked against the metadata before anything is written.
    np.savez(source / "valid.npz", sim_0=_gns_entry(np.full((9, 4, 2), 2.0), np.full(4, 5)))
    with pytest.raises(ValueError, match=r"valid.npz, trajectory 'sim_0': particle 0 at frame 0 is outside"):
        convert_gns(source, tmp_path / "again")
    assert not (tmp_path / "again" / "metadata.json").exists()


def test_memmap_offsets_errors_name_the_file(tmp_path):
    np.zeros(8 * 3 * 2, np.float32).tofile(tmp_path / "test_position.dat")
    np.zeros(3, np.int64).tofile(tmp_path / "test_particle_type.dat")
    offsets = tmp_path / "test_offset.json"
    for text, message in (("{", "not valid JSON"), ("[]", "expected a JSON object of trajectories"),
                          ('{"t": {"position": {"offset": 0}}}', r"trajectory 't': missing field 'shape'"),
                          ('{"t": {"position": {"offset": -1, "shape": [8, 3, 2]}, "particle_type": {"offset": 0, "shape": [3]}}}',
                           r"trajectory 't': field 'position': offset and shape must be non-negative integers"),
                          ('{"t": {"position": {"offset": 0, "shape": [8, 0, 2]}, "particle_type": {"offset": 0, "shape": [0]}}}',
                           r"trajectory 't': position has no particles")):  # fmt: skip
        offsets.write_text(text)
        with pytest.raises(ValueError, match=rf"test_offset.json(, trajectory 't')?: {message.split(': ', 1)[-1]}"):
            read_memmap_split(tmp_path, "test")
    (tmp_path / "test_particle_type.dat").write_bytes(b"")
    with pytest.raises(ValueError, match=r"test_particle_type.dat: cannot be read as int64"):
        read_memmap_split(tmp_path, "test")


# Fuzzing: whatever a metadata.json or an npz holds, the reader returns checked values or
# raises a ValueError naming the file; no other exception escapes.

_FIELDS = sorted(_METADATA)
_rarely = st.sampled_from([False] * 7 + [True])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_numberish = st.floats() | st.integers(-3, 3) | st.booleans() | st.just("1") | st.none()
_near = st.lists(_numberish, max_size=4) | st.lists(st.lists(_numberish, max_size=3), max_size=4)
_fine = st.lists(st.floats(1e-3, 10), min_size=2, max_size=2) | st.floats(1e-3, 10) | st.integers(1, 100)
_METADATA_3D = {**_METADATA, "dim": 3, "bounds": [[0.0, 1.0]] * 3}
_METADATA_3D |= {name: [1.0] * 3 for name in ("vel_mean", "vel_std", "acc_mean", "acc_std")}


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([_METADATA, _METADATA_3D]),
    changes=st.dictionaries(st.sampled_from(_FIELDS), _json | _near | _fine | st.integers(0, 4), max_size=3),
    dropped=st.sampled_from([None] * 4 + _FIELDS),
    replaced=_rarely,
    other=_json,
)
def test_metadata_reader_fuzz(base, changes, dropped, replaced, other):
    raw = {name: value for name, value in {**base, **changes}.items() if name != dropped}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metadata.json"
        path.write_text(json.dumps(other if replaced else raw))
        try:
            metadata = read_metadata(path)
        except ValueError as error:
            assert str(path) in str(error)
            return
    dim = metadata.dim
    assert type(dim) is int and dim in (2, 3) and not replaced and dropped is None
    assert len(metadata.bounds) == dim and all(len(b) == 2 and b[0] < b[1] for b in metadata.bounds)
    for name in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
        values = getattr(metadata, name)
        assert len(values) == dim and all(type(v) is float and math.isfinite(v) for v in values)
        assert not name.endswith("std") or min(values) > 0
    for value in [*(v for b in metadata.bounds for v in b), metadata.dt, metadata.default_connectivity_radius]:
        assert type(value) is float and math.isfinite(value)
    assert metadata.dt > 0 and metadata.default_connectivity_radius > 0
    assert type(metadata.sequence_length) is int and metadata.sequence_length > 0


_LAYOUT = np.array("structnets-trajectories-v1")
_any_array = hnp.arrays(
    st.sampled_from(["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "U2"]),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
)


def _spoil(array, value):
    """``array`` with its middle element set to ``value`` (None: left alone)."""
    if value is None or array.size == 0:
        return array
    array = array.copy()
    array.flat[array.size // 2] = value
    return array


@st.composite
def _trajectory(draw):
    """(position, particle_type): mostly well formed, each part sometimes spoilt or replaced."""
    frames = draw(st.sampled_from([7, 8, 9, 9, 3, 0]))
    particles = draw(st.sampled_from([1, 2, 3, 4, 0]))
    dim = draw(st.sampled_from([2, 2, 2, 3, 1]))
    dtype = draw(st.sampled_from(["float32", "float32", "float64", "int64"]))
    inside = st.floats(0.125, 0.875, width=32) if dtype != "int64" else st.just(0)
    position = draw(hnp.arrays(dtype, (frames, particles, dim), elements=inside))
    if dtype != "int64":
        position = _spoil(position, draw(st.sampled_from([None] * 4 + [math.nan, math.inf, 2.0])))
    count = particles + draw(st.sampled_from([0, 0, 0, 1]))
    kinds = draw(hnp.arrays("int64", (count,), elements=st.sampled_from([0, 3, 5, 8])))
    kinds = _spoil(kinds, draw(st.sampled_from([None] * 4 + [-1, 9, 300])))
    kinds = kinds.astype(draw(st.sampled_from(["int64", "int64", "int8", "uint8", "float64", "bool"])))
    if draw(_rarely):
        position = draw(_any_array | st.none() | st.text(max_size=2) | st.just([[0.5, 0.5], [0.5]]))
    if draw(_rarely):
        kinds = draw(_any_array | st.integers() | st.just({"type": 5}))
    return position, kinds


def _objects(values, size):
    if size == 0:
        return np.array(values[0] if isinstance(values[0], (int, str)) else None, dtype=object)
    entry = np.empty(size, dtype=object)
    for index, value in enumerate([*values, None][:size]):
        entry[index] = value
    return entry


_object_array = st.builds(_objects, _trajectory(), st.sampled_from([2, 2, 2, 2, 2, 1, 3, 0]))  # 0: a bare Python object
_plain_array = _any_array | _trajectory().flatmap(lambda t: st.sampled_from(t)).filter(
    lambda a: isinstance(a, np.ndarray)
)
_KEYS = ["a/position", "a/particle_type", "b/position", "a/b/position", "x", "/position", "a/", "sim"]
_LAYOUTS = [_LAYOUT] * 5 + [np.array("v0"), np.zeros(2), _objects([1, 2], 2)]


@st.composite
def _npz_contents(draw):
    """What a trajectory file holds: structnets' layout, the GNS one, or anything."""
    kind = draw(st.sampled_from(["own", "own", "own", "gns", "gns", "gns", "junk"]))
    names = draw(
        st.lists(st.sampled_from(["a", "b", "sim_0"]), min_size=0 if draw(_rarely) else 1, max_size=3, unique=True)
    )
    if kind == "own":
        arrays = {"__layout__": draw(st.sampled_from(_LAYOUTS))}
        for name in names:
            position, kinds = draw(_trajectory())
            if position is not None and not isinstance(position, (str, list)):
                arrays[f"{name}/position"] = position
            if not isinstance(kinds, (int, dict)):
                arrays[f"{name}/particle_type"] = kinds
    elif kind == "gns":
        arrays = {name: draw(_object_array) for name in names}
    else:
        arrays = draw(st.dictionaries(st.sampled_from(_KEYS), _plain_array | _object_array, max_size=4))
    if draw(_rarely):
        arrays[draw(st.sampled_from(_KEYS))] = draw(_plain_array | _object_array)
    return arrays


@settings(max_examples=200, deadline=None)
@given(
    arrays=_npz_contents(),
    allow_pickle=st.booleans(),
    checked=st.booleans(),
    min_length=st.integers(0, 7),
    particle_types=st.sampled_from([None, 9]),
)
def test_npz_reader_fuzz(arrays, allow_pickle, checked, min_length, particle_types):
    layout = arrays.get("__layout__")
    metadata = SimulationMetadata(**_METADATA) if checked else None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.npz"
        np.savez(path, **arrays)
        try:
            trajectories = read_trajectories(
                path, metadata, allow_pickle=allow_pickle, min_length=min_length, particle_types=particle_types
            )
        except ValueError as error:
            assert str(path) in str(error)
            holds_objects = any(a.dtype == object for a in arrays.values())
            if isinstance(error, PickledDataError):
                assert holds_objects and layout is None and not allow_pickle
            elif layout is None and holds_objects:
                assert allow_pickle  # unpickled, then refused for its contents
            return
    assert trajectories and (layout is not None or allow_pickle)
    dims = {t.position.shape[2] for t in trajectories}
    assert len(dims) == 1 and dims <= {2, 3}
    for t in trajectories:
        frames, particles, _ = t.position.shape
        assert t.position.dtype == np.float32 and np.isfinite(t.position).all()
        assert frames >= max(min_length, 1) and particles > 0
        assert t.particle_type.dtype == np.int64 and t.particle_type.shape == (particles,)
        assert (t.particle_type >= 0).all() and (particle_types is None or (t.particle_type < particle_types).all())
        if metadata is not None:
            assert ((t.position >= 0.1 - 1e-3) & (t.position <= 0.9 + 1e-3)).all()
