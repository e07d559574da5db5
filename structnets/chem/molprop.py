"""Molecular property prediction with the MPNN: training, prediction, CLI.

``structnets molprop train`` reads molecules (a CSV with a SMILES column, or a named
dataset), featurises them with rdkit, splits them, fits each regression target on the
training split (:class:`~structnets.chem.scaling.Scaler`), trains
:class:`structnets.models.MPNN` with :func:`structnets.train.engine.fit` (early stopping on
the validation loss, the best weights kept), and writes the run directory ``--out``:

* ``metrics.json``: per split (train/val/test) and target, RMSE, MAE and R^2 in the
  target's own units (accuracy and ROC-AUC for classification); ``timing.json`` apart;
* ``model.pt``: the checkpoint, with the target names, the scaler and the featuriser;
* ``predictions.csv`` and ``parity.png``.

``structnets molprop predict`` writes one output row per input row, in order, with an
``error`` column for molecules it could not featurise.

Training also runs across processes under ``torchrun`` (DistributedDataParallel, gloo on
CPU, nccl on GPU); rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..models import MPNN, MPNNConfig, MultiMPNN, MultiMPNNConfig
from ..train.checkpoint import RunDirectory, atomic_write
from ..train.config import add_arguments, field_help, from_args, shared_fields, to_dict
from ..train.distributed import distributed, shard
from ..train.engine import StopReason, fit, seed_everything
from .datasets import MoleculeDataset
from .descriptors import FeatureScaler, FeatureSpec, read_descriptors
from .ensemble import Prediction, calibrate, ensemble_prediction, member_outputs
from .estimators import UncertaintyMethod, head_loss
from .featurize import atom_feature_size, bond_feature_size
from .hpopt import register_hpopt
from .inputs import MoleculeBatch, MoleculeInputs, forward
from .metrics import Task, loss, metrics
from .molprop_config import MolpropConfig, Schedule, engine_config, training
from .molprop_predict import fingerprint, predict
from .outputs import SPLITS, parity_figure, predictions_csv
from .scaling import Scaler, composition
from .sources import MoleculeSet, SplitKind, load_molecules, make_split
from .uncertainty import coverage, fit_calibrator, uncertainty_metrics

__all__ = [
    "TASK",
    "Task",
    "Schedule",
    "SplitKind",
    "MolpropConfig",
    "training",
    "build_model",
    "train",
    "predict",
    "register",
]

logger = logging.getLogger(__name__)

TASK = "molprop"
# Molecules per evaluation batch: large batches amortise per-batch overhead on CPUs.
_EVAL_BATCH = 512


def build_model(
    config: MolpropConfig, num_targets: int, *, extra_features: int = 0, molecules: int | None = None
) -> MPNN | MultiMPNN:
    """The run's model: an MPNN, or a MultiMPNN for several molecules a row.

    Args:
        num_targets: the head's outputs (targets times the uncertainty method's outputs per target).
        extra_features: per-row features joined to the read-out.
        molecules: molecules per row (default: the config's SMILES columns).
    """
    featurizer = config.featurizer
    molecules = len(config.smiles_columns) if molecules is None else molecules
    mpnn = shared_fields(
        MPNNConfig,
        config,
        atom_features=atom_feature_size(featurizer),
        bond_features=bond_feature_size(featurizer),
        num_targets=num_targets,
        distance_bins=config.bins,
        # Bonded atoms sit 0.9-1.9 A apart; a complete graph's pairs reach ~9 A in QM9.
        distance_cutoff=8.0 if config.complete_graph else 3.0,
        extra_features=extra_features,
    )
    if molecules == 1:
        return MPNN(mpnn)
    return MultiMPNN(
        shared_fields(
            MultiMPNNConfig,
            config,
            encoder=mpnn,
            molecules=molecules,
            num_targets=num_targets,
            extra_features=extra_features,
        )
    )


def check_binary(dataset: MoleculeDataset) -> None:
    """Classification learns 0/1 labels: any other value is an error naming its row and column."""
    bad = torch.nonzero((dataset.targets != 0) & (dataset.targets != 1))
    if len(bad):
        row, column = bad[0].tolist()
        raise ValueError(
            f"--task classification needs 0/1 targets, but row {dataset.rows[row]} has "
            f"{float(dataset.targets[row, column]):g} in {dataset.target_names[column]!r} "
            f"({len(bad)} such value(s)); use --task regression for continuous targets"
        )


def feature_spec(config: MolpropConfig) -> FeatureSpec:
    return FeatureSpec(config.molecule_featurizers, config.descriptors_path)


def raw_features(spec: FeatureSpec, dataset: MoleculeDataset) -> tuple[np.ndarray | None, list[str], np.ndarray]:
    """The rows' extra features before scaling ``[rows, width]`` (None: none), their names, which are scaled.

    See :meth:`FeatureSpec.row_features`; the user descriptors file has one row per data row
    of the CSV, skipped rows included.
    """
    if not spec.enabled:
        return None, [], np.zeros(0, dtype=bool)
    descriptors, descriptor_names = None, []
    if spec.descriptors_path is not None:
        if dataset.source_rows is None:
            raise ValueError(
                "--descriptors-path gives one row per data row of the file: it cannot be used with --limit"
            )
        values, descriptor_names = read_descriptors(spec.descriptors_path, dataset.source_rows)
        descriptors = values[dataset.positions]
    columns = [dataset.smiles] + [
        [row[k] for row in dataset.other_smiles] for k in range(dataset.molecules_per_row - 1)
    ]
    return spec.row_features(columns, descriptors, descriptor_names)


def _member_loss(config: MolpropConfig, method: UncertaintyMethod):
    task = config.task

    def member_loss(net: nn.Module, batch: MoleculeBatch) -> Tensor:
        output = forward(net, batch)
        if task is Task.CLASSIFICATION:
            return loss(output, batch.y, task)
        return head_loss(output, batch.y, method, evidential_regularization=config.evidential_regularization)

    return member_loss


def _fit_member(
    config: MolpropConfig,
    member: int,
    inputs: MoleculeInputs,
    split: dict[str, list[int]],
    num_outputs: int,
    out_dir: Path,
) -> Any:
    """Trains ensemble member ``member`` (seed ``seed + member``) under the engine; returns the engine's result."""
    device, batch_size = torch.device(config.train.device), config.train.batch_size
    seed = config.train.seed + member
    method = config.uncertainty
    seed_everything(seed)
    extra = 0 if inputs.features is None else inputs.features.shape[1]
    model = build_model(config, num_outputs, extra_features=extra).to(device)
    train_rows = torch.tensor(split["train"])
    steps_per_epoch = math.ceil(len(shard(len(train_rows), 0, seed)) / batch_size)
    # The validation set is collated once: re-collating it every epoch costs as much as evaluating it.
    val_batches = inputs.batches(_EVAL_BATCH, device, split["val"])
    member_loss = _member_loss(config, method)

    @torch.no_grad()
    def validate(net: nn.Module) -> dict[str, float]:
        net.eval()
        total = sum(float(member_loss(net, b)) * b.num_rows for b in val_batches)
        return {"val_loss": total / max(sum(b.num_rows for b in val_batches), 1)}

    def batches(epoch: int):
        order = train_rows[shard(len(train_rows), epoch, seed)]
        return (inputs.batch(chosen).to(device) for chosen in order.split(batch_size))

    return fit(
        model,
        member_loss,
        batches,
        engine_config(dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed)), steps_per_epoch),
        validate=validate,
        # foreach: one kernel per step for all parameters; the per-tensor default costs a
        # noticeable share of a small model's step on CPUs.
        optimizer=lambda p: torch.optim.Adam(
            p, lr=config.train.lr, weight_decay=config.train.weight_decay, foreach=True
        ),
        steps_per_epoch=steps_per_epoch,
        run_dir=out_dir if config.ensemble_size == 1 else None,
        description=TASK if config.ensemble_size == 1 else f"{TASK} member {member + 1}/{config.ensemble_size}",
    )


