import numpy as np
import pytest
from PIL import Image

from structnets.physics.render import render


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
