import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from structnets.chem.uncertainty import (
    CalibrationMethod,
    ConformalInterval,
    ZScaling,
    calibrator_from_state_dict,
    coverage,
    ence,
    fit_calibrator,
    gaussian_interval,
    gaussian_nll,
    miscalibration_area,
    spearman,
    uncertainty_metrics,
)


def calibrated(n, seed, low=0.5, high=2.0):
    """Predictions whose std is exactly the noise's: true = mean + std * N(0, 1)."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=n)
    std = rng.uniform(low, high, n)
    return mean, std, mean + std * rng.normal(size=n)


@pytest.fixture(scope="module")
def perfect():
    return calibrated(20000, seed=0)


# ---------------------------------------------------------------------------- metrics
def test_nll_matches_torch_gaussian_nll_loss():
    mean, std = torch.randn(500, dtype=torch.float64), torch.rand(500, dtype=torch.float64) + 0.5
    true = mean + torch.randn(500, dtype=torch.float64) * 1.3
    expected = torch.nn.functional.gaussian_nll_loss(mean, true, std**2, full=True, reduction="mean")
    assert gaussian_nll(mean, std, true) == pytest.approx(float(expected), rel=1e-12)
    assert gaussian_nll(mean.float(), std.numpy(), true.tolist()) == pytest.approx(float(expected), rel=1e-6)


def test_perfectly_calibrated_data_scores_near_perfect(perfect):
    mean, std, true = perfect
    assert miscalibration_area(mean, std, true) < 0.01
    assert ence(mean, std, true) < 0.05
    assert ZScaling.fit(mean, std, true).scale[0] == pytest.approx(1.0, abs=0.02)


def test_understated_std_is_miscalibrated_and_z_scaling_fixes_it(perfect):
    mean, std, true = perfect
    assert miscalibration_area(mean, std / 2, true) > 0.1
    scaling = ZScaling.fit(mean, std / 2, true)
    assert scaling.scale[0] == pytest.approx(2.0, abs=0.05)
    assert miscalibration_area(mean, scaling.apply(std / 2), true) < 0.01
    # The fitted scale minimises the NLL of std * s: any other s does worse.
    best = gaussian_nll(mean, scaling.apply(std / 2), true)
    for factor in (0.9, 1.1):
        assert gaussian_nll(mean, scaling.apply(std / 2) * factor, true) > best


def test_miscalibration_area_is_at_most_a_half_for_hopeless_stds(perfect):
    mean, std, true = perfect
    assert miscalibration_area(mean, std * 1e-6, true) == pytest.approx(0.5, abs=0.01)  # every error outside
    assert miscalibration_area(mean, std * 1e6, true) == pytest.approx(0.5, abs=0.01)  # every error inside


def test_miscalibration_area_by_hand():
    # Scores |true - mean| / std = 0 and 3; with bins=2, p = 0, 0.5, 1 and z = 0, 0.674, inf.
    # observed = 1/2, 1/2, 1; |observed - p| = 1/2, 0, 0; trapezoid = 0.5 * (1/2 + 0) / 2.
    assert miscalibration_area([0.0, 0.0], [1.0, 1.0], [0.0, 3.0], bins=2) == pytest.approx(0.125)


def test_ence_by_hand():
    # Sorted by std: bin 1 is std (1, 1), errors (1, -1); bin 2 std (2, 4), errors (2, 2).
    mean = np.zeros(4)
    std = np.array([4.0, 1.0, 2.0, 1.0])
    true = np.array([2.0, 1.0, 2.0, -1.0])
    rmv2, rmse2 = math.sqrt((4 + 16) / 2), 2.0
    assert ence(mean, std, true, bins=2) == pytest.approx((0.0 + abs(rmv2 - rmse2) / rmv2) / 2)
    # Fewer samples than bins: one bin per sample, |std - |error|| / std each.
    assert ence([0.0, 0.0, 0.0], [1.0, 2.0, 4.0], [0.5, -2.0, 8.0], bins=10) == pytest.approx((0.5 + 0 + 1) / 3)


def test_spearman_sees_heteroscedastic_errors_and_not_shuffled_ones():
    mean, std, true = calibrated(20000, seed=1, low=0.1, high=2.0)
    assert spearman(mean, std, true) > 0.3
    assert abs(spearman(mean, np.random.default_rng(2).permutation(std), true)) < 0.05
    assert math.isnan(spearman(mean, np.ones_like(std), true))  # a constant std ranks nothing


def test_coverage_by_hand():
    true = [0.0, 0.5, 1.0, 1.5]
    assert coverage([0.0] * 4, [1.0] * 4, true) == 0.75  # both bounds inclusive
    assert coverage([-math.inf] * 4, [math.inf] * 4, true) == 1.0


def test_uncertainty_metrics_per_target_and_with_intervals(perfect):
    mean, std, true = (np.stack([a, a[::-1]], axis=1) for a in perfect)
    lower, upper = gaussian_interval(mean, std, 0.9)
    out = uncertainty_metrics(mean, std, true, ["a", "b"], lower, upper)
    assert set(out) == {"a", "b"}
    assert set(out["a"]) == {"nll", "miscalibration_area", "ence", "spearman", "coverage", "interval_width"}
    assert out["a"]["nll"] == pytest.approx(gaussian_nll(*(x[:, 0] for x in (mean, std, true))))
    assert out["b"]["ence"] == pytest.approx(ence(*(x[:, 1] for x in (mean, std, true))))
    assert out["a"]["coverage"] == pytest.approx(0.9, abs=0.01)
    assert out["a"]["interval_width"] == pytest.approx(2 * stats.norm.ppf(0.95) * std[:, 0].mean())
    assert set(uncertainty_metrics(mean[:, :1], std[:, :1], true[:, :1], ["a"])["a"]) == {
        "nll",
        "miscalibration_area",
        "ence",
        "spearman",
    }


def test_uncertainty_metrics_drop_missing_labels_when_allowed():
    mean, std = np.zeros((4, 2)), np.ones((4, 2))
    true = np.array([[1.0, math.nan], [math.nan, math.nan], [-1.0, math.nan], [2.0, math.nan]])
    with pytest.raises(ValueError, match=r"true must be finite, but true\[0, 1\] = nan"):
        uncertainty_metrics(mean, std, true, ["a", "b"])
    out = uncertainty_metrics(mean, std, true, ["a", "b"], allow_missing=True)
    assert out["a"]["nll"] == pytest.approx(gaussian_nll([0.0] * 3, [1.0] * 3, [1.0, -1.0, 2.0]))
    assert all(math.isnan(v) for v in out["b"].values())


# ---------------------------------------------------------------------------- calibrators
def heteroscedastic(n, seed, misscale=1.0):
    """A model with the right mean whose std is the known noise level times ``misscale``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n)
    noise = 0.1 + 1.9 * x**2
    mean = np.sin(6 * x)
    return mean, noise * misscale, mean + noise * rng.normal(size=n)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
