"""What a molecule property model is scored by: its training loss and its test metrics.

* regression: mean squared error on the standardised targets; RMSE, MAE and R^2 in the
  target's own units;
* classification (0/1 targets, logits out): binary cross-entropy; accuracy at logit 0 and
  ROC-AUC.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["Task", "loss", "roc_auc", "regression_metrics", "classification_metrics", "metrics"]


class Task(enum.Enum):
    """The kind of target: a number per molecule, or a 0/1 label per molecule."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"


def loss(output: Tensor, target: Tensor, task: Task) -> Tensor:
    """The training loss: MSE for regression, binary cross-entropy on logits for classification.

    Shapes:
        output, target: ``[num_molecules, num_targets]``; returns a scalar.
    """
    if task is Task.CLASSIFICATION:
        return F.binary_cross_entropy_with_logits(output, target)
    return F.mse_loss(output, target)


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties get average ranks); NaN with one class.

    Shapes:
        scores, labels: ``[num_molecules]``.
    """
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores, dtype=torch.double)
    _, inverse, counts = torch.unique_consecutive(scores[order], return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    ranks[order] = (ends - (counts.double() - 1) / 2)[inverse]
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def regression_metrics(pred: Tensor, true: Tensor, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per target: RMSE, MAE and R^2 (NaN when the true values do not vary).

    Shapes:
        pred, true: ``[num_molecules, len(names)]``.
    """
    out = {}
    for k, name in enumerate(names):
        error = pred[:, k] - true[:, k]
        total = ((true[:, k] - true[:, k].mean()) ** 2).sum()
        out[name] = {
            "rmse": float(error.pow(2).mean().sqrt()),
            "mae": float(error.abs().mean()),
            "r2": float(1 - error.pow(2).sum() / total) if total > 0 else float("nan"),
        }
    return out


def classification_metrics(logits: Tensor, true: Tensor, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per target: accuracy (a positive logit predicts 1) and ROC-AUC.

    Shapes:
        logits, true: ``[num_molecules, len(names)]``.
    """
    return {
        name: {
            "accuracy": float(((logits[:, k] > 0).float() == true[:, k]).float().mean()),
            "roc_auc": roc_auc(logits[:, k], true[:, k]),
        }
        for k, name in enumerate(names)
    }


def metrics(pred: Tensor, true: Tensor, names: Sequence[str], task: Task) -> dict[str, dict[str, float]]:
    """The task's metrics per target; empty for no molecules."""
    if not len(true):
        return {}
    score = regression_metrics if task is Task.REGRESSION else classification_metrics
    return score(pred, true, names)
