"""Trees as structnets structures: PTB brackets, nested tuples, and batches of them as forests.

A :class:`Tree` lists its nodes in pre-order (a parent before its children) with each
node's parent, its position among its parent's children (the N-ary Tree-LSTM's slot),
its label and, for leaves, its token. :func:`batch_trees` lays many trees out as one
forest, a :class:`TreeBatch` (a torch_geometric ``Batch``, the container of every structnets
structure): node ids offset per tree, child -> parent edges (torch_geometric's convention,
senders first), so the core's :class:`~structnets.Topological` schedule runs every tree's
leaves first, level by level, across the whole batch.

Every structure is also a torch_geometric ``Data``: :meth:`Tree.to_data` (a
:class:`TreeData`, given the vocabulary) and :func:`chain_data` (a sequence as a chain), so
PyG's ``DataLoader`` batches them, node offsets applied to the edges, into batches that
:class:`~structnets.models.TreeClassifier` and :func:`structnets.propagate` take; the
topological schedule is computed from each batch's own edges.

The PTB bracket reader is written here rather than taken from nltk: the Stanford
Sentiment Treebank needs only its small subset of the format, and a bad line should be
reported with its line and column, which nltk's reader does not give.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from .batch import bounds

__all__ = [
    "Tree",
    "TreeSyntaxError",
    "parse_ptb",
    "read_ptb",
    "tree_from_tuple",
    "tree_from_python",
    "ProgramGraph",
    "python_graph",
    "tree_from_networkx",
    "dag_edges_from_networkx",
    "Vocabulary",
    "TreeData",
    "TreeBatch",
    "tree_data",
    "chain_data",
    "batch_trees",
]


class TreeSyntaxError(ValueError):
    """A malformed bracketed tree; the message starts with ``source:line:column``."""


@dataclass(frozen=True, eq=False)
class Tree:
    """One tree, nodes in pre-order (node 0 is the root).

    Attributes:
        parents: each node's parent, ``None`` for the root.
        slots: each node's position among its parent's children (0 for the root).
        labels: each node's label (``None`` where the format has none).
        tokens: each leaf's token, ``None`` for inner nodes.
        source: where the tree came from (``file:line``), for messages.
    """

    parents: list[int | None]
    slots: list[int]
    labels: list[int | None]
    tokens: list[str | None]
    source: str = "<tree>"

    def __len__(self) -> int:
        return len(self.parents)

    @property
    def leaves(self) -> list[str]:
        """The leaves' tokens left to right (pre-order visits leaves in sentence order)."""
        inner = {p for p in self.parents if p is not None}
        return [t for node, t in enumerate(self.tokens) if t is not None and node not in inner]

    @property
    def max_children(self) -> int:
        return max(self.slots, default=-1) + 1

    def to_data(self, vocabulary: Vocabulary) -> TreeData:
        """The tree as a torch_geometric ``Data`` (:class:`TreeData`), tokens as ``vocabulary`` ids."""
        return tree_data(self, vocabulary)


def _tokenize(text: str) -> list[tuple[str, int]]:
    """``(piece, column)`` pairs: brackets and the runs of other non-blank characters."""
    pieces, start = [], None
    for column, char in enumerate(text):
        if char in "()" or char.isspace():
            if start is not None:
                pieces.append((text[start:column], start))
                start = None
            if char in "()":
                pieces.append((char, column))
        elif start is None:
            start = column
    if start is not None:
        pieces.append((text[start:], start))
    return pieces


