"""The uncertainty methods' heads: their losses against the papers' formulas, their variances, and combining."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.nn import functional as F
from torch.testing import assert_close

from structnets.chem.estimators import UncertaintyMethod, combine, head_loss, mean_and_variance

EXACT = dict(atol=1e-12, rtol=1e-12)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_names_and_outputs_per_target():
    assert UncertaintyMethod("evidential") is UncertaintyMethod.EVIDENTIAL_TOTAL  # chemprop's short name
    assert UncertaintyMethod("evidential-epistemic") is UncertaintyMethod.EVIDENTIAL_EPISTEMIC
    with pytest.raises(ValueError, match="'bayesian'"):
        UncertaintyMethod("bayesian")
    per_target = {method.value: method.outputs_per_target for method in UncertaintyMethod}
    assert per_target == {
        "none": 1,
        "ensemble": 1,
        "mve": 2,
        "evidential-total": 4,
        "evidential-aleatoric": 4,
        "evidential-epistemic": 4,
        "dropout": 1,
    }
    assert [m.value for m in UncertaintyMethod if m.evidential] == [
        "evidential-total",
        "evidential-aleatoric",
        "evidential-epistemic",
    ]


def test_plain_heads_are_trained_by_mse():
    output, target = torch.randn(7, 2, dtype=torch.double), torch.randn(7, 2, dtype=torch.double)
    for method in (UncertaintyMethod.NONE, UncertaintyMethod.ENSEMBLE, UncertaintyMethod.DROPOUT):
        assert_close(head_loss(output, target, method), F.mse_loss(output, target), **EXACT)
        mean, variance = mean_and_variance(output, method, 2)
        assert variance is None
        assert_close(mean, output, **EXACT)


def test_mve_loss_is_the_gaussian_nll_of_a_softplus_variance():
    """Two targets: the head is [mean_1, mean_2 | raw_var_1, raw_var_2]."""
    output, target = torch.randn(9, 4, dtype=torch.double), torch.randn(9, 2, dtype=torch.double)
    variance = F.softplus(output[:, 2:])
    expected = F.gaussian_nll_loss(output[:, :2], target, variance)
    # The variance is kept 1e-6 above zero, a relative change of at most ~1e-5 here.
    assert_close(head_loss(output, target, UncertaintyMethod.MVE), expected, rtol=1e-5, atol=0)
    mean, predicted = mean_and_variance(output, UncertaintyMethod.MVE, 2)
    assert_close(mean, output[:, :2], **EXACT)
    assert_close(predicted, variance, rtol=0, atol=2e-6)
    assert bool((predicted > 0).all())


def _nig_nll(y: float, gamma: float, nu: float, alpha: float, beta: float) -> float:
    """Amini et al. (2020), eq. 8: the negative log of the Normal-Inverse-Gamma evidence."""
    omega = 2 * beta * (1 + nu)
    return (
        0.5 * math.log(math.pi / nu)
        - alpha * math.log(omega)
        + (alpha + 0.5) * math.log(nu * (y - gamma) ** 2 + omega)
        + math.lgamma(alpha)
        - math.lgamma(alpha + 0.5)
    )


RAW = [  # (y, gamma, raw nu, raw alpha, raw beta)
    (0.3, -0.2, 0.5, -1.0, 0.2),
    (-1.5, 0.7, -2.0, 1.5, -0.5),
    (2.0, 2.1, 3.0, 0.0, 1.0),
]


@pytest.mark.parametrize("regularization", [0.0, 0.2, 1.0])
def test_evidential_loss_is_amini_et_al_nll_plus_the_regulariser(regularization):
    output = torch.tensor([[g, n, a, b] for _, g, n, a, b in RAW], dtype=torch.double)
    target = torch.tensor([[y] for y, *_ in RAW], dtype=torch.double)
    losses = []
    for y, gamma, raw_nu, raw_alpha, raw_beta in RAW:
        nu, alpha, beta = _softplus(raw_nu) + 1e-6, _softplus(raw_alpha) + 1 + 1e-6, _softplus(raw_beta) + 1e-6
        losses.append(_nig_nll(y, gamma, nu, alpha, beta) + regularization * abs(y - gamma) * (2 * nu + alpha))
    loss = head_loss(output, target, UncertaintyMethod.EVIDENTIAL_TOTAL, evidential_regularization=regularization)
    assert loss.dtype == torch.double
    assert float(loss) == pytest.approx(sum(losses) / len(losses), rel=1e-12)


def test_evidential_nll_is_the_student_t_marginal():
    """The NIG evidence is Student's t with 2 alpha degrees of freedom, scale^2 beta (1 + nu) / (nu alpha)."""
    output = torch.tensor([[g, n, a, b] for _, g, n, a, b in RAW], dtype=torch.double)
    target = torch.tensor([[y] for y, *_ in RAW], dtype=torch.double)
    for method in (UncertaintyMethod.EVIDENTIAL_TOTAL, UncertaintyMethod.EVIDENTIAL_ALEATORIC):
        for k in range(len(RAW)):
            gamma, nu, alpha, beta = output[k, 0], *(F.softplus(output[k, 1:]) + 1e-6)
            alpha = alpha + 1
            scale = math.sqrt(beta * (1 + nu) / (nu * alpha))
            expected = -stats.t.logpdf(float(target[k, 0]), df=2 * float(alpha), loc=float(gamma), scale=scale)
            loss = head_loss(output[k : k + 1], target[k : k + 1], method, evidential_regularization=0.0)
            assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_evidential_parameters_are_laid_out_by_target():
    """Two targets: [gamma_1, gamma_2 | nu_1, nu_2 | alpha_1, alpha_2 | beta_1, beta_2]; each target alone agrees."""
    output, target = torch.randn(5, 8, dtype=torch.double), torch.randn(5, 2, dtype=torch.double)
    both = head_loss(output, target, UncertaintyMethod.EVIDENTIAL_TOTAL)
    alone = [head_loss(output[:, k::2], target[:, k : k + 1], UncertaintyMethod.EVIDENTIAL_TOTAL) for k in range(2)]
    assert_close(both, (alone[0] + alone[1]) / 2, **EXACT)
    mean, _ = mean_and_variance(output, UncertaintyMethod.EVIDENTIAL_TOTAL, 2)
    assert_close(mean, output[:, :2], **EXACT)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.floats(-5, 5, allow_nan=False) for _ in range(4)]),
        min_size=1,
        max_size=6,
    )
)
def test_evidential_total_variance_is_aleatoric_plus_epistemic(rows):
    output = torch.tensor(rows, dtype=torch.double)
    gamma, total = mean_and_variance(output, UncertaintyMethod.EVIDENTIAL_TOTAL, 1)
    _, aleatoric = mean_and_variance(output, UncertaintyMethod.EVIDENTIAL_ALEATORIC, 1)
    _, epistemic = mean_and_variance(output, UncertaintyMethod.EVIDENTIAL_EPISTEMIC, 1)
    assert_close(total, aleatoric + epistemic, **EXACT)
    assert_close(gamma, output[:, :1], **EXACT)
    # Amini et al.: E[sigma^2] = beta / (alpha - 1), Var[mu] = E[sigma^2] / nu.
    nu, alpha_minus_one, beta = (F.softplus(output[:, k : k + 1]) + 1e-6 for k in (1, 2, 3))
    assert_close(aleatoric, beta / alpha_minus_one, rtol=1e-12, atol=0)
    assert_close(epistemic, aleatoric / nu, rtol=1e-12, atol=0)
    assert bool((epistemic > 0).all()) and bool((aleatoric > 0).all())


