"""Using a trained molprop run: predictions with their uncertainty, and learned fingerprints.

Both read a CSV and write one output row per input row, in order, keeping every field of the
input (see :func:`structnets.chem.outputs.predicted_csv`); a row that cannot be read gets its
reason in the ``error`` column and does not stop the run.

* :func:`predict`: ``<target>_pred`` per target, ``<target>_std`` where the run has an
  uncertainty method (calibrated where the run was), ``<target>_lower``/``_upper`` for
  conformal intervals.
* :func:`fingerprint`: the learned molecule embedding (the read-out before the head), like
  ``chemprop fingerprint``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..train.checkpoint import CheckpointError, atomic_write, load_model, open_run
from ..train.config import from_dict
from ..train.data import CsvTable, read_csv
from .descriptors import FeatureScaler, FeatureSpec, read_descriptors
from .ensemble import calibrate, ensemble_prediction, member_outputs
from .estimators import UncertaintyMethod
from .featurize import FeaturizerConfig, MoleculeError, graph_from_smiles
from .inputs import MoleculeInputs
from .inputs import fingerprint as read_out
from .metrics import Task
from .outputs import predicted_columns, predicted_csv
from .scaling import Scaler, composition
from .uncertainty import calibrator_from_state_dict

__all__ = ["TrainedRun", "load_run", "predict", "fingerprint"]

TASK = "molprop"


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A molprop run directory's members and everything needed to use them."""

    path: Path
    members: list[nn.Module]
    extra: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return list(self.extra["target_names"])

    @property
    def task(self) -> Task:
        return Task(self.extra["task"])

    @property
    def method(self) -> UncertaintyMethod:
        return UncertaintyMethod(self.extra.get("uncertainty_method", "none"))

    @property
    def smiles_columns(self) -> list[str]:
        return list(self.extra.get("smiles_columns", ["smiles"]))

    @property
    def featurizer(self) -> FeaturizerConfig:
        return from_dict(FeaturizerConfig, self.extra["featurizer"])

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec.from_dict(self.extra["features"]) if self.extra.get("features") else FeatureSpec()


def load_run(model_dir: str | Path, device: str = "cpu") -> TrainedRun:
    """Every member of the run at ``model_dir`` (checked complete and unchanged), on ``device``."""
    path = open_run(model_dir, task=TASK)
    model, checkpoint = load_model(path, task=TASK, map_location=device)
    extra = dict(checkpoint.extra)
    members = [model]
    for member in range(1, int(extra.get("ensemble_size", 1))):
        file = path / f"model_{member}.pt"
        if not file.is_file():
            raise CheckpointError(f"{file}: member {member} of the ensemble of {extra['ensemble_size']} is missing")
        members.append(load_model(file, task=TASK, map_location=device)[0])
    for member in members:
        member.eval()
    return TrainedRun(path, members, extra)


def _check_paths(data: str | Path, out: str | Path) -> None:
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a directory; give the CSV file to write")
    if Path(out).resolve() == Path(data).resolve():
        raise ValueError(f"--out {out} is the input file; write the predictions elsewhere")


def _read_rows(
    run: TrainedRun,
    table: CsvTable,
    smiles_columns: Sequence[str] | None,
    descriptors_path: str | Path | None,
    *,
    with_features: bool = True,
) -> tuple[MoleculeInputs, list[str], list[Any], list[int]]:
    """Featurises every data row: the inputs of the readable rows, each row's error, graphs, positions.

    ``with_features=False`` leaves out the per-row features (the read-out does not use them).
    """
    featurizer = run.featurizer
    if featurizer.distances or featurizer.complete_graph:
        raise ValueError(
            f"{run.path} was trained on 3D inputs (distances or the complete graph), and predict reads SMILES, "
            "which carry no geometry; train without --distances/--complete-graph to predict from SMILES"
        )
    columns = list(smiles_columns) if smiles_columns else run.smiles_columns
    if len(columns) != len(run.smiles_columns):
        raise ValueError(
            f"{run.path} reads {len(run.smiles_columns)} molecule(s) a row ({run.smiles_columns}); "
            f"--smiles-column names {len(columns)}: {columns}"
        )
    indices = [table.column(name, flag="SMILES column") for name in columns]
    graphs: list[list[Any]] = [[] for _ in columns]
    smiles: list[list[str]] = [[] for _ in columns]
    errors, positions = [], []
    for record in table.rows:
        try:
            width = table.width_error(record)
            if width is not None:
                raise MoleculeError(width)
            row = []
            for i in indices:
                try:
                    row.append(graph_from_smiles(record.fields[i].strip(), featurizer))
                except MoleculeError as error:
                    where = f" (column {table.names[i]!r})" if len(indices) > 1 else ""
                    raise MoleculeError(f"{error}{where}") from error
        except MoleculeError as error:
            errors.append(str(error))
            continue
        for k, graph in enumerate(row):
            graphs[k].append(graph)
            smiles[k].append(record.fields[indices[k]].strip())
        errors.append("")
        positions.append(record.index)
    spec = run.features
    features = None
    if with_features and (spec.enabled or descriptors_path is not None):
        descriptors = None
        if descriptors_path is not None:
            descriptors = read_descriptors(descriptors_path, len(table.rows))[0][positions]
        try:
            raw, _, _ = spec.row_features(smiles, descriptors)
        except ValueError as error:
            raise ValueError(f"{run.path}: {error}") from None
        features = torch.from_numpy(FeatureScaler.from_state_dict(run.extra["feature_scaler"]).transform(raw))
    return MoleculeInputs(graphs, features), errors, graphs[0], positions


