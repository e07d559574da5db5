"""The Stanford Sentiment Treebank: its trees, word vectors for them, and its root accuracies.

SST (Socher et al. 2013) labels every phrase of every sentence 0-4 (very negative to very
positive) and ships PTB-bracketed trees, one sentence per line. Tai et al. (2015) report
two figures at the root: the 5-class (fine) accuracy, and the binary accuracy on the
sentences that are not neutral (0-1 negative, 3-4 positive).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ..graphs.trees import Tree, TreeBatch, Vocabulary, read_ptb
from ..train.data import dataset_path

__all__ = ["SST_URL", "NUM_CLASSES", "NEUTRAL", "load_sst", "read_vectors", "root_metrics"]

SST_URL = "http://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
NUM_CLASSES = 5
NEUTRAL = 2


def load_sst(split: str, data_dir: str | Path | None = None, *, limit: int | None = None) -> list[Tree]:
    """SST trees of ``split`` (``train``, ``dev`` or ``test``) from ``sst/<split>.txt`` in the data directory.

    The canonical source is :data:`SST_URL` (``trees/<split>.txt`` in the zip). ``limit``
    reads only the first trees.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"SST split must be train, dev or test, got {split!r}")
    return read_ptb(dataset_path("sst", f"{split}.txt", SST_URL, data_dir), limit=limit)


def read_vectors(path: str | Path, vocabulary: Vocabulary, size: int) -> tuple[Tensor, int]:
    """``(vectors [len(vocabulary), size], found)`` from a text vectors file; rows it lacks are zero.

    The format is GloVe's and word2vec's text format: a word and its numbers per line, with
    word2vec's optional ``count dimension`` header line.
    """
    path = Path(path)
    out = torch.zeros(len(vocabulary), size)
    found = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec's "count dimension" header
            if len(parts) != size + 1:
                raise ValueError(f"{path}:{number}: expected a word and {size} numbers, got {len(parts) - 1} numbers")
            if parts[0] in vocabulary:
                try:
                    out[vocabulary.id(parts[0])] = torch.tensor([float(v) for v in parts[1:]])
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: {error}") from None
                found += 1
    return out, found


def root_metrics(logits: Tensor, batch: TreeBatch) -> dict[str, float]:
    """Fine and binary root accuracy, and node accuracy, of 5-class ``logits [num_nodes, 5]``.

    Binary: roots labelled neutral are dropped; the prediction is whichever side holds more
    probability under the 5-class model (as in Tai et al.).
    """
    roots = logits[batch.roots]
    labels = batch.y[batch.roots]
    fine = float((roots.argmax(-1) == labels).float().mean())
    probabilities = roots.softmax(-1)
    polar = labels != NEUTRAL
    positive = probabilities[:, NEUTRAL + 1 :].sum(-1) > probabilities[:, :NEUTRAL].sum(-1)
    binary = float((positive[polar] == (labels[polar] > NEUTRAL)).float().mean()) if bool(polar.any()) else math.nan
    labelled = batch.y >= 0
    return {
        "fine_accuracy": fine,
        "binary_accuracy": binary,
        "node_fine_accuracy": float((logits[labelled].argmax(-1) == batch.y[labelled]).float().mean()),
        "trees": int(labels.numel()),
        "binary_trees": int(polar.sum()),
    }
