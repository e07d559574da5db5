"""How good a regression model's uncertainty is, and post-hoc calibrators that improve it.

A model that predicts a mean ``mean`` and a standard deviation ``std`` (> 0) per molecule
and target, in the target's own units, is scored against the truth ``true`` by:

* :func:`gaussian_nll`: the Gaussian negative log-likelihood;
* :func:`miscalibration_area`: how far the central Gaussian intervals' observed coverage
  is from their nominal coverage, integrated over all coverages (Tran et al. 2020);
* :func:`ence`: the expected normalised calibration error of Levi et al. (2022);
* :func:`spearman`: whether larger predicted ``std`` goes with larger errors;
* :func:`coverage`: the fraction of truths inside given intervals.

:func:`uncertainty_metrics` computes them all per target. Two calibrators are fitted on a
held-out calibration set and then applied to new predictions:

* :class:`ZScaling`: one factor per target multiplying ``std`` (Levi et al. 2022; the
  regression analogue of the temperature scaling of Guo et al. 2017);
* :class:`ConformalInterval`: (normalised) split-conformal intervals with a finite-sample
  coverage guarantee (Lei et al. 2018; Angelopoulos & Bates 2021).

Inputs are float torch tensors, numpy arrays or nested sequences; every computation is in
float64 numpy and the results are Python floats or numpy arrays. The single-target metric
functions take ``[n]`` arrays; :func:`uncertainty_metrics` and the calibrators take ``[n]``
(one target) or ``[n, targets]`` arrays, handled one target column at a time.

With ``allow_missing=True`` a NaN in ``true`` marks a missing label (as in a
:class:`~structnets.chem.datasets.MoleculeDataset` with ``allow_missing_targets``): that
row is left out of that target's metrics or fit. Everywhere else NaN or infinity is an error.

Shapes:
    mean, std, true: ``[n]`` (one target) or ``[n, targets]``.
    ZScaling.scale, ConformalInterval.quantile: ``[targets]``.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "Calibrator",
    "CalibrationMethod",
    "ZScaling",
    "ConformalInterval",
    "gaussian_nll",
    "miscalibration_area",
    "ence",
    "spearman",
    "coverage",
    "gaussian_interval",
    "uncertainty_metrics",
    "fit_calibrator",
    "calibrator_from_state_dict",
]

#: What the functions here accept as an array: a tensor (any device, detached here), a numpy array or a sequence.
ArrayLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]


# ---------------------------------------------------------------------------- validation
def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array (a new array for tensors; numpy input is never modified)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} is not an array of numbers: {error}") from None


def _first(mask: np.ndarray, values: np.ndarray, name: str) -> str:
    """``name[i] = value`` (or ``name[i, k] = value``) for the first True entry of ``mask``."""
    index = tuple(int(i) for i in np.argwhere(mask)[0])
    return f"{name}[{', '.join(map(str, index))}] = {float(values[index])!r}"


def _check_finite(values: np.ndarray, name: str, allow_nan: bool = False) -> None:
    bad = np.isinf(values) if allow_nan else ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{name} must be finite, but {_first(bad, values, name)} ({int(bad.sum())} such entries)")


def _check_std(std: np.ndarray, name: str = "std") -> None:
    _check_finite(std, name)
    bad = std <= 0
    if bad.any():
        raise ValueError(f"{name} must be > 0, but {_first(bad, std, name)} ({int(bad.sum())} such entries)")


def _check_same_shape(arrays: Mapping[str, np.ndarray]) -> None:
    shapes = {name: array.shape for name, array in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"the arrays must have the same shape, but got {listed}")


def _check_coverage(value: float, name: str = "coverage") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, not {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, but it is {value!r}")
    return float(value)


def _check_bins(bins: int, name: str = "bins") -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"{name} must be an integer >= 1, not {bins!r}")
    return int(bins)


def _one_target(mean: ArrayLike, std: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three arrays of one target, checked: ``[n]`` each, n >= 1, finite, std > 0."""
    arrays = {"mean": _to_numpy(mean, "mean"), "std": _to_numpy(std, "std"), "true": _to_numpy(true, "true")}
    _check_same_shape(arrays)
    shape = arrays["mean"].shape
    if len(shape) != 1:
        raise ValueError(
            f"this metric takes one target, arrays of shape [n], but got shape {list(shape)} "
            "(uncertainty_metrics takes [n, targets])"
        )
    if shape[0] < 1:
        raise ValueError("no samples: the arrays are empty (n must be >= 1)")
    _check_finite(arrays["mean"], "mean")
    _check_finite(arrays["true"], "true")
    _check_std(arrays["std"])
    return arrays["mean"], arrays["std"], arrays["true"]