def member_file(member: int) -> str:
    """The checkpoint of ensemble member ``member``: ``model.pt``, then ``model_1.pt``, ..."""
    return "model.pt" if member == 0 else f"model_{member}.pt"


def train(config: MolpropConfig, out_dir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and writes the run directory ``out_dir``; returns the metrics (rank 0).

    With ``num_replicates`` K > 1, runs K random splits into ``out_dir/replicate_<k>`` and
    writes ``out_dir/summary.json`` (each metric's mean and standard deviation); returns it.
    """
    if config.num_replicates > 1:
        return train_replicates(config, out_dir)
    started = time.perf_counter()
    out_dir = RunDirectory.check_target(out_dir)
    if config.ensemble_size > 1 and config.train.resume is not None:
        raise ValueError("--resume continues one model; an ensemble's members are trained afresh")
    dataset = load_molecules(config)
    split = make_split(config, dataset)
    empty = [name for name in SPLITS if not split[name]]
    if empty:
        raise ValueError(f"the split leaves no molecules in {' and '.join(empty)} ({len(dataset)} molecules)")
    names, targets, task, method = list(dataset.target_names), dataset.targets, config.task, config.uncertainty
    if task is Task.CLASSIFICATION:
        check_binary(dataset)
    counts = composition(dataset.graphs, config.featurizer) if config.uses_baseline else None
    scaler = Scaler.fit(targets[split["train"]], task, None if counts is None else counts[split["train"]])
    spec = feature_spec(config)
    features, feature_names, scaled = raw_features(spec, dataset)
    feature_scaler = imputed = None
    if features is not None:
        feature_scaler = FeatureScaler.fit(features[split["train"]], scaled)
        imputed = feature_scaler.count_imputed(features)
    inputs = MoleculeInputs(
        [dataset.column(k) for k in range(dataset.molecules_per_row)],
        None if feature_scaler is None else torch.from_numpy(feature_scaler.transform(features)),
        scaler.transform(targets, counts),
    )
    num_outputs = len(names) * method.outputs_per_target
    device = torch.device(config.train.device)
    results_per_member, members = [], []
    with distributed(device) as here:
        run = RunDirectory.start(out_dir, task=TASK) if here.main else None
        for member in range(config.ensemble_size):
            result = _fit_member(config, member, inputs, split, num_outputs, out_dir)
            results_per_member.append(result)
            members.append(result.model)
    if run is None:
        return {}
    predictions: dict[str, Prediction] = {}
    for name in SPLITS:
        chosen = split[name]
        batches = inputs.batches(_EVAL_BATCH, device, chosen)
        outputs = [
            member_outputs(
                model,
                batches,
                method,
                len(names),
                dropout=config.uncertainty_dropout,
                samples=config.dropout_samples,
                seed=config.train.seed,
            )
            for model in members
        ]
        predictions[name] = ensemble_prediction(outputs, task, scaler, None if counts is None else counts[chosen])
    truths = {name: targets[split[name]] for name in SPLITS}
    calibrator = None
    if config.calibration_method is not None:
        val = predictions["val"]
        calibrator = fit_calibrator(
            config.calibration_method, val.mean, val.std, truths["val"], coverage=config.calibration_coverage
        )
    # Each split calibrated once: its metrics and predictions.csv read the same (prediction, intervals).
    regression = task is Task.REGRESSION
    shown = {name: calibrate(predictions[name], calibrator if regression else None) for name in SPLITS}
    results: dict[str, Any] = {name: score(*shown[name], truths[name], names, task) for name in SPLITS}
    first = results_per_member[0]
    results.update(
        best_epoch=first.best["epoch"] if first.best else 0,
        epochs_run=first.epochs,
        stopped_by_time_budget=first.stop is StopReason.TIME,
        stopped_early=first.stop is StopReason.EARLY,
        num_molecules={name: len(split[name]) for name in SPLITS},
        skipped_rows=[list(s) for s in dataset.skipped],
        history=first.history,
        uncertainty_method=method.value,
        ensemble_size=config.ensemble_size,
        calibration=None if calibrator is None else calibrator.state_dict(),
        config=to_dict(config),
    )
    if calibrator is not None:
        results["uncalibrated"] = {name: score(predictions[name], None, truths[name], names, task) for name in SPLITS}
    if features is not None:
        results["features"] = {"count": features.shape[1], "imputed_values": int(imputed)}
    if config.ensemble_size > 1:
        results["members"] = [
            {"best_epoch": r.best["epoch"] if r.best else 0, "epochs_run": r.epochs, "stop": r.stop.value}
            for r in results_per_member
        ]
    run.write_json("metrics.json", results)
    timing = {**first.timing(), "total_seconds": time.perf_counter() - started}
    if config.ensemble_size > 1:
        timing["members"] = [r.timing() for r in results_per_member]
    run.write_json("timing.json", timing)
    extra = {
        "target_names": names,
        "task": task.value,
        "scaler": scaler.state_dict(),
        "featurizer": to_dict(config.featurizer),
        "smiles_columns": list(config.smiles_columns),
        "uncertainty_method": method.value,
        "ensemble_size": config.ensemble_size,
        "uncertainty_dropout": config.uncertainty_dropout,
        "dropout_samples": config.dropout_samples,
        "seed": config.train.seed,
        "features": spec.to_dict(),
        "feature_names": feature_names,
        "feature_scaler": None if feature_scaler is None else feature_scaler.state_dict(),
        "calibration": None if calibrator is None else calibrator.state_dict(),
    }
    for member, model in enumerate(members):
        run.save_model(model, task_config=config, extra={**extra, "member": member}, name=member_file(member))
    run.write_bytes("predictions.csv", predictions_csv(dataset, split, shown, names))
    means = {name: predictions[name].mean for name in SPLITS}
    run.save_figure("parity.png", parity_figure(means, truths, names, task), dpi=120)
    run.finish()
    return results


def score(
    prediction: Prediction, intervals: tuple[Tensor, Tensor] | None, truth: Tensor, names: list[str], task: Task
) -> dict[str, dict[str, float]]:
    """Metrics of one split per target: the task's, and the uncertainty's (and intervals') where there is one."""
    results = metrics(prediction.mean, truth, names, task)
    if not len(truth) or task is not Task.REGRESSION or (prediction.std is None and intervals is None):
        return results
    if prediction.std is not None and bool((prediction.std > 0).all()):
        lower, upper = (None, None) if intervals is None else intervals
        extra = uncertainty_metrics(prediction.mean, prediction.std, truth, names, lower=lower, upper=upper)
    else:
        extra = {name: {} for name in names}
        if intervals is not None:
            for k, name in enumerate(names):
                low, high = intervals[0][:, k], intervals[1][:, k]
                extra[name] = {
                    "coverage": coverage(low, high, truth[:, k]),
                    "interval_width": float((high - low).mean()),
                }
    for name in names:
        results[name].update(extra[name])
    return results


def train_replicates(config: MolpropConfig, out_dir: str | Path) -> dict[str, Any]:
    """``num_replicates`` runs on random splits of seeds ``seed, seed + 1, ...``; their summary."""
    out_dir = Path(out_dir)
    runs = []
    for k in range(config.num_replicates):
        seed = config.train.seed + k
        replicate = dataclasses.replace(config, num_replicates=1, train=dataclasses.replace(config.train, seed=seed))
        logger.info("replicate %d/%d (seed %d)", k + 1, config.num_replicates, seed)
        runs.append(train(replicate, out_dir / f"replicate_{k}"))
    summary = {"num_replicates": config.num_replicates, "seeds": [config.train.seed + k for k in range(len(runs))]}
    for name in SPLITS:
        summary[name] = {}
        for target in runs[0][name]:
            summary[name][target] = {}
            for metric in runs[0][name][target]:
                values = [r[name][target][metric] for r in runs]
                summary[name][target][metric] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)),
                    "values": values,
                }
    atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------- CLI
