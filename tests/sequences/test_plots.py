"""Tests for the sequence tasks' figures (structnets.sequences.plots)."""

import torch

from structnets.sequences.plots import accuracy_figure, save_figure, training_figure, weightings_figure


def test_accuracy_figure_draws_every_length_in_order():
    figure = accuracy_figure({"3": 0.5, "1": 1.0, "2": 0.75}, max_train_length=2, title="t")
    line = figure.axes[0].get_lines()[-1]
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [1.0, 0.75, 0.5]


def test_training_figure_reads_the_engines_history():
    history = [
        {"step": 2, "epoch": 0, "train_loss": 0.7, "grad_norm": 3.0, "lr": 1e-3},
        {"step": 2, "epoch": 0, "val_loss": 0.6},  # validations are not training entries
        {"step": 4, "epoch": 0, "train_loss": 0.5, "grad_norm": 2.0, "lr": 1e-3},
    ]
    figure = training_figure(history, {"1": 0.9, "2": 0.8}, clip=10.0, trained=(1, 1), size_label="length")
    loss, norm = figure.axes[0].get_lines()[:2]
    assert list(loss.get_xdata()) == [2, 4] and list(loss.get_ydata()) == [0.7, 0.5]
    assert list(norm.get_ydata()) == [3.0, 2.0]


def test_figures_save_atomically_as_png(tmp_path):
    figure = weightings_figure([("inputs", torch.rand(3, 5)), ("write weighting", torch.rand(4, 5))], title="t")
    assert len(figure.axes) == 2
    path = save_figure(figure, tmp_path / "w.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["w.png"]  # no temporary file left behind