def _columns(arrays: Mapping[str, np.ndarray], allow_missing: bool, targets: int | None = None) -> None:
    """Checks ``[n]`` or ``[n, targets]`` arrays of the same shape; NaN only in ``true`` with ``allow_missing``."""
    _check_same_shape(arrays)
    shape = next(iter(arrays.values())).shape
    if len(shape) not in (1, 2):
        raise ValueError(f"expected arrays of shape [n] or [n, targets], but got shape {list(shape)}")
    if shape[0] < 1:
        raise ValueError("no samples: the arrays are empty (n must be >= 1)")
    if targets is not None and (shape[1] if len(shape) == 2 else 1) != targets:
        raise ValueError(f"got {shape[1] if len(shape) == 2 else 1} target column(s) for {targets} target name(s)")
    for name, array in arrays.items():
        if name == "std":
            _check_std(array)
        else:
            _check_finite(array, name, allow_nan=allow_missing and name == "true")


def _as_2d(array: np.ndarray) -> np.ndarray:
    return array[:, None] if array.ndim == 1 else array


def _matching(array: np.ndarray, targets: int, name: str) -> np.ndarray:
    """Checks that ``array`` has one column per fitted target: ``[n, targets]``, or ``[n]`` for one target."""
    if (array.ndim == 1 and targets == 1) or (array.ndim == 2 and array.shape[1] == targets):
        return array
    expected = "[n] or [n, 1]" if targets == 1 else f"[n, {targets}]"
    raise ValueError(
        f"{name} has shape {list(array.shape)} but the calibrator was fitted on {targets} target(s): "
        f"expected {expected}"
    )


def _ceil(x: float) -> int:
    """``ceil(x)``, forgiving the rounding error of a product such as ``(n + 1) * 0.9``."""
    return math.ceil(x - 1e-9 * max(1.0, abs(x)))


# ---------------------------------------------------------------------------- metrics (unchecked cores)
def _nll(mean: np.ndarray, std: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(0.5 * np.log(2 * np.pi * std**2) + (true - mean) ** 2 / (2 * std**2)))


def _area(mean: np.ndarray, std: np.ndarray, true: np.ndarray, bins: int) -> float:
    expected = np.linspace(0.0, 1.0, bins + 1)
    from scipy import integrate, stats  # scipy.stats costs 0.4 s of import: only when scoring

    half_widths = stats.norm.ppf((1.0 + expected) / 2.0)  # z_{(1+p)/2}; infinite at p = 1
    scores = np.sort(np.abs(true - mean) / std)
    observed = np.searchsorted(scores, half_widths, side="right") / scores.size
    return float(integrate.trapezoid(np.abs(observed - expected), expected))


def _ence(mean: np.ndarray, std: np.ndarray, true: np.ndarray, bins: int) -> float:
    order = np.argsort(std, kind="stable")
    errors = (true - mean)[order]
    stds = std[order]
    parts = min(bins, stds.size)
    total = 0.0
    for s, e in zip(np.array_split(stds, parts), np.array_split(errors, parts)):
        rmv = math.sqrt(float(np.mean(s**2)))
        rmse = math.sqrt(float(np.mean(e**2)))
        total += abs(rmv - rmse) / rmv
    return total / parts


def _spearman(mean: np.ndarray, std: np.ndarray, true: np.ndarray) -> float:
    errors = np.abs(true - mean)
    if errors.size < 2 or np.ptp(std) == 0 or np.ptp(errors) == 0:
        return math.nan  # a constant ranking correlates with nothing
    from scipy import stats

    rho, _ = stats.spearmanr(errors, std)
    return float(rho)