@pytest.mark.parametrize("normalized", [True, False])
def test_conformal_intervals_reach_their_coverage_on_fresh_data(target, normalized):
    mean, std, true = heteroscedastic(2000, seed=10)
    test_mean, test_std, test_true = heteroscedastic(20000, seed=11)
    calibrator = ConformalInterval.fit(mean, std if normalized else None, true, coverage=target)
    assert calibrator.normalized is normalized and calibrator.coverage == target
    lower, upper = calibrator.interval(test_mean, test_std if normalized else None)
    assert coverage(lower, upper, test_true) == pytest.approx(target, abs=0.03)
    if normalized:  # the known noise gives the Gaussian quantile
        assert calibrator.quantile[0] == pytest.approx(stats.norm.ppf((1 + target) / 2), rel=0.05)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
@pytest.mark.parametrize("misscale", [3.0, 1 / 3])
def test_z_scaled_gaussian_intervals_reach_their_coverage(target, misscale):
    mean, std, true = heteroscedastic(2000, seed=20, misscale=misscale)
    test_mean, test_std, test_true = heteroscedastic(20000, seed=21, misscale=misscale)
    assert coverage(*gaussian_interval(test_mean, test_std, target), test_true) != pytest.approx(target, abs=0.03)
    scaling = ZScaling.fit(mean, std, true)
    assert scaling.scale[0] == pytest.approx(1 / misscale, rel=0.05)
    z = stats.norm.ppf((1 + target) / 2)
    lower, upper = test_mean - z * test_std * scaling.scale[0], test_mean + z * test_std * scaling.scale[0]
    assert coverage(lower, upper, test_true) == pytest.approx(target, abs=0.03)
    assert np.allclose(scaling.interval(test_mean, test_std, target), (lower, upper))


