import numpy as np
import torch

from structnets.physics.particles import read_metadata, read_trajectories
from structnets.physics.sph import WATER, SPHConfig, generate_dataset, simulate


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
    xs = 0.3 + config.spacing * np.arange(10)
    ys = 0.1 + config.spacing * np.arange(3)
    layer = torch.from_numpy(np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2))
    pos = simulate(layer, 30, config)
    assert torch.isfinite(pos).all()
    assert (pos[-1] - pos[0]).norm(dim=1).max() < 0.05  # settles a little, no explosion