# ---------------------------------------------------------------------------- metrics
def gaussian_nll(mean: ArrayLike, std: ArrayLike, true: ArrayLike) -> float:
    """The mean Gaussian negative log-likelihood of the truth (lower is better).

    ``NLL = mean_i [ 0.5 * log(2 pi std_i^2) + (true_i - mean_i)^2 / (2 std_i^2) ]``, the
    same as ``torch.nn.functional.gaussian_nll_loss(mean, true, std**2, full=True)``.

    Shapes:
        mean, std, true: ``[n]``; returns a float.

    Raises:
        ValueError: on shapes that differ, no samples, a non-finite value or ``std <= 0``.
    """
    return _nll(*_one_target(mean, std, true))


def miscalibration_area(mean: ArrayLike, std: ArrayLike, true: ArrayLike, bins: int = 100) -> float:
    """The area between the observed and the expected coverage of central Gaussian intervals.

    For each expected proportion ``p`` in ``linspace(0, 1, bins + 1)`` the observed
    proportion is ``obs(p) = mean_i [ |true_i - mean_i| <= z_{(1+p)/2} std_i ]`` with
    ``z_q = Phi^{-1}(q)`` the standard normal quantile; the area is the trapezoid integral
    ``int_0^1 |obs(p) - p| dp``. It is 0 for perfectly calibrated Gaussian predictions and
    at most 0.5 (all errors far outside, or all far inside, every interval).

    Shapes:
        mean, std, true: ``[n]``; returns a float.

    Raises:
        ValueError: on bad arrays (see :func:`gaussian_nll`) or ``bins < 1``.
    """
    bins = _check_bins(bins)
    return _area(*_one_target(mean, std, true), bins)


def ence(mean: ArrayLike, std: ArrayLike, true: ArrayLike, bins: int = 10) -> float:
    """The expected normalised calibration error of Levi et al. (2022) (0 is perfect).

    The samples are sorted by ``std`` and split into ``bins`` bins of (nearly) equal counts
    (``np.array_split``); with fewer samples than bins each sample is a bin. Per bin ``b``,
    ``RMV_b = sqrt(mean_{i in b} std_i^2)`` and ``RMSE_b = sqrt(mean_{i in b} (true_i - mean_i)^2)``;
    ``ENCE = mean_b |RMV_b - RMSE_b| / RMV_b``.

    Shapes:
        mean, std, true: ``[n]``; returns a float.

    Raises:
        ValueError: on bad arrays (see :func:`gaussian_nll`) or ``bins < 1``.
    """
    bins = _check_bins(bins)
    return _ence(*_one_target(mean, std, true), bins)


def spearman(mean: ArrayLike, std: ArrayLike, true: ArrayLike) -> float:
    """Spearman's rank correlation between the absolute error ``|true - mean|`` and ``std``.

    ``rho = Pearson(rank(|true - mean|), rank(std))`` (ties get average ranks,
    ``scipy.stats.spearmanr``); positive when the larger predicted uncertainties go with
    the larger errors. NaN when ``std`` or the error is constant, or ``n < 2``.

    Shapes:
        mean, std, true: ``[n]``; returns a float.

    Raises:
        ValueError: on bad arrays (see :func:`gaussian_nll`).
    """
    return _spearman(*_one_target(mean, std, true))


def coverage(lower: ArrayLike, upper: ArrayLike, true: ArrayLike) -> float:
    """The fraction of the truths inside their intervals: ``mean_i [ lower_i <= true_i <= upper_i ]``.

    The bounds may be infinite (an unbounded interval); NaN is an error.

    Shapes:
        lower, upper, true: any one shape, ``[n]`` or ``[n, targets]`` (all entries count); returns a float.

    Raises:
        ValueError: on shapes that differ, no entries, a NaN bound or a non-finite truth.
    """
    arrays = {"lower": _to_numpy(lower, "lower"), "upper": _to_numpy(upper, "upper"), "true": _to_numpy(true, "true")}
    _check_same_shape(arrays)
    if arrays["true"].size < 1:
        raise ValueError("no samples: the arrays are empty (n must be >= 1)")
    for name in ("lower", "upper"):
        nan = np.isnan(arrays[name])
        if nan.any():
            raise ValueError(f"{name} must not be NaN, but {_first(nan, arrays[name], name)}")
    _check_finite(arrays["true"], "true")
    inside = (arrays["lower"] <= arrays["true"]) & (arrays["true"] <= arrays["upper"])
    return float(np.mean(inside))


