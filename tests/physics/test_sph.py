import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch

from structnets.physics.particles import read_metadata, read_trajectories
from structnets.physics.sph import (
    WATER,
    Scene,
    SPHConfig,
    _forces,
    _poly6,
    _spiky_gradient,
    _viscosity_laplacian,
    generate_dataset,
    initial_state,
    simulate,
)


def _lattice(corner: float, spacing: float, sides: tuple[int, ...]) -> torch.Tensor:
    axes = [corner + spacing * np.arange(n) for n in sides]
    return torch.from_numpy(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(sides)))


def test_generated_dataset_reads_back_and_behaves_like_a_falling_fluid(tmp_path):
    metadata = generate_dataset(
        tmp_path, trajectories={"train": 2, "valid": 1, "test": 1}, frames=40, max_particles=80, seed=3
    )
    assert metadata["sequence_length"] == 39 and metadata["dim"] == 2
    checked = read_metadata(tmp_path)
    for split in ("train", "valid", "test"):
        for trajectory in read_trajectories(tmp_path / f"{split}.npz", checked):  # finite, in bounds, long enough
            assert trajectory.position.shape[0] == 40 and (trajectory.particle_type == WATER).all()
            mean_height = trajectory.position[:, :, 1].mean(1)
            assert mean_height[-1] < mean_height[0] - 0.01  # it falls
    assert all(s > 0 for s in checked.vel_std + checked.acc_std)
    again = generate_dataset(
        tmp_path / "again", trajectories={"train": 2, "valid": 1, "test": 1}, frames=40, max_particles=80, seed=3
    )
    assert again["vel_std"] == metadata["vel_std"]


def test_fluid_at_rest_on_the_floor_stays_put():
    config = SPHConfig()
    layer = _lattice(0.0, config.spacing, (10, 3)) + torch.tensor([0.3, 0.1], dtype=torch.float64)
    pos = simulate(layer, 30, config)
    assert torch.isfinite(pos).all()
    assert (pos[-1] - pos[0]).norm(dim=1).max() < 0.05  # settles a little, no explosion


def test_default_2d_output_is_byte_for_byte_what_it_was(tmp_path):
    """Pinned from the 2D-only code this module had before 3D, scenes and wall images: the
    default 2D drop (existing datasets, the demo, the benchmarks) must not move by one bit."""
    config = SPHConfig()
    block = _lattice(0.0, config.spacing, (5, 4)) + torch.tensor([0.4, 0.5], dtype=torch.float64)
    pos = simulate(block, 12, config)
    assert hashlib.sha256(pos.numpy().tobytes()).hexdigest() == (
        "e7f023e340a449e5379fdd97155d46ed47ea7cd530381217784b0b09d06513c9"
    )
    assert pos[-1, 7].tolist() == [0.41995498538017273, 0.556328535079956]
    metadata = generate_dataset(
        tmp_path, trajectories={"train": 1, "valid": 1, "test": 1}, frames=8, max_particles=60, seed=11
    )
    with np.load(tmp_path / "train.npz") as archive:
        position = archive["trajectory_0/position"]
    assert position.shape == (8, 42, 2)
    assert hashlib.sha256(position.tobytes()).hexdigest() == (
        "c39e27b65b027c9084daa29b06623fea3ea45620f1aae96eeca048c6934c74a4"
    )
    assert metadata["vel_std"] == [4.569374505081214e-05, 0.00013523067173082381]
    assert metadata["generator"]["scene"] == "drop" and metadata["generator"]["config"]["dim"] == 2


@pytest.mark.parametrize("dim", [2, 3])
def test_kernels_are_normalised_in_their_dimension(dim):
    """On a lattice much finer than H, sums approximate integrals: the poly6 kernel integrates
    to 1; the spiky kernel's gradient gives r . grad W -> -dim (integration by parts of a
    kernel that integrates to 1); the viscosity Laplacian gives r^2 lap W -> 2 dim."""
    h, spacing = 1.0, 1.0 / 7
    offsets = _lattice(0.0, spacing, (15,) * dim) - 7 * spacing
    r2 = (offsets**2).sum(1)
    r = r2.sqrt()
    inside = (r > 0) & (r < h)
    volume = spacing**dim
    assert float(_poly6(r2, h, dim).sum() * volume) == pytest.approx(1.0, abs=2e-3)
    rr = r[inside]
    assert float((rr * _spiky_gradient(rr, h, dim)).sum() * volume) == pytest.approx(-dim, rel=2e-2)
    assert float((rr**2 * _viscosity_laplacian(rr, h, dim)).sum() * volume) == pytest.approx(2 * dim, rel=2e-2)


@pytest.mark.parametrize(("dim", "scene"), [(2, Scene.DROP), (2, Scene.DAM_BREAK), (3, Scene.DROP)])
def test_a_lattice_at_the_initial_spacing_has_the_rest_density(dim, scene):
    """The mass (rest_density * spacing**dim) and the kernel agree: the interior of the
    lattice a scene starts from is at the rest density, so the fluid starts near equilibrium."""
    config = SPHConfig.tuned(scene, dim)
    lattice = _lattice(0.0, config.spacing, (9,) * dim)
    centre = lattice[(lattice - 4 * config.spacing).abs().sum(1).argmin()]
    density = config.mass * _poly6(((lattice - centre) ** 2).sum(1), config.smoothing, dim).sum()
    assert float(density) == pytest.approx(config.rest_density, rel=0.015)


