import json
import shutil

import numpy as np
import pytest

from structnets.physics.particles import (
    PickledDataError,
    Trajectory,
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