def gaussian_interval(mean: ArrayLike, std: ArrayLike, coverage: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The central interval of a Gaussian: ``mean -/+ z std`` with ``z = Phi^{-1}((1 + coverage) / 2)``.

    Shapes:
        mean, std: ``[n]`` or ``[n, targets]`` (the same); returns ``(lower, upper)`` of that shape.

    Raises:
        ValueError: on shapes that differ, non-finite values, ``std <= 0`` or ``coverage`` outside (0, 1).
    """
    coverage = _check_coverage(coverage)
    arrays = {"mean": _to_numpy(mean, "mean"), "std": _to_numpy(std, "std")}
    _check_same_shape(arrays)
    _check_finite(arrays["mean"], "mean")
    _check_std(arrays["std"])
    from scipy import stats

    half = float(stats.norm.ppf((1.0 + coverage) / 2.0)) * arrays["std"]
    return arrays["mean"] - half, arrays["mean"] + half


def uncertainty_metrics(
    mean: ArrayLike,
    std: ArrayLike,
    true: ArrayLike,
    names: Sequence[str],
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    *,
    area_bins: int = 100,
    ence_bins: int = 10,
    allow_missing: bool = False,
) -> dict[str, dict[str, float]]:
    """Per target: ``nll``, ``miscalibration_area``, ``ence`` and ``spearman``; with intervals also
    ``coverage`` and ``interval_width`` (``mean_i (upper_i - lower_i)``, infinite for an unbounded interval).

    With ``allow_missing`` a NaN in ``true`` drops that row from that target; a target with
    no labels at all gets NaN for every metric.

    Shapes:
        mean, std, true, lower, upper: ``[n, len(names)]`` (or ``[n]`` for one name).

    Raises:
        ValueError: on bad arrays, a column count other than ``len(names)``, or only one of ``lower``/``upper``.
    """
    if (lower is None) != (upper is None):
        raise ValueError("pass both lower and upper, or neither")
    area_bins, ence_bins = _check_bins(area_bins, "area_bins"), _check_bins(ence_bins, "ence_bins")
    arrays = {"mean": _to_numpy(mean, "mean"), "std": _to_numpy(std, "std"), "true": _to_numpy(true, "true")}
    _columns(arrays, allow_missing, targets=len(names))
    bounds = None
    if lower is not None and upper is not None:
        bounds = {"lower": _to_numpy(lower, "lower"), "upper": _to_numpy(upper, "upper")}
        _check_same_shape({"mean": arrays["mean"], **bounds})
        for name, array in bounds.items():
            nan = np.isnan(array)
            if nan.any():
                raise ValueError(f"{name} must not be NaN, but {_first(nan, array, name)}")
        bounds = {name: _as_2d(array) for name, array in bounds.items()}
    m, s, t = (_as_2d(arrays[name]) for name in ("mean", "std", "true"))
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        keep = ~np.isnan(t[:, k])
        mk, sk, tk = m[keep, k], s[keep, k], t[keep, k]
        keys = ["nll", "miscalibration_area", "ence", "spearman"] + (["coverage", "interval_width"] if bounds else [])
        if not keep.any():
            out[name] = dict.fromkeys(keys, math.nan)
            continue
        row = {
            "nll": _nll(mk, sk, tk),
            "miscalibration_area": _area(mk, sk, tk, area_bins),
            "ence": _ence(mk, sk, tk, ence_bins),
            "spearman": _spearman(mk, sk, tk),
        }
        if bounds:
            lo, hi = bounds["lower"][keep, k], bounds["upper"][keep, k]
            row["coverage"] = float(np.mean((lo <= tk) & (tk <= hi)))
            row["interval_width"] = float(np.mean(hi - lo))
        out[name] = row
    return out


# ---------------------------------------------------------------------------- calibrators
class CalibrationMethod(enum.Enum):
    """A post-hoc calibrator; the values are chemprop's names (``conformal`` also parses)."""

    ZSCALING = "zscaling"
    CONFORMAL = "conformal-regression"

    @classmethod
    def parse(cls, text: str | CalibrationMethod) -> CalibrationMethod:
        """The method named ``text`` (case, ``_`` for ``-`` and the alias ``conformal`` forgiven).

        Raises:
            ValueError: for any other name, listing the accepted ones.
        """
        if isinstance(text, cls):
            return text
        if not isinstance(text, str):
            raise ValueError(f"a calibration method is named by a string, not {text!r}")
        key = text.strip().lower().replace("_", "-")
        for method in cls:
            if key in (method.value, method.name.lower()):
                return method
        if key == "conformal":
            return cls.CONFORMAL
        accepted = ", ".join([m.value for m in cls] + ["conformal"])
        raise ValueError(f"unknown calibration method {text!r}: expected one of {accepted}")


def _frozen_array(values: Any, name: str) -> np.ndarray:
    array = np.array(values, dtype=np.float64)  # a copy: the calibrator owns it
    if array.ndim != 1 or array.size < 1:
        raise ValueError(f"{name} must be a non-empty list with one value per target, got shape {list(array.shape)}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ZScaling:
    """Z-scaling: each target's predicted ``std`` multiplied by one factor fitted on a calibration set.

    The factor ``s`` minimises the Gaussian NLL of ``std * s`` on the calibration set,
    ``sum_i [ log(s std_i) + r_i^2 / (2 s^2 std_i^2) ]`` with ``r_i = true_i - mean_i``;
    setting the derivative to zero gives ``s^2 = mean_i (r_i / std_i)^2``, the mean squared
    z-score (Levi et al. 2022; the regression form of Guo et al.'s temperature scaling).
    It changes the intervals' widths, never the ranking of the uncertainties.

    Shapes:
        scale: ``[targets]``.
    """

    scale: np.ndarray
    method: ClassVar[CalibrationMethod] = CalibrationMethod.ZSCALING

    def __post_init__(self) -> None:
        scale = _frozen_array(self.scale, "scale")
        _check_std(scale, "scale")
        object.__setattr__(self, "scale", scale)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and np.array_equal(self.scale, other.scale)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def fit(cls, mean: ArrayLike, std: ArrayLike, true: ArrayLike, *, allow_missing: bool = False) -> ZScaling:
        """Fitted on a calibration set, per target column: ``scale_k = sqrt(mean_i ((true_ik - mean_ik) / std_ik)^2)``.

        Shapes:
            mean, std, true: ``[n]`` or ``[n, targets]``.

        Raises:
            ValueError: on bad arrays, or a target whose calibration errors are all zero (or all missing).
        """
        arrays = {"mean": _to_numpy(mean, "mean"), "std": _to_numpy(std, "std"), "true": _to_numpy(true, "true")}
        _columns(arrays, allow_missing)
        m, s, t = (_as_2d(arrays[name]) for name in ("mean", "std", "true"))
        scale = []
        for k in range(m.shape[1]):
            keep = ~np.isnan(t[:, k])
            if not keep.any():
                raise ValueError(f"target {k} has no calibration labels: every true value is missing")
            z = (t[keep, k] - m[keep, k]) / s[keep, k]
            value = math.sqrt(float(np.mean(z**2)))
            if value == 0:
                raise ValueError(f"target {k}: every calibration error is zero, so no scale for std can be fitted")
            scale.append(value)
        return cls(np.array(scale))

    def apply(self, std: ArrayLike) -> np.ndarray:
        """The calibrated standard deviation ``std * scale`` (per target column).

        Shapes:
            std: ``[n, targets]`` (or ``[n]`` for one target); returns the same shape.
        """
        array = _matching(_to_numpy(std, "std"), self.scale.size, "std")
        _check_std(array)
        return array * (self.scale if array.ndim == 2 else self.scale[0])

    def interval(self, mean: ArrayLike, std: ArrayLike, coverage: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated central Gaussian interval ``mean -/+ z_{(1+coverage)/2} * std * scale``.

        Shapes:
            mean, std: ``[n, targets]`` (or ``[n]`` for one target); returns ``(lower, upper)`` of that shape.
        """
        return gaussian_interval(mean, self.apply(std), coverage)

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-safe; they load with ``torch.load(weights_only=True)``)."""
        return {"method": self.method.value, "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ZScaling:
        """The calibrator :meth:`state_dict` described.

        Raises:
            ValueError: when ``state`` is not a z-scaling state or its scale is invalid.
        """
        _check_method(state, cls.method)
        return cls(np.array(state["scale"], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class ConformalInterval:
    """Split-conformal prediction intervals, normalised by the predicted ``std`` (or plain).

    On a calibration set of ``n`` points the nonconformity scores are
    ``a_i = |true_i - mean_i| / std_i`` (normalised; Lei et al. 2018, Angelopoulos & Bates
    2021) or ``a_i = |true_i - mean_i|`` (plain, ``std`` treated as 1). With
    ``k = ceil((n + 1) * coverage)`` the quantile is ``q = Quantile(a, k / n)`` by numpy's
    ``method="higher"``, and a new point's interval is ``mean -/+ q * std`` (or ``mean -/+ q``).
    For exchangeable data ``P(lower <= true <= upper) >= coverage``. When ``k > n`` there
    are too few calibration points for that coverage: ``q = inf`` (an unbounded interval)
    and a warning says so; ``n >= coverage / (1 - coverage)`` points are needed.

    ``quantile`` is ``numpy.quantile(a, k / n, method="higher")`` as in the reference code of
    Angelopoulos & Bates: the order statistic ``a_(ceil((n-1) k / n) + 1)``, which equals the
    textbook ``a_(k)`` when ``k = n`` and is one order statistic above it otherwise (a little
    more conservative; negligible for hundreds of points).

    Shapes:
        quantile: ``[targets]`` (``>= 0``, ``inf`` allowed).
    """

    quantile: np.ndarray
    coverage: float
    normalized: bool = True
    method: ClassVar[CalibrationMethod] = CalibrationMethod.CONFORMAL

    def __post_init__(self) -> None:
        quantile = _frozen_array(self.quantile, "quantile")
        bad = np.isnan(quantile) | (quantile < 0)
        if bad.any():
            raise ValueError(f"quantile must be >= 0 (inf allowed), but {_first(bad, quantile, 'quantile')}")
        if not isinstance(self.normalized, (bool, np.bool_)):
            raise ValueError(f"normalized must be True or False, not {self.normalized!r}")
        object.__setattr__(self, "quantile", quantile)
        object.__setattr__(self, "coverage", _check_coverage(self.coverage))
        object.__setattr__(self, "normalized", bool(self.normalized))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and np.array_equal(self.quantile, other.quantile)  # type: ignore[attr-defined]
            and self.coverage == other.coverage  # type: ignore[attr-defined]
            and self.normalized == other.normalized  # type: ignore[attr-defined]
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def fit(
        cls,
        mean: ArrayLike,
        std: ArrayLike | None,
        true: ArrayLike,
        coverage: float = 0.9,
        *,
        allow_missing: bool = False,
    ) -> ConformalInterval:
        """Fitted on a calibration set, per target column; ``std=None`` gives plain (unnormalised) intervals.

        Shapes:
            mean, std, true: ``[n]`` or ``[n, targets]``.

        Raises:
            ValueError: on bad arrays, ``coverage`` outside (0, 1), or a target with no labels.

        Warns:
            UserWarning: for a target with too few calibration points for ``coverage`` (its quantile is inf).
        """
        coverage = _check_coverage(coverage)
        arrays = {"mean": _to_numpy(mean, "mean"), "true": _to_numpy(true, "true")}
        if std is not None:
            arrays["std"] = _to_numpy(std, "std")
        _columns(arrays, allow_missing)
        m, t = _as_2d(arrays["mean"]), _as_2d(arrays["true"])
        s = _as_2d(arrays["std"]) if std is not None else np.ones_like(m)
        quantile = []
        for k in range(m.shape[1]):
            keep = ~np.isnan(t[:, k])
            n = int(keep.sum())
            if n == 0:
                raise ValueError(f"target {k} has no calibration labels: every true value is missing")
            scores = np.abs(t[keep, k] - m[keep, k]) / s[keep, k]
            rank = _ceil((n + 1) * coverage)
            if rank > n:
                warnings.warn(
                    f"conformal calibration of target {k}: {n} calibration points are too few for coverage "
                    f"{coverage} (ceil((n + 1) * coverage) = {rank} > n), so its interval is unbounded (quantile = inf); "
                    f"at least {_ceil(coverage / (1 - coverage))} points are needed",
                    UserWarning,
                    stacklevel=2,
                )
                quantile.append(math.inf)
            else:
                quantile.append(float(np.quantile(scores, rank / n, method="higher")))
        return cls(np.array(quantile), coverage, std is not None)

    def interval(self, mean: ArrayLike, std: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The interval ``mean -/+ quantile * std`` (normalised) or ``mean -/+ quantile`` (plain, ``std`` ignored).

        Shapes:
            mean, std: ``[n, targets]`` (or ``[n]`` for one target); returns ``(lower, upper)`` of that shape.

        Raises:
            ValueError: on bad arrays, or no ``std`` for a normalised calibrator.
        """
        m = _matching(_to_numpy(mean, "mean"), self.quantile.size, "mean")
        _check_finite(m, "mean")
        q = self.quantile if m.ndim == 2 else self.quantile[0]
        if not self.normalized:
            half = np.broadcast_to(q, m.shape)
        else:
            if std is None:
                raise ValueError("this conformal calibrator is normalised by std: pass the predicted std")
            s = _to_numpy(std, "std")
            _check_same_shape({"mean": m, "std": s})
            _check_std(s)
            half = q * s
        return m - half, m + half

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values (strict JSON: an infinite quantile is stored as None; they load with
        ``torch.load(weights_only=True)``)."""
        return {
            "method": self.method.value,
            "quantile": [float(v) if math.isfinite(v) else None for v in self.quantile],
            "coverage": self.coverage,
            "normalized": self.normalized,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ConformalInterval:
        """The calibrator :meth:`state_dict` described (None or inf in ``quantile`` is an unbounded interval).

        Raises:
            ValueError: when ``state`` is not a conformal state or its values are invalid.
        """
        _check_method(state, cls.method)
        quantile = [math.inf if v is None else v for v in state["quantile"]]
        return cls(np.array(quantile, dtype=np.float64), state["coverage"], state.get("normalized", True))


#: A fitted calibrator of either kind.
Calibrator = ZScaling | ConformalInterval

_CALIBRATORS: dict[CalibrationMethod, type[ZScaling] | type[ConformalInterval]] = {
    CalibrationMethod.ZSCALING: ZScaling,
    CalibrationMethod.CONFORMAL: ConformalInterval,
}


def _check_method(state: Mapping[str, Any], expected: CalibrationMethod) -> None:
    if not isinstance(state, Mapping) or "method" not in state:
        raise ValueError(f"a calibrator state is a dict with a 'method' key, not {state!r}")
    method = CalibrationMethod.parse(state["method"])
    if method is not expected:
        raise ValueError(f"this state is of a {method.value} calibrator, not {expected.value}")


def fit_calibrator(
    method: CalibrationMethod | str,
    mean: ArrayLike,
    std: ArrayLike | None,
    true: ArrayLike,
    *,
    coverage: float = 0.9,
    allow_missing: bool = False,
) -> Calibrator:
    """The calibrator ``method`` fitted on a calibration set (``coverage`` is only used by conformal).

    Shapes:
        mean, std, true: ``[n]`` or ``[n, targets]``.

    Raises:
        ValueError: on an unknown method, bad arrays, or ``std=None`` for z-scaling.
    """
    method = CalibrationMethod.parse(method)
    if method is CalibrationMethod.ZSCALING:
        if std is None:
            raise ValueError("z-scaling rescales a predicted std: pass std")
        return ZScaling.fit(mean, std, true, allow_missing=allow_missing)
    return ConformalInterval.fit(mean, std, true, coverage, allow_missing=allow_missing)


def calibrator_from_state_dict(state: Mapping[str, Any]) -> Calibrator:
    """The calibrator a ``state_dict()`` described, of the kind its ``"method"`` key names.

    Raises:
        ValueError: on a state without a known ``"method"``, or invalid values.
    """
    if not isinstance(state, Mapping) or "method" not in state:
        raise ValueError(f"a calibrator state is a dict with a 'method' key, not {state!r}")
    return _CALIBRATORS[CalibrationMethod.parse(state["method"])].from_state_dict(state)
