"""How good a learned simulator is: one-step and rollout MSE, beside constant-velocity extrapolation.

Both figures are mean squared errors of positions (the box's units), averaged first over a
window's or a rollout's particles, dimensions and frames, then over windows or rollouts,
as Sanchez-Gonzalez et al. (2020) report them. The baseline extrapolates the last
velocity of the same history, ``x_{t+k} = x_t + k (x_t - x_{t-1})``: a model that does not
beat it has learned nothing about forces. In a periodic box every difference is the
minimum-image one (LagrangeBench's periodic displacement), so a particle that crossed a face
counts by how far it moved, not by the box's width.

:func:`rollout_metrics` adds the figures LagrangeBench reports for a rollout (Toshev et al.
2023, ``lagrangebench/evaluate/metrics.py``), defined as there so that the two can be set
side by side: ``mse5``, ``mse20`` (the MSE over the first 5 and 20 predicted frames, each
frame's MSE a mean over particles and components), ``e_kin`` (the MSE between the predicted
and true kinetic-energy series, every ``stride``-th frame, ``sum |v|^2 dx^dim`` with ``v`` a
frame's displacement over the frame time) and ``sinkhorn`` (the Sinkhorn divergence between
the predicted and true particle sets, every ``stride``-th frame, with uniform weights and
squared minimum-image distances as the cost: a figure that sees the fluid's shape, where a
particle-wise MSE only sees particles' places). The Sinkhorn divergence is POT's
``ot.sinkhorn2`` with the settings of LagrangeBench's POT backend (``reg=0.1``, at most 500
iterations, stopping at 1e-5); its default OTT backend chooses its own regularisation, so
its figures differ from these in scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..graphs.neighbors import minimum_image
from ..models.gns import HISTORY, LearnedSimulator
from .particles import Trajectory
from .windows import TrajectoryWindows

__all__ = ["one_step_errors", "rollout_errors", "rollout_metrics", "periodic_displacement", "sinkhorn_divergence"]

Displacement = Callable[[Tensor, Tensor], Tensor]


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


def periodic_displacement(bounds: Sequence[Sequence[float]], periodic: Sequence[bool] | None) -> Displacement:
    """``to - start``, the minimum-image difference on the periodic axes of a box with ``bounds``."""
    mask = list(periodic) if periodic else [False] * len(bounds)
    side = torch.tensor([high - low if wraps else 0.0 for (low, high), wraps in zip(bounds, mask)], dtype=torch.float64)

    def displacement(to: Tensor, start: Tensor) -> Tensor:
        return minimum_image(to - start, side.to(dtype=to.dtype, device=to.device))

    return displacement


def sinkhorn_divergence(
    x: Tensor, y: Tensor, displacement: Displacement = torch.sub, reg: float = 0.1, iterations: int = 500
) -> float:
    """The Sinkhorn divergence ``S(x, y) - (S(x, x) + S(y, y)) / 2`` (clipped at 0) between two
    equally weighted point sets ``[N, D]`` and ``[M, D]``, squared distances as the cost.

    ``S`` is POT's entropic transport cost ``ot.sinkhorn2`` (LagrangeBench's POT settings:
    ``reg``, ``iterations``, stopping at 1e-5); needs the ``pot`` package (``[physics]`` extra).
    """
    try:
        import ot
    except ImportError:  # pragma: no cover - the [physics] extra brings it
        raise ImportError("the Sinkhorn divergence needs POT: pip install 'structnets[physics]'") from None

    def cost(a: Tensor, b: Tensor) -> float:
        matrix = (displacement(a[:, None].double(), b[None].double()) ** 2).sum(-1).cpu().numpy()
        wa, wb = np.full(a.shape[0], 1.0 / a.shape[0]), np.full(b.shape[0], 1.0 / b.shape[0])
        return float(ot.sinkhorn2(wa, wb, matrix, reg=reg, numItermax=iterations, stopThr=1e-5))

    return max(0.0, cost(x, y) - 0.5 * (cost(x, x) + cost(y, y)))


def rollout_metrics(
    predicted: Tensor,
    truth: Tensor,
    displacement: Displacement = torch.sub,
    *,
    frame_dt: float,
    volume: float = 1.0,
    horizons: Sequence[int] = (5, 20),
    stride: int = 10,
    sinkhorn: bool = True,
) -> dict[str, float]:
    """LagrangeBench's figures of one rollout: ``predicted`` and ``truth`` ``[T, N, D]``, the
    predicted frames only (not the input history).

    Returns ``mse`` (all frames), ``mse{n}`` for each horizon ``n`` below ``T``, ``e_kin``
    (with ``volume`` the particle volume ``dx**dim``) and, if ``sinkhorn``, ``sinkhorn``.
    """
    per_frame = (displacement(predicted, truth) ** 2).mean(dim=(1, 2))
    out = {"mse": float(per_frame.mean())}
    for n in horizons:
        if n < per_frame.shape[0]:
            out[f"mse{n}"] = float(per_frame[:n].mean())

    def energy(frames: Tensor) -> Tensor:
        velocity = displacement(frames[1::stride], frames[0:-1:stride]) / frame_dt
        return (velocity**2).sum(dim=(1, 2)) * volume

    if predicted.shape[0] > 1:
        out["e_kin"] = float(((energy(predicted.double()) - energy(truth.double())) ** 2).mean())
    if sinkhorn and predicted.shape[0] > 1:
        pairs = zip(predicted[0:-1:stride], truth[0:-1:stride])
        out["sinkhorn"] = float(np.mean([sinkhorn_divergence(p, t, displacement) for p, t in pairs]))
    return out


def frame_time_and_volume(metadata: Any) -> tuple[float, float]:
    """The time between two frames (``dt``, times ``write_every`` where the metadata has it:
    LagrangeBench's ``dt`` is the solver's step) and a particle's volume ``dx**dim`` (1 where
    the metadata gives no ``dx``), for :func:`rollout_metrics`' kinetic energy."""
    write_every = getattr(metadata, "write_every", None) or 1
    dx = getattr(metadata, "dx", None)
    return float(metadata.dt) * write_every, float(dx) ** metadata.dim if dx else 1.0