def test_conformal_quantile_is_the_higher_empirical_quantile():
    # n = 9, coverage 0.5: k = ceil(10 * 0.5) = 5, quantile(5/9, "higher") of 1..9 = the 6th smallest.
    scores = np.arange(1.0, 10.0)
    calibrator = ConformalInterval.fit(np.zeros(9), None, scores[::-1], coverage=0.5)
    assert calibrator.quantile.tolist() == [6.0]
    # n = 9, coverage 0.9: k = 9 = n, the largest score.
    assert ConformalInterval.fit(np.zeros(9), np.full(9, 2.0), scores, coverage=0.9).quantile.tolist() == [4.5]


def test_calibrators_fit_each_target_column():
    a, b = heteroscedastic(3000, seed=30, misscale=2.0), heteroscedastic(3000, seed=31, misscale=0.5)
    mean, std, true = (np.stack([x, y], axis=1) for x, y in zip(a, b))
    scaling = ZScaling.fit(mean, std, true)
    assert scaling.scale == pytest.approx([0.5, 2.0], rel=0.05)
    assert np.allclose(scaling.apply(std), std * scaling.scale)
    conformal = ConformalInterval.fit(torch.from_numpy(mean), torch.from_numpy(std), torch.from_numpy(true), 0.9)
    assert conformal.quantile[0] == pytest.approx(ConformalInterval.fit(*a, 0.9).quantile[0])
    assert conformal.quantile[1] == pytest.approx(ConformalInterval.fit(*b, 0.9).quantile[0])
    lower, upper = conformal.interval(mean, std)
    assert lower.shape == (3000, 2) and np.allclose(upper - mean, conformal.quantile * std)
    with pytest.raises(ValueError, match=r"fitted on 2 target\(s\)"):
        scaling.apply(std[:, 0])


