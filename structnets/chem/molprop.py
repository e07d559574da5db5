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
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ..graphs.batch import PackedGraphs
from ..models import MPNN, MPNNConfig
from ..train.checkpoint import RunDirectory, atomic_write, load_model, open_run
from ..train.config import add_arguments, field_help, from_args, from_dict, shared_fields, to_dict
from ..train.data import read_csv
from ..train.distributed import distributed, shard
from ..train.engine import StopReason, fit, seed_everything
from .datasets import MoleculeDataset
from .featurize import FeaturizerConfig, MoleculeError, atom_feature_size, bond_feature_size, graph_from_smiles
from .metrics import Task, loss, metrics
from .molprop_config import MolpropConfig, Schedule, engine_config, training
from .outputs import SPLITS, parity_figure, predicted_columns, predicted_csv, predictions_csv
from .scaling import Scaler, composition
from .sources import MoleculeSet, SplitKind, load_molecules, make_split

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

TASK = "molprop"
# Molecules per evaluation batch: large batches amortise per-batch overhead on CPUs.
_EVAL_BATCH = 512


def build_model(config: MolpropConfig, num_targets: int) -> MPNN:
    featurizer = config.featurizer
    return MPNN(
        shared_fields(
            MPNNConfig,
            config,
            atom_features=atom_feature_size(featurizer),
            bond_features=bond_feature_size(featurizer),
            num_targets=num_targets,
            distance_bins=config.bins,
            # Bonded atoms sit 0.9-1.9 A apart; a complete graph's pairs reach ~9 A in QM9.
            distance_cutoff=8.0 if config.complete_graph else 3.0,
        )
    )


def _forward(model: nn.Module, batch: Batch) -> Tensor:
    return model(batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)


def _batches(graphs: Sequence[Data], batch_size: int, device: torch.device) -> list[Batch]:
    """Consecutive batches of ``graphs``, in order, on ``device``."""
    if not graphs:
        return []
    packed = PackedGraphs(graphs)
    return [packed.batch(chosen).to(device) for chosen in torch.arange(len(graphs)).split(batch_size)]


@torch.no_grad()
def _outputs(model: MPNN, batches: Sequence[Batch]) -> Tensor:
    """The model's outputs on ``batches``, concatenated on the CPU."""
    outputs = [_forward(model, batch).cpu() for batch in batches]
    return torch.cat(outputs) if outputs else torch.zeros(0, model.config.num_targets)


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


