import pytest
import torch
from torch.testing import assert_close

from structnets import RNN
from structnets.train.checkpoint import check_finite, clip_gradients, load_checkpoint, save_checkpoint


def test_clip_gradients_rescales_to_max_norm():
    model = torch.nn.Linear(4, 3)
    (model(torch.randn(8, 4)).sum() * 1000).backward()
    before = clip_gradients(model, None)
    returned = clip_gradients(model, 1.0)
    assert returned == pytest.approx(before)
    assert clip_gradients(model, None) == pytest.approx(1.0, rel=1e-5)


def test_clip_gradients_leaves_small_gradients_alone():
    model = torch.nn.Linear(4, 3)
    model(torch.randn(2, 4)).sum().mul(1e-3).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    clip_gradients(model, 10.0)
    for g, p in zip(grads, model.parameters()):
        assert_close(p.grad, g)


def test_clip_gradients_rejects_bad_norm():
    model = torch.nn.Linear(2, 2)
    model(torch.randn(1, 2)).sum().backward()
    with pytest.raises(ValueError, match="positive"):
        clip_gradients(model, 0.0)


def test_check_finite_names_rows():
    values = torch.zeros(6, 2)
    check_finite(values, "ok.csv")
    values[4, 1] = float("nan")
    values[2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"data.csv: NaN and infinity in row\(s\) 2, 4"):
        check_finite(values, "data.csv")


def test_checkpoint_round_trip_without_code(tmp_path):
    rnn = RNN(3, 4, num_layers=2)
    save_checkpoint(tmp_path / "model.pt", rnn, {"input_size": 3, "hidden_size": 4, "num_layers": 2})
    loaded = load_checkpoint(tmp_path / "model.pt")
    again = RNN(**loaded["config"])
    again.load_state_dict(loaded["state_dict"])
    x = torch.randn(5, 2, 3)
    assert_close(again(x)[0], rnn(x)[0])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