def test_too_few_points_for_the_coverage_warn_and_give_an_unbounded_interval():
    mean, std, true = heteroscedastic(5, seed=40)
    with pytest.warns(UserWarning, match=r"5 calibration points are too few for coverage 0.9.*at least 9"):
        calibrator = ConformalInterval.fit(mean, std, true, coverage=0.9)
    assert calibrator.quantile.tolist() == [math.inf]
    lower, upper = calibrator.interval(mean, std)
    assert np.all(lower == -math.inf) and np.all(upper == math.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isfinite(ConformalInterval.fit(*heteroscedastic(9, seed=41), coverage=0.9).quantile[0])


def test_state_dicts_round_trip_through_torch_save_and_json(tmp_path):
    mean, std, true = heteroscedastic(500, seed=50)
    with pytest.warns(UserWarning):
        unbounded = ConformalInterval.fit(mean[:3], None, true[:3], coverage=0.95)
    calibrators = [ZScaling.fit(mean, std, true), ConformalInterval.fit(mean, std, true, 0.8), unbounded]
    for k, calibrator in enumerate(calibrators):
        state = calibrator.state_dict()
        assert json.loads(json.dumps(state, allow_nan=False)) == state  # strict JSON
        torch.save({"calibrator": state}, tmp_path / f"{k}.pt")
        loaded = torch.load(tmp_path / f"{k}.pt", weights_only=True)["calibrator"]
        restored = calibrator_from_state_dict(loaded)
        assert type(restored) is type(calibrator) and restored == calibrator
        assert type(calibrator).from_state_dict(state) == calibrator
    assert calibrators[0].state_dict()["method"] == "zscaling"
    assert calibrators[1].state_dict()["method"] == "conformal-regression"
    assert unbounded.state_dict()["quantile"] == [None] and not unbounded.normalized
    with pytest.raises(ValueError, match="not zscaling"):
        ZScaling.from_state_dict(calibrators[1].state_dict())


def test_calibration_method_parses_chemprops_names_and_the_alias():
    assert CalibrationMethod.parse("zscaling") is CalibrationMethod.ZSCALING
    assert CalibrationMethod.parse("conformal-regression") is CalibrationMethod.CONFORMAL
    assert CalibrationMethod.parse("Conformal") is CalibrationMethod.CONFORMAL
    assert CalibrationMethod.parse(CalibrationMethod.ZSCALING) is CalibrationMethod.ZSCALING
    with pytest.raises(ValueError, match="unknown calibration method 'platt'.*zscaling"):
        CalibrationMethod.parse("platt")
    mean, std, true = heteroscedastic(100, seed=60)
    assert isinstance(fit_calibrator("conformal", mean, std, true, coverage=0.8), ConformalInterval)
    assert isinstance(fit_calibrator(CalibrationMethod.ZSCALING, mean, std, true), ZScaling)


# ---------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("std", "message"),
    [
        ([1.0, 0.0, 1.0], r"std must be > 0, but std\[1\] = 0.0"),
        ([1.0, 1.0, -2.0], r"std must be > 0, but std\[2\] = -2.0"),
        ([1.0, math.nan, 1.0], r"std must be finite, but std\[1\] = nan"),
        ([math.inf, 1.0, 1.0], r"std must be finite, but std\[0\] = inf"),
    ],
)
def test_bad_std_is_named(std, message):
    for metric in (gaussian_nll, miscalibration_area, ence, spearman):
        with pytest.raises(ValueError, match=message):
            metric([0.0, 0.0, 0.0], std, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=message):
        ZScaling.fit([0.0, 0.0, 0.0], std, [1.0, 1.0, 1.0])


def test_bad_arrays_and_arguments_raise():
    with pytest.raises(ValueError, match=r"true must be finite, but true\[2\] = nan"):
        gaussian_nll([0.0] * 3, [1.0] * 3, [1.0, 1.0, math.nan])
    with pytest.raises(ValueError, match=r"same shape.*mean \[3\], std \[2\]"):
        ence([0.0] * 3, [1.0] * 2, [1.0] * 3)
    with pytest.raises(ValueError, match=r"same shape"):
        coverage([0.0] * 3, [1.0] * 3, [1.0] * 4)
    with pytest.raises(ValueError, match="empty"):
        gaussian_nll([], [], [])
    with pytest.raises(ValueError, match=r"one target.*shape \[2, 2\]"):
        miscalibration_area(np.zeros((2, 2)), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="coverage must be strictly between 0 and 1, but it is 1.5"):
        ConformalInterval.fit([0.0] * 3, [1.0] * 3, [1.0] * 3, coverage=1.5)
    with pytest.raises(ValueError, match="coverage must be strictly between 0 and 1"):
        gaussian_interval([0.0], [1.0], 0.0)
    with pytest.raises(ValueError, match="2 target column"):
        uncertainty_metrics(np.zeros((3, 2)), np.ones((3, 2)), np.ones((3, 2)), ["only"])
    with pytest.raises(ValueError, match="both lower and upper"):
        uncertainty_metrics([0.0], [1.0], [1.0], ["a"], lower=[0.0])
    with pytest.raises(ValueError, match="every calibration error is zero"):
        ZScaling.fit([1.0, 2.0], [1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="normalised by std"):
        ConformalInterval.fit([0.0] * 20, [1.0] * 20, [1.0] * 20).interval([0.0])
    with pytest.raises(ValueError, match="'method' key"):
        calibrator_from_state_dict({"scale": [1.0]})
    with pytest.raises(ValueError, match="scale must be > 0"):
        ZScaling(np.array([1.0, -1.0]))