def parse_ptb(text: str, *, source: str = "<string>", line: int = 1, labelled: bool = True) -> Tree:
    """One tree in PTB brackets: ``(label child child ...)`` or ``(label token)``.

    With ``labelled`` every node's first item is an integer label (SST's 0-4).

    Raises:
        TreeSyntaxError: unbalanced brackets, a missing, non-integer or negative label, an
            empty node, or text after the tree; the message gives ``source:line:column``.
    """
    pieces = _tokenize(text)

    def error(column: int, message: str) -> TreeSyntaxError:
        return TreeSyntaxError(f"{source}:{line}:{column + 1}: {message}")

    if not pieces:
        raise error(0, "empty tree")
    parents: list[int | None] = []
    slots: list[int] = []
    labels: list[int | None] = []
    tokens: list[str | None] = []
    stack: list[tuple[int, int, int]] = []  # (node, children so far, column of its bracket)
    position = 0
    while position < len(pieces):
        piece, column = pieces[position]
        position += 1
        if piece == "(":
            if not stack and parents:
                raise error(column, "text after the end of the tree")
            node = len(parents)
            if stack:
                parent, count, start = stack[-1]
                if tokens[parent] is not None:
                    raise error(column, "a node holds both a token and subtrees")
                stack[-1] = (parent, count + 1, start)
                parents.append(parent)
                slots.append(count)
            else:
                parents.append(None)
                slots.append(0)
            label: int | None = None
            if labelled:
                if position >= len(pieces) or pieces[position][0] in "()":
                    raise error(column, "a node without a label")
                text_label, label_column = pieces[position]
                position += 1
                # ASCII digits only: int() would also take "1_0", "٣" or 5000 digits.
                digits = text_label[1:] if text_label[:1] in "+-" else text_label
                if not (digits.isascii() and digits.isdigit()):
                    raise error(label_column, f"label {text_label!r} is not an integer")
                if len(digits) > 18:  # past what a batch's int64 labels hold
                    raise error(label_column, f"label {text_label[:24]!r}... is too large")
                label = int(text_label)
                if label < 0:  # -1 is what batches write for "no label"
                    raise error(label_column, f"label {text_label!r} is negative; labels are 0, 1, 2, ...")
            labels.append(label)
            tokens.append(None)
            stack.append((node, 0, column))
        elif piece == ")":
            if not stack:
                raise error(column, "')' without a matching '('")
            node, count, start = stack.pop()
            if count == 0 and tokens[node] is None:
                raise error(start, "a node with neither a token nor subtrees")
        else:
            if not stack:
                raise error(column, f"{piece!r} outside any brackets")
            node, count, start = stack[-1]
            if count:
                raise error(column, f"{piece!r}: a node holds one token or subtrees, not both")
            # A leaf's text runs to its closing bracket: SST has the token "8 1\/2".
            tokens[node] = piece if tokens[node] is None else f"{tokens[node]} {piece}"
    if stack:
        raise error(stack[-1][2], "'(' never closed")
    return Tree(parents, slots, labels, tokens, f"{source}:{line}")


