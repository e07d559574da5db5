"""The batch container against torch_geometric's own collate, and batching then unbatching."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from structnets.graphs.batch import PackedGraphs, bounds, collate, ranges, starts


def _graph(nodes: int, edges: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(max(nodes, 1), (2, edges), generator=g) if nodes else torch.zeros(2, 0, dtype=torch.long)
    return Data(
        x=torch.randn(nodes, 3, generator=g),
        pos=torch.randn(nodes, 2, generator=g),
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.shape[1], 4, generator=g),
        y=torch.randn(1, 2, generator=g),
        num_nodes=nodes,
    )


sizes = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 9)), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes, seed=st.integers(0, 1000))
def test_collate_equals_torch_geometric(sizes, seed):
    graphs = [_graph(n, e if n else 0, seed + i) for i, (n, e) in enumerate(sizes)]
    ours, theirs = collate(graphs), Batch.from_data_list(graphs)
    assert isinstance(ours, Batch) and ours.num_graphs == theirs.num_graphs
    for key in ("x", "pos", "edge_index", "edge_attr", "y", "batch", "ptr"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(sizes=sizes, seed=st.integers(0, 1000), data=st.data())
def test_a_chosen_batch_unbatches_to_the_chosen_graphs(sizes, seed, data):
    graphs = [_graph(n, e, seed + i) for i, (n, e) in enumerate(sizes)]
    chosen = data.draw(st.lists(st.integers(0, len(graphs) - 1), min_size=1, max_size=8))
    out = PackedGraphs(graphs).batch(torch.tensor(chosen)).to_data_list()
    assert len(out) == len(chosen)
    for graph, index in zip(out, chosen):
        for key in ("x", "pos", "edge_index", "edge_attr", "y"):
            torch.testing.assert_close(graph[key], graphs[index][key], rtol=0, atol=0)


def test_ranges_is_concatenated_aranges():
    first, counts = torch.tensor([5, 0, 9]), torch.tensor([2, 0, 3])
    assert ranges(first, counts).tolist() == [5, 6, 9, 10, 11]
    assert starts(counts).tolist() == [0, 2, 2] and bounds(counts).tolist() == [0, 2, 2, 5]


def test_mismatched_attributes_are_named():
    a = _graph(3, 2, 0)
    b = Data(x=torch.randn(2, 3), edge_index=torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="graph 1 has attributes"):
        PackedGraphs([a, b])