#: The engine's settings that molprop derives (from its schedule and epoch length) rather than takes as flags.
_DERIVED = ("steps", "schedule", "warmup_steps", "min_lr_ratio", "lr_by_clock", "eval_every", "log_every")
#: The flags' defaults: the config's own (the data source, which has none, is a flag of its own).
_FLAG_DEFAULTS = MolpropConfig(dataset=MoleculeSet.ESOL)


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """``molprop train``'s data source and config flags (not ``--out``), with chemprop's names as aliases."""
    described = {name: text.rstrip(".") for name, text in field_help(MolpropConfig).items()}
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", "--data-path", help=described["data"] + " (chemprop: --data-path)")
    source.add_argument("--dataset", choices=[m.value for m in MoleculeSet], help=described["dataset"])
    parser.add_argument(
        "--target-column",
        action="append",
        default=[],
        dest="target_columns",
        metavar="COLUMN",
        help=described["target_columns"],
    )
    parser.add_argument(
        "--target-columns",
        action="extend",
        nargs="+",
        dest="target_columns",
        metavar="COLUMN",
        help="several target columns at once (chemprop's flag; the same as repeating --target-column)",
    )
    parser.add_argument(
        "--conformal-alpha",
        type=float,
        default=None,
        metavar="ALPHA",
        help="chemprop's way to give the conformal coverage: the error rate, coverage 1 - ALPHA (default: none)",
    )
    add_arguments(parser, MolpropConfig, defaults=_FLAG_DEFAULTS, exclude=_DERIVED)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("molprop", aliases=["chem"], help="molecular property prediction with the MPNN")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = actions.add_parser(
        "train", help="train an MPNN (or an ensemble) and write metrics, checkpoints, predictions and a parity plot"
    )
    _add_train_flags(tr)
    tr.add_argument("--out", "--output-dir", "--save-dir", required=True, type=Path, help="the run directory to write")
    tr.set_defaults(func=_train_cli)
    pr = actions.add_parser("predict", help="predict with a trained model; one output row per input row")
    _add_use_flags(pr, "predictions")
    pr.add_argument(
        "--descriptors-path",
        type=Path,
        default=None,
        help="the rows' user descriptors (one row per data row), for a model trained with --descriptors-path",
    )
    pr.set_defaults(func=_predict_cli)
    fp = actions.add_parser(
        "fingerprint", help="write the learned molecule embedding (the read-out) of every row; one row per input row"
    )
    _add_use_flags(fp, "fingerprints")
    fp.add_argument("--member", type=int, default=0, help="the ensemble member whose read-out to write (default: 0)")
    fp.set_defaults(func=_fingerprint_cli)
    register_hpopt(actions, _add_train_flags, _config_from_args)
    return parser


