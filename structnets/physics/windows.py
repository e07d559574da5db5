"""Windows of particle trajectories, batched as one particle set with the library's node offsets.

A window ``(k, t)`` of trajectory ``k`` is its particles' positions ``x_{t-5..t}`` (the
simulator's input history) and ``x_{t+1}`` (the target). A batch of windows is a
torch_geometric ``Batch`` made by :class:`structnets.graphs.batch.PackedGraphs`: the
particles of the chosen windows one after the other, with ``batch`` and ``ptr``, plus
``history`` ``[N, 6, D]`` and ``target`` ``[N, D]``.

The batch carries no edges, and that is the one way a window differs from the library's
other graphs: the learned simulator builds its radius graph from the positions it is
given (a rollout must, as the particles move), so no graph can be stored ahead; the
``batch`` vector keeps the windows' neighbourhoods apart. The trajectories' positions are
stored once, particle-major (``[all particles, frames, D]``), so a window's seven frames
are one gather at the node ids that ``PackedGraphs`` deals out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ..graphs.batch import PackedGraphs, ranges
from ..models.gns import HISTORY
from .particles import Trajectory

__all__ = ["TrajectoryWindows"]


class TrajectoryWindows:
    """Every ``every``-th window of some trajectories, any batch of them one ``Batch``.

    Args:
        trajectories: the split's trajectories (they may differ in frames and particles).
        every: stride between a trajectory's windows (1: all of them).
        device: where the positions are kept and the batches go.
        future: true frames kept after each window's target, ``future`` ``[N, future, D]``
            (for pushforward training: the targets of steps taken from the model's own
            predictions); windows without that many frames after them are left out.

    Example::

        windows = TrajectoryWindows(trajectories)
        batch = windows.batch(torch.tensor([0, 17]))   # batch.history, .target, .particle_type, .batch
    """

    def __init__(
        self, trajectories: Sequence[Trajectory], every: int = 1, device: torch.device | str = "cpu", future: int = 0
    ) -> None:
        if not trajectories:
            raise ValueError("no trajectories to take windows from")
        if future < 0:
            raise ValueError(f"future must be 0 or more frames, got {future}")
        self.future = future
        self.device = torch.device(device)
        self.particles = PackedGraphs(
            [
                Data(
                    particle_type=torch.as_tensor(t.particle_type, dtype=torch.long),
                    edge_index=torch.empty(2, 0, dtype=torch.long),
                    num_nodes=t.position.shape[1],
                )
                for t in trajectories
            ]
        )
        frames = max(t.position.shape[0] for t in trajectories)
        position = torch.zeros(int(self.particles.nodes.sum()), frames, trajectories[0].position.shape[2])
        for start, trajectory in zip(self.particles.node_start.tolist(), trajectories):
            steps, count, _ = trajectory.position.shape
            position[start : start + count, :steps] = torch.from_numpy(trajectory.position).transpose(0, 1)
        self.position = position.to(self.device)  # [particles, frames, D]; frames past a trajectory's end unused
        self.index = torch.tensor(
            [
                (k, t)
                for k, traj in enumerate(trajectories)
                for t in range(HISTORY, traj.position.shape[0] - 1 - future, every)
            ],
            dtype=torch.long,
        ).reshape(-1, 2)

    def __len__(self) -> int:
        return self.index.shape[0]

    def batch(self, chosen: Tensor | Sequence[int]) -> Batch:
        """The chosen windows as one ``Batch`` on ``device`` (``history``, ``target``, ``particle_type``, ``batch``)."""
        trajectory, frame = self.index[torch.as_tensor(chosen, dtype=torch.long)].unbind(1)
        out = self.particles.batch(trajectory)
        nodes = ranges(self.particles.node_start[trajectory], self.particles.nodes[trajectory])
        frames = (frame - HISTORY)[out.batch].unsqueeze(1) + torch.arange(HISTORY + 2 + self.future)  # [N, 7 + f]
        window = self.position[nodes.to(self.device).unsqueeze(1), frames.to(self.device)]  # [N, 7 + f, D]
        if self.device.type != "cpu":
            out = out.to(self.device)
        out.history, out.target = window[:, : HISTORY + 1], window[:, HISTORY + 1]
        if self.future:
            out.future = window[:, HISTORY + 2 :]
        return out
