"""The Stanford Sentiment Treebank: its trees, word vectors for them, and its root accuracies.

SST (Socher et al. 2013) labels every phrase of every sentence 0-4 (very negative to very
positive) and ships PTB-bracketed trees, one sentence per line. Tai et al. (2015) report
two figures at the root: the 5-class (fine) accuracy, and the binary accuracy on the
sentences that are not neutral (0-1 negative, 3-4 positive).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from ..graphs.trees import Tree, TreeBatch, Vocabulary, read_ptb
from ..train.data import dataset_path

__all__ = [
    "SST_URL", "NUM_CLASSES", "NEUTRAL", "load_sst", "read_labelled_trees", "read_vectors", "load_vectors",
    "root_metrics",
]  # fmt: skip

logger = logging.getLogger(__name__)

SST_URL = "http://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
NUM_CLASSES = 5
NEUTRAL = 2
_FLOAT32_MAX = torch.finfo(torch.float32).max


def load_sst(split: str, data_dir: str | Path | None = None, *, limit: int | None = None) -> list[Tree]:
    """SST trees of ``split`` (``train``, ``dev`` or ``test``) from ``sst/<split>.txt`` in the data directory.

    The canonical source is :data:`SST_URL` (``trees/<split>.txt`` in the zip). ``limit``
    reads only the first trees.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"SST split must be train, dev or test, got {split!r}")
    return read_ptb(dataset_path("sst", f"{split}.txt", SST_URL, data_dir), limit=limit)


def read_labelled_trees(
    path: str | Path | None, split: str, data_dir: str | Path | None, limit: int | None
) -> list[Tree]:
    """SST trees from ``path`` (else the data directory's ``split``), with a label 0-4 at every node.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the file and line: a line that is not a tree (``path:line:column``),
            a label outside 0-4 or missing, a file without trees or not UTF-8.
    """
    trees = read_ptb(path, limit=limit) if path is not None else load_sst(split, data_dir, limit=limit)
    for tree in trees:
        bad = [label for label in tree.labels if label is None or not 0 <= label < NUM_CLASSES]
        if bad:
            raise ValueError(f"{tree.source}: SST labels must be integers 0-4 at every node, got {bad[0]}")
    return trees


def load_vectors(embedding: nn.Embedding, path: str | Path, vocabulary: Vocabulary) -> None:
    """Sets the rows of ``embedding`` whose words ``path`` has vectors for (:func:`read_vectors`).

    Raises:
        ValueError: as :func:`read_vectors`, and if the file covers no word of ``vocabulary``.
    """
    vectors, found = read_vectors(path, vocabulary, embedding.embedding_dim)
    if not bool(found.any()):
        raise ValueError(f"{path}: none of its words is in the training vocabulary of {len(vocabulary)}")
    with torch.no_grad():
        embedding.weight[found] = vectors[found].to(embedding.weight)
    logger.info("%s: vectors for %d of %d words", path, int(found.sum()), len(vocabulary))


def read_vectors(path: str | Path, vocabulary: Vocabulary, size: int) -> tuple[Tensor, Tensor]:
    """``(vectors [len(vocabulary), size], found [len(vocabulary)])`` from a text vectors file.

    The format is GloVe's and word2vec's text format: a word and its ``size`` numbers per
    line, separated by single spaces, with word2vec's optional ``count dimension`` header
    line; blank lines are skipped. ``found`` marks the vocabulary's words the file has a
    vector for; the other rows are zero.

    Every line is checked, whether or not its word is in the vocabulary, so that a file is
    accepted or refused whatever the training trees are.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the file and line: a line that is not UTF-8, that has another
            number of values than ``size`` or a value that is not a number, NaN or infinite
            (the message names the word), a word given twice, a header whose dimension is
            not ``size`` or whose count is not the number of lines; or a file without vectors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no vectors file at {path}")
    out = torch.zeros(len(vocabulary), size)
    found = torch.zeros(len(vocabulary), dtype=torch.bool)
    first_line: dict[str, int] = {}  # every word read, and its line
    announced = None
    with path.open("rb") as handle:  # bytes, so that a decoding error names its line
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\x1f\x8b"):
                raise ValueError(f"{path} is gzip-compressed; decompress it first (gunzip -k {path})")
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark is dropped
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[error.start]:02x}, byte {error.start + 1} of the line)"
                ) from None
            if not line.strip():
                continue  # blank lines hold nothing to lose
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
                announced, dimension = int(parts[0]), int(parts[1])  # word2vec's "count dimension" header
                if dimension != size:
                    raise ValueError(f"{path}:1: the header gives {dimension} numbers per word, expected {size}")
                continue
            if len(parts) != size + 1:
                raise ValueError(f"{path}:{number}: expected a word and {size} numbers, got {len(parts) - 1} numbers")
            word = parts[0]
            if not word:
                raise ValueError(f"{path}:{number}: the line starts with a space, where its word should be")
            if word in first_line:
                raise ValueError(f"{path}:{number}: the word {word!r} again (first on line {first_line[word]})")
            first_line[word] = number
            try:
                values = [float(v) for v in parts[1:]]
            except ValueError:
                bad = next(k for k, v in enumerate(parts[1:]) if not _is_number(v))
                raise ValueError(
                    f"{path}:{number}: the vector of {word!r} holds {parts[bad + 1]!r}, not a number "
                    f"(number {bad + 1} of {size})"
                ) from None
            # One sum finds NaN and infinity (the values are at most _FLOAT32_MAX, so it cannot overflow).
            if not math.isfinite(sum(values)) or max(values) > _FLOAT32_MAX or min(values) < -_FLOAT32_MAX:
                bad = next(k for k, v in enumerate(values) if not abs(v) <= _FLOAT32_MAX)
                why = "word vectors must be finite" if not math.isfinite(values[bad]) else "too large for float32"
                raise ValueError(
                    f"{path}:{number}: the vector of {word!r} holds {parts[bad + 1]!r} "
                    f"(number {bad + 1} of {size}); {why}"
                )
            if word in vocabulary:
                row = vocabulary.id(word)
                out[row] = torch.tensor(values)
                found[row] = True
    if not first_line:
        raise ValueError(f"{path}: no word vectors")
    if announced is not None and announced != len(first_line):
        raise ValueError(f"{path}: the header announces {announced} vectors, the file holds {len(first_line)}")
    return out, found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def root_metrics(logits: Tensor, batch: TreeBatch) -> dict[str, float | None]:
    """Fine and binary root accuracy, and node accuracy, of 5-class ``logits [num_nodes, 5]``.

    Binary: roots labelled neutral are dropped; the prediction is whichever side holds more
    probability under the 5-class model (as in Tai et al.). With no root left (every root
    neutral) the binary accuracy is None, so that ``metrics.json`` stays JSON (no NaN).
    """
    roots = logits[batch.roots]
    labels = batch.y[batch.roots]
    fine = float((roots.argmax(-1) == labels).float().mean())
    probabilities = roots.softmax(-1)
    polar = labels != NEUTRAL
    positive = probabilities[:, NEUTRAL + 1 :].sum(-1) > probabilities[:, :NEUTRAL].sum(-1)
    binary = float((positive[polar] == (labels[polar] > NEUTRAL)).float().mean()) if bool(polar.any()) else None
    labelled = batch.y >= 0
    return {
        "fine_accuracy": fine,
        "binary_accuracy": binary,
        "node_fine_accuracy": float((logits[labelled].argmax(-1) == batch.y[labelled]).float().mean()),
        "trees": int(labels.numel()),
        "binary_trees": int(polar.sum()),
    }
