"""Tiny Shakespeare (Karpathy's char-rnn data set): the text and its usual split.

About 1.1 million characters of Shakespeare's plays in one file, 65 distinct characters.
The canonical source is :data:`TINY_SHAKESPEARE_URL`; the loader reads the local copy
``tinyshakespeare/input.txt`` in the data directory (:mod:`structnets.train.data`).
"""

from __future__ import annotations

from pathlib import Path

from ..train.data import dataset_path

__all__ = ["TINY_SHAKESPEARE_URL", "load_tiny_shakespeare", "split_text"]

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def load_tiny_shakespeare(data_dir: str | Path | None = None) -> str:
    """The text of Tiny Shakespeare from the data directory (``tinyshakespeare/input.txt``)."""
    return dataset_path("tinyshakespeare", "input.txt", TINY_SHAKESPEARE_URL, data_dir).read_text(encoding="utf-8")


def split_text(text: str, validation_fraction: float = 0.1) -> tuple[str, str]:
    """The first ``1 - validation_fraction`` of the characters and the rest (the first 90% train)."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    cut = int(len(text) * (1.0 - validation_fraction))
    return text[:cut], text[cut:]
