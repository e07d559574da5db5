"""Tree2Seq: the tree encoder's memory edges, teacher forcing against stepping, greedy against beam
search, a row alone against the batch, training and a checkpoint round trip."""

import pytest
import torch

from structnets.graphs.trees import Vocabulary, batch_trees, tree_from_python
from structnets.models import AttentionScore, CellKind, Tree2Seq, Tree2SeqConfig, TreeCell, decoder_inputs
from structnets.models.seq2seq import sequence_loss
from structnets.models.tree2seq import tree_memory_edges
from structnets.train.checkpoint import load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, BOS, EOS = 0, 1, 2
EXPRESSIONS = ["(1 + 2) * 3", "4", "a - (b * (5 + c))", "(7 if a < b else 8) + 9", "c * 2"]
TREES = [tree_from_python(expression) for expression in EXPRESSIONS]
VOCABULARY = Vocabulary.build(TREES)


def _model(**overrides) -> Tree2Seq:
    options = dict(
        source_vocab=len(VOCABULARY), target_vocab=8, embedding_size=6, hidden_size=8, num_layers=2, num_children=3
    )
    torch.manual_seed(0)
    model = Tree2Seq(Tree2SeqConfig(**(options | overrides))).double().eval()
    with torch.no_grad():  # weights large enough that decoding differs from row to row, and some rows end
        for parameter in model.parameters():
            parameter.mul_(2.0)
        model.generator.bias[EOS] += 2.0
    return model


def _forest(indices=None):
    return batch_trees(TREES if indices is None else [TREES[k] for k in indices], VOCABULARY)


@pytest.mark.parametrize("repeat", [1, 3])
def test_the_memory_edges_join_exactly_each_programs_nodes_to_its_rows(repeat):
    forest = _forest()
    model = _model()
    encoded = model.encode(forest, None, repeat=repeat)
    senders, receivers = encoded.memory.edge_index
    assert encoded.memory.num_receivers == len(TREES) * repeat
    for row in range(len(TREES) * repeat):
        tree = row // repeat
        nodes = senders[receivers == row].sort().values
        assert torch.equal(nodes, torch.arange(int(forest.ptr[tree]), int(forest.ptr[tree + 1])))
    assert senders.shape[0] == forest.x.shape[0] * repeat  # each node once per row of its tree, no other edge
    assert torch.equal(
        tree_memory_edges(forest.batch, len(TREES)), torch.stack([torch.arange(len(forest.x)), forest.batch])
    )


@pytest.mark.parametrize("cell", [CellKind.LSTM, CellKind.GRU], ids=lambda c: c.value)
@pytest.mark.parametrize("tree_cell", list(TreeCell), ids=lambda c: c.value)
def test_the_decoder_starts_from_the_roots_state_in_every_layer(cell, tree_cell):
    model = _model(cell=cell, tree_cell=tree_cell)
    forest = _forest()
    encoded = model.encode(forest, None)
    roots = forest.ptr[:-1]
    for layer in range(2):
        state = encoded.state.cells[layer]
        h = state[0] if cell is CellKind.LSTM else state
        torch.testing.assert_close(h, encoded.memory.values[: len(forest.x)][roots])  # values are node states, in order
    assert torch.all(encoded.state.feed == 0)


@pytest.mark.parametrize("score", [*AttentionScore, None], ids=lambda s: "none" if s is None else s.value)
@pytest.mark.parametrize("cell", [CellKind.LSTM, CellKind.GRU], ids=lambda c: c.value)
def test_beam_search_of_width_one_is_greedy_decoding(cell, score):
    model = _model(cell=cell, attention=score, input_feeding=score is not None)
    ended_early = 0
    for indices in ([0, 1, 2, 3, 4], [2], [4, 0, 3]):
        forest = _forest(indices)
        greedy = model.greedy(forest, None, 9)
        assert torch.equal(model.beam_search(forest, None, 9, width=1), greedy)
        assert torch.equal(model.beam_search(forest, None, 9, width=1, length_penalty=0.0), greedy)
        ended_early += int((greedy[:, -1] == PAD).sum())
    assert ended_early > 0  # the eos branch was taken


@pytest.mark.parametrize(
    "cell, score, input_feeding, tree_cell",
    [
        (CellKind.LSTM, AttentionScore.GENERAL, True, TreeCell.NARY),
        (CellKind.LSTM, AttentionScore.ADDITIVE, False, TreeCell.CHILDSUM),
        (CellKind.GRU, AttentionScore.DOT, True, TreeCell.CHILDSUM_GRU),
        (CellKind.LSTM, None, False, TreeCell.NARY),
    ],
)
def test_teacher_forcing_equals_stepping_through_the_gold_prefix(cell, score, input_feeding, tree_cell):
    model = _model(cell=cell, attention=score, input_feeding=input_feeding, tree_cell=tree_cell)
    forest = _forest([0, 2, 1])
    target_out = torch.tensor([[3, 4, 5, EOS, PAD, PAD], [7, 6, 5, 4, 3, EOS], [EOS, PAD, PAD, PAD, PAD, PAD]])
    target_in = decoder_inputs(target_out, BOS)
    logits = model(forest, None, target_in)
    encoded = model.encode(forest, None)
    state, stepped = encoded.state, []
    for t in range(target_in.shape[1]):
        step_logits, state = model.step(target_in[:, t], state, encoded)
        stepped.append(step_logits)
    stepped = torch.stack(stepped, 1)
    torch.testing.assert_close(logits, stepped)
    torch.testing.assert_close(sequence_loss(logits, target_out, PAD), sequence_loss(stepped, target_out, PAD))


def test_a_tree_decodes_the_same_alone_as_in_a_batch():
    model = _model(attention=AttentionScore.ADDITIVE)
    forest = _forest()
    target_in = torch.randint(3, 8, (len(TREES), 5))
    logits = model(forest, None, target_in)
    greedy, beams = model.greedy(forest, None, 6), model.beam_search(forest, None, 6, width=3)
    for row in range(len(TREES)):
        alone = _forest([row])
        torch.testing.assert_close(model(alone, None, target_in[row : row + 1]), logits[row : row + 1])
        assert torch.equal(model.greedy(alone, None, 6), greedy[row : row + 1])
        assert torch.equal(model.beam_search(alone, None, 6, width=3), beams[row : row + 1])


def test_a_few_training_steps_lower_the_loss_and_a_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = Tree2Seq(Tree2SeqConfig(len(VOCABULARY), 8, embedding_size=8, hidden_size=16, num_layers=1))
    forest = _forest()
    target_out = torch.tensor([[3 + k % 5, 3 + (k * 2) % 5, EOS] for k in range(len(TREES))])
    target_in = decoder_inputs(target_out, BOS)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = sequence_loss(model(forest, None, target_in), target_out, PAD)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    save_checkpoint(tmp_path / "model.pt", model, task="tree2seq")
    again, checkpoint = load_model(tmp_path / "model.pt", task="tree2seq")
    assert (
        isinstance(again, Tree2Seq) and again.config == model.config and checkpoint.model_config["tree_cell"] == "nary"
    )
    assert torch.equal(again(forest, None, target_in), model(forest, None, target_in))
    assert torch.equal(again.beam_search(forest, None, 4), model.beam_search(forest, None, 4))


def test_config_is_checked():
    with pytest.raises(ValueError, match="num_children"):
        Tree2SeqConfig(10, 8, num_children=0)