def test_combine_one_member():
    mean = torch.tensor([[1.0], [2.0]])
    combined, variance = combine([mean], [None])
    assert_close(combined, mean) and variance is None
    own = torch.tensor([[0.5], [0.25]])
    combined, variance = combine([mean], [own])
    assert_close(combined, mean)
    assert_close(variance, own)


def test_combine_is_the_law_of_total_variance_on_hand_numbers():
    means = [torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([[5.0, 3.0]])]
    mean, variance = combine(means, [None, None, None])
    assert_close(mean, torch.tensor([[3.0, 1.0]]))
    # Population variance over members: (4 + 0 + 4) / 3 and (1 + 1 + 4) / 3.
    assert_close(variance, torch.tensor([[8 / 3, 2.0]]))
    own = [torch.tensor([[0.5, 1.0]]), torch.tensor([[1.5, 1.0]]), torch.tensor([[1.0, 4.0]])]
    mean, variance = combine(means, own)
    assert_close(mean, torch.tensor([[3.0, 1.0]]))
    assert_close(variance, torch.tensor([[8 / 3 + 1.0, 2.0 + 2.0]]))


@settings(max_examples=30, deadline=None)
@given(
    members=st.integers(2, 5),
    rows=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_combine_agrees_with_numpy(members, rows, seed):
    generator = np.random.default_rng(seed)
    means = generator.normal(size=(members, rows, 2))
    own = generator.uniform(0.1, 2.0, size=(members, rows, 2))
    mean, variance = combine([torch.from_numpy(m) for m in means], [torch.from_numpy(v) for v in own])
    np.testing.assert_allclose(mean.numpy(), means.mean(0), rtol=1e-12)
    np.testing.assert_allclose(variance.numpy(), means.var(0) + own.mean(0), rtol=1e-12)
