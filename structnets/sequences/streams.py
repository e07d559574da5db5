"""The endless, seeded batch streams of the step-counted sequence tasks, resumable mid-stream.

The palindrome and copy/recall tasks draw every training batch from one generator seeded
with the run's seed, so a seed fixes the whole stream. The engine restores the model, the
optimiser and the global random state on ``--resume``, but calls ``batches(epoch)`` afresh;
:func:`batch_stream` therefore skips the batches a resumed run already trained on, and the
resumed run sees the same data as one that was never interrupted.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..train.engine import TrainConfig, resumed_step

__all__ = ["batch_stream", "stream_of", "steps_taken", "without_epoch"]

T = TypeVar("T")


def steps_taken(resume: Path | None) -> int:
    """Optimiser steps already taken by the run that ``resume`` continues (0 without one)."""
    return resumed_step(resume)


def stream_of(draw: Callable[[torch.Generator], T], train: TrainConfig) -> Callable[[int], Iterator[T]]:
    """``batches(epoch)`` for :func:`structnets.train.engine.fit`: the run's one endless stream
    (seeded with ``train.seed``, skipping what ``train.resume``'s run already trained on)."""
    return lambda epoch: batch_stream(draw, train.seed, train.resume)


def batch_stream(draw: Callable[[torch.Generator], T], seed: int, resume: Path | None = None) -> Iterator[T]:
    """``draw(generator)`` again and again from one generator seeded with ``seed``, without
    the first :func:`steps_taken` ``(resume)`` batches."""
    generator = torch.Generator().manual_seed(seed)
    stream = (draw(generator) for _ in itertools.count())
    return itertools.islice(stream, steps_taken(resume), None)


def without_epoch(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A history entry of the engine without its ``epoch``, which counts nothing in an endless
    stream (and moves by one when a finished run is resumed); None stays None."""
    return None if entry is None else {key: value for key, value in entry.items() if key != "epoch"}
