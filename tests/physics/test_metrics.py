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

    @staticmethod
    def wrap(position: Tensor) -> Tensor:
        return position

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


# ----------------------------------------------------------------------------- LagrangeBench's figures


def test_rollout_metrics_are_lagrangebenchs_definitions():
    from structnets.physics.metrics import periodic_displacement, rollout_metrics

    g = torch.Generator().manual_seed(0)
    frames, n = 30, 50
    truth = torch.rand(frames, n, 2, generator=g, dtype=torch.float64)
    error = torch.randn(frames, n, 2, generator=g, dtype=torch.float64) * 1e-2
    out = rollout_metrics(truth + error, truth, frame_dt=0.5, volume=0.01, sinkhorn=False)
    per_frame = (error**2).mean(dim=(1, 2))
    assert out["mse"] == pytest.approx(float(per_frame.mean()))
    assert out["mse5"] == pytest.approx(float(per_frame[:5].mean()))
    assert out["mse20"] == pytest.approx(float(per_frame[:20].mean()))
    assert set(out) == {"mse", "mse5", "mse20", "e_kin"}
    # Kinetic energy: every 10th frame pair, sum |v|^2 dx^dim with v the displacement over dt.
    moving = torch.zeros(frames, n, 2, dtype=torch.float64)
    moving[:, :, 0] = torch.arange(frames, dtype=torch.float64)[:, None] * 0.1  # speed 0.1 / 0.5 = 0.2
    still = torch.zeros_like(moving)
    energy = rollout_metrics(still, moving, frame_dt=0.5, volume=0.01, sinkhorn=False)["e_kin"]
    assert energy == pytest.approx((n * 0.2**2 * 0.01) ** 2)
    # A periodic box: a particle a hair across the face from its true place is a hair off.
    box = periodic_displacement([[0.0, 1.0], [0.0, 1.0]], [True, False])
    near = torch.tensor([[[0.999, 0.5]]], dtype=torch.float64).expand(frames, 1, 2)
    across = torch.tensor([[[0.001, 0.5]]], dtype=torch.float64).expand(frames, 1, 2)
    assert rollout_metrics(across, near, box, frame_dt=1.0, sinkhorn=False)["mse"] == pytest.approx(0.002**2 / 2)
    assert rollout_metrics(across, near, frame_dt=1.0, sinkhorn=False)["mse"] == pytest.approx(0.998**2 / 2)


def test_sinkhorn_divergence_sees_shape_and_a_translate_costs_its_square():
    from structnets.physics.metrics import periodic_displacement, rollout_metrics, sinkhorn_divergence

    g = torch.Generator().manual_seed(1)
    x = torch.rand(200, 2, generator=g, dtype=torch.float64)
    assert sinkhorn_divergence(x, x) == 0.0
    # The debiased divergence of a translate by d is |d|^2, for squared costs.
    for d in (0.05, 0.2):
        assert sinkhorn_divergence(x, x + torch.tensor([d, 0.0], dtype=torch.float64)) == pytest.approx(d * d, rel=1e-3)
    # The same particles relabelled: the MSE is large, the divergence is nil. A squashed set is not.
    shuffled = x[torch.randperm(200, generator=g)]
    assert sinkhorn_divergence(shuffled, x) == pytest.approx(0.0, abs=1e-9)
    squashed = x * torch.tensor([1.0, 0.2], dtype=torch.float64)
    assert sinkhorn_divergence(squashed, x) > 0.05
    # Across a periodic face, a whole-box translate is no change.
    box = periodic_displacement([[0.0, 1.0], [0.0, 1.0]], [True, True])
    assert sinkhorn_divergence(x + torch.tensor([1.0, 0.0], dtype=torch.float64), x, box) == pytest.approx(0, abs=1e-9)
    frames = torch.stack([x] * 21)
    out = rollout_metrics(frames[:, torch.randperm(200, generator=g)], frames, frame_dt=1.0)
    assert out["sinkhorn"] == pytest.approx(0.0, abs=1e-9) and out["mse"] > 0.1
