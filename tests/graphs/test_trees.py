import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch

from structnets.graphs.batch import collate
from structnets.graphs.trees import (
    ProgramGraph,
    Tree,
    TreeBatch,
    TreeData,
    TreeSyntaxError,
    Vocabulary,
    batch_trees,
    chain_data,
    dag_edges_from_networkx,
    parse_ptb,
    python_graph,
    read_ptb,
    tree_data,
    tree_from_networkx,
    tree_from_python,
    tree_from_tuple,
)


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
        ("(-1 a)", "1:2", "label '-1' is negative"),
        ("(2 (1_0 a))", "1:5", "label '1_0' is not an integer"),
        ("(\u0663 a)", "1:2", "label '\u0663' is not an integer"),  # an Arabic-Indic 3: int() takes it
        ("(2 (2.5 a))", "1:5", "label '2.5' is not an integer"),
        ("(1234567890123456789 a)", "1:2", "label '1234567890123456789'... is too large"),
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
    # limit stops reading before the broken third line
    assert len(read_ptb(path, limit=1)) == 1


def test_read_ptb_names_the_line_of_a_byte_that_is_not_utf8(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"(2 (2 a) (2 b))\r\n(2 (2 caf\xe9) (2 b))\n")
    with pytest.raises(ValueError, match=r"t.txt:2:10: not UTF-8 text \(byte 0xe9\)"):
        read_ptb(path)
    path.write_bytes(b"\xef\xbb\xbf(2 (2 a) (2 b))\n")  # a byte-order mark is dropped
    assert read_ptb(path)[0].leaves == ["a", "b"]
    import gzip

    path.write_bytes(gzip.compress(b"(2 (2 a) (2 b))\n"))
    with pytest.raises(ValueError, match=r"t.txt is gzip-compressed; decompress it first"):
        read_ptb(path)


def test_tuple_trees_and_forest_batches():
    first = tree_from_tuple((("a", "b"), "c"), label=1)
    second = parse_ptb("(3 (2 d) (4 a))")
    vocabulary = Vocabulary.build([first])
    assert vocabulary.tokens == ["<unk>", "a", "b", "c"]
    batch = batch_trees([first, second], vocabulary)
    assert isinstance(batch, TreeBatch) and isinstance(batch, Batch) and batch.num_graphs == 2
    assert batch.roots.tolist() == [0, 5] and batch.ptr.tolist() == [0, 5, 8]
    assert batch.batch.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # child -> parent, offset by the first tree's five nodes
    assert batch.edge_index.tolist() == [[1, 2, 3, 4, 6, 7], [0, 1, 1, 0, 5, 5]]
    assert batch.edge_attr.tolist() == [0, 0, 1, 1, 0, 1]
    assert batch.x.tolist() == [-1, -1, 1, 2, 3, -1, 0, 1]  # "d" never seen: <unk>
    assert batch.unknown_tokens == 1 and batch.y.tolist() == [1, 1, 1, 1, 1, 3, 2, 4]
    with pytest.raises(ValueError, match="empty list"):
        batch_trees([], vocabulary)
    with pytest.raises(ValueError, match="first token must be <unk>"):
        Vocabulary(["a"])
    two_roots = Tree([None, 0, None], [0, 0, 0], [None] * 3, ["a", "b", "c"], "forest.txt:3")
    with pytest.raises(ValueError, match="forest.txt:3: node 0 must be the tree's one root"):
        batch_trees([two_roots], vocabulary)


def test_a_tree_batch_is_the_container_molecules_use():
    trees = [parse_ptb("(3 (2 a) (4 (3 b) (4 c)))"), parse_ptb("(2 b)"), parse_ptb("(1 (0 c) (2 a))")]
    vocabulary = Vocabulary.build(trees[:1])
    batch = batch_trees(trees, vocabulary)
    # the same Batch as structnets.graphs.batch.collate (and PyG) make of one Data per tree
    reference = collate([tree_data(t, vocabulary) for t in trees])
    for key in ("x", "y", "edge_index", "edge_attr", "batch", "ptr"):
        assert torch.equal(batch[key], reference[key]), key
    # and it comes apart again into the trees
    for alone, tree in zip(batch.to_data_list(), trees):
        single = tree_data(tree, vocabulary)
        assert alone.num_nodes == len(tree)
        for key in ("x", "y", "edge_index", "edge_attr"):
            assert torch.equal(alone[key], single[key]), key
    assert batch.to("cpu") is batch  # moved in place: the cached levels stay with edge_index


@st.composite
def _random_trees(draw):
    trees = []
    for _ in range(draw(st.integers(1, 4))):
        size = draw(st.integers(1, 9))
        parents = [None] + [draw(st.integers(0, node - 1)) for node in range(1, size)]
        slots, counts = [], {}
        for parent in parents:
            slots.append(0 if parent is None else counts.get(parent, 0))
            if parent is not None:
                counts[parent] = counts.get(parent, 0) + 1
        tokens = [draw(st.sampled_from([None, "a", "b", "zz"])) for _ in range(size)]
        labels = [draw(st.sampled_from([None, 0, 4])) for _ in range(size)]
        trees.append(Tree(parents, slots, labels, tokens))
    return trees


