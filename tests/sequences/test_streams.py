"""Tests for the resumable batch streams (structnets.sequences.streams)."""

import itertools

import torch

from structnets.sequences.streams import batch_stream, steps_taken, without_epoch


def _draw(generator: torch.Generator) -> int:
    return int(torch.randint(1000, (), generator=generator))


def test_a_stream_is_fixed_by_its_seed():
    first = list(itertools.islice(batch_stream(_draw, 3), 6))
    assert first == list(itertools.islice(batch_stream(_draw, 3), 6))
    assert first != list(itertools.islice(batch_stream(_draw, 4), 6))


def test_a_resumed_stream_skips_the_steps_already_taken(tmp_path):
    torch.save({"step": 4}, tmp_path / "train_state.pt")
    assert steps_taken(tmp_path) == steps_taken(tmp_path / "train_state.pt") == 4
    assert steps_taken(None) == 0 and steps_taken(tmp_path / "missing") == 0
    whole = list(itertools.islice(batch_stream(_draw, 3), 10))
    assert list(itertools.islice(batch_stream(_draw, 3, tmp_path), 6)) == whole[4:]


def test_without_epoch_drops_only_the_epoch():
    assert without_epoch({"step": 3, "epoch": 1, "val_loss": 0.5}) == {"step": 3, "val_loss": 0.5}
    assert without_epoch(None) is None


def test_stream_of_is_the_same_stream_for_every_epoch_call():
    from structnets.sequences.streams import stream_of
    from structnets.train.engine import TrainConfig

    batches = stream_of(_draw, TrainConfig(steps=5, seed=3))
    assert list(itertools.islice(batches(0), 6)) == list(itertools.islice(batch_stream(_draw, 3), 6))