def read_ptb(path: str | Path, *, labelled: bool = True, limit: int | None = None) -> list[Tree]:
    """Every tree of a file with one bracketed tree per line (blank lines skipped); the first ``limit``.

    Raises:
        FileNotFoundError: no file at ``path``.
        TreeSyntaxError: a malformed line (see :func:`parse_ptb`), as ``path:line:column: ...``.
        ValueError: the file holds no tree, or is not UTF-8 text (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tree file at {path}")
    trees: list[Tree] = []
    try:
        with path.open(encoding="utf-8-sig") as handle:  # a byte-order mark is dropped
            for number, text in enumerate(handle, start=1):
                if limit is not None and len(trees) >= limit:
                    break
                if text.strip():
                    trees.append(parse_ptb(text, source=str(path), line=number, labelled=labelled))
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if not trees:
        raise ValueError(f"{path}: no trees")
    return trees


def _not_utf8(path: Path) -> ValueError:
    """The error for a file that is not UTF-8 text, naming the line and column of its first bad byte.

    The text reader decodes ahead of the line it returns, so the file is decoded again whole
    here to find the byte; lines are counted as the reader counts them (``\n``, ``\r\n``, ``\r``).
    """
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):
        return ValueError(f"{path} is gzip-compressed; decompress it first (gunzip -k {path})")
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # the byte-order mark the reader drops
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start].decode("utf-8")
        line = 1 + before.count("\n") + before.count("\r") - before.count("\r\n")
        column = len(before) - max(before.rfind("\n"), before.rfind("\r"))
        return ValueError(f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[error.start]:02x})")
    return ValueError(f"{path}: not UTF-8 text")


def tree_from_tuple(value, label: int | None = None) -> Tree:
    """A tree from nested Python tuples: ``(("a", "b"), "c")``; leaves are strings."""
    parents: list[int | None] = []
    slots: list[int] = []
    tokens: list[str | None] = []

    def visit(item, parent: int | None, slot: int) -> None:
        parents.append(parent)
        slots.append(slot)
        if isinstance(item, tuple):
            if not item:
                raise ValueError("an empty tuple is not a tree node")
            tokens.append(None)
            node = len(parents) - 1
            for k, child in enumerate(item):
                visit(child, node, k)
        else:
            tokens.append(str(item))

    visit(value, None, 0)
    return Tree(parents, slots, [label] * len(parents), tokens, "<tuple>")


def _python_token(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, ast.Name):
        return f"Name:{node.id}"
    return type(node).__name__


def tree_from_python(source: str, *, mode: str = "eval") -> Tree:
    """The abstract syntax tree of Python source (the standard ``ast`` module) as a :class:`Tree`.

    Every AST node is a tree node whose token names it: the node type (``BinOp``,
    ``Add``, ``Call``, ...), a constant's ``repr``, or ``Name:<identifier>``. Children are
    in ``ast.iter_child_nodes`` order (a ``BinOp``'s left operand, operator, right
    operand), so their slots keep the order that non-commutative operators need. The
    load/store context markers are left out. ``mode="eval"`` parses one expression and
    drops the ``Expression`` wrapper; ``"exec"`` parses a module.

    Raises:
        SyntaxError: the source is not valid Python (with its line and column).
    """
    return _python_tree(source, mode)[0]


def _python_tree(source: str, mode: str) -> tuple[Tree, ast.AST, dict[int, int]]:
    """The tree, the AST root it was read from, and the pre-order id of each ``Name`` node
    keyed by ``id(node)`` (only Name nodes: operator nodes such as ``ast.Add`` are shared
    singletons, so ``id()`` cannot tell their occurrences apart)."""
    root = ast.parse(source, mode=mode)
    if isinstance(root, ast.Expression):
        root = root.body
    parents: list[int | None] = []
    slots: list[int] = []
    tokens: list[str | None] = []
    names: dict[int, int] = {}

    def visit(node: ast.AST, parent: int | None, slot: int) -> None:
        index = len(parents)
        if isinstance(node, ast.Name):
            names[id(node)] = index
        parents.append(parent)
        slots.append(slot)
        tokens.append(_python_token(node))
        children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.expr_context)]
        for k, child in enumerate(children):
            visit(child, index, k)

    visit(root, None, 0)
    return Tree(parents, slots, [None] * len(parents), tokens, "<python>"), root, names


@dataclass(frozen=True)
class ProgramGraph:
    """A program as a DAG: its syntax tree plus, optionally, data-flow edges.

    Attributes:
        tree: the syntax tree (:func:`tree_from_python`); node ids are its pre-order.
        edge_index: ``[2, num_edges]`` sender -> receiver: first every AST edge child ->
            parent, then every data-flow edge definition -> use.
        edge_type: ``[num_edges]``, :attr:`AST` or :attr:`DATA_FLOW`.
    """

    AST: ClassVar[int] = 0
    DATA_FLOW: ClassVar[int] = 1

    tree: Tree
    edge_index: Tensor
    edge_type: Tensor


def python_graph(source: str, *, mode: str = "exec", data_flow: bool = True) -> ProgramGraph:
    """Python source as a :class:`ProgramGraph`.

    A data-flow edge runs from the ``Name`` node where a variable is last assigned to each
    ``Name`` node that reads it afterwards, in evaluation order: an assignment's value is
    read before its targets are written, so in ``x = x + 1`` the read of ``x`` links to the
    previous assignment. Only forward edges are drawn (a read inside a loop does not link
    to an assignment later in the loop body), which keeps the graph acyclic: definitions
    are leaves, and AST edges only lead up, so the core's topological schedule runs on it.
    """
    tree, root, ids = _python_tree(source, mode)
    children = [v for v, p in enumerate(tree.parents) if p is not None]
    senders, receivers = list(children), [tree.parents[v] for v in children]
    types = [ProgramGraph.AST] * len(children)
    if data_flow:
        last: dict[str, int] = {}
        flows: list[tuple[int, int]] = []

        def visit(node: ast.AST) -> None:
            if isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load) and node.id in last:
                    flows.append((last[node.id], ids[id(node)]))
                elif isinstance(node.ctx, (ast.Store, ast.Del)):
                    last[node.id] = ids[id(node)]
                return
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                if node.value is not None:
                    visit(node.value)
                target = node.target if isinstance(node, ast.AugAssign) else None
                if isinstance(target, ast.Name) and target.id in last:  # x += 1 reads x, then writes it
                    flows.append((last[target.id], ids[id(target)]))
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    visit(target)
                return
            if isinstance(node, (ast.For, ast.AsyncFor)):
                visit(node.iter)
                visit(node.target)
                for statement in [*node.body, *node.orelse]:
                    visit(statement)
                return
            for child in ast.iter_child_nodes(node):
                visit(child)

        visit(root)
        senders += [a for a, _ in flows]
        receivers += [b for _, b in flows]
        types += [ProgramGraph.DATA_FLOW] * len(flows)
    return ProgramGraph(
        tree=tree,
        edge_index=torch.tensor([senders, receivers], dtype=torch.long).view(2, -1),
        edge_type=torch.tensor(types, dtype=torch.long),
    )


def _refuse_cycles(graph, what: str) -> None:
    """A ValueError naming one cycle of a directed networkx graph, if it has any."""
    import networkx as nx

    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    raise ValueError(f"not {what}: the graph has the cycle {[edge[:2] for edge in cycle]}")


def tree_from_networkx(graph, root=None, *, token: str = "token", label: str = "label") -> Tree:
    """A :class:`Tree` from a networkx tree: an arborescence (edges parent -> child) or an
    undirected tree with ``root`` named.

    Children are ordered by the ``order`` edge attribute when present, else as networkx
    lists them. Node attributes ``token`` and ``label`` fill the tree's tokens and labels.

    Raises:
        ValueError: the graph is empty, has a cycle (the message names one), is not
            connected, or a node has two parents.
    """
    import networkx as nx

    if graph.number_of_nodes() == 0:
        raise ValueError("empty tree: the graph has no nodes")
    if graph.is_directed():
        _refuse_cycles(graph, "a tree")
        two_parents = [n for n, d in graph.in_degree() if d > 1]
        if two_parents:
            raise ValueError(f"not a tree: node {two_parents[0]!r} has {graph.in_degree(two_parents[0])} parents")
        roots = [n for n, d in graph.in_degree() if d == 0]
        if len(roots) != 1:
            raise ValueError(f"not a tree: {len(roots)} nodes without a parent ({roots[:5]}); one root is needed")
        root = roots[0] if root is None else root
        children_of = {n: list(graph.successors(n)) for n in graph}
    else:
        if root is None:
            raise ValueError("an undirected tree needs its root named")
        if not nx.is_tree(graph):
            cycle = nx.cycle_basis(graph)
            raise ValueError(
                f"not a tree: the graph has the cycle {cycle[0]}" if cycle else "not a tree: not connected"
            )
        successors = nx.dfs_successors(graph, root)
        children_of = {n: successors.get(n, []) for n in graph}
    parents: list[int | None] = []
    slots: list[int] = []
    labels: list[int | None] = []
    tokens: list[str | None] = []
    stack = [(root, None, 0)]
    while stack:
        node, parent, slot = stack.pop()
        index = len(parents)
        parents.append(parent)
        slots.append(slot)
        data = graph.nodes[node]
        labels.append(data.get(label))
        tokens.append(None if data.get(token) is None else str(data[token]))
        children = children_of[node]
        if graph.is_directed():
            children = sorted(children, key=lambda c: graph.edges[node, c].get("order", 0))
        # Pushed in reverse, so that children are visited (and numbered) in order.
        for k in reversed(range(len(children))):
            stack.append((children[k], index, k))
    if len(parents) != graph.number_of_nodes():
        raise ValueError(f"not a tree: {graph.number_of_nodes() - len(parents)} nodes are not reachable from the root")
    return Tree(parents, slots, labels, tokens, "<networkx>")


def dag_edges_from_networkx(graph) -> tuple[Tensor, list]:
    """``(edge_index, nodes)`` of a networkx DAG for the topological schedule.

    ``nodes`` lists the graph's nodes in the order of their ids in ``edge_index``
    (sender -> receiver, as the graph's edges point).

    Raises:
        ValueError: the graph is undirected, or has a cycle (the message names one).
    """

    if not graph.is_directed():
        raise ValueError("a DAG must be a directed graph (networkx.DiGraph)")
    _refuse_cycles(graph, "a DAG")
    nodes = list(graph.nodes)
    ids = {n: i for i, n in enumerate(nodes)}
    pairs = [(ids[u], ids[v]) for u, v in graph.edges]
    edge_index = torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)
    return edge_index, nodes


@dataclass
class Vocabulary:
    """Token ids; id 0 is ``<unk>``, which tokens never seen in training map to."""

    tokens: list[str] = field(default_factory=lambda: ["<unk>"])

    def __post_init__(self) -> None:
        if not self.tokens or self.tokens[0] != "<unk>":
            raise ValueError("a vocabulary's first token must be <unk>")
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            raise ValueError("a vocabulary lists a token twice")

    @classmethod
    def build(cls, trees: Iterable[Tree], min_count: int = 1) -> Vocabulary:
        counts = Counter(token for tree in trees for token in tree.tokens if token is not None)
        kept = sorted(t for t, c in counts.items() if c >= min_count and t != "<unk>")
        return cls(["<unk>", *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def id(self, token: str) -> int:
        return self._ids.get(token, 0)


class _TreeFields:
    """What trees and forests answer beyond PyG's fields (mixed into both)."""

    @property
    def roots(self) -> Tensor:
        """Each tree's root node (its node 0): ``ptr[:-1]`` of a batch, ``[0]`` of one tree."""
        if "ptr" in self:
            return self.ptr[:-1]
        return torch.zeros(1, dtype=torch.long, device=self.edge_index.device)

    @property
    def unknown_tokens(self) -> int:
        """How many tokens map to ``<unk>`` (id 0): tokens never seen in training."""
        return int((self.x == 0).sum())


class TreeData(_TreeFields, Data):
    """One tree as a torch_geometric ``Data``, with :class:`TreeBatch`'s fields (no batch, ptr).

    PyG's ``Batch.from_data_list`` and ``DataLoader`` batch trees as :func:`batch_trees`
    does (the batch's class is PyG's ``TreeDataBatch``, a ``TreeData`` too), so ``roots``
    and ``unknown_tokens`` work on a loader's batches as on a :class:`TreeBatch`.
    """


class TreeBatch(Batch, _TreeFields):
    """Trees laid out as one forest: a torch_geometric ``Batch``, the container molecules use too.

    Node ``i`` of tree ``t`` is node ``ptr[t] + i``; every tree's root is its node 0, so the
    roots are ``ptr[:-1]``. ``to_data_list`` takes the forest apart into one
    :class:`TreeData` per tree again, and PyG's layers and transforms accept it as any
    other batch.

    Attributes:
        x: each node's token id; -1 for nodes without a token (SST's inner nodes).
        y: each node's label; -1 where the tree has none.
        edge_index: child -> parent edges, offset per tree (row 0 senders, row 1 receivers).
        edge_attr: each edge's child slot (the child's position among its parent's children).
        batch: each node's tree; ptr: where each tree's nodes start, and the total.

    Shapes:
        x, y, batch: ``[num_nodes]``; edge_index: ``[2, num_edges]``; edge_attr:
        ``[num_edges]``; ptr: ``[num_trees + 1]``; roots: ``[num_trees]``.
    """


def tree_data(tree: Tree, vocabulary: Vocabulary) -> TreeData:
    """One tree as a :class:`TreeData` with :class:`TreeBatch`'s fields (no batch, ptr).

    :func:`batch_trees` of a list equals :func:`structnets.graphs.batch.collate` of their
    ``tree_data``, and PyG's ``Batch.from_data_list``; ``batch_trees`` builds the forest in
    one pass, without a ``Data`` per tree.
    """
    return batch_trees([tree], vocabulary).get_example(0)


def chain_data(x: Tensor, y: Tensor | None = None) -> Data:
    """A sequence ``x`` ``[T, F]`` as a chain: a torch_geometric ``Data`` with edges ``t -> t + 1``.

    A batch of such chains (``DataLoader``) under :class:`~structnets.Topological` is an RNN
    over every sequence at once, one level per time step (the packed layout of
    :func:`structnets.chains` needs no gathers, and :class:`structnets.RNN` uses it).

    Shapes:
        x: ``[T, ...]``; y: anything, kept as it is; edge_index: ``[2, T - 1]``.
    """
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"a chain needs at least one step, got x of shape {tuple(x.shape)}")
    steps = torch.arange(x.shape[0], device=x.device)
    data = Data(x=x, edge_index=torch.stack([steps[:-1], steps[1:]]), num_nodes=x.shape[0])
    if y is not None:
        data.y = y
    return data


