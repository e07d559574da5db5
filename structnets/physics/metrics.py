"""How good a learned simulator is: one-step and rollout MSE, beside constant-velocity extrapolation.

Both figures are mean squared errors of positions (the box's units), averaged first over a
window's or a rollout's particles, dimensions and frames, then over windows or rollouts,
as Sanchez-Gonzalez et al. (2020) report them. The baseline extrapolates the last
velocity of the same history, ``x_{t+k} = x_t + k (x_t - x_{t-1})``: a model that does not
beat it has learned nothing about forces. In a periodic box every difference is the
minimum-image one (LagrangeBench's periodic displacement), so a particle that crossed a face
counts by how far it moved, not by the box's width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..models.gns import HISTORY, LearnedSimulator
from .particles import Trajectory
from .windows import TrajectoryWindows

__all__ = ["one_step_errors", "rollout_errors"]


def _per_window(values: Tensor, batch: Tensor, windows: int) -> Tensor:
    """The mean of ``values`` ``[N, D]`` over each window's particles and dimensions, ``[windows]``."""
    totals = torch.zeros(windows, device=values.device).index_add_(0, batch, values.mean(-1))
    return totals / torch.bincount(batch, minlength=windows).clamp(min=1)


@torch.no_grad()
def one_step_errors(model: LearnedSimulator, windows: TrajectoryWindows, chunk: int = 16) -> dict[str, float]:
    """Mean per-window errors of one step from the true history.

    Returns ``loss`` (the training objective without noise: MSE of the normalised
    acceleration), ``one_step_mse`` (of the next positions) and ``baseline_one_step_mse``.
    """
    losses, errors, baseline = [], [], []
    for chosen in torch.arange(len(windows)).split(chunk):
        batch = windows.batch(chosen)
        history, target = batch.history, batch.target
        acceleration = model(history, batch.particle_type, batch.batch)
        true_acceleration = (model.target_acceleration(history, target) - model.acc_mean) / model.acc_std
        velocity = model.displacement(history[:, -1], history[:, -2])
        predicted = history[:, -1] + velocity + acceleration * model.acc_std + model.acc_mean
        constant = history[:, -1] + velocity
        for out, value in ((losses, acceleration - true_acceleration), (errors, model.displacement(predicted, target))):
            out.append(_per_window(value**2, batch.batch, len(chosen)))
        baseline.append(_per_window(model.displacement(constant, target) ** 2, batch.batch, len(chosen)))
    return {
        "loss": float(torch.cat(losses).mean()),
        "one_step_mse": float(torch.cat(errors).mean()),
        "baseline_one_step_mse": float(torch.cat(baseline).mean()),
    }


@torch.no_grad()
def rollout_errors(
    model: LearnedSimulator, trajectories: Sequence[Trajectory], device: torch.device | str = "cpu"
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Rollout MSE of the model and of constant velocity, each trajectory from its first 6 frames.

    Returns the metrics and ``(truth, predicted)`` ``[T, N, D]`` of the first trajectory
    (predicted begins with the 6 given frames), for :func:`structnets.physics.render.render`.
    """
    errors, baseline, saved = [], [], None
    for trajectory in trajectories:
        position = torch.from_numpy(trajectory.position).to(device)
        kind = torch.from_numpy(trajectory.particle_type).to(device)
        steps = position.shape[0] - HISTORY - 1
        predicted = model.rollout(position[: HISTORY + 1], kind, steps)
        truth = position[HISTORY + 1 :]
        velocity = model.displacement(position[HISTORY], position[HISTORY - 1])
        constant = position[HISTORY] + velocity * torch.arange(1, steps + 1, device=device).view(-1, 1, 1)
        errors.append(float((model.displacement(predicted, truth) ** 2).mean()))
        baseline.append(float((model.displacement(constant, truth) ** 2).mean()))
        if saved is None:
            saved = (position.cpu().numpy(), torch.cat([position[: HISTORY + 1], predicted]).cpu().numpy())
    metrics: dict[str, Any] = {"rollout_mse": float(np.mean(errors)), "baseline_rollout_mse": float(np.mean(baseline))}
    return metrics, saved