@pytest.mark.parametrize("dim", [2, 3])
def test_pair_forces_are_equal_and_opposite(dim):
    """Away from the walls and without gravity, pressure, viscosity and the short-range
    repulsion only exchange momentum between particles: the forces sum to zero."""
    config = SPHConfig.tuned(Scene.DAM_BREAK, dim)
    config = dataclasses.replace(config, gravity=0.0)
    generator = torch.Generator().manual_seed(dim)
    # A squeezed, jittered blob in the middle of the box: high pressure, close pairs (the
    # repulsion acts), random velocities (viscosity acts).
    pos = 0.5 + 0.7 * config.spacing * (
        _lattice(-2.5, 1.0, (6,) * dim) + 0.3 * torch.rand(6**dim, dim, generator=generator, dtype=torch.float64)
    )
    vel = torch.randn(pos.shape, generator=generator, dtype=torch.float64)
    assert float((pos - 0.5).abs().max()) + config.smoothing < 0.4  # no wall within reach
    force = config.mass * _forces(pos, vel, config)
    assert float(force.norm(dim=1).mean()) > 1e-2  # the forces are not all zero ...
    torch.testing.assert_close(
        force.sum(0), torch.zeros(dim, dtype=torch.float64), rtol=0, atol=1e-9
    )  # ... but sum to it
    moved = simulate(pos, 3, config)
    torch.testing.assert_close(moved.double().mean(1), pos.mean(0).expand(3, dim), rtol=0, atol=1e-6)  # centroid stays


def test_a_small_3d_block_falls_splashes_and_stays_in_the_box():
    config = SPHConfig.tuned(Scene.DROP, 3)
    low, high = config.box
    block = _lattice(0.0, config.spacing, (4, 4, 4)) + torch.tensor([0.4, 0.4, 0.3], dtype=torch.float64)
    pos = simulate(block, 100, config)
    assert pos.shape == (100, 64, 3) and torch.isfinite(pos).all()
    assert float(pos.min()) >= low and float(pos.max()) <= high
    height = pos[:, :, 2].mean(1)
    assert height[-1] < height[0] - 0.15  # it falls along the last axis ...
    horizontal = pos[-1, :, :2] - pos[-1, :, :2].mean(0)
    assert float(horizontal.norm(dim=1).max()) > float(
        (block[:, :2] - block[:, :2].mean(0)).norm(dim=1).max()
    )  # ... and spreads
    nearest = torch.cdist(pos[-1], pos[-1]).fill_diagonal_(math.inf).min(1).values
    assert float(nearest.min()) > 0.5 * config.spacing  # no particles piled onto each other


@pytest.mark.parametrize("dim", [2, 3])
def test_dam_break_starts_as_a_column_on_the_floor_against_a_side_wall(dim):
    config = SPHConfig.tuned("dam_break", dim)
    low, high, s = *config.box, config.spacing
    sides = set()
    for seed in range(6):
        column = initial_state(Scene.DAM_BREAK, np.random.default_rng(seed), config)
        if dim == 2:
            assert column.shape[0] >= 1000
        else:
            assert 300 <= column.shape[0] <= 1600
        x, height = column[:, 0], column[:, -1]
        assert float(height.min()) == pytest.approx(low + s / 2, abs=0.05 * s)  # on the floor
        assert float(height.max() - height.min()) > float(x.max() - x.min())  # taller than wide
        left, right = float(x.min()) - low, high - float(x.max())
        assert min(left, right) == pytest.approx(s / 2, abs=0.05 * s)  # against a wall ...
        assert max(left, right) > 0.4 * (high - low)  # ... the other far away
        sides.add(left < right)
    assert sides == {True, False}  # both walls occur


def test_3d_dam_break_dataset_has_3d_metadata(tmp_path):
    metadata = generate_dataset(
        tmp_path,
        trajectories={"train": 1, "valid": 1, "test": 1},
        frames=8,
        max_particles=120,
        scene="dam_break",
        dim=3,
    )
    checked = read_metadata(tmp_path)
    assert checked.dim == 3 and len(checked.bounds) == 3 and len(checked.vel_std) == 3
    assert metadata["generator"]["scene"] == "dam_break" and metadata["generator"]["config"]["dim"] == 3
    (trajectory,) = read_trajectories(tmp_path / "train.npz", checked)
    assert trajectory.position.shape[0] == 8 and trajectory.position.shape[2] == 3
    assert 50 <= trajectory.position.shape[1] <= 120  # the column cut down to max_particles
    with pytest.raises(ValueError, match="dim=2 but config.dim=3"):
        generate_dataset(tmp_path / "x", config=SPHConfig.tuned("drop", 3), dim=2)
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        SPHConfig(dim=4)
    with pytest.raises(ValueError, match="initial must be"):
        simulate(torch.zeros(5, 2, dtype=torch.float64), 2, SPHConfig.tuned("drop", 3))
