import numpy as np
import pytest
import torch

from structnets.physics.particles import Trajectory
from structnets.physics.windows import TrajectoryWindows


def _trajectories():
    rng = np.random.default_rng(0)
    return [
        Trajectory("a", rng.random((10, 3, 2), dtype=np.float32), np.array([5, 5, 3])),
        Trajectory("b", rng.random((8, 4, 2), dtype=np.float32), np.array([5, 1, 5, 5])),
    ]


def test_a_batch_of_windows_is_the_slices_one_after_the_other():
    trajectories = _trajectories()
    windows = TrajectoryWindows(trajectories)
    assert len(windows) == (10 - 6) + (8 - 6)  # frames 5..T-2 of each
    order = [(1, 6), (0, 5), (0, 8)]  # (trajectory, last input frame)
    chosen = [[tuple(w) for w in windows.index.tolist()].index(pair) for pair in order]
    batch = windows.batch(torch.tensor(chosen))
    assert batch.num_graphs == 3 and batch.ptr.tolist() == [0, 4, 7, 10]
    assert batch.batch.tolist() == [0] * 4 + [1] * 3 + [2] * 3
    start = 0
    for k, t in order:
        position, count = trajectories[k].position, trajectories[k].position.shape[1]
        rows = slice(start, start + count)
        torch.testing.assert_close(batch.history[rows], torch.from_numpy(position[t - 5 : t + 1]).transpose(0, 1))
        torch.testing.assert_close(batch.target[rows], torch.from_numpy(position[t + 1]))
        assert batch.particle_type[rows].tolist() == trajectories[k].particle_type.tolist()
        start += count
    assert batch.edge_index.shape == (2, 0)  # the simulator builds its own radius graph


def test_every_takes_a_stride_and_empty_input_is_refused():
    windows = TrajectoryWindows(_trajectories(), every=3)
    assert windows.index.tolist() == [[0, 5], [0, 8], [1, 5]]
    with pytest.raises(ValueError, match="no trajectories"):
        TrajectoryWindows([])


def test_future_frames_follow_the_target_and_shorten_the_index():
    trajectories = _trajectories()
    windows = TrajectoryWindows(trajectories, future=2)
    assert len(windows) == (10 - 6 - 2) + (8 - 6 - 2)
    batch = windows.batch(torch.arange(len(windows)))
    for w, (k, t) in enumerate(windows.index.tolist()):
        rows = batch.batch == w
        expected = torch.from_numpy(trajectories[k].position[t + 2 : t + 4]).transpose(0, 1)
        torch.testing.assert_close(batch.future[rows], expected)
    assert not hasattr(TrajectoryWindows(trajectories).batch([0]), "future")
    with pytest.raises(ValueError, match="future must be 0 or more"):
        TrajectoryWindows(trajectories, future=-1)
