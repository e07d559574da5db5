"""SST: its reader, word vectors, and root accuracies."""

import math
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from structnets.graphs.trees import Vocabulary, batch_trees, parse_ptb
from structnets.text.sst import load_sst, read_vectors, root_metrics


def test_load_sst_reads_the_data_directory(data_dir, tmp_path):
    dev = load_sst("dev", data_dir)
    assert len(dev) == 1101 and all(0 <= label <= 4 for label in dev[0].labels)
    assert [t.leaves for t in load_sst("dev", data_dir, limit=3)] == [t.leaves for t in dev[:3]]
    with pytest.raises(ValueError, match="SST split must be train, dev or test"):
        load_sst("valid", data_dir)
    with pytest.raises(FileNotFoundError, match="trainDevTestTrees_PTB.zip"):
        load_sst("train", tmp_path)


def test_vectors_file(tmp_path):
    vocabulary = Vocabulary(["<unk>", "good", "bad", "meh"])
    (tmp_path / "v.txt").write_text("3 3\ngood 1 2 3\nugly 0 0 1\n\nmeh 0 0 0\n")
    vectors, found = read_vectors(tmp_path / "v.txt", vocabulary, 3)
    assert vectors[1].tolist() == [1, 2, 3] and vectors[2].abs().sum() == 0
    # a word the file gives zeros is found all the same; one it lacks is not
    assert found.tolist() == [False, True, False, True]
    (tmp_path / "bad.txt").write_text("good 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected a word and 3 numbers, got 2"):
        read_vectors(tmp_path / "bad.txt", vocabulary, 3)


def _vectors(tmp_path, text: str, name: str = "vectors.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


VOCABULARY = Vocabulary(["<unk>", "good", "bad"])


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan", "+NAN"])
def test_nan_word_vectors_are_refused(tmp_path, value):
    path = _vectors(tmp_path, f"good 1 2 3\nbad 0.5 {value} 1\n")
    with pytest.raises(
        ValueError, match=rf"vectors.txt:2: the vector of 'bad' holds '{re.escape(value)}' \(number 2 of 3\)"
    ) as info:
        read_vectors(path, VOCABULARY, 3)
    assert str(info.value).startswith(f"{path}:2: ") and "word vectors must be finite" in str(info.value)
    # a word outside the vocabulary is checked too: the file is refused whatever the trees are
    path = _vectors(tmp_path, f"good 1 2 3\nunseen {value} 0 0\n")
    with pytest.raises(ValueError, match=r"vectors.txt:2: the vector of 'unseen' holds .* must be finite"):
        read_vectors(path, VOCABULARY, 3)


@pytest.mark.parametrize(
    "value, why",
    [("inf", "must be finite"), ("-Infinity", "must be finite"), ("1e999", "must be finite"), ("1e39", "float32")],
)
def test_infinite_word_vectors_are_refused(tmp_path, value, why):
    path = _vectors(tmp_path, f"good 1 2 {value}\n")
    with pytest.raises(
        ValueError, match=rf"vectors.txt:1: the vector of 'good' holds '{re.escape(value)}' \(number 3 of 3\); .*{why}"
    ):
        read_vectors(path, VOCABULARY, 3)


def test_word_vectors_with_the_wrong_number_of_values_are_refused(tmp_path):
    path = _vectors(tmp_path, "good 1 2 3\nbad 1 2 3 4\n")
    with pytest.raises(ValueError, match=r"vectors.txt:2: expected a word and 3 numbers, got 4 numbers"):
        read_vectors(path, VOCABULARY, 3)
    path = _vectors(tmp_path, "good 1 2 3\nbad  1 2\n")  # two spaces: an empty field
    with pytest.raises(
        ValueError, match=r"vectors.txt:2: the vector of 'bad' holds '', not a number \(number 1 of 3\)"
    ):
        read_vectors(path, VOCABULARY, 3)
    path = _vectors(tmp_path, "good 1 x 3\n")
    with pytest.raises(
        ValueError, match=r"vectors.txt:1: the vector of 'good' holds 'x', not a number \(number 2 of 3\)"
    ):
        read_vectors(path, VOCABULARY, 3)
    path = _vectors(tmp_path, " 1 2 3\n")
    with pytest.raises(ValueError, match=r"vectors.txt:1: the line starts with a space, where its word should be"):
        read_vectors(path, VOCABULARY, 3)


def test_duplicate_word_vectors_are_refused(tmp_path):
    path = _vectors(tmp_path, "good 1 2 3\nbad 0 0 0\ngood 4 5 6\n")
    with pytest.raises(ValueError, match=r"vectors.txt:3: the word 'good' again \(first on line 1\)"):
        read_vectors(path, VOCABULARY, 3)
    path = _vectors(tmp_path, "x 1 2 3\nx 1 2 3\n")  # even outside the vocabulary, and with the same numbers
    with pytest.raises(ValueError, match=r"vectors.txt:2: the word 'x' again"):
        read_vectors(path, VOCABULARY, 3)


@pytest.mark.parametrize("text", ["", "\n\n", "0 3\n"])
def test_an_empty_vectors_file_is_refused(tmp_path, text):
    with pytest.raises(ValueError, match=r"vectors.txt: no word vectors"):
        read_vectors(_vectors(tmp_path, text), VOCABULARY, 3)


def test_the_vectors_header_must_agree_with_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"vectors.txt:1: the header gives 300 numbers per word, expected 3"):
        read_vectors(_vectors(tmp_path, "2 300\ngood 1 2 3\n"), VOCABULARY, 3)
    # a truncated word2vec file: fewer vectors than its header announces
    with pytest.raises(ValueError, match=r"vectors.txt: the header announces 3 vectors, the file holds 2"):
        read_vectors(_vectors(tmp_path, "3 3\ngood 1 2 3\nbad 1 2 3\n"), VOCABULARY, 3)