def train(config: MolpropConfig, out_dir: str | Path) -> dict[str, Any]:
    """Trains, evaluates and writes the run directory ``out_dir``; returns the metrics (rank 0)."""
    started = time.perf_counter()
    RunDirectory.check_target(out_dir)
    dataset = load_molecules(config)
    split = make_split(config, dataset)
    empty = [name for name in SPLITS if not split[name]]
    if empty:
        raise ValueError(f"the split leaves no molecules in {' and '.join(empty)} ({len(dataset)} molecules)")
    names, targets, task = list(dataset.target_names), dataset.targets, config.task
    if task is Task.CLASSIFICATION:
        check_binary(dataset)
    counts = composition(dataset.graphs, config.featurizer) if config.uses_baseline else None
    scaler = Scaler.fit(targets[split["train"]], task, None if counts is None else counts[split["train"]])
    scaled = scaler.transform(targets, counts)
    graphs = [
        Data(x=g.x, edge_index=g.edge_index, edge_attr=g.edge_attr, y=scaled[i : i + 1])
        for i, g in enumerate(dataset.graphs)
    ]
    device, seed, batch_size = torch.device(config.train.device), config.train.seed, config.train.batch_size
    with distributed(device) as here:
        run = RunDirectory.start(out_dir, task=TASK) if here.main else None
        seed_everything(seed)
        model = build_model(config, len(names)).to(device)
        train_packed = PackedGraphs([graphs[i] for i in split["train"]])
        steps_per_epoch = math.ceil(len(shard(len(train_packed), 0, seed)) / batch_size)
        # The validation set is collated once: re-collating it every epoch costs as much as evaluating it.
        val_batches = _batches([graphs[i] for i in split["val"]], _EVAL_BATCH, device)
        val_targets = scaled[split["val"]]

        def batches(epoch: int):
            order = shard(len(train_packed), epoch, seed)
            return (train_packed.batch(chosen).to(device) for chosen in order.split(batch_size))

        result = fit(
            model,
            lambda net, batch: loss(_forward(net, batch), batch.y, task),
            batches,
            engine_config(config, steps_per_epoch),
            validate=lambda m: {"val_loss": float(loss(_outputs(m, val_batches), val_targets, task))},
            # foreach: one kernel per step for all parameters; the per-tensor default costs a
            # noticeable share of a small model's step on CPUs.
            optimizer=lambda p: torch.optim.Adam(
                p, lr=config.train.lr, weight_decay=config.train.weight_decay, foreach=True
            ),
            steps_per_epoch=steps_per_epoch,
            run_dir=out_dir,
            description=TASK,
        )
    if run is None:
        return {}
    predictions = {}
    for name in SPLITS:
        chosen = split[name]
        raw = _outputs(result.model, _batches([graphs[i] for i in chosen], _EVAL_BATCH, device))
        regression = task is Task.REGRESSION
        predictions[name] = scaler.inverse(raw, None if counts is None else counts[chosen]) if regression else raw
    truths = {name: targets[split[name]] for name in SPLITS}
    results: dict[str, Any] = {name: metrics(predictions[name], truths[name], names, task) for name in SPLITS}
    results.update(
        best_epoch=result.best["epoch"] if result.best else 0,
        epochs_run=result.epochs,
        stopped_by_time_budget=result.stop is StopReason.TIME,
        stopped_early=result.stop is StopReason.EARLY,
        num_molecules={name: len(split[name]) for name in SPLITS},
        skipped_rows=[list(s) for s in dataset.skipped],
        history=result.history,
        config=to_dict(config),
    )
    run.write_json("metrics.json", results)
    run.write_json("timing.json", {**result.timing(), "total_seconds": time.perf_counter() - started})
    extra = {"target_names": names, "task": task.value, "scaler": scaler.state_dict()}
    run.save_model(result.model, task_config=config, extra={**extra, "featurizer": to_dict(config.featurizer)})
    run.write_bytes("predictions.csv", predictions_csv(dataset, split, predictions, names))
    run.save_figure("parity.png", parity_figure(predictions, truths, names, task), dpi=120)
    run.finish()
    return results


def predict(
    model_dir: str | Path,
    data: str | Path,
    smiles_column: str,
    out: str | Path,
    batch_size: int = 64,
    device: str = "cpu",
) -> int:
    """Predicts every row of ``data``; returns the number of rows that could not be read.

    ``out`` (written atomically) reproduces the input: every record in order, blank lines
    included, each row's fields unchanged, with ``<target>_pred`` per target and ``error``
    (empty, or why the row could not be read: a bad SMILES, too few or too many fields)
    in front (see :func:`structnets.chem.outputs.predicted_csv`). A bad row does not stop
    the run.
    """
    model, checkpoint = load_model(open_run(model_dir, task=TASK), task=TASK, map_location=device)
    featurizer = from_dict(FeaturizerConfig, checkpoint.extra["featurizer"])
    names, task = checkpoint.extra["target_names"], Task(checkpoint.extra["task"])
    scaler = Scaler.from_state_dict(checkpoint.extra["scaler"])
    if featurizer.distances or featurizer.complete_graph:
        raise ValueError(
            f"{model_dir} was trained on 3D inputs (distances or the complete graph), and predict reads SMILES, "
            "which carry no geometry; train without --distances/--complete-graph to predict from SMILES"
        )
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a directory; give the CSV file to write")
    if Path(out).resolve() == Path(data).resolve():
        raise ValueError(f"--out {out} is the input file; write the predictions elsewhere")
    table = read_csv(data)
    smiles_index = table.column(smiles_column, flag="SMILES column")
    clashes = [c for c in predicted_columns(names) if c in table.names]
    if clashes:
        raise ValueError(f"{data}: the input already has column(s) {clashes}, which predict writes")
    graphs, errors = [], []
    for record in table.rows:
        try:
            width = table.width_error(record)
            if width is not None:
                raise MoleculeError(width)
            graph = graph_from_smiles(record.fields[smiles_index].strip(), featurizer)
            graphs.append(Data(x=graph.x, edge_index=graph.edge_index, edge_attr=graph.edge_attr))
            errors.append("")
        except MoleculeError as error:
            errors.append(str(error))
    outputs = _outputs(model, _batches(graphs, batch_size, torch.device(device)))
    if task is Task.REGRESSION:
        outputs = scaler.inverse(outputs, composition(graphs, featurizer) if scaler.baseline is not None else None)
    else:
        outputs = torch.sigmoid(outputs)
    values = iter(outputs.tolist())
    predictions = [None if error else next(values) for error in errors]
    atomic_write(out, predicted_csv(table, predictions, errors, names))
    return sum(1 for e in errors if e)


