"""Pictures of detection: a frame from above with its boxes, and a training run's loss curves.

Both return a matplotlib ``Figure``; :func:`figure_bytes` renders one (and closes it),
:func:`save_figure` writes it atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..train.checkpoint import atomic_write
from .boxes import box_corners_bev
from .frames import Frame
from .postprocess import Detections

__all__ = ["draw_bev", "plot_history", "figure_bytes", "save_figure"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_bev(frame: Frame, detections: Detections | None, title: str = "") -> Any:
    """Bird's-eye view: the road in grey, other points coloured by height, true boxes in
    green, detections in red with their class initial and score."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 7))
    p = frame.points
    ground = p[:, 2] < p[:, 2].quantile(0.5) + 0.15  # about the lowest half: the road
    ax.scatter(p[ground, 1], p[ground, 0], s=0.1, c="0.8")
    above = p[~ground]
    ax.scatter(above[:, 1], above[:, 0], s=0.5, c=above[:, 2], cmap="viridis")

    def outline(boxes: torch.Tensor, colour: str, labels: list[str] | None = None) -> None:
        for k, corners in enumerate(box_corners_bev(boxes.double())):
            closed = torch.cat([corners, corners[:1]])
            ax.plot(closed[:, 1], closed[:, 0], color=colour, lw=1.2)
            if labels:
                ax.text(float(corners[:, 1].max()), float(corners[:, 0].max()), labels[k], color=colour, fontsize=6)

    if frame.boxes.shape[0]:
        outline(frame.boxes, "limegreen")
    if detections is not None and len(detections):
        outline(detections.boxes, "red", [f"{n[0]} {s:.2f}" for n, s in zip(detections.names, detections.scores)])
    ax.set_xlabel("y (m, left)")
    ax.set_ylabel("x (m, forward)")
    ax.invert_xaxis()
    ax.set_aspect("equal")
    ax.set_title(title or f"frame {frame.name}: true (green), detected (red)")
    fig.tight_layout()
    return fig


def plot_history(history: Sequence[dict[str, float]]) -> Any:
    """Training loss (each logged window) and held-out loss (each validation) against the step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    trained = [h for h in history if "train_loss" in h]
    validated = [h for h in history if "val_loss" in h]
    ax.plot([h["step"] for h in trained], [h["train_loss"] for h in trained], label="train")
    ax.plot([h["step"] for h in validated], [h["val_loss"] for h in validated], "o-", label="held out")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return fig


def figure_bytes(figure: Any, image_format: str = "png", dpi: int = 130) -> bytes:
    """The rendered ``figure``; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=dpi)
    _pyplot().close(figure)
    return buffer.getvalue()


def save_figure(path: str | Path, figure: Any, dpi: int = 130) -> Path:
    """Writes ``figure`` to ``path`` (its suffix gives the format) atomically, and closes it."""
    atomic_write(path, figure_bytes(figure, Path(path).suffix.lstrip(".") or "png", dpi))
    return Path(path)