def test_a_vectors_file_that_is_not_utf8_text_is_refused(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_bytes(b"good 1 2 3\nb\xe9d 1 2 3\n")
    with pytest.raises(ValueError, match=r"vectors.txt:2: not UTF-8 text \(byte 0xe9, byte 2 of the line\)"):
        read_vectors(path, VOCABULARY, 3)
    import gzip

    path.write_bytes(gzip.compress(b"good 1 2 3\n"))
    with pytest.raises(ValueError, match=r"vectors.txt is gzip-compressed; decompress it first"):
        read_vectors(path, VOCABULARY, 3)
    path.write_bytes(b"\xef\xbb\xbfgood 1 2 3\n")  # a byte-order mark is not part of the first word
    assert read_vectors(path, VOCABULARY, 3)[1].tolist() == [False, True, False]
    with pytest.raises(FileNotFoundError, match=r"no vectors file at .*missing.txt"):
        read_vectors(tmp_path / "missing.txt", VOCABULARY, 3)


_FIELDS = ["1", "-0.5", "2e-3", "nan", "inf", "-inf", "1e999", "x", "", "3 4", "good"]
_NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
_ROW = st.tuples(
    st.sampled_from(["good", "bad", "other", "more", "", "12"]),
    st.one_of(st.lists(_NUMBER, min_size=3, max_size=3), st.lists(st.sampled_from(_FIELDS), max_size=4)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ROW, max_size=5), st.booleans())
def test_the_vectors_reader_either_reads_right_or_names_file_and_line(rows, header):
    lines = [" ".join([word, *fields]) for word, fields in rows]
    if header:
        lines.insert(0, f"{len(rows)} 3")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "vectors.txt"
        path.write_text("".join(line + "\n" for line in lines))
        try:
            vectors, found = read_vectors(path, VOCABULARY, 3)
        except ValueError as error:
            assert re.match(rf"{re.escape(str(path))}(:\d+)?: ", str(error)), str(error)
            event("refused")
            return
    event("read")
    # read: every line was a word and three finite numbers, no word twice, and the rows are theirs
    assert bool(torch.isfinite(vectors).all())
    lines = [line for line in lines[header:] if line.strip()]  # blank lines are skipped
    words = [line.split(" ")[0] for line in lines]
    assert len(set(words)) == len(words) and all(words)
    for line in lines:
        word, *numbers = line.rstrip().split(" ")  # trailing spaces (fastText writes them) are dropped
        assert len(numbers) == 3 and all(math.isfinite(float(n)) for n in numbers)
        if word in VOCABULARY:
            expected = torch.tensor([float(n) for n in numbers]).tolist()
            assert found[VOCABULARY.id(word)] and vectors[VOCABULARY.id(word)].tolist() == expected
    assert int(found.sum()) == len({w for w in words if w in VOCABULARY})


def test_root_metrics_by_hand():
    # roots labelled 0 (negative), 2 (neutral) and 4 (positive); 2 + 1 + 1 nodes
    trees = [parse_ptb("(0 (1 a))"), parse_ptb("(2 b)"), parse_ptb("(4 c)")]
    batch = batch_trees(trees, Vocabulary.build(trees))
    logits = torch.full((4, 5), -10.0)
    logits[0, 1] = 0.0  # root 0: predicts class 1 (wrong fine, right binary: negative)
    logits[1, 1] = 0.0  # its leaf, labelled 1: right
    logits[2, 2] = 0.0  # neutral root: right fine, dropped from binary
    logits[3, 3], logits[3, 4] = 0.0, -0.5  # root labelled 4: wrong fine, right binary
    metrics = root_metrics(logits, batch)
    assert metrics["fine_accuracy"] == pytest.approx(1 / 3)
    assert metrics["binary_accuracy"] == 1.0 and metrics["binary_trees"] == 2 and metrics["trees"] == 3
    assert metrics["node_fine_accuracy"] == pytest.approx(2 / 4)
    neutral = batch_trees([trees[1]], Vocabulary.build(trees))
    assert root_metrics(torch.zeros(1, 5), neutral)["binary_accuracy"] is None  # no polar root: none, not NaN
