"""The one batch container: many graphs as one disconnected graph, as a torch_geometric ``Batch``.

Every structure in structnets is batched the same way (trees, molecules, point graphs and
particle graphs): node ``i`` of graph ``g`` becomes node ``ptr[g] + i``, its edges are
offset by the same amount, and ``batch[v]`` says which graph node ``v`` came from. The
result *is* a ``torch_geometric.data.Batch``, so PyG's ``to_data_list``, transforms and
layers accept it, and a PyG ``Data`` list goes in as it is.

Why not ``Batch.from_data_list`` alone: it walks every graph and every attribute in Python
on each call. :class:`PackedGraphs` concatenates the graphs once; a batch is then a handful
of vectorised gathers, which on small molecules costs a fraction of PyG's collate (it used
to be as much as the model's forward pass). The result is the same ``Batch``, with the
``_slice_dict``/``_inc_dict`` bookkeeping that lets ``to_data_list`` take it apart again.

Attribute kinds are decided by name and shape, as PyG does: ``edge_index`` is offset by
the node offsets; a key whose name contains ``edge`` and whose first dimension is the
number of edges is per edge; a tensor whose first dimension is the number of nodes is per
node; anything else is per graph (concatenated along its first dimension).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

__all__ = ["PackedGraphs", "collate", "ranges", "starts", "bounds"]


def starts(counts: Tensor) -> Tensor:
    """Where each of consecutive blocks of ``counts`` items starts: ``[0, c0, c0 + c1, ...]`` without the total."""
    return torch.cumsum(counts, 0) - counts


def bounds(counts: Tensor) -> Tensor:
    """The blocks' starts and the total, ``[0, c0, c0 + c1, ..., sum]``: PyG's ``ptr`` and slice vectors."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def ranges(first: Tensor, counts: Tensor) -> Tensor:
    """The concatenation of ``arange(f, f + c)`` for each first index ``f`` and count ``c``, vectorised.

    Shapes:
        first, counts: ``[n]``; returns ``[counts.sum()]``.
    """
    shift = torch.repeat_interleave(first - starts(counts), counts)
    return shift + torch.arange(int(counts.sum()), device=counts.device)


def _kinds(graph: Data) -> tuple[list[str], list[str], list[str]]:
    """``(node keys, edge keys, graph keys)`` of a graph's tensor attributes (``edge_index`` excluded)."""
    num_nodes = graph.num_nodes
    num_edges = graph.edge_index.shape[1] if graph.edge_index is not None else 0
    node, edge, per_graph = [], [], []
    for key in graph.keys():
        value = graph[key]
        if key == "edge_index" or not isinstance(value, Tensor):
            continue
        if "edge" in key and value.dim() > 0 and value.shape[0] == num_edges:
            edge.append(key)
        elif value.dim() > 0 and value.shape[0] == num_nodes and key != "y":
            node.append(key)
        else:
            per_graph.append(key)
    return sorted(node), sorted(edge), sorted(per_graph)


class PackedGraphs:
    """Graphs concatenated once, so that any batch of them is a few vectorised gathers.

    Args:
        graphs: ``Data`` objects that share their attribute names and kinds; each numbers
            its own nodes from 0 in ``edge_index``.

    Example::

        packed = PackedGraphs(dataset)
        for chosen in torch.randperm(len(dataset)).split(64):
            batch = packed.batch(chosen)      # a torch_geometric Batch
    """

    def __init__(self, graphs: Sequence[Data]) -> None:
        if not graphs:
            raise ValueError("PackedGraphs needs at least one graph")
        self.node_keys, self.edge_keys, self.graph_keys = _kinds(graphs[0])
        for index, graph in enumerate(graphs):
            kinds = _kinds(graph)
            if kinds != (self.node_keys, self.edge_keys, self.graph_keys):
                raise ValueError(
                    f"graph {index} has attributes {kinds}, but graph 0 has "
                    f"{(self.node_keys, self.edge_keys, self.graph_keys)}; all graphs of a batch must match"
                )
        self.num_graphs = len(graphs)
        self.nodes = torch.tensor([g.num_nodes for g in graphs])
        self.edges = torch.tensor([g.edge_index.shape[1] for g in graphs])
        self.node_start, self.edge_start = starts(self.nodes), starts(self.edges)
        self.local_edges = torch.cat([g.edge_index for g in graphs], 1)
        self.values = {key: torch.cat([g[key] for g in graphs]) for key in self.node_keys + self.edge_keys}
        self.graph_rows: dict[str, Tensor] = {}
        for key in self.graph_keys:
            parts = [g[key].reshape(1) if g[key].dim() == 0 else g[key] for g in graphs]
            sizes = torch.tensor([p.shape[0] for p in parts])
            self.values[key] = torch.cat(parts)
            self.graph_rows[key] = sizes
        self._graph_start = {key: starts(s) for key, s in self.graph_rows.items()}

    def __len__(self) -> int:
        return self.num_graphs

    def batch(self, chosen: Tensor | Sequence[int] | None = None) -> Batch:
        """The chosen graphs, in the given order, as one ``torch_geometric.data.Batch``."""
        chosen = torch.arange(self.num_graphs) if chosen is None else torch.as_tensor(chosen, dtype=torch.long)
        nodes, edges = self.nodes[chosen], self.edges[chosen]
        node_ids = ranges(self.node_start[chosen], nodes)
        edge_ids = ranges(self.edge_start[chosen], edges)
        new_start = starts(nodes)
        fields: dict[str, Tensor] = {
            "edge_index": self.local_edges[:, edge_ids] + torch.repeat_interleave(new_start, edges),
            "batch": torch.repeat_interleave(torch.arange(len(chosen)), nodes),
            "ptr": torch.cat([new_start, nodes.sum().reshape(1)]),
        }
        slices = {"edge_index": bounds(edges)}
        node_slices = bounds(nodes)
        increments = {"edge_index": new_start}
        zeros = torch.zeros(len(chosen), dtype=torch.long)
        for key in self.node_keys:
            fields[key], slices[key], increments[key] = self.values[key][node_ids], node_slices, zeros
        for key in self.edge_keys:
            fields[key], slices[key], increments[key] = self.values[key][edge_ids], slices["edge_index"], zeros
        for key in self.graph_keys:
            rows = self.graph_rows[key][chosen]
            fields[key] = self.values[key][ranges(self._graph_start[key][chosen], rows)]
            slices[key] = bounds(rows)
            increments[key] = zeros
        out = Batch(**fields)
        out._num_graphs = len(chosen)
        out._slice_dict = slices
        out._inc_dict = increments
        return out


def collate(graphs: Sequence[Data]) -> Batch:
    """One ``Batch`` of ``graphs`` (the same result as PyG's ``Batch.from_data_list``)."""
    return PackedGraphs(graphs).batch()
