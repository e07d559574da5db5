"""How a molecule property model says how sure it is: the uncertainty methods of ``molprop``.

Each method is a way of training and of reading the model's outputs, on the standardised
targets (:class:`structnets.chem.scaling.Scaler`):

* ``ensemble`` (Lakshminarayanan et al. 2017): ``--ensemble-size N`` members that differ by
  their initialisation; the spread of their predictions is the uncertainty.
* ``mve``, mean-variance estimation (Nix & Weigend 1994): the head outputs a mean and a
  variance per target, trained by the Gaussian negative log-likelihood.
* ``evidential-*``, deep evidential regression (Amini et al. 2020): the head outputs the
  parameters ``(γ, ν, α, β)`` of a Normal-Inverse-Gamma distribution, trained by its
  marginal likelihood plus ``λ |y - γ| (2ν + α)``; the variance reported is the total
  ``β (1 + ν) / (ν (α - 1))``, the aleatoric ``β / (α - 1)`` or the epistemic
  ``β / (ν (α - 1))``.
* ``dropout``, Monte Carlo dropout (Gal & Ghahramani 2016): the head's dropout stays on at
  prediction, ``dropout_samples`` passes, their spread the uncertainty.

The head's outputs are laid out ``[mean of every target | second parameter of every
target | ...]``, so the first ``num_targets`` columns are always the prediction.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["UncertaintyMethod", "head_loss", "mean_and_variance", "combine"]

# Keeps variances and evidential parameters away from zero, where the likelihoods diverge.
_EPS = 1e-6


class UncertaintyMethod(enum.Enum):
    """The uncertainty methods; the values are chemprop's names for them."""

    NONE = "none"
    ENSEMBLE = "ensemble"
    MVE = "mve"
    EVIDENTIAL_TOTAL = "evidential-total"
    EVIDENTIAL_ALEATORIC = "evidential-aleatoric"
    EVIDENTIAL_EPISTEMIC = "evidential-epistemic"
    DROPOUT = "dropout"

    @classmethod
    def _missing_(cls, value: object) -> UncertaintyMethod | None:
        return cls.EVIDENTIAL_TOTAL if value == "evidential" else None

    @property
    def evidential(self) -> bool:
        return self in (
            UncertaintyMethod.EVIDENTIAL_TOTAL,
            UncertaintyMethod.EVIDENTIAL_ALEATORIC,
            UncertaintyMethod.EVIDENTIAL_EPISTEMIC,
        )

    @property
    def outputs_per_target(self) -> int:
        """Head outputs per target: the mean, and the method's other parameters."""
        if self is UncertaintyMethod.MVE:
            return 2
        return 4 if self.evidential else 1


def _parameters(output: Tensor, method: UncertaintyMethod, num_targets: int) -> list[Tensor]:
    """The head's outputs ``[n, k * num_targets]`` as ``k`` tensors ``[n, num_targets]``, constrained."""
    columns = list(output.split(num_targets, dim=-1))
    if method is UncertaintyMethod.MVE:
        return [columns[0], F.softplus(columns[1]) + _EPS]
    if method.evidential:
        gamma, nu, alpha, beta = columns
        return [gamma, F.softplus(nu) + _EPS, F.softplus(alpha) + 1 + _EPS, F.softplus(beta) + _EPS]
    return columns


def head_loss(
    output: Tensor, target: Tensor, method: UncertaintyMethod, *, evidential_regularization: float = 0.2
) -> Tensor:
    """The training loss of a regression head under ``method`` (MSE for plain heads).

    Shapes:
        output: ``[n, outputs_per_target * num_targets]``; target: ``[n, num_targets]``.
    """
    parameters = _parameters(output, method, target.shape[-1])
    if method is UncertaintyMethod.MVE:
        mean, variance = parameters
        return F.gaussian_nll_loss(mean, target, variance, eps=_EPS)
    if method.evidential:
        gamma, nu, alpha, beta = parameters
        omega = 2 * beta * (1 + nu)
        nll = (
            0.5 * torch.log(math.pi / nu)
            - alpha * torch.log(omega)
            + (alpha + 0.5) * torch.log((target - gamma) ** 2 * nu + omega)
            + torch.lgamma(alpha)
            - torch.lgamma(alpha + 0.5)
        )
        regularizer = (target - gamma).abs() * (2 * nu + alpha)
        return (nll + evidential_regularization * regularizer).mean()
    return F.mse_loss(parameters[0], target)


def mean_and_variance(output: Tensor, method: UncertaintyMethod, num_targets: int) -> tuple[Tensor, Tensor | None]:
    """The prediction and the method's variance from one model's outputs (None: no variance).

    Shapes:
        output: ``[n, outputs_per_target * num_targets]``; returns ``[n, num_targets]`` twice.
    """
    parameters = _parameters(output, method, num_targets)
    if method is UncertaintyMethod.MVE:
        return parameters[0], parameters[1]
    if method.evidential:
        gamma, nu, alpha, beta = parameters
        aleatoric = beta / (alpha - 1)
        epistemic = aleatoric / nu
        variance = {
            UncertaintyMethod.EVIDENTIAL_TOTAL: aleatoric + epistemic,
            UncertaintyMethod.EVIDENTIAL_ALEATORIC: aleatoric,
            UncertaintyMethod.EVIDENTIAL_EPISTEMIC: epistemic,
        }[method]
        return gamma, variance
    return parameters[0], None


def combine(means: list[Tensor], variances: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
    """Several predictions of the same molecules (ensemble members, dropout passes) as one.

    The mean of the means, and the law of total variance: the mean of the members' own
    variances (none for plain heads) plus the variance of their means (population, over
    members; none for a single member without a variance of its own).

    Shapes:
        means[i], variances[i]: ``[n, num_targets]``; returns the same.
    """
    stacked = torch.stack(means)
    mean = stacked.mean(0)
    own = [v for v in variances if v is not None]
    if len(means) == 1:
        return mean, own[0] if own else None
    spread = stacked.var(0, unbiased=False)
    return mean, spread + (torch.stack(own).mean(0) if own else 0)
