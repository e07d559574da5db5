import numpy as np
import pytest
import torch
from torch import Tensor, nn

from structnets.physics.metrics import one_step_errors, rollout_errors
from structnets.physics.particles import Trajectory
from structnets.physics.windows import TrajectoryWindows

DT, G = 0.01, -9.81


class ConstantAcceleration(nn.Module):
    """Predicts one acceleration for every particle: exact for free fall."""

    def __init__(self, acceleration: float) -> None:
        super().__init__()
        self.register_buffer("acc_mean", torch.tensor([0.0, acceleration / 2]))
        self.register_buffer("acc_std", torch.tensor([1.0, abs(acceleration) or 1.0]))
        self.acceleration = torch.tensor([0.0, acceleration])

    def forward(self, history: Tensor, particle_type: Tensor, batch: Tensor | None = None) -> Tensor:
        return ((self.acceleration - self.acc_mean) / self.acc_std).expand(history.shape[0], 2)

    @staticmethod
    def displacement(to: Tensor, start: Tensor) -> Tensor:  # no periodic axes
        return to - start

    def target_acceleration(self, history: Tensor, target: Tensor) -> Tensor:
        return target - 2 * history[:, -1] + history[:, -2]

    def rollout(self, initial: Tensor, particle_type: Tensor, steps: int) -> Tensor:
        previous, current, out = initial[-2], initial[-1], []
        for _ in range(steps):
            previous, current = current, 2 * current - previous + self.acceleration
            out.append(current)
        return torch.stack(out)


def _free_fall(frames: int = 20) -> list[Trajectory]:
    """Float64 trajectories of falling particles, so that second differences are exact to ~1e-16."""
    rng = np.random.default_rng(1)
    times = np.arange(frames)[:, None, None] * DT
    out = []
    for k, particles in enumerate((5, 9)):
        position = rng.random((particles, 2)) + rng.normal(0, 0.1, (particles, 2)) * times + 0.5 * G * times**2 * [0, 1]
        out.append(Trajectory(f"t{k}", position, np.full(particles, 5)))
    return out


def test_an_exact_model_has_no_error_and_constant_velocity_misses_gravity():
    trajectories = _free_fall()
    torch.set_default_dtype(torch.float64)
    try:
        model = ConstantAcceleration(G * DT**2).double()
        one = one_step_errors(model, TrajectoryWindows(trajectories), chunk=3)
        rollout, (truth, predicted) = rollout_errors(model, trajectories)
    finally:
        torch.set_default_dtype(torch.float32)
    assert one["loss"] < 1e-20 and one["one_step_mse"] < 1e-20 and rollout["rollout_mse"] < 1e-20
    # Constant velocity misses the second difference g dt^2 on one of two axes.
    assert one["baseline_one_step_mse"] == pytest.approx((G * DT**2) ** 2 / 2)
    k = np.arange(1, 20 - 5)
    assert rollout["baseline_rollout_mse"] == pytest.approx(np.mean((0.5 * G * DT**2 * (k**2 + k)) ** 2) / 2)
    assert truth.shape == predicted.shape == (20, 5, 2)


def test_a_model_predicting_no_acceleration_is_the_constant_velocity_baseline():
    trajectories = [Trajectory(t.name, t.position.astype(np.float32), t.particle_type) for t in _free_fall()]
    model = ConstantAcceleration(0.0)
    one = one_step_errors(model, TrajectoryWindows(trajectories))
    assert one["one_step_mse"] == pytest.approx(one["baseline_one_step_mse"], rel=1e-3)
