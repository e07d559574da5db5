"""Hyperparameter search for molprop (``structnets molprop hpopt``), after ``chemprop hpopt``.

:func:`search` trains one molprop run per trial (:func:`structnets.chem.molprop.train`) with
sizes, dropout and learning rate drawn by optuna's TPE sampler from a :class:`SearchSpace`,
and scores each on the validation split only (the test split never steers the search):

* regression: the mean over targets of the validation RMSE, minimised;
* classification: the mean over targets of the validation ROC-AUC, maximised (a target whose
  validation split holds one class has no ROC-AUC and is left out of the mean; the split is
  the same in every trial, so every trial leaves out the same targets).

It writes into ``out_dir``:

* ``hpopt.json``: the direction, the metric, the space, the best trial (its params and
  validation score) and every trial (params, validation score, state, and the reason of a
  trial that did not complete); written last, so its presence marks a finished search;
* ``best_config.json``: the best trial's whole :class:`MolpropConfig`
  (:func:`structnets.train.config.to_dict`; read back with ``from_dict(MolpropConfig, ...)``);
* ``best/``: the best trial's run directory, a model for ``structnets molprop predict``;
* ``trials/trial_<k>/``: each trial's run while it trains; removed once scored unless it is
  the best so far (or ``keep_runs``).

A trial whose loss turns NaN or infinite (:class:`~structnets.train.engine.NonFiniteLossError`:
too high a learning rate, say) is recorded as pruned, with the error as its reason, and the
search goes on; any other error stops the search.

optuna is imported when a search starts, so that ``structnets molprop`` works without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..train.checkpoint import atomic_write
from ..train.config import to_dict
from ..train.engine import NonFiniteLossError
from .metrics import Task
from .molprop_config import MolpropConfig

__all__ = ["SearchSpace", "search", "validation_score", "register_hpopt", "train", "RESULT_FILE", "CONFIG_FILE"]

RESULT_FILE = "hpopt.json"
CONFIG_FILE = "best_config.json"
BEST_DIR = "best"
TRIALS_DIR = "trials"
#: The trial attribute that holds why a trial was pruned.
_REASON = "reason"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What :func:`search` samples; every other setting is the base config's.

    How it maps onto chemprop's hpopt keys: chemprop's ``depth`` (message-passing steps) is
    our ``rounds``; its message hidden size (v1 ``hidden_size``, v2 ``message_hidden_dim``)
    is our ``hidden_size``, the MPNN's node state; its ``dropout`` is our ``dropout`` (here
    before the output MLP's hidden layer); of its learning-rate keys, ``max_lr`` (the peak)
    is our ``lr``, while the warm-up's start and end ratios (``init_lr``/``final_lr``) stay
    the base config's ``final_lr_ratio`` and ``warmup_epochs``. chemprop's FFN keys
    (``ffn_hidden_dim``, ``ffn_num_layers``) are not searched: our read-out has one hidden
    layer and keeps the base ``readout_hidden_size``. The ranges are chemprop's for depth
    and dropout; the sizes are scaled down for CPUs and small data sets.

    Attributes:
        hidden_size: the choices of node state size (categorical): 16, 32, 64, 128.
        rounds: the fewest and most message-passing rounds (integers, uniform): 2 to 6.
        dropout: the lowest and highest dropout (uniform): 0.0 to 0.4.
        lr: the lowest and highest peak learning rate (log-uniform): 1e-4 to 3e-3.
    """

    hidden_size: tuple[int, ...] = (16, 32, 64, 128)
    rounds: tuple[int, int] = (2, 6)
    dropout: tuple[float, float] = (0.0, 0.4)
    lr: tuple[float, float] = (1e-4, 3e-3)

    def __post_init__(self) -> None:
        for name in ("hidden_size", "rounds", "dropout", "lr"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.hidden_size or any(not isinstance(h, int) or h < 1 for h in self.hidden_size):
            raise ValueError(f"hidden_size choices must be positive integers, got {self.hidden_size}")
        for name in ("rounds", "dropout", "lr"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} must be a (low, high) pair, got {getattr(self, name)}")
        (r_low, r_high), (d_low, d_high), (lr_low, lr_high) = self.rounds, self.dropout, self.lr
        if not 1 <= r_low <= r_high:
            raise ValueError(f"rounds must be 1 <= low <= high, got {self.rounds}")
        if not 0 <= d_low <= d_high < 1:
            raise ValueError(f"dropout must be 0 <= low <= high < 1, got {self.dropout}")
        if not 0 < lr_low <= lr_high:
            raise ValueError(f"lr must be 0 < low <= high, got {self.lr}")

    def sample(self, trial: Any) -> dict[str, Any]:
        """One point of the space, drawn through an optuna ``trial``."""
        return {
            "hidden_size": trial.suggest_categorical("hidden_size", self.hidden_size),
            "rounds": trial.suggest_int("rounds", *self.rounds),
            "dropout": trial.suggest_float("dropout", *self.dropout),
            "lr": trial.suggest_float("lr", *self.lr, log=True),
        }


def train(config: MolpropConfig, out_dir: str | Path) -> dict[str, Any]:
    """molprop's :func:`~structnets.chem.molprop.train`, imported when called.

    molprop registers this module's sub-command, so this module does not import molprop at
    its top; tests replace this function to score made-up metrics.
    """
    from .molprop import train as molprop_train

    return molprop_train(config, out_dir)


def apply(base: MolpropConfig, params: dict[str, Any]) -> MolpropConfig:
    """``base`` with a trial's ``params`` (the model's fields, and ``lr`` in its engine settings)."""
    model = {name: params[name] for name in ("hidden_size", "rounds", "dropout")}
    return dataclasses.replace(base, **model, train=dataclasses.replace(base.train, lr=params["lr"]))


def _metric(task: Task) -> tuple[str, str]:
    """The validation metric and the direction of ``task``'s search."""
    return ("roc_auc", "maximize") if task is Task.CLASSIFICATION else ("rmse", "minimize")


def validation_score(metrics: dict[str, Any], task: Task) -> float:
    """The search's score of one run: the mean over targets of its validation RMSE or ROC-AUC.

    Only ``metrics["val"]`` is read. For classification, targets without a ROC-AUC (one
    class in the validation split) are left out; NaN when no target has a value.
    """
    key, _ = _metric(task)
    values = [float(per_target[key]) for per_target in metrics["val"].values()]
    if task is Task.CLASSIFICATION:
        values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def _trial_record(trial: Any) -> dict[str, Any]:
    record = {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "score": trial.value if trial.state.name == "COMPLETE" else None,
    }
    if "val" in trial.user_attrs:
        record["val"] = trial.user_attrs["val"]
    if _REASON in trial.user_attrs:
        record[_REASON] = trial.user_attrs[_REASON]
    return record


def search(
    base: MolpropConfig,
    out_dir: str | Path,
    num_trials: int,
    *,
    space: SearchSpace = SearchSpace(),
    seed: int = 0,
    keep_runs: bool = False,
) -> dict[str, Any]:
    """Runs ``num_trials`` molprop trainings around ``base``; returns what ``hpopt.json`` holds.

    Args:
        base: every setting but the searched ones (see :class:`SearchSpace`); the data, its
            split and the training seed are the same in every trial.
        out_dir: where ``hpopt.json``, ``best_config.json``, ``best/`` and ``trials/`` go.
        num_trials: trainings to run (at least 1).
        space: the ranges to sample.
        seed: the TPE sampler's seed: the same seed samples the same params.
        keep_runs: keep every trial's run directory under ``trials/`` (``best/`` is then a copy).

    Raises:
        ValueError: ``num_trials`` below 1, ``out_dir`` already holding ``hpopt.json`` or
            being a file, ``base`` resuming a run, a run under torchrun, or no trial that
            completed with a finite score.
        ImportError: optuna is not installed.
    """
    if isinstance(num_trials, bool) or not isinstance(num_trials, int) or num_trials < 1:
        raise ValueError(f"the search needs at least one trial, got num_trials={num_trials!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; give a directory for the search's outputs")
    if (out_dir / RESULT_FILE).exists():
        raise ValueError(f"{out_dir / RESULT_FILE} exists: a search already finished in {out_dir}; give another --out")
    if base.train.resume is not None:
        raise ValueError("hpopt trains every trial from scratch; --resume does not apply")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("hpopt runs its trials in one process; run it without torchrun")
    try:
        import optuna
    except ImportError as error:
        raise ImportError("structnets molprop hpopt needs optuna: pip install optuna", name="optuna") from error

    key, direction = _metric(base.task)
    trials_dir = out_dir / TRIALS_DIR

    def run_dir(number: int) -> Path:
        return trials_dir / f"trial_{number}"

    def objective(trial: Any) -> float:
        params = space.sample(trial)
        where = run_dir(trial.number)
        if where.exists():  # left by an interrupted search into this out_dir
            shutil.rmtree(where)
        try:
            metrics = train(apply(base, params), where)
        except NonFiniteLossError as error:
            trial.set_user_attr(_REASON, f"NonFiniteLossError: {error}")
            raise optuna.TrialPruned(str(error)) from None
        trial.set_user_attr("val", {name: values[key] for name, values in metrics["val"].items()})
        score = validation_score(metrics, base.task)
        if not math.isfinite(score):
            trial.set_user_attr(_REASON, f"the validation {key} is not finite ({score})")
            raise optuna.TrialPruned(trial.user_attrs[_REASON])
        return score

    def keep_best_only(study: Any, finished: Any) -> None:
        """After each trial: only the best trial's run directory is left under ``trials/``."""
        if keep_runs:
            return
        best = _best(study)
        for trial in study.trials:
            if trial.state.is_finished() and (best is None or trial.number != best.number):
                shutil.rmtree(run_dir(trial.number), ignore_errors=True)

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction=direction)
        study.optimize(objective, n_trials=num_trials, callbacks=[keep_best_only])
    finally:
        optuna.logging.set_verbosity(verbosity)

    records = [_trial_record(trial) for trial in study.trials]
    best = _best(study)
    if best is None:
        reasons = "; ".join(f"trial {r['number']}: {r.get(_REASON, r['state'])}" for r in records)
        raise ValueError(f"no trial completed with a finite validation {key} ({reasons})")
    best_config = apply(base, best.params)
    best_dir = out_dir / BEST_DIR
    if best_dir.exists():  # left by an interrupted search into this out_dir
        shutil.rmtree(best_dir)
    if keep_runs:
        shutil.copytree(run_dir(best.number), best_dir)
    else:
        os.replace(run_dir(best.number), best_dir)
        if trials_dir.is_dir() and not any(trials_dir.iterdir()):
            trials_dir.rmdir()
    result = {
        "metric": f"mean validation {key} over targets",
        "direction": direction,
        "num_trials": num_trials,
        "seed": seed,
        "space": to_dict(space),
        "best_trial": best.number,
        "best_params": dict(best.params),
        "best_score": best.value,
        "best_dir": BEST_DIR,
        "trials": records,
    }
    atomic_write(out_dir / CONFIG_FILE, json.dumps(to_dict(best_config), indent=2) + "\n")
    atomic_write(out_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    return result


def _best(study: Any) -> Any | None:
    """The study's best completed trial (the first of equals), None before any completed."""
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    return study.best_trial if completed else None


# ---------------------------------------------------------------------------- CLI
def register_hpopt(
    actions: argparse._SubParsersAction,
    add_train_flags: Callable[[argparse.ArgumentParser], None],
    config_from_args: Callable[[argparse.Namespace], MolpropConfig],
) -> argparse.ArgumentParser:
    """Adds the ``hpopt`` action to molprop's ``actions``: train's flags, and the search's.

    Args:
        actions: molprop's sub-command actions.
        add_train_flags: adds ``molprop train``'s flags (its data source and config, not ``--out``).
        config_from_args: builds the base :class:`MolpropConfig` from the parsed flags.
    """
    parser = actions.add_parser(
        "hpopt",
        help="search hidden size, rounds, dropout and lr by validation score (optuna TPE); keep the best run",
        description=__doc__.split("\n\n")[0],
    )
    add_train_flags(parser)
    space = SearchSpace()
    parser.add_argument(
        "--num-trials",
        type=int,
        default=10,
        metavar="N",
        help=(
            f"trainings to run, each with hidden size from {list(space.hidden_size)}, rounds {space.rounds[0]}-"
            f"{space.rounds[1]}, dropout {space.dropout[0]}-{space.dropout[1]} and lr {space.lr[0]:g}-"
            f"{space.lr[1]:g} (log scale) (default: 10)"
        ),
    )
    parser.add_argument(
        "--search-seed",
        type=int,
        default=0,
        metavar="SEED",
        help="seed of the TPE sampler: the same seed samples the same params (default: 0)",
    )
    parser.add_argument(
        "--keep-runs",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep every trial's run directory under OUT/trials (default: off; only OUT/best is kept)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="the search's directory: hpopt.json, best_config.json and best/ (the best trial's run)",
    )
    parser.set_defaults(func=lambda args: _hpopt_cli(args, config_from_args))
    return parser


def _hpopt_cli(args: argparse.Namespace, config_from_args: Callable[[argparse.Namespace], MolpropConfig]) -> int:
    result = search(config_from_args(args), args.out, args.num_trials, seed=args.search_seed, keep_runs=args.keep_runs)
    shown = ", ".join(
        f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in result["best_params"].items()
    )
    print(f"best trial {result['best_trial']} of {result['num_trials']}: {shown}")
    print(f"{result['metric']}: {result['best_score']:.4g}")
    print(f"wrote {Path(args.out) / RESULT_FILE}, {Path(args.out) / CONFIG_FILE} and {Path(args.out) / BEST_DIR}/")
    return 0
