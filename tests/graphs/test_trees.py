import json
import random

import pytest
import torch

from structnets.graphs.trees import (
    ProgramGraph,
    TreeSyntaxError,
    Vocabulary,
    batch_trees,
    dag_edges_from_networkx,
    parse_ptb,
    python_graph,
    read_ptb,
    tree_from_networkx,
    tree_from_python,
    tree_from_tuple,
)
from structnets.text.arithmetic import ArithmeticConfig, expression_tree, random_expression
from structnets.text.arithmetic import train as train_arithmetic
from structnets.text.sentiment import Cell, SentimentConfig, TreeSentiment, evaluate, read_vectors, train


def test_parse_ptb_structure():
    tree = parse_ptb("(3 (2 The) (4 (3 very) (4 good)))")
    assert tree.parents == [None, 0, 0, 2, 2]
    assert tree.slots == [0, 0, 1, 0, 1]
    assert tree.labels == [3, 2, 4, 3, 4]
    assert tree.tokens == [None, "The", None, "very", "good"]
    assert tree.leaves == ["The", "very", "good"] and tree.max_children == 2


def test_a_leaf_may_hold_spaces():
    assert parse_ptb(r"(2 (2 8 1\/2) (2 .))").leaves == [r"8 1\/2", "."]


@pytest.mark.parametrize(
    "text, where, message",
    [
        ("(2 (2 a) (2 b)", "1:1", "never closed"),
        ("(2 a))", "1:6", "without a matching"),
        ("(2 a) (2 b)", "1:7", "after the end of the tree"),
        ("((2 a))", "1:1", "without a label"),
        ("(x a)", "1:2", "label 'x' is not an integer"),
        ("(2 (3))", "1:4", "neither a token nor subtrees"),
        ("(2 (1 a) b)", "1:10", "one token or subtrees"),
        ("(2 a (1 b))", "1:6", "both a token and subtrees"),
        ("   ", "1:1", "empty tree"),
        ("a", "1:1", "outside any brackets"),
    ],
)
def test_malformed_brackets_name_line_and_column(text, where, message):
    with pytest.raises(TreeSyntaxError, match=rf"^trees.txt:{where}: .*{message}"):
        parse_ptb(text, source="trees.txt")


