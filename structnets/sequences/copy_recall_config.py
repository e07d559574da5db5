"""The settings of one copy or associative-recall experiment, and the batches they define.

:class:`MemoryTaskConfig` is the task's command line (``structnets memory train --help``):
the task, the network's sizes and the engine's settings. A memory of ``memory_size``
locations holds at most that many data steps (``L`` for a copy, ``K * item_length`` for
recall), since a write head writes at most one location's worth per step; :func:`check_capacity`
refuses larger sizes with an error instead of letting the model fail silently.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..models.memory_network import Addressing, MemoryConfig
from ..train.config import shared_fields
from ..train.engine import TrainConfig
from .copy_recall_data import Task, TaskBatch, copy_batch, recall_batch

__all__ = ["TASK_DEFAULTS", "MemoryTaskConfig", "check_capacity", "make_batch", "training_batch"]

# The sizes of Graves et al.: 8-bit copies of lengths 1-10; recall of 2-6 items of 6 bits.
TASK_DEFAULTS = {
    Task.COPY: {"bits": 8, "min_size": 1, "max_train_size": 10, "memory_size": 32},
    Task.RECALL: {"bits": 6, "min_size": 2, "max_train_size": 6, "memory_size": 48},
}


def _train_defaults() -> TrainConfig:
    """Graves et al.'s training, validated every 250 steps to keep the best weights."""
    return TrainConfig(steps=5000, batch_size=32, lr=1e-3, clip_grad_norm=10.0, log_every=50, eval_every=250)


@dataclasses.dataclass(frozen=True)
class MemoryTaskConfig:
    """One copy or recall experiment (Adam at 1e-3, batch 32, 5000 steps, gradient norm clipped at 10).

    Attributes:
        task: copy or associative recall.
        addressing: NTM or DNC addressing.
        bits: data bits per step; none: 8 for copy, 6 for recall (Graves et al.).
        min_size: shortest training length (copy) or fewest items (recall); none: 1 or 2.
        max_train_size: longest training length (copy) or most items (recall); none: 10 or 6.
        eval_size: the test length or item count; none: twice max_train_size.
        item_length: recall only: steps per item.
        hidden_size: the LSTM controller's state size.
        memory_size: memory locations; none: 32 for copy, 48 for recall.
        word_size: numbers per memory location.
        num_reads: read heads.
        eval_sequences: test sequences per evaluated size, and the size of the validation batch.
        num_threads: torch's intra-op threads while training and evaluating (restored
            afterwards). One by default: a step is hundreds of small operations, too small to
            split, and on a busy 2-core machine two threads per operation ran 30x slower than one.
        train: the engine's settings.
    """

    task: Task = Task.COPY
    addressing: Addressing = Addressing.DNC
    bits: int | None = None
    min_size: int | None = None
    max_train_size: int | None = None
    eval_size: int | None = None
    item_length: int = 3
    hidden_size: int = 100
    memory_size: int | None = None
    word_size: int = 16
    num_reads: int = 1
    eval_sequences: int = 256
    num_threads: int | None = 1
    train: TrainConfig = dataclasses.field(default_factory=_train_defaults)

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task) or not isinstance(self.addressing, Addressing):
            raise TypeError("task must be a Task and addressing an Addressing")
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # the task's default, stored as given
        for name in ("bits", "item_length", "eval_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.train.steps is None:
            raise ValueError("the memory tasks count steps (their data never ends): give train.steps")
        smallest = 2 if self.task is Task.RECALL else 1
        if not smallest <= self.min_size <= self.max_train_size:
            raise ValueError(
                f"need {smallest} <= min_size <= max_train_size, got {self.min_size} and {self.max_train_size}"
            )
        self.model_config()  # checks the network's sizes (memory_size 0 included)
        check_capacity(self, self.max_train_size)
        if self.eval_size is not None:
            check_capacity(self, self.eval_size)

    @property
    def test_size(self) -> int:
        """The size tested by :func:`evaluate`: ``eval_size``, else twice the training maximum."""
        return self.eval_size if self.eval_size is not None else 2 * self.max_train_size

    def model_config(self) -> MemoryConfig:
        input_size = self.bits + (1 if self.task is Task.COPY else 2)  # the data bits and the marker channels
        return shared_fields(MemoryConfig, self, input_size=input_size, output_size=self.bits)


def check_capacity(config: MemoryTaskConfig, size: int) -> None:
    """Raises a ValueError if ``size`` (length or items) needs more memory than the model has."""
    if size < (2 if config.task is Task.RECALL else 1):
        raise ValueError(f"{config.task.value} size must be at least {2 if config.task is Task.RECALL else 1}")
    data_steps = size if config.task is Task.COPY else size * config.item_length
    if data_steps > config.memory_size:
        what = f"a copy of length {size}" if config.task is Task.COPY else f"recall of {size} items"
        raise ValueError(
            f"{what} has {data_steps} data steps, more than the {config.memory_size} memory locations "
            f"the model was built with (memory_size); use sizes up to "
            f"{config.memory_size if config.task is Task.COPY else config.memory_size // config.item_length}"
        )


def make_batch(config: MemoryTaskConfig, sizes: Tensor, generator: torch.Generator) -> TaskBatch:
    """A batch of ``config.task`` with the given lengths (copy) or item counts (recall)."""
    for size in {int(s) for s in sizes.tolist()}:
        check_capacity(config, size)
    if config.task is Task.COPY:
        return copy_batch(sizes, config.bits, generator)
    return recall_batch(sizes, config.item_length, config.bits, generator)


def training_batch(config: MemoryTaskConfig, generator: torch.Generator, count: int) -> TaskBatch:
    """``count`` sequences, each of a size drawn uniformly from ``min_size..max_train_size``."""
    sizes = torch.randint(config.min_size, config.max_train_size + 1, (count,), generator=generator)
    return make_batch(config, sizes, generator)
