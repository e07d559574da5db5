"""Figures of the sequence tasks: accuracy against length, training curves, memory weightings.

Each function returns a matplotlib ``Figure`` built without pyplot (no global state, no
display needed); :meth:`structnets.train.checkpoint.RunDirectory.save_figure` writes it into a
run directory, :func:`save_figure` anywhere else, both atomically.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib loads only when a figure is drawn: it costs every CLI call start-up time
    from matplotlib.figure import Figure
from torch import Tensor

from ..train.checkpoint import atomic_write

__all__ = ["accuracy_figure", "training_figure", "weightings_figure", "save_figure"]


def _sorted(accuracy: Mapping[str, float]) -> tuple[list[int], list[float]]:
    sizes = sorted(int(key) for key in accuracy)
    return sizes, [accuracy[str(size)] for size in sizes]


def _figure(**kwargs: object) -> Figure:
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def accuracy_figure(accuracy_by_length: Mapping[str, float], *, max_train_length: int, title: str) -> Figure:
    """Held-out accuracy against sequence length, the training lengths ``1..max_train_length`` shaded."""
    lengths, values = _sorted(accuracy_by_length)
    fig = _figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.axvspan(
        0.5, max_train_length + 0.5, color="tab:green", alpha=0.15, label=f"training lengths 1-{max_train_length}"
    )
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.plot(lengths, values, marker="o", markersize=3)
    ax.set_title(title)
    ax.set_xlabel("sequence length")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(0.5, max(lengths) + 0.5)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def training_figure(
    history: Sequence[Mapping[str, Any]],
    accuracy_by_size: Mapping[str, float],
    *,
    clip: float | None,
    trained: tuple[int, int],
    size_label: str,
) -> Figure:
    """Left: training loss and gradient norm (the engine's history) against steps; right: accuracy by size.

    Args:
        history: :attr:`structnets.train.engine.TrainResult.history`; its training entries
            (``train_loss``, ``grad_norm``: each window's mean, before clipping) are drawn.
        accuracy_by_size: per-bit accuracy by sequence size.
        clip: the clipping threshold, drawn as a line.
        trained: the smallest and largest training size, shaded.
        size_label: the x-axis label of the right panel.
    """
    entries = [entry for entry in history if "train_loss" in entry]
    steps = [entry["step"] for entry in entries]
    fig = _figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    left.semilogy(steps, [entry["train_loss"] for entry in entries], label="loss (BCE per bit)")
    left.semilogy(
        steps, [entry["grad_norm"] for entry in entries], label="mean gradient norm (before clipping)", alpha=0.6
    )
    if clip is not None:
        left.axhline(clip, color="grey", linestyle=":", label=f"clip at {clip}")
    left.set_xlabel("training step")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    left.set_title("training (no NaN: every step's loss checked)", fontsize=9)
    sizes, values = _sorted(accuracy_by_size)
    right.plot(sizes, values, marker="o", markersize=3)
    right.axvspan(trained[0] - 0.5, trained[1] + 0.5, color="tab:green", alpha=0.15, label="trained")
    right.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    right.set_xlabel(size_label)
    right.set_ylabel("per-bit accuracy")
    right.set_ylim(0.4, 1.01)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def weightings_figure(panels: Sequence[tuple[str, Tensor]], *, title: str) -> Figure:
    """One grey-scale image per ``(name, [rows, time])`` panel, values in [0, 1], time shared."""
    fig = _figure(figsize=(8, 9))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, panels):
        ax.imshow(values.detach().cpu().numpy(), aspect="auto", cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("location" if "weighting" in name else "channel")
    axes[-1].set_xlabel("time step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Writes ``figure`` as an image (the format from the suffix, PNG by default) atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    atomic_write(path, buffer.getvalue())
    return path
