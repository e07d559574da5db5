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


# ---------------------------------------------------------------- PyG containers and export


def test_tensors_and_a_pyg_loaders_batches_are_taken():
    from torch_geometric.loader import DataLoader

    trees = [parse_ptb(text) for text in SENTENCES * 2]
    vocabulary = Vocabulary.build(trees)
    model = _model(vocabulary, TreeCell.NARY, bidirectional=True)
    batch = batch_trees(trees, vocabulary)
    expected = model(batch)
    assert_close = torch.testing.assert_close
    assert_close(model(batch.x, batch.edge_index, batch.edge_attr), expected)
    loaded = list(DataLoader([t.to_data(vocabulary) for t in trees], batch_size=4))
    assert [b.num_graphs for b in loaded] == [4, 2]
    assert_close(torch.cat([model(b) for b in loaded]), expected)
    assert_close(torch.cat([model(b)[b.roots] for b in loaded]), expected[batch.roots])
    with pytest.raises(ValueError, match="child slot as edge_attr"):
        model(batch.x, batch.edge_index)
    with pytest.raises(ValueError, match="token ids"):
        model(batch.x.float(), batch.edge_index, batch.edge_attr)


def _onnx_outputs(module, args, dynamic_shapes, path):
    ort = pytest.importorskip("onnxruntime")
    program = torch.onnx.export(module, args, dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False)
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("cell", "bidirectional"), [(TreeCell.NARY, True), (TreeCell.CHILDSUM_GRU, False)])
def test_export_and_onnx_take_forests_of_any_size(cell, bidirectional, tmp_path):
    """Exported once, the program gives eager's logits on forests of other sizes and depths."""
    torch.manual_seed(0)
    forests = [
        [tree_from_python(s) for s in ("f(a, b) + 3 * c", "x", "((a + b) * (c - d)) / (e + f(g))")],
        [tree_from_python(s) for s in ("a + b", "-a")],
    ]
    vocabulary = Vocabulary.build([t for forest in forests for t in forest])
    model = _model(vocabulary, cell, num_children=4, bidirectional=bidirectional)
    program = model.exportable(max_levels=5)
    shapes = program.dynamic_shapes()
    exported = torch.export.export(program, program.example_inputs(), dynamic_shapes=shapes)
    session = _onnx_outputs(program, program.example_inputs(), shapes, tmp_path / "tree.onnx")
    for forest in forests:
        batch = batch_trees(forest, vocabulary)
        inputs = program.inputs(batch)
        assert any(level.numel() == 0 for level in inputs[3])  # shallower than the bound
        expected = model(batch)
        torch.testing.assert_close(exported.module()(*inputs), expected, atol=1e-6, rtol=1e-6)
        flat = [value for part in inputs for value in (part if isinstance(part, list) else [part])]
        feeds = {i.name: value.numpy() for i, value in zip(session.get_inputs(), flat)}
        onnx = torch.from_numpy(session.run(None, feeds)[0])
        torch.testing.assert_close(onnx, expected.detach(), atol=1e-5, rtol=1e-5)
    # Deeper than the bound: refused here; a schedule missing nodes gives NaN, not wrong numbers.
    with pytest.raises(ValueError, match="more than the 3 the schedule holds"):
        model.exportable(max_levels=3).inputs(batch_trees(forests[0], vocabulary))
    tokens, edge_index, edge_attr, up_nodes, up_edges, down_nodes, down_edges = program.inputs(batch)
    up_nodes = [up_nodes[0][1:], *up_nodes[1:]]
    assert torch.isnan(
        exported.module()(tokens, edge_index, edge_attr, up_nodes, up_edges, down_nodes, down_edges)
    ).all()