def _add_use_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--model",
        "--model-path",
        "--model-paths",
        required=True,
        type=Path,
        help="a run directory written by molprop train (chemprop: --model-paths)",
    )
    parser.add_argument(
        "--data", "--test-path", required=True, type=Path, help="CSV file with SMILES column(s) (chemprop: --test-path)"
    )
    parser.add_argument(
        "--smiles-column",
        "--smiles-columns",
        nargs="+",
        default=None,
        metavar="COLUMN",
        help="the column(s) holding SMILES (default: the columns the model was trained on)",
    )
    parser.add_argument(
        "--out", "--preds-path", "--output", required=True, type=Path, help=f"the CSV file of {what} to write"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="molecules per forward pass (default: 64)")
    parser.add_argument("--device", default="cpu", help="torch device to run on (default: cpu)")


def _config_from_args(args: argparse.Namespace) -> MolpropConfig:
    sources = {"data": args.data, "dataset": args.dataset, "target_columns": tuple(args.target_columns)}
    if args.conformal_alpha is not None:
        if args.calibration_coverage != _FLAG_DEFAULTS.calibration_coverage:
            raise ValueError("give the conformal coverage once: --calibration-coverage or --conformal-alpha")
        sources["calibration_coverage"] = 1 - args.conformal_alpha
    return from_args(MolpropConfig, args, defaults=_FLAG_DEFAULTS, **sources)


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float))


