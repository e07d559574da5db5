"""The files a molecule property run writes beside its model, as text and figures.

* :func:`predictions_csv`: every molecule of the run, its split, true and predicted values;
* :func:`parity_figure`: predicted against true per target, one colour per split;
* :func:`predicted_csv`: ``predict``'s output, the input's records unchanged and in order,
  preceded by a ``<target>_pred`` column per target and an ``error`` column.

They return the content; the caller writes it atomically (:class:`structnets.train.checkpoint.RunDirectory`
or :func:`structnets.train.checkpoint.atomic_write`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from ..train.data import CsvTable
from .datasets import MoleculeDataset
from .ensemble import Prediction
from .metrics import Task

__all__ = ["SPLITS", "predictions_csv", "parity_figure", "predicted_columns", "predicted_csv"]

SPLITS = ("train", "val", "test")


def predictions_csv(
    dataset: MoleculeDataset,
    split: Mapping[str, Sequence[int]],
    predictions: Mapping[str, Tensor | Prediction | tuple[Prediction, tuple[Tensor, Tensor] | None]],
    names: list[str],
) -> str:
    """``split,row,smiles,<target>_true...,<target>_pred...`` (then ``<target>_std``, ``_lower``, ``_upper``).

    ``predictions[split]`` is ``(prediction, intervals)``: a
    :class:`structnets.chem.ensemble.Prediction` (calibrated where the run is) and its
    ``(lower, upper)`` or None, as :func:`structnets.chem.ensemble.calibrate` gives them (a
    ``Prediction`` or a tensor of means alone: no intervals). The
    standard deviation columns come where the predictions have one, the interval columns
    where there are intervals. Rows of several molecules add the further SMILES as
    ``smiles_2``, ``smiles_3``, ...
    """
    shown = {}
    for name in SPLITS:
        value = predictions[name]
        if isinstance(value, Tensor):
            value = Prediction(value, None)
        shown[name] = (value, None) if isinstance(value, Prediction) else value
    has_std = any(p.std is not None for p, _ in shown.values())
    has_interval = any(i is not None for _, i in shown.values())
    more = dataset.molecules_per_row - 1
    header = ["split", "row", "smiles"] + [f"smiles_{k + 2}" for k in range(more)]
    header += [f"{n}_true" for n in names] + [f"{n}_pred" for n in names]
    header += [f"{n}_std" for n in names] if has_std else []
    header += [f"{n}_{side}" for side in ("lower", "upper") for n in names] if has_interval else []
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(header)
    for name in SPLITS:
        prediction, intervals = shown[name]
        parts = [prediction.mean] + ([prediction.std] if has_std else []) + (list(intervals) if has_interval else [])
        for k, index in enumerate(split[name]):
            writer.writerow(
                [name, dataset.rows[index], dataset.smiles[index], *dataset.other_smiles[index]]
                + [f"{float(v):.6g}" for v in dataset.targets[index]]
                + [f"{float(v):.6g}" for part in parts for v in part[k]]
            )
    return text.getvalue()


def parity_figure(predictions: Mapping[str, Tensor], truths: Mapping[str, Tensor], names: list[str], task: Task) -> Any:
    """A matplotlib ``Figure``: per target, predicted (or the logit) against true, by split.

    Shapes:
        predictions[split], truths[split]: ``[molecules in split, len(names)]``.
    """
    # A bare Figure on the Agg canvas: importing pyplot costs about half a second of start-up.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(4 * columns, 4 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // columns][k % columns]
        for split_name, colour in zip(SPLITS, ("#bbbbbb", "#1f77b4", "#d62728")):
            if len(truths[split_name]):
                ax.scatter(
                    truths[split_name][:, k], predictions[split_name][:, k], s=6, c=colour, label=split_name, alpha=0.7
                )
        low = min(float(t[:, k].min()) for t in truths.values() if len(t))
        high = max(float(t[:, k].max()) for t in truths.values() if len(t))
        if task is Task.REGRESSION:
            ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}" if task is Task.REGRESSION else f"logit {name}")
        ax.legend(loc="upper left", fontsize=8)
    for k in range(len(names), rows * columns):
        axes[k // columns][k % columns].axis("off")
    fig.tight_layout()
    return fig


def predicted_columns(names: Sequence[str], *, std: bool = False, interval: bool = False) -> list[str]:
    """The columns ``predict`` adds to its input: ``<target>_pred`` per target (then ``<target>_std``
    per target, and ``<target>_lower``, ``<target>_upper``), then ``error``."""
    columns = [f"{name}_pred" for name in names]
    columns += [f"{name}_std" for name in names] if std else []
    columns += [f"{name}_{side}" for side in ("lower", "upper") for name in names] if interval else []
    return columns + ["error"]


def predicted_csv(
    table: CsvTable,
    predictions: Sequence[Sequence[float] | None],
    errors: Sequence[str],
    names: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
) -> str:
    """``predict``'s output: the input table reproduced, with the predicted columns in front.

    The header and every record come out in order with their fields unchanged (duplicate
    column names, rows with too few or too many fields, blank lines), each data row
    preceded by ``<target>_pred`` per target and ``error``. The added columns go in front
    so that they line up even where a row's own fields do not; dropping them gives back the
    input's records.

    Args:
        table: the input (:func:`structnets.train.data.read_csv`).
        predictions: per data row, one value per added column, or None where the row could not be read.
        errors: per data row, why it could not be read, or an empty string.
        names: the target names.
        columns: the added columns before ``error`` (default: ``<target>_pred`` per target);
            ``molprop fingerprint`` writes its embedding's columns this way.
    """
    count = len(table.rows)
    if not len(predictions) == len(errors) == count:
        raise ValueError(f"{len(predictions)} predictions and {len(errors)} errors for {count} data rows")
    added = list(columns) if columns is not None else predicted_columns(names)[:-1]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    for _ in range(table.blank_lines_before_header):
        writer.writerow([])
    writer.writerow(added + ["error"] + list(table.header))
    rows = iter(zip(predictions, errors, strict=True))
    for record in table.records:
        if record.index is None:
            writer.writerow([])
            continue
        values, error = next(rows)
        if values is not None and len(values) != len(added):
            raise ValueError(f"{len(values)} values for the {len(added)} added columns")
        predicted = [f"{v:.6g}" for v in values] if values is not None else [""] * len(added)
        writer.writerow(predicted + [error] + record.fields)
    return text.getvalue()