def batch_trees(trees: Sequence[Tree], vocabulary: Vocabulary) -> TreeBatch:
    """Concatenates trees into one forest (see :class:`TreeBatch`).

    Raises:
        ValueError: no trees, an empty tree, or a tree whose node 0 is not its only root.
    """
    if not trees:
        raise ValueError("cannot batch an empty list of trees")
    token_ids, labels, children, parents, slots, node_counts, edge_counts = [], [], [], [], [], [], []
    ids, offset = vocabulary._ids, 0
    for tree in trees:
        if len(tree) == 0:
            raise ValueError(f"{tree.source}: empty tree")
        if tree.parents[0] is not None or tree.parents.count(None) != 1:
            raise ValueError(f"{tree.source}: node 0 must be the tree's one root (nodes in pre-order)")
        token_ids.extend(-1 if token is None else ids.get(token, 0) for token in tree.tokens)
        labels.extend(-1 if label is None else label for label in tree.labels)
        for node, (parent, slot) in enumerate(zip(tree.parents, tree.slots)):
            if parent is not None:
                children.append(offset + node)
                parents.append(offset + parent)
                slots.append(slot)
        node_counts.append(len(tree))
        edge_counts.append(len(tree) - 1)
        offset += len(tree)
    nodes = torch.tensor(node_counts)
    ptr, edge_ptr = bounds(nodes), bounds(torch.tensor(edge_counts))
    out = TreeBatch(
        _base_cls=TreeData,  # to_data_list's trees are TreeData
        x=torch.tensor(token_ids, dtype=torch.long),
        y=torch.tensor(labels, dtype=torch.long),
        edge_index=torch.tensor([children, parents], dtype=torch.long).view(2, -1),
        edge_attr=torch.tensor(slots, dtype=torch.long),
        batch=torch.repeat_interleave(torch.arange(len(trees)), nodes),
        ptr=ptr,
    )
    # PyG's bookkeeping, as Batch.from_data_list leaves it, so that to_data_list works.
    zeros = torch.zeros(len(trees), dtype=torch.long)
    out._num_graphs = len(trees)
    out._slice_dict = {"x": ptr, "y": ptr, "edge_index": edge_ptr, "edge_attr": edge_ptr}
    out._inc_dict = {"x": zeros, "y": zeros, "edge_index": ptr[:-1], "edge_attr": zeros}
    return out
