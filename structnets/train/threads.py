"""A scoped torch thread count, for tasks whose steps are many small operations (sequence models, the SPH solver)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Runs the block with ``count`` intra-op threads (None: torch's choice), then restores the setting.

    A recurrent or memory network's step is hundreds of operations too small to split; on a
    busy 2-core machine two threads per operation ran many times slower than one.
    """
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
