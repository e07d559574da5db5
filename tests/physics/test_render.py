import os

import numpy as np
import pytest
from PIL import Image

from structnets.physics.render import render, render_stills


def _rollout(path, dim: int, frames: int = 9, particles: int = 30):
    """A made-up rollout: points falling in a unit-ish box, the prediction drifting sideways."""
    rng = np.random.default_rng(dim)
    start = rng.uniform(0.3, 0.8, (particles, dim))
    fall = np.zeros(dim)
    fall[-1] = -0.02
    truth = start + fall * np.arange(frames).reshape(-1, 1, 1)
    predicted = truth + 0.01 * np.arange(frames).reshape(-1, 1, 1) * np.eye(dim)[0]
    np.savez(path, truth=truth, predicted=predicted, bounds=np.array([[0.1, 0.9]] * dim))
    return path


def _blue_pixels(image: Image.Image) -> np.ndarray:
    """A mask of the pixels drawn in a blue (the particles), whatever the shade."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    return (rgb[..., 2] > rgb[..., 0] + 40) & (rgb[..., 2] > 80)


def test_render_writes_one_gif_frame_per_drawn_step_and_nothing_else(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.8, (9, 30, 2))
    np.savez(tmp_path / "rollout.npz", truth=truth, predicted=truth[::-1], bounds=np.array([[0.1, 0.9], [0.1, 0.9]]))
    out = render(tmp_path / "rollout.npz", tmp_path / "pictures" / "rollout.gif", every=2)
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["rollout.gif"]  # no temporary left
    with pytest.raises(ValueError, match="every"):
        render(tmp_path / "rollout.npz", tmp_path / "x.gif", every=0)


def test_render_draws_3d_rollouts_frame_by_frame(tmp_path):
    out = render(_rollout(tmp_path / "rollout.npz", 3), tmp_path / "rollout.gif", every=3, truth_label="reference")
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3
        first = _blue_pixels(gif)
        gif.seek(2)
        last = _blue_pixels(gif)
    assert first.sum() > 30 and last.sum() > 30  # particles drawn in both panels, in colour ...
    assert (first != last).sum() > 30  # ... and they move
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout.gif", "rollout.npz"]


@pytest.mark.parametrize("dim", [2, 3])
def test_render_stills_is_one_png_of_truth_over_prediction_at_evenly_spaced_frames(tmp_path, dim):
    out = render_stills(_rollout(tmp_path / "rollout.npz", dim), tmp_path / "stills" / "rollout.png", frames=3)
    with Image.open(out) as png:
        assert png.format == "PNG"
        width, height = png.size
        drawn = _blue_pixels(png)
    assert width > height  # three columns, two rows
    assert sorted(p.name for p in (tmp_path / "stills").iterdir()) == ["rollout.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    # Particles in every one of the six panels: split the picture (left margin aside) into a grid.
    margin = int(0.05 * width)
    cells = [
        drawn[
            r * height // 2 : (r + 1) * height // 2,
            margin + c * (width - margin) // 3 : margin + (c + 1) * (width - margin) // 3,
        ]
        for r in range(2)
        for c in range(3)
    ]
    assert all(cell.sum() > 10 for cell in cells)

    def centre(cell):  # (row, column) of the drawn pixels' centroid
        rows, columns = np.nonzero(cell)
        return rows.mean(), columns.mean()

    (top_first, bottom_first), (top_last, bottom_last) = [(centre(cells[c]), centre(cells[3 + c])) for c in (0, 2)]
    assert top_last[0] > top_first[0] + 10  # the truth falls: down the picture, left to right
    drift = abs(bottom_last[1] - bottom_first[1]) - abs(top_last[1] - top_first[1])
    assert drift > 5  # the bottom row is the prediction, which drifts sideways
    with pytest.raises(ValueError, match="frames must be between 1 and"):
        render_stills(tmp_path / "rollout.npz", tmp_path / "x.png", frames=10)


def test_render_rejects_a_rollout_of_the_wrong_shape(tmp_path):
    np.savez(tmp_path / "bad.npz", truth=np.zeros((3, 4, 2)), predicted=np.zeros((3, 4, 2)), bounds=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="bounds"):
        render_stills(tmp_path / "bad.npz", tmp_path / "x.png")
