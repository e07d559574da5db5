"""A rollout as a picture: ground truth and prediction side by side, as an animated GIF."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["render"]


def render(rollout: str | Path, out: str | Path, every: int = 4) -> Path:
    """Writes a side-by-side GIF of ``rollout`` (an npz with ``truth``, ``predicted``, ``bounds``).

    Args:
        rollout: what ``structnets simulate evaluate`` (``rollout.npz``) or ``rollout`` wrote.
        out: the GIF, written atomically (a temporary file beside it, then a rename).
        every: draw every ``every``-th frame.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every}")
    out = Path(out)
    with np.load(rollout) as archive:
        truth, predicted, bounds = archive["truth"], archive["predicted"], archive["bounds"]
    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    dots = []
    for ax, title in zip(fig.subplots(1, 2), ("ground truth (SPH)", "learned simulator")):
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        dots.append(ax.scatter([], [], s=4))

    def draw(k: int):
        for dot, data in zip(dots, (truth, predicted)):
            dot.set_offsets(data[k])
        return dots

    animation = FuncAnimation(fig, draw, frames=list(range(0, truth.shape[0], every)), blit=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Pillow picks the format from the name, so the temporary file ends in .gif too.
    handle, temporary = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".gif", dir=out.parent)
    os.close(handle)
    try:
        animation.save(temporary, writer=PillowWriter(fps=20))
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return out
