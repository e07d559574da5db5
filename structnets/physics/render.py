"""A rollout as a picture: ground truth and the learned simulator side by side, in 2D or 3D.

:func:`render` writes an animated GIF, :func:`render_stills` one PNG of a few moments (two
rows, ground truth and learned simulator, one column per moment). Both read the npz that
``structnets simulate evaluate`` (``rollout.npz``) or ``rollout`` writes: ``truth`` and
``predicted`` ``[T, N, D]`` positions and ``bounds`` ``[D, 2]``. 2D rollouts are drawn as
flat scatter plots; 3D ones as 3D scatter plots seen from a fixed camera, each point
coloured by its height (the last axis, the one gravity pulls along) so that depth reads at
a glance. Axis limits come from ``bounds`` and stay fixed from frame to frame.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["render", "render_stills"]

_LEARNED_LABEL = "learned simulator"

# Camera for 3D: looking down a little (elevation, degrees) from the front-left corner.
_ELEVATION, _AZIMUTH = 22.0, -58.0
# Stills are read closely (a README, a paper): enough pixels per dot that a lattice does not alias.
_STILL_DPI = 150


def _load(rollout: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(rollout) as archive:
        truth, predicted, bounds = archive["truth"], archive["predicted"], archive["bounds"]
    dim = truth.shape[-1]
    if truth.ndim != 3 or dim not in (2, 3) or predicted.shape != truth.shape or bounds.shape != (dim, 2):
        raise ValueError(
            f"{rollout}: expected truth and predicted of one shape [T, N, 2 or 3] and bounds [dim, 2], got "
            f"{truth.shape}, {predicted.shape} and {bounds.shape}"
        )
    return truth, predicted, bounds


def _spacing(points: np.ndarray) -> float:
    """The median distance from a particle to its nearest neighbour (0 for fewer than two)."""
    from scipy.spatial import cKDTree

    if points.shape[0] < 2:
        return 0.0
    return float(np.median(cKDTree(points).query(points, k=2)[0][:, 1]))


class _Panel:
    """One axes that draws one frame of particles: flat in 2D, a 3D scatter in 3D.

    Dots are about ``spacing`` (the particles' distance at the start) across, so that a
    fluid at rest reads as a continuous body whatever its resolution.
    """

    def __init__(self, fig, position, bounds: np.ndarray, spacing: float):
        self.fig, self.bounds, self.spacing = fig, bounds, spacing
        self.three_d = bounds.shape[0] == 3
        if self.three_d:
            self.ax = fig.add_subplot(*position, projection="3d")
            self.ax.view_init(elev=_ELEVATION, azim=_AZIMUTH)
            self.ax.set_box_aspect(tuple(bounds[:, 1] - bounds[:, 0]))
        else:
            self.ax = fig.add_subplot(*position)
            self.ax.set_aspect("equal")
        self.dots = None
        ax = self.ax
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
        ax.set_xticks([])
        ax.set_yticks([])
        if self.three_d:
            ax.set_zlim(*bounds[2])
            ax.set_zticks([])

    def _size(self) -> float:
        """Marker area in points^2, from the axes' size once the figure is laid out."""
        box = self.ax.get_position()
        inches = min(box.width * self.fig.get_figwidth(), box.height * self.fig.get_figheight())
        if self.three_d:
            # The projected box fills about 60% of its axes; smaller dots than the spacing keep
            # some texture in a 3D cloud, where dots overlap along the line of sight anyway.
            inches *= 0.6 * 0.75
        extent = float((self.bounds[:, 1] - self.bounds[:, 0]).max())
        diameter = self.spacing / extent * inches * 72
        return float(np.clip(diameter**2, 1.0, 80.0))

    def draw(self, points: np.ndarray) -> None:
        if not self.three_d:
            if self.dots is None:
                self.dots = self.ax.scatter([], [], s=self._size(), linewidths=0)
            self.dots.set_offsets(points)
            return
        # A 3D scatter cannot be moved through public API; draw the frame afresh instead.
        if self.dots is not None:
            self.dots.remove()
        low, high = self.bounds[2]
        self.dots = self.ax.scatter(
            points[:, 0], points[:, 1], points[:, 2], c=points[:, 2], cmap="Blues_r",
            vmin=low - 0.1 * (high - low), vmax=high + 0.3 * (high - low), s=self._size(), depthshade=True,
            linewidths=0,
        )  # fmt: skip


def _save_atomically(out: Path, suffix: str, write: Callable[[str], None]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Pillow and matplotlib pick the format from the name, so the temporary file keeps the suffix.
    handle, temporary = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=suffix, dir=out.parent)
    os.close(handle)
    try:
        write(temporary)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return out


def render(rollout: str | Path, out: str | Path, every: int = 4, *, truth_label: str = "ground truth (SPH)") -> Path:
    """Writes a side-by-side GIF of ``rollout`` (an npz with ``truth``, ``predicted``, ``bounds``).

    Args:
        rollout: what ``structnets simulate evaluate`` (``rollout.npz``) or ``rollout`` wrote,
            2D or 3D.
        out: the GIF, written atomically (a temporary file beside it, then a rename).
        every: draw every ``every``-th frame.
        truth_label: the title over the ground truth.

    Raises:
        ValueError: ``every`` is not positive, or the arrays have the wrong shapes.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if every < 1:
        raise ValueError(f"every must be a positive integer, got {every}")
    truth, predicted, bounds = _load(rollout)
    dim = truth.shape[-1]
    fig = Figure(figsize=(8, 4) if dim == 2 else (10, 5))
    FigureCanvasAgg(fig)
    spacing = _spacing(truth[0])
    panels = [_Panel(fig, (1, 2, k + 1), bounds, spacing) for k in range(2)]
    for panel, title in zip(panels, (truth_label, _LEARNED_LABEL)):
        panel.ax.set_title(title)
    if dim == 3:
        fig.subplots_adjust(left=0, right=1, bottom=0, top=0.92, wspace=0)

    def draw(k: int):
        for panel, data in zip(panels, (truth, predicted)):
            panel.draw(data[k])
        return [panel.dots for panel in panels]

    animation = FuncAnimation(fig, draw, frames=list(range(0, truth.shape[0], every)), blit=False)
    return _save_atomically(Path(out), ".gif", lambda path: animation.save(path, writer=PillowWriter(fps=20)))


def render_stills(
    rollout: str | Path, out_png: str | Path, frames: int = 4, *, truth_label: str = "ground truth (SPH)"
) -> Path:
    """Writes one PNG of ``rollout`` at ``frames`` evenly spaced moments, first to last.

    The top row is the ground truth, the bottom row the learned simulator; each column is
    titled with its frame number.

    Args:
        rollout: an npz with ``truth``, ``predicted`` ``[T, N, D]`` and ``bounds``, 2D or 3D.
        out_png: the PNG, written atomically.
        frames: how many moments (columns), at most ``T``.
        truth_label: the label of the ground-truth row.

    Raises:
        ValueError: ``frames`` is not between 1 and ``T``, or the arrays have the wrong shapes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    truth, predicted, bounds = _load(rollout)
    length, dim = truth.shape[0], truth.shape[-1]
    if not 1 <= frames <= length:
        raise ValueError(f"frames must be between 1 and the rollout's {length} frames, got {frames}")
    moments = np.linspace(0, length - 1, frames).round().astype(int)
    panel_inches = 2.6 if dim == 2 else 3.2
    fig = Figure(figsize=(panel_inches * frames + 0.4, 2 * panel_inches + 0.5))
    FigureCanvasAgg(fig)
    spacing = _spacing(truth[0])
    panels = [_Panel(fig, (2, frames, k + 1), bounds, spacing) for k in range(2 * frames)]
    fig.subplots_adjust(
        left=0.4 / fig.get_figwidth() + 0.01, right=0.995, bottom=0.01, top=0.93, wspace=0.04, hspace=0.04
    )
    for k, panel in enumerate(panels):
        row, column = divmod(k, frames)
        panel.draw((truth, predicted)[row][moments[column]])
        if row == 0:
            panel.ax.set_title(f"frame {moments[column]}")
    # Row labels in the left margin, centred on each row.
    for row, label in enumerate((truth_label, _LEARNED_LABEL)):
        box = fig.axes[row * frames].get_position()
        fig.text(0.01, (box.y0 + box.y1) / 2, label, rotation=90, ha="left", va="center", fontsize=11)
    return _save_atomically(Path(out_png), ".png", lambda path: fig.savefig(path, dpi=_STILL_DPI))
