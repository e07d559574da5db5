"""The data of Graves et al.'s (2014) copy and associative-recall tasks, and how outputs are scored.

**Copy.** A row reads ``L`` random binary vectors of ``bits`` bits, then a step with only
the delimiter channel set, then must write the ``L`` vectors back during ``L`` blank steps.

**Associative recall.** A row reads ``K`` items, each ``item_length`` binary vectors
preceded by a step on the item-delimiter channel; then a query-delimiter step, a copy of
one item (never the last), and a second query-delimiter step; then it must output the
item that followed the query.

Every row of a batch has its own length; steps past a row's end are zero input and carry
no loss (``mask``): :func:`masked_loss` and :func:`bit_errors` score only the output steps.
Each batch function draws from the generator it is given and nothing else.
"""

from __future__ import annotations

import dataclasses
import enum

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["Task", "TaskBatch", "copy_batch", "recall_batch", "masked_loss", "bit_errors"]


class Task(enum.Enum):
    """The two tasks of Graves et al. (2014) implemented here."""

    COPY = "copy"
    RECALL = "recall"


@dataclasses.dataclass(frozen=True)
class TaskBatch:
    """One batch of a task.

    Attributes:
        inputs: ``[B, T, input_size]`` float 0/1.
        targets: ``[B, T, bits]`` float 0/1 (zero where ``mask`` is 0).
        mask: ``[B, T]`` float, 1 on the steps whose output is scored.
        sizes: ``[B]`` the sequence length (copy) or number of items (recall) of each row.
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    sizes: Tensor

    def to(self, device: torch.device | str) -> TaskBatch:
        """The batch with its tensors on ``device`` (``sizes`` stays where it is)."""
        return TaskBatch(self.inputs.to(device), self.targets.to(device), self.mask.to(device), self.sizes)


def copy_batch(lengths: Tensor, bits: int, generator: torch.Generator) -> TaskBatch:
    """Copy-task sequences, one per entry of ``lengths`` (each at least 1).

    Input channels: ``bits`` data bits and one delimiter. Row ``b`` with length ``L`` has
    data at steps ``0..L-1``, the delimiter at step ``L`` and its targets at ``L+1..2L``.
    """
    lengths = lengths.to(torch.long).cpu()
    if lengths.numel() == 0 or int(lengths.min()) < 1:
        raise ValueError("copy lengths must be at least 1")
    batch, longest = lengths.numel(), int(lengths.max())
    steps = 2 * longest + 1
    data = torch.randint(0, 2, (batch, longest, bits), generator=generator).float()
    time = torch.arange(longest)
    data = data * (time.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    inputs = torch.zeros(batch, steps, bits + 1)
    targets = torch.zeros(batch, steps, bits)
    mask = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    inputs[:, :longest, :bits] = data
    inputs[rows, lengths, bits] = 1.0
    for row, length in enumerate(lengths.tolist()):
        targets[row, length + 1 : 2 * length + 1] = data[row, :length]
        mask[row, length + 1 : 2 * length + 1] = 1.0
    return TaskBatch(inputs, targets, mask, lengths)


def recall_batch(num_items: Tensor, item_length: int, bits: int, generator: torch.Generator) -> TaskBatch:
    """Associative-recall sequences, one per entry of ``num_items`` (each at least 2).

    Input channels: ``bits`` data bits, the item delimiter, the query delimiter. Layout of a
    row with ``K`` items of ``n = item_length`` steps: ``K`` blocks ``[item delimiter, n data
    steps]``, then ``[query delimiter, n query steps, query delimiter]``, then ``n`` output
    steps whose targets are the item after the query.
    """
    num_items = num_items.to(torch.long).cpu()
    if num_items.numel() == 0 or int(num_items.min()) < 2:
        raise ValueError("associative recall needs at least 2 items per sequence")
    batch, most = num_items.numel(), int(num_items.max())
    block = item_length + 1
    steps = most * block + item_length + 2 + item_length
    inputs = torch.zeros(batch, steps, bits + 2)
    targets = torch.zeros(batch, steps, bits)
    mask = torch.zeros(batch, steps)
    items = torch.randint(0, 2, (batch, most, item_length, bits), generator=generator).float()
    # The query is any item but the last, so that a following item exists.
    queries = (torch.rand(batch, generator=generator) * (num_items - 1)).long()
    for row, count in enumerate(num_items.tolist()):
        for item in range(count):
            start = item * block
            inputs[row, start, bits] = 1.0
            inputs[row, start + 1 : start + block, :bits] = items[row, item]
        query_start = count * block
        inputs[row, query_start, bits + 1] = 1.0
        inputs[row, query_start + 1 : query_start + 1 + item_length, :bits] = items[row, queries[row]]
        inputs[row, query_start + 1 + item_length, bits + 1] = 1.0
        answer = query_start + 2 + item_length
        targets[row, answer : answer + item_length] = items[row, queries[row] + 1]
        mask[row, answer : answer + item_length] = 1.0
    return TaskBatch(inputs, targets, mask, num_items)


def masked_loss(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Mean binary cross-entropy per scored bit."""
    per_bit = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
    return (per_bit * batch.mask.unsqueeze(-1)).sum() / (batch.mask.sum() * logits.shape[-1])


def bit_errors(logits: Tensor, batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Wrong bits per sequence and scored bits per sequence (threshold at probability 1/2)."""
    wrong = ((logits > 0).float() != batch.targets).float() * batch.mask.unsqueeze(-1)
    return wrong.sum((1, 2)), batch.mask.sum(1) * logits.shape[-1]
