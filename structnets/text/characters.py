"""Character-level text for language models: the vocabulary, parallel streams, bits per character, sampling.

A long text is read as ``batch_size`` parallel streams, chunk by chunk (:func:`stream_chunks`):
the state a model ends one chunk with starts the next chunk of the same stream, which is
how truncated backpropagation through time trains and how :func:`bits_per_character`
scores a held-out text. The model is any ``model(tokens [B, T], hx) -> (logits, hx)``,
such as :class:`structnets.models.CharLM`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Vocabulary", "stream_chunks", "bits_per_character", "sample"]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The characters a model knows, in index order."""

    characters: str

    @classmethod
    def build(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> Tensor:
        """Indices ``[len(text)]``; a ValueError names any character the model has never seen."""
        index = {char: i for i, char in enumerate(self.characters)}
        unknown = sorted({char for char in text if char not in index})
        if unknown:
            shown = ", ".join(repr(char) for char in unknown)
            raise ValueError(
                f"text holds {len(unknown)} character(s) outside the model's vocabulary: {shown}; "
                f"the vocabulary is {self.characters!r}"
            )
        return torch.tensor([index[char] for char in text], dtype=torch.long)

    def decode(self, indices: Tensor) -> str:
        return "".join(self.characters[i] for i in indices.tolist())


def stream_chunks(tokens: Tensor, batch_size: int, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive ``(inputs, targets)`` chunks of ``batch_size`` parallel streams.

    The text is cut into ``batch_size`` contiguous streams of ``S = (len - 1) // batch_size``
    predictions each (the last ``(len - 1) % batch_size`` characters are left out); row
    ``b`` of chunk ``k + 1`` continues row ``b`` of chunk ``k``, so a state carried from one
    chunk to the next is the state of the same stream. Targets are inputs shifted by one.

    Shapes:
        tokens: ``[len]``; each chunk: two ``[batch_size, <= bptt]`` tensors.
    """
    per_stream = (tokens.numel() - 1) // batch_size
    if per_stream < 1:
        raise ValueError(f"{tokens.numel()} characters are too few for {batch_size} streams")
    inputs = tokens[: batch_size * per_stream].view(batch_size, per_stream)
    targets = tokens[1 : batch_size * per_stream + 1].view(batch_size, per_stream)
    # Stream b is tokens[b * S : (b + 1) * S]; its targets are shifted by one within the text.
    for start in range(0, per_stream, bptt):
        yield inputs[:, start : start + bptt], targets[:, start : start + bptt]


@torch.no_grad()
def bits_per_character(model: nn.Module, tokens: Tensor, batch_size: int = 32, bptt: int = 256) -> float:
    """Mean ``-log2 p(next char)`` over ``tokens``, read as carried-state parallel streams.

    Raises:
        ValueError: the model's outputs are NaN or infinite, so there is no such figure.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, hx = 0.0, 0, None
    for inputs, targets in stream_chunks(tokens, batch_size, bptt):
        logits, hx = model(inputs.to(device), hx)
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).to(device), reduction="sum")
        total += float(nats)
        count += targets.numel()
    model.train(was_training)
    if not math.isfinite(total):
        raise ValueError(
            f"the bits per character came out {total}: the model's outputs are not finite "
            "(its weights hold NaN or infinity)"
        )
    return total / count / math.log(2)


@torch.no_grad()
def sample(
    model: nn.Module,
    vocabulary: Vocabulary,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    lead_in: str = "\n\n",
) -> str:
    """The prompt followed by ``length`` characters drawn from ``softmax(logits / temperature)``.

    The model first reads ``lead_in`` (not returned), by default a paragraph break, the
    separator between speeches in Tiny Shakespeare. Training carries the state across
    chunks, so a model rarely meets the zero state; read straight from it, a prompt such as
    ``"JULIET:"`` sent an under-trained model into garbage, while after a paragraph break
    (a state it knows) it wrote verse. ``lead_in=""`` starts from the zero state.
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one character")
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = vocabulary.encode(lead_in + prompt).to(device).unsqueeze(0)
    logits, hx = model(tokens)
    drawn = []
    for _ in range(length):
        probabilities = torch.softmax(logits[0, -1].float() / temperature, dim=-1).cpu()
        if not bool(torch.isfinite(probabilities).all()):
            raise ValueError("the model's outputs are not finite (its weights hold NaN or infinity); cannot sample")
        token = torch.multinomial(probabilities, 1, generator=generator)
        drawn.append(int(token))
        logits, hx = model(token.view(1, 1).to(device), hx)
    model.train(was_training)
    return prompt + vocabulary.decode(torch.tensor(drawn))