def _train_cli(args: argparse.Namespace) -> int:
    metrics = train(_config_from_args(args), args.out)
    if not metrics:
        return 0
    if "num_replicates" in metrics:
        for name, values in metrics["test"].items():
            shown = ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in values.items())
            print(f"test {name} over {metrics['num_replicates']} splits: {shown}")
        print(f"wrote {args.out}/summary.json and {args.out}/replicate_*/")
        return 0
    for name, values in metrics["test"].items():
        print(f"test {name}: {_show(values)}")
    for row, value, reason in metrics["skipped_rows"]:
        print(f"skipped row {row} ({value!r}): {reason}")
    models = "model.pt" if metrics["ensemble_size"] == 1 else f"model.pt .. model_{metrics['ensemble_size'] - 1}.pt"
    print(f"wrote {args.out}/metrics.json, timing.json, {models}, predictions.csv, parity.png")
    return 0


def _predict_cli(args: argparse.Namespace) -> int:
    failed = predict(
        args.model,
        args.data,
        args.smiles_column,
        args.out,
        args.batch_size,
        args.device,
        descriptors_path=args.descriptors_path,
    )
    print(f"wrote {args.out}" + (f" ({failed} row(s) could not be featurised; see the error column)" if failed else ""))
    return 0


def _fingerprint_cli(args: argparse.Namespace) -> int:
    failed = fingerprint(
        args.model, args.data, args.out, args.smiles_column, args.batch_size, args.device, member=args.member
    )
    print(f"wrote {args.out}" + (f" ({failed} row(s) could not be featurised; see the error column)" if failed else ""))
    return 0
