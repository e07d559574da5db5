"""From trained members to predictions with an uncertainty, in the targets' own units.

A molprop run keeps ``ensemble_size`` members (one for a single model). :func:`member_outputs`
reads one member's prediction and its own variance on standardised targets (several passes
with the dropout left on for Monte Carlo dropout); :func:`ensemble_prediction` combines the
members (the law of total variance, :func:`structnets.chem.estimators.combine`) and undoes
the target standardisation. For classification the members' probabilities are averaged and
returned as logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from .estimators import UncertaintyMethod, combine, mean_and_variance
from .inputs import MoleculeBatch, forward
from .metrics import Task
from .scaling import Scaler
from .uncertainty import ConformalInterval, ZScaling

__all__ = ["Prediction", "member_outputs", "ensemble_prediction", "monte_carlo_dropout", "calibrate"]

# Probabilities are kept this far from 0 and 1 when averaged members become logits again.
_PROBABILITY_EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predictions of some molecules, in the targets' units.

    Shapes:
        mean: ``[n, num_targets]`` (logits for classification); std: the same, or None
        when the method gives no uncertainty.
    """

    mean: Tensor
    std: Tensor | None


@contextlib.contextmanager
def monte_carlo_dropout(model: nn.Module, probability: float) -> Iterator[None]:
    """Inside, every ``nn.Dropout`` of ``model`` samples with ``probability``; the rest is in eval mode."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not dropouts:
        raise ValueError(f"{type(model).__name__} has no dropout layer for Monte Carlo dropout")
    saved = [(m, m.p, m.training) for m in dropouts]
    was_training = model.training
    model.eval()
    for module in dropouts:
        module.p, module.training = probability, True
    try:
        yield
    finally:
        for module, p, training in saved:
            module.p, module.training = p, training
        model.train(was_training)


@torch.no_grad()
def _outputs(model: nn.Module, batches: Sequence[MoleculeBatch], width: int) -> Tensor:
    outputs = [forward(model, batch).cpu() for batch in batches]
    return torch.cat(outputs) if outputs else torch.zeros(0, width)


def member_outputs(
    model: nn.Module,
    batches: Sequence[MoleculeBatch],
    method: UncertaintyMethod,
    num_targets: int,
    *,
    dropout: float = 0.1,
    samples: int = 10,
    seed: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """One member's prediction and variance on standardised targets (variance None: none of its own).

    For Monte Carlo dropout the ``samples`` passes (seeded with ``seed``) are one member's
    prediction: their mean, and their spread as its variance.
    """
    width = num_targets * method.outputs_per_target
    model.eval()
    if method is not UncertaintyMethod.DROPOUT:
        return mean_and_variance(_outputs(model, batches, width), method, num_targets)
    means = []
    with monte_carlo_dropout(model, dropout), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(samples):
            means.append(mean_and_variance(_outputs(model, batches, width), method, num_targets)[0])
    return combine(means, [None] * len(means))


def ensemble_prediction(
    members: Sequence[tuple[Tensor, Tensor | None]],
    task: Task,
    scaler: Scaler | None = None,
    counts: Tensor | None = None,
) -> Prediction:
    """The members' outputs (:func:`member_outputs`) combined, in the targets' units.

    Regression: the mean of the members and the total variance, standardisation undone
    (``scaler``, with the molecules' element ``counts`` when it has a composition baseline).
    Classification: the members' logits averaged as probabilities, no uncertainty.
    """
    if task is Task.CLASSIFICATION:
        probability = torch.stack([torch.sigmoid(mean) for mean, _ in members]).mean(0)
        probability = probability.clamp(_PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
        logits = members[0][0] if len(members) == 1 else torch.logit(probability)
        return Prediction(logits, None)
    mean, variance = combine([m for m, _ in members], [v for _, v in members])
    if scaler is None:
        return Prediction(mean, None if variance is None else variance.sqrt())
    std = None if variance is None else variance.sqrt() * scaler.std.to(variance)
    return Prediction(scaler.inverse(mean, counts), std)


def calibrate(
    prediction: Prediction, calibrator: ZScaling | ConformalInterval | None
) -> tuple[Prediction, tuple[Tensor, Tensor] | None]:
    """``prediction`` after ``calibrator`` (fitted on held-out molecules), and its intervals.

    z-scaling rescales the standard deviation; conformal regression keeps it and adds the
    intervals ``(lower, upper)`` with the calibrator's coverage.
    """
    if calibrator is None:
        return prediction, None
    if isinstance(calibrator, ZScaling):
        if prediction.std is None:
            raise ValueError("z-scaling rescales a standard deviation, and this prediction has none")
        scaled = torch.as_tensor(calibrator.apply(prediction.std.numpy()), dtype=prediction.std.dtype)
        return Prediction(prediction.mean, scaled), None
    std = None if prediction.std is None else prediction.std.numpy()
    lower, upper = calibrator.interval(prediction.mean.numpy(), std)
    as_tensor = lambda a: torch.as_tensor(a, dtype=prediction.mean.dtype)  # noqa: E731
    return prediction, (as_tensor(lower), as_tensor(upper))