@torch.no_grad()
def rollouts(model: LearnedSimulator, trajectories: Sequence[Trajectory], device: torch.device | str = "cpu"):
    """Yields ``(position, predicted, seconds)`` per trajectory: its true frames ``[T, N, D]``,
    the model's rollout ``[T - 6, N, D]`` from the first 6 of them, and how long that took."""
    for trajectory in trajectories:
        position = torch.from_numpy(trajectory.position).to(device)
        kind = torch.from_numpy(trajectory.particle_type).to(device)
        started = time.perf_counter()
        predicted = model.rollout(position[: HISTORY + 1], kind, position.shape[0] - HISTORY - 1)
        yield position, predicted, time.perf_counter() - started


@torch.no_grad()
def rollout_errors(
    model: LearnedSimulator,
    trajectories: Sequence[Trajectory],
    device: torch.device | str = "cpu",
    *,
    lagrangebench: bool = False,
    sinkhorn: bool = True,
    keep: list | None = None,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Rollout MSE of the model and of constant velocity, each trajectory from its first 6 frames.

    With ``lagrangebench``, also :func:`rollout_metrics`' figures averaged over the
    trajectories, named ``rollout_mse5``, ``rollout_mse20``, ``e_kin`` and ``sinkhorn``
    (``sinkhorn=False`` skips the last, the slowest), and the same for constant velocity
    with a ``baseline_`` prefix.

    ``keep``, a list, receives every trajectory's ``(position, predicted, seconds)`` from
    :func:`rollouts`, for a caller that saves or times them.

    Returns the metrics and ``(truth, predicted)`` ``[T, N, D]`` of the first trajectory
    (predicted begins with the 6 given frames), for :func:`structnets.physics.render.render`.
    """
    errors, baseline, extended, saved = [], [], [], None
    if lagrangebench:
        frame_dt, volume = frame_time_and_volume(model.metadata)
    for position, predicted, seconds in rollouts(model, trajectories, device):
        if keep is not None:
            keep.append((position, predicted, seconds))
        steps = predicted.shape[0]
        truth = position[HISTORY + 1 :]
        velocity = model.displacement(position[HISTORY], position[HISTORY - 1])
        constant = position[HISTORY] + velocity * torch.arange(1, steps + 1, device=device).view(-1, 1, 1)
        constant = model.wrap(constant)
        errors.append(float((model.displacement(predicted, truth) ** 2).mean()))
        baseline.append(float((model.displacement(constant, truth) ** 2).mean()))
        if lagrangebench:
            settings = {"frame_dt": frame_dt, "volume": volume, "sinkhorn": sinkhorn}
            mine = rollout_metrics(predicted, truth, model.displacement, **settings)
            theirs = rollout_metrics(constant, truth, model.displacement, **settings)
            extended.append({**mine, **{f"baseline_{k}": v for k, v in theirs.items()}})
        if saved is None:
            saved = (position.cpu().numpy(), torch.cat([position[: HISTORY + 1], predicted]).cpu().numpy())
    metrics: dict[str, Any] = {"rollout_mse": float(np.mean(errors)), "baseline_rollout_mse": float(np.mean(baseline))}

    def renamed(name: str) -> str:  # mse5 -> rollout_mse5, as rollout_mse; e_kin and sinkhorn as they are
        if name.startswith("baseline_"):
            return "baseline_" + renamed(name[len("baseline_") :])
        return "rollout_" + name if name.startswith("mse") else name

    for name in extended[0] if extended else ():
        if name not in ("mse", "baseline_mse"):  # the rollout MSE above
            metrics[renamed(name)] = float(np.mean([e[name] for e in extended]))
    return metrics, saved