@settings(max_examples=40, deadline=None)
@given(_random_trees())
def test_batching_then_unbatching_is_the_identity(trees):
    vocabulary = Vocabulary(["<unk>", "a", "b"])
    batch = batch_trees(trees, vocabulary)
    assert batch.edge_index.shape[1] == sum(len(t) - 1 for t in trees)
    assert bool((batch.edge_index[0] > batch.edge_index[1]).all())  # pre-order: children after parents
    for alone, tree in zip(batch.to_data_list(), trees):
        assert alone.edge_index.tolist() == [
            [v for v, p in enumerate(tree.parents) if p is not None],
            [p for p in tree.parents if p is not None],
        ]
        assert alone.edge_attr.tolist() == tree.slots[1:]
        assert alone.x.tolist() == [-1 if t is None else vocabulary.id(t) for t in tree.tokens]
        assert alone.y.tolist() == [-1 if y is None else y for y in tree.labels]


def test_python_source_becomes_an_ordered_tree():
    tree = tree_from_python("(3 - 4) * x")
    assert tree.tokens == ["BinOp", "BinOp", "3", "Sub", "4", "Mult", "Name:x"]
    assert tree.parents == [None, 0, 1, 1, 1, 0, 0]
    assert tree.slots == [0, 0, 0, 1, 2, 1, 2]
    assert tree.leaves == ["3", "Sub", "4", "Mult", "Name:x"]
    with pytest.raises(SyntaxError):
        tree_from_python("(3 -")


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


# ---------------------------------------------------------------------------- fuzzing the PTB reader
# A generated tree is (label, token) for a leaf or (label, [children]); a leaf's token may hold
# single spaces, as SST's "8 1\/2" does.
_WORD = st.text("abcXYZ019.,'-\\/", min_size=1, max_size=4)
_LEAF = st.tuples(st.integers(0, 4), st.lists(_WORD, min_size=1, max_size=2).map(" ".join))
_TREE = st.recursive(
    _LEAF, lambda kids: st.tuples(st.integers(0, 4), st.lists(kids, min_size=1, max_size=3)), max_leaves=10
)
_SPACE = st.sampled_from([" ", "  ", "\t", " \t "])


def _render(tree, space: str = " ") -> str:
    label, body = tree
    inner = body if isinstance(body, str) else space.join(_render(child, space) for child in body)
    return f"({label}{space}{inner})"


def _flatten(tree) -> tuple[list, list, list]:
    """Pre-order parents, labels and tokens of a generated tree, as parse_ptb lists them."""
    parents, labels, tokens = [], [], []
    stack = [(tree, None)]
    while stack:
        (label, body), parent = stack.pop()
        node = len(parents)
        parents.append(parent)
        labels.append(label)
        tokens.append(body if isinstance(body, str) else None)
        if not isinstance(body, str):
            stack.extend((child, node) for child in reversed(body))
    return parents, labels, tokens


def _render_parsed(tree: Tree) -> str:
    """A parsed Tree back in brackets."""
    children: dict[int, list[int]] = {}
    for node, parent in enumerate(tree.parents):
        if parent is not None:
            children.setdefault(parent, []).append(node)

    def visit(node: int) -> str:
        inner = tree.tokens[node] if node not in children else " ".join(visit(c) for c in children[node])
        return f"({tree.labels[node]} {inner})"

    return visit(0)


_NOISE = "()0123456789abcXYZ -+x\t"


@st.composite
def _mutated(draw) -> str:
    """A valid tree with one to three of: a character dropped, added or replaced, a bracket
    dropped or added, a label made non-numeric, negative, out of range or huge, an empty
    leaf, trailing garbage."""
    text = _render(draw(_TREE), draw(_SPACE))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "add", "replace", "bracket", "label", "empty", "trailing"]))
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        if kind == "drop" and text:
            text = text[:at] + text[at + 1 :]
        elif kind == "add":
            text = text[:at] + draw(st.sampled_from(_NOISE)) + text[at:]
        elif kind == "replace" and text:
            text = text[:at] + draw(st.sampled_from(_NOISE)) + text[at + 1 :]
        elif kind == "bracket":
            brackets = [k for k, c in enumerate(text) if c in "()"]
            if brackets and draw(st.booleans()):
                k = draw(st.sampled_from(brackets))
                text = text[:k] + text[k + 1 :]
            else:
                text = text[:at] + draw(st.sampled_from("()")) + text[at:]
        elif kind == "label":
            labels = [m.span(1) for m in re.finditer(r"\((\d+)", text)]
            if labels:
                start, end = draw(st.sampled_from(labels))
                bad = draw(st.sampled_from(["x", "-1", "7", "12345678901234567890", "2.5", "+3", "", "٣", "1_0"]))
                text = text[:start] + bad + text[end:]
        elif kind == "empty":
            leaves = [m.span(1) for m in re.finditer(r"\(\d+\s+([^()]+)\)", text)]
            if leaves:
                start, end = draw(st.sampled_from(leaves))
                text = text[:start] + text[end:]
        elif kind == "trailing":
            text += draw(st.sampled_from([" x", " (2 a)", ")", " 3", "(", "((", " )("]))
    return text


