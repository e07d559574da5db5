"""The Tree-LSTM classifier: one model for SST (tokens at the leaves) and for programs (a token at every node)."""

import pytest
import torch

from structnets.core.cells import ChildSumTreeLSTMCell, LSTMCell
from structnets.graphs.trees import Vocabulary, batch_trees, parse_ptb, tree_from_python
from structnets.models import TreeCell, TreeClassifier, TreeClassifierConfig
from structnets.train.checkpoint import load_model, save_checkpoint

SENTENCES = ["(3 (2 a) (4 (3 b) (4 c)))", "(1 (0 c) (2 a))", "(2 b)"]


def _model(vocabulary, cell, **sizes):
    config = TreeClassifierConfig(len(vocabulary), 5, embedding_size=6, hidden_size=5, cell=cell, **sizes)
    return TreeClassifier(config).eval()


@pytest.mark.parametrize("cell", list(TreeCell))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_forest_gives_each_tree_what_it_gives_alone(cell, bidirectional):
    trees = [parse_ptb(text) for text in SENTENCES]
    vocabulary = Vocabulary.build(trees)
    model = _model(vocabulary, cell, bidirectional=bidirectional, dropout=0.3)
    together = model(batch_trees(trees, vocabulary))
    alone = torch.cat([model(batch_trees([t], vocabulary)) for t in trees])
    torch.testing.assert_close(together, alone)
    assert together.shape == (sum(len(t) for t in trees), 5)


def test_only_the_nary_cell_tells_left_from_right():
    left_right, right_left = parse_ptb("(2 (2 a) (2 b))"), parse_ptb("(2 (2 b) (2 a))")
    vocabulary = Vocabulary.build([left_right])
    for cell, differs in [(TreeCell.NARY, True), (TreeCell.CHILDSUM, False), (TreeCell.CHILDSUM_GRU, False)]:
        model = _model(vocabulary, cell)
        roots = [model(batch_trees([t], vocabulary))[0] for t in (left_right, right_left)]
        assert (not torch.allclose(*roots)) is differs


def test_inner_nodes_without_a_token_read_a_zero_input():
    """A chain a -> (inner) -> (inner) under the child-sum Tree-LSTM is an LSTM fed [e_a, 0, 0]."""
    tree = parse_ptb("(2 (2 (2 a)))")
    vocabulary = Vocabulary.build([tree])
    config = TreeClassifierConfig(len(vocabulary), 3, embedding_size=4, hidden_size=6, cell=TreeCell.CHILDSUM)
    model = TreeClassifier(config).double().eval()
    out = model(batch_trees([tree], vocabulary))
    lstm = LSTMCell(4, 6).double()
    assert isinstance(model.cell, ChildSumTreeLSTMCell)
    lstm.load_state_dict(model.cell.state_dict())
    inputs = [model.embedding.weight[vocabulary.id("a")], torch.zeros(4, dtype=torch.double)]
    state = None
    for x in [inputs[0], inputs[1], inputs[1]]:
        state = lstm(x.unsqueeze(0), state)
    # the root is node 0 and reads the leaf's state after two zero-input steps
    torch.testing.assert_close(out[0], model.output(state[0][0]))


def test_bidirectional_pass_gives_leaves_their_context():
    trees = [tree_from_python("a + b"), tree_from_python("a + c")]  # BinOp, Name:a, Add, Name:b|c
    vocabulary = Vocabulary.build(trees)
    batch = batch_trees(trees, vocabulary)
    for bidirectional in (False, True):
        config = TreeClassifierConfig(len(vocabulary), 3, 6, 5, num_children=3, bidirectional=bidirectional)
        out = TreeClassifier(config)(batch)
        # Node 1 and node 5 are the leaf "a" of each tree; only its sibling differs.
        assert torch.allclose(out[1], out[5]) is (not bidirectional)


def test_the_readme_call_and_a_round_trip_through_a_checkpoint(tmp_path):
    programs = [tree_from_python("(3 - 4) * 2"), tree_from_python("7 + 1")]
    vocabulary = Vocabulary.build(programs)
    model = TreeClassifier(TreeClassifierConfig(len(vocabulary), num_classes=10, num_children=3)).eval()
    batch = batch_trees(programs, vocabulary)
    roots = model(batch)[batch.roots]
    assert roots.shape == (2, 10)
    save_checkpoint(tmp_path / "model.pt", model, task="arithmetic")
    again, checkpoint = load_model(tmp_path, task="arithmetic")
    assert again.config == model.config and checkpoint.model_config["cell"] == "nary"
    torch.testing.assert_close(again(batch)[batch.roots], roots)


def test_config_is_checked():
    with pytest.raises(ValueError, match="num_children must be positive"):
        TreeClassifierConfig(5, 2, num_children=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        TreeClassifierConfig(5, 2, dropout=1.0)