def test_read_ptb_reports_the_file_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("(2 (2 a) (2 b))\n\n(1 (2 a) (2 b)\n")
    with pytest.raises(TreeSyntaxError, match=r"t.txt:3:1: '\(' never closed"):
        read_ptb(path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no trees"):
        read_ptb(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        read_ptb(tmp_path / "missing.txt")


def test_tuple_trees_and_forest_batches():
    first = tree_from_tuple((("a", "b"), "c"), label=1)
    second = parse_ptb("(3 (2 d) (4 a))")
    vocabulary = Vocabulary.build([first])
    assert vocabulary.tokens == ["<unk>", "a", "b", "c"]
    batch = batch_trees([first, second], vocabulary)
    assert batch.roots.tolist() == [0, 5]
    assert batch.tree.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # child -> parent, offset by the first tree's five nodes
    assert batch.edge_index.tolist() == [[1, 2, 3, 4, 6, 7], [0, 1, 1, 0, 5, 5]]
    assert batch.slots.tolist() == [0, 0, 1, 1, 0, 1]
    assert batch.token_ids.tolist() == [-1, -1, 1, 2, 3, -1, 0, 1]  # "d" never seen: <unk>
    assert batch.unknown_tokens == 1 and batch.labels.tolist()[:5] == [1] * 5
    with pytest.raises(ValueError, match="empty list"):
        batch_trees([], vocabulary)
    with pytest.raises(ValueError, match="first token must be <unk>"):
        Vocabulary(["a"])


@pytest.mark.parametrize("cell", list(Cell))
def test_a_forest_gives_each_tree_what_it_gives_alone(cell):
    torch.manual_seed(0)
    trees = [parse_ptb("(3 (2 a) (4 (3 b) (4 c)))"), parse_ptb("(1 (0 c) (2 a))"), parse_ptb("(2 b)")]
    vocabulary = Vocabulary.build(trees)
    model = TreeSentiment(len(vocabulary), SentimentConfig(cell=cell, embedding_size=6, hidden_size=5)).eval()
    together = model(batch_trees(trees, vocabulary))
    alone = torch.cat([model(batch_trees([t], vocabulary)) for t in trees])
    torch.testing.assert_close(together, alone)


def test_only_the_nary_cell_tells_left_from_right():
    torch.manual_seed(0)
    left_right, right_left = parse_ptb("(2 (2 a) (2 b))"), parse_ptb("(2 (2 b) (2 a))")
    vocabulary = Vocabulary.build([left_right])
    for cell, differs in [(Cell.NARY, True), (Cell.CHILDSUM, False), (Cell.CHILDSUM_GRU, False)]:
        model = TreeSentiment(len(vocabulary), SentimentConfig(cell=cell, embedding_size=6, hidden_size=5)).eval()
        roots = [model(batch_trees([t], vocabulary))[0] for t in (left_right, right_left)]
        assert (not torch.allclose(*roots)) is differs


def test_vectors_file(tmp_path):
    vocabulary = Vocabulary(["<unk>", "good", "bad"])
    (tmp_path / "v.txt").write_text("2 3\ngood 1 2 3\nugly 0 0 1\n")
    vectors, found = read_vectors(tmp_path / "v.txt", vocabulary, 3)
    assert found == 1 and vectors[1].tolist() == [1, 2, 3] and vectors[2].abs().sum() == 0
    (tmp_path / "bad.txt").write_text("good 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected a word and 3 numbers, got 2"):
        read_vectors(tmp_path / "bad.txt", vocabulary, 3)


def test_sst_training_learns_and_evaluates(tmp_path, data_dir):
    config = SentimentConfig(data_dir=str(data_dir), limit=200, epochs=3, embedding_size=16, hidden_size=16)
    metrics = train(config, tmp_path / "run", progress=False)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0]
    assert set(metrics["dev"]) >= {"fine_accuracy", "binary_accuracy", "unknown_tokens"}
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["vocabulary"][0] == "<unk>"
    result = evaluate(tmp_path / "run", data_dir / "sst" / "dev.txt", tmp_path / "eval")
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["trees"] == 1101 and on_disk["binary_trees"] == 872
    assert 0 <= result["fine_accuracy"] <= 1 and result["unknown_tokens"] > 0


def test_labels_and_arity_are_checked(tmp_path, data_dir):
    (tmp_path / "wide.txt").write_text("(2 (2 a) (2 b) (2 c))\n")
    (tmp_path / "label.txt").write_text("(7 (2 a) (2 b))\n")
    dev = str(data_dir / "sst" / "dev.txt")
    with pytest.raises(ValueError, match="wide.txt:1: a node has 3 children; the binary Tree-LSTM takes 2"):
        train(SentimentConfig(data=str(tmp_path / "wide.txt"), dev=dev), tmp_path / "r")
    with pytest.raises(ValueError, match="label.txt:1: SST labels must be integers 0-4"):
        train(SentimentConfig(data=str(tmp_path / "label.txt"), dev=dev), tmp_path / "r")


def test_python_source_becomes_an_ordered_tree():
    tree = tree_from_python("(3 - 4) * x")
    assert tree.tokens == ["BinOp", "BinOp", "3", "Sub", "4", "Mult", "Name:x"]
    assert tree.parents == [None, 0, 1, 1, 1, 0, 0]
    assert tree.slots == [0, 0, 0, 1, 2, 1, 2]
    assert tree.leaves == ["3", "Sub", "4", "Mult", "Name:x"]
    with pytest.raises(SyntaxError):
        tree_from_python("(3 -")


def test_random_expressions_have_the_asked_depth_and_value():
    rng = random.Random(0)
    for depth in range(0, 6):
        for _ in range(20):
            expression = random_expression(depth, rng)
            tree, value = expression_tree(expression)
            assert value == eval(expression) % 10  # noqa: S307  (test-only check against Python itself)
            # operator depth: BinOps on the longest root-to-leaf path
            binops = [t == "BinOp" for t in tree.tokens]
            deepest = 0
            for node in range(len(tree)):
                count, at = 0, node
                while at is not None:
                    count += binops[at]
                    at = tree.parents[at]
                deepest = max(deepest, count)
            assert deepest == depth
    with pytest.raises(ValueError, match="only \\+ - \\* and integer literals"):
        expression_tree("2 / 3")


def test_arithmetic_task_writes_its_table_and_plot(tmp_path):
    config = ArithmeticConfig(train_depth=2, test_depth=3, train_examples=200, test_examples_per_depth=20, epochs=2)
    metrics = train_arithmetic(config, tmp_path / "run", progress=False)
    assert list(metrics["accuracy_by_depth"]) == ["1", "2", "3"]
    assert all(0 <= v <= 1 for v in metrics["accuracy_by_depth"].values())
    assert (tmp_path / "run" / "accuracy_by_depth.png").stat().st_size > 1000
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["vocabulary"][0] == "<unk>"
    with pytest.raises(ValueError, match="train_depth <= test_depth"):
        ArithmeticConfig(train_depth=4, test_depth=3)


def test_networkx_trees_and_dags():
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_edge("S", "NP", order=0)
    graph.add_edge("S", "VP", order=1)
    graph.add_edge("VP", "V", order=0)
    graph.add_edge("VP", "O", order=1)
    for node in graph:
        graph.nodes[node]["token"] = node.lower()
    tree = tree_from_networkx(graph)
    assert tree.tokens == ["s", "np", "vp", "v", "o"] and tree.parents == [None, 0, 0, 2, 2]
    assert tree.slots == [0, 0, 1, 0, 1]
    undirected = tree_from_networkx(graph.to_undirected(), root="S")
    assert undirected.parents == [None, 0, 0, 2, 2]
    graph.add_edge("O", "S")
    with pytest.raises(ValueError, match="not a tree: the graph has the cycle"):
        tree_from_networkx(graph)
    with pytest.raises(ValueError, match="empty tree"):
        tree_from_networkx(nx.DiGraph())
    with pytest.raises(ValueError, match="node 'c' has 2 parents"):
        tree_from_networkx(nx.DiGraph([("a", "c"), ("b", "c"), ("r", "a"), ("r", "b")]))

    dag = nx.DiGraph([("x", "y"), ("x", "z"), ("y", "z")])
    edge_index, nodes = dag_edges_from_networkx(dag)
    assert nodes == ["x", "y", "z"] and edge_index.tolist() == [[0, 0, 1], [1, 2, 2]]
    # A DAG-RNN over it: the GRU cell sums what arrives along the edges, leaves first.
    import structnets as sn

    h = sn.propagate(sn.GRUCell(3, 4), torch.randn(3, 3), edge_index, sn.Topological())
    assert h.shape == (3, 4)
    dag.add_edge("z", "x")
    with pytest.raises(ValueError, match="not a DAG: the graph has the cycle"):
        dag_edges_from_networkx(dag)


def test_bidirectional_pass_gives_leaves_their_context():
    from structnets.models import TreeClassifier

    torch.manual_seed(0)
    trees = [tree_from_python("a + b"), tree_from_python("a + c")]  # BinOp, Name:a, Add, Name:b|c
    vocabulary = Vocabulary.build(trees)
    batch = batch_trees(trees, vocabulary)
    for bidirectional in (False, True):
        model = TreeClassifier(len(vocabulary), 3, 6, 5, num_children=3, bidirectional=bidirectional)
        out = model(batch)
        # Node 1 and node 5 are the leaf "a" of each tree; only its sibling differs.
        assert torch.allclose(out[1], out[5]) is (not bidirectional)


def test_trees_command_line(tmp_path, data_dir, capsys):
    from structnets.cli import main

    common = ["--data-dir", str(data_dir), "--limit", "30", "--epochs", "1", "--no-progress"]
    assert (
        main(["trees", "train", *common, "--embedding-size", "8", "--hidden-size", "8", "--out", str(tmp_path / "run")])
        == 0
    )
    dev = str(data_dir / "sst" / "dev.txt")
    assert (
        main(["trees", "evaluate", "--model", str(tmp_path / "run"), "--data", dev, "--out", str(tmp_path / "ev")]) == 0
    )
    assert "binary" in capsys.readouterr().out
    (tmp_path / "bad.txt").write_text("(2 (2 a) (2 b)\n")
    bad = ["trees", "evaluate", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "bad.txt")]
    assert main([*bad, "--out", str(tmp_path / "ev2")]) == 2
    assert "bad.txt:1:1: '(' never closed" in capsys.readouterr().err
    arithmetic = ["trees", "arithmetic", "--train-depth", "1", "--test-depth", "2", "--train-examples", "50"]
    assert (
        main(
            [
                *arithmetic,
                "--epochs",
                "1",
                "--test-examples-per-depth",
                "10",
                "--out",
                str(tmp_path / "ar"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ar" / "metrics.json").read_text())["train_depths"] == [1]


def test_python_graph_links_definitions_to_later_uses():
    import structnets as sn

    graph = python_graph("x = 1\ny = x + 2\nx = x * y\nx += 1\nprint(x)")
    tokens = graph.tree.tokens
    flows = graph.edge_index[:, graph.edge_type == ProgramGraph.DATA_FLOW].t().tolist()
    # x@2 -> both reads of the first x (the read in "x = x * y" happens before the write);
    # y@5 -> its read; the x written at 11 is read by "x += 1", whose x is read by print.
    assert flows == [[2, 7], [2, 13], [5, 15], [11, 17], [17, 23]]
    assert all(tokens[a] == tokens[b] for a, b in flows)
    ast_edges = graph.edge_index[:, graph.edge_type == ProgramGraph.AST]
    assert ast_edges.shape[1] == len(tokens) - 1
    assert python_graph("x = 1\nprint(x)", data_flow=False).edge_type.tolist() == [ProgramGraph.AST] * 7
    # A DAG, so the topological schedule runs a DAG-RNN over it.
    loop = python_graph("total = 0\nfor i in range(3):\n    total = total + i\nprint(total)")
    h = sn.propagate(sn.GRUCell(4, 6), torch.randn(len(loop.tree), 4), loop.edge_index, sn.Topological())
    assert h.shape == (len(loop.tree), 6) and torch.isfinite(h).all()