_LINE = st.one_of(
    _TREE.map(lambda tree: ("valid", tree)),
    _mutated().map(lambda text: ("text", text)),
    st.text(_NOISE, max_size=30).map(lambda text: ("text", text)),
)


def _same(a: Tree, b: Tree) -> bool:
    return (a.parents, a.slots, a.labels, a.tokens) == (b.parents, b.slots, b.labels, b.tokens)


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINE, min_size=1, max_size=4), _SPACE)
def test_the_ptb_reader_parses_right_or_names_file_and_line(lines, space):
    """Every input either parses (a generated tree into itself, anything else into a tree that
    reads back the same) or is refused with a ValueError naming the file and line; nothing
    else escapes, neither from the string parser nor from the file reader."""
    texts = [_render(item, space) if kind == "valid" else item for kind, item in lines]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "trees.txt"
        path.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
        expected, first_error = [], None
        for number, ((kind, item), text) in enumerate(zip(lines, texts), start=1):
            if not text.strip():
                continue  # the reader skips blank lines
            try:
                tree = parse_ptb(text, source=str(path), line=number)
            except TreeSyntaxError as error:
                assert str(error).startswith(f"{path}:{number}:"), str(error)
                first_error = first_error or str(error)
                event("a line refused")
                continue
            assert tree.source == f"{path}:{number}"
            if kind == "valid":
                # the generated tree, node for node: same leaves in order, same labels
                assert (tree.parents, tree.labels, tree.tokens) == _flatten(item)
                assert tree.leaves == [t for t in _flatten(item)[2] if t is not None]
            else:
                assert _same(parse_ptb(_render_parsed(tree)), tree)  # whatever parsed reads back the same
                event("a mutated or random line parsed")
            assert all(label is not None and label >= 0 for label in tree.labels)
            expected.append(tree)
        try:
            trees = read_ptb(path)
        except ValueError as error:
            message = str(error)
            assert message == (first_error or f"{path}: no trees"), message
            return
    assert first_error is None and len(trees) == len(expected)
    assert all(_same(a, b) and a.source == b.source for a, b in zip(trees, expected))


def test_pyg_batches_trees_as_batch_trees_does():
    """A PyG DataLoader over Tree.to_data gives batch_trees' forests: offsets, roots, slots."""
    from torch_geometric.loader import DataLoader

    trees = [parse_ptb("(3 (2 a) (4 (3 b) (4 c)))"), parse_ptb("(2 b)"), parse_ptb("(1 (0 c) (2 zz))")]
    vocabulary = Vocabulary.build(trees[:2])
    data = [tree.to_data(vocabulary) for tree in trees]
    assert all(isinstance(d, TreeData) for d in data) and data[0].roots.tolist() == [0]
    loaded = next(iter(DataLoader(data, batch_size=3)))
    ours = batch_trees(trees, vocabulary)
    assert isinstance(loaded, TreeData) and loaded.num_graphs == 3
    for key in ("x", "y", "edge_index", "edge_attr", "batch", "ptr"):
        assert torch.equal(loaded[key], ours[key]), key
    assert loaded.roots.tolist() == ours.roots.tolist() == [0, 5, 6]
    assert loaded.unknown_tokens == ours.unknown_tokens == 1
    assert all(isinstance(t, TreeData) for t in ours.to_data_list())
    assert isinstance(Batch.from_data_list(data), TreeData)


def test_chains_through_pyg_loaders_are_an_rnn():
    """Sequences as chains, batched by PyG, under the topological schedule: torch.nn.LSTM per sequence."""
    from torch_geometric.loader import DataLoader

    from structnets import LSTMCell, Topological, propagate

    torch.manual_seed(0)
    sequences = [torch.randn(n, 3, dtype=torch.double) for n in (4, 1, 6)]
    batch = next(iter(DataLoader([chain_data(x, y=torch.tensor([k])) for k, x in enumerate(sequences)], batch_size=3)))
    assert batch.edge_index.tolist() == [[0, 1, 2, 5, 6, 7, 8, 9], [1, 2, 3, 6, 7, 8, 9, 10]]
    assert batch.y.tolist() == [0, 1, 2]
    cell = LSTMCell(3, 5).double()
    lstm = torch.nn.LSTM(3, 5).double()
    lstm.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    h, _ = propagate(cell, batch, Topological())
    expected = torch.cat([lstm(x)[0] for x in sequences])
    torch.testing.assert_close(h, expected, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="at least one step"):
        chain_data(torch.zeros(0, 3))