def predict(
    model_dir: str | Path,
    data: str | Path,
    smiles_column: str | Sequence[str] | None,
    out: str | Path,
    batch_size: int = 64,
    device: str = "cpu",
    *,
    descriptors_path: str | Path | None = None,
) -> int:
    """Predicts every row of ``data``; returns the number of rows that could not be read.

    ``out`` (written atomically) reproduces the input: every record in order, blank lines
    included, each row's fields unchanged, with ``<target>_pred`` per target (the ensemble's
    mean), ``<target>_std`` and the interval columns where the run has them, and ``error``
    (empty, or why the row could not be read: a bad SMILES, too few or too many fields) in
    front (see :func:`structnets.chem.outputs.predicted_csv`). A bad row does not stop the run.

    Args:
        smiles_column: the SMILES column(s); None for the columns the model was trained on.
        descriptors_path: the rows' user descriptors, for a model trained with them.
    """
    run = load_run(model_dir, device)
    _check_paths(data, out)
    table = read_csv(data)
    names, task, method = run.names, run.task, run.method
    calibration = run.extra.get("calibration")
    calibrator = calibrator_from_state_dict(calibration) if calibration else None
    has_std = task is Task.REGRESSION and (method is not UncertaintyMethod.NONE or len(run.members) > 1)
    has_interval = calibration is not None and calibration.get("method") == "conformal-regression"
    added = predicted_columns(names, std=has_std, interval=has_interval)
    clashes = [c for c in added if c in table.names]
    if clashes:
        raise ValueError(f"{data}: the input already has column(s) {clashes}, which predict writes")
    if isinstance(smiles_column, str):
        smiles_column = [smiles_column]
    inputs, errors, first_graphs, _ = _read_rows(run, table, smiles_column, descriptors_path)
    values: list[list[float]] = []
    if len(inputs):
        batches = inputs.batches(batch_size, torch.device(device))
        outputs = [
            member_outputs(
                member,
                batches,
                method,
                len(names),
                dropout=float(run.extra.get("uncertainty_dropout", 0.1)),
                samples=int(run.extra.get("dropout_samples", 10)),
                seed=int(run.extra.get("seed", 0)),
            )
            for member in run.members
        ]
        scaler = Scaler.from_state_dict(run.extra["scaler"])
        counts = composition(first_graphs, run.featurizer) if scaler.baseline is not None else None
        prediction = ensemble_prediction(outputs, task, scaler if task is Task.REGRESSION else None, counts)
        mean = prediction.mean if task is Task.REGRESSION else torch.sigmoid(prediction.mean)
        parts = [mean]
        if task is Task.REGRESSION:
            prediction, intervals = calibrate(prediction, calibrator)
            parts += [prediction.std] if has_std else []
            parts += list(intervals) if has_interval and intervals is not None else []
        values = torch.cat(parts, 1).tolist()
    rows = iter(values)
    predictions = [None if error else next(rows) for error in errors]
    atomic_write(out, predicted_csv(table, predictions, errors, names, columns=added[:-1]))
    return sum(1 for e in errors if e)


@torch.no_grad()
def _read_outs(model: nn.Module, inputs: MoleculeInputs, batch_size: int, device: str) -> Tensor:
    parts = [read_out(model, batch).cpu() for batch in inputs.batches(batch_size, torch.device(device))]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def fingerprint(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    smiles_column: str | Sequence[str] | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    *,
    member: int = 0,
) -> int:
    """Writes the learned embedding of every row of ``data``; returns the rows that could not be read.

    ``out`` keeps the input's records as :func:`predict` does, preceded by ``fp_0 ..
    fp_{d-1}`` (the read-out of ensemble member ``member``: Set2Set and the summed states of
    each molecule of the row, joined) and ``error``.
    """
    run = load_run(model_dir, device)
    _check_paths(data, out)
    if not 0 <= member < len(run.members):
        raise ValueError(f"--member {member}: the run has {len(run.members)} member(s), 0 .. {len(run.members) - 1}")
    model = run.members[member]
    table = read_csv(data)
    if isinstance(smiles_column, str):
        smiles_column = [smiles_column]
    inputs, errors, _, _ = _read_rows(run, table, smiles_column, None, with_features=False)
    width = model.config.fingerprint_size
    columns = [f"fp_{k}" for k in range(width)]
    clashes = [c for c in columns + ["error"] if c in table.names]
    if clashes:
        raise ValueError(f"{data}: the input already has column(s) {clashes[:3]}, which fingerprint writes")
    values = _read_outs(model, inputs, batch_size, device).tolist() if len(inputs) else []
    rows = iter(values)
    embedded = [None if error else next(rows) for error in errors]
    atomic_write(out, predicted_csv(table, embedded, errors, [], columns=columns))
    return sum(1 for e in errors if e)