# ---------------------------------------------------------------------------- CLI
#: The engine's settings that molprop derives (from its schedule and epoch length) rather than takes as flags.
_DERIVED = ("steps", "schedule", "warmup_steps", "min_lr_ratio", "lr_by_clock", "eval_every", "log_every")
#: The flags' defaults: the config's own (the data source, which has none, is a flag of its own).
_FLAG_DEFAULTS = MolpropConfig(dataset=MoleculeSet.ESOL)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("molprop", aliases=["chem"], help="molecular property prediction with the MPNN")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = actions.add_parser("train", help="train an MPNN and write metrics, checkpoint, predictions and a parity plot")
    described = {name: text.rstrip(".") for name, text in field_help(MolpropConfig).items()}
    source = tr.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help=described["data"])
    source.add_argument("--dataset", choices=[m.value for m in MoleculeSet], help=described["dataset"])
    tr.add_argument(
        "--target-column",
        action="append",
        default=[],
        dest="target_columns",
        metavar="COLUMN",
        help=described["target_columns"],
    )
    add_arguments(tr, MolpropConfig, defaults=_FLAG_DEFAULTS, exclude=_DERIVED)
    tr.add_argument("--out", required=True, type=Path, help="the run directory to write")
    tr.set_defaults(func=_train_cli)
    pr = actions.add_parser("predict", help="predict with a trained model; one output row per input row")
    pr.add_argument("--model", required=True, type=Path, help="a run directory written by molprop train")
    pr.add_argument("--data", required=True, type=Path, help="CSV file with a SMILES column")
    pr.add_argument("--smiles-column", default="smiles", help="the column holding SMILES (default: smiles)")
    pr.add_argument("--out", required=True, type=Path, help="the CSV file to write")
    pr.add_argument("--batch-size", type=int, default=64, help="molecules per forward pass (default: 64)")
    pr.add_argument("--device", default="cpu", help="torch device to predict on (default: cpu)")
    pr.set_defaults(func=_predict_cli)
    return parser


def _config_from_args(args: argparse.Namespace) -> MolpropConfig:
    sources = {"data": args.data, "dataset": args.dataset, "target_columns": tuple(args.target_columns)}
    return from_args(MolpropConfig, args, defaults=_FLAG_DEFAULTS, **sources)


def _train_cli(args: argparse.Namespace) -> int:
    metrics = train(_config_from_args(args), args.out)
    if metrics:
        for name, values in metrics["test"].items():
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(f"test {name}: {shown}")
        for row, value, reason in metrics["skipped_rows"]:
            print(f"skipped row {row} ({value!r}): {reason}")
        print(f"wrote {args.out}/metrics.json, timing.json, model.pt, predictions.csv, parity.png")
    return 0


def _predict_cli(args: argparse.Namespace) -> int:
    failed = predict(args.model, args.data, args.smiles_column, args.out, args.batch_size, args.device)
    print(f"wrote {args.out}" + (f" ({failed} row(s) could not be featurised; see the error column)" if failed else ""))
    return 0
