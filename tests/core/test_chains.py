"""Chains in the packed layout: PackedSequence's node order, both directions' schedules, forests."""

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from structnets.core.chains import chains, forest_edges


def test_chain_levels_need_no_gathers():
    graph = chains((4, 3, 3, 1))
    assert graph.forward.order is None
    assert graph.forward.sizes == (4, 3, 3, 1)
    for inputs in graph.forward.inputs[1:]:
        assert inputs.one_to_one
        assert all(rows is None for _, rows, _ in inputs.groups)
    assert graph.backward.sizes == (4, 3, 3, 1)
    for inputs in graph.backward.inputs[1:]:  # against the chains too, thanks to the tie-break
        assert inputs.one_to_one
        assert all(rows is None for _, rows, _ in inputs.groups)
    assert graph.last.tolist() == [10, 8, 9, 3]


def test_chains_follow_packed_sequence_order():
    lengths = [5, 3, 3, 1]
    sequences = [torch.arange(n) + 10 * k for k, n in enumerate(lengths)]  # value = 10 * sequence + step
    packed = pack_sequence(sequences)
    graph = chains(packed.batch_sizes)
    data = packed.data
    senders, receivers = graph.edge_index
    # every edge joins step t of a sequence to its step t + 1
    assert torch.equal(data[receivers] - data[senders], torch.ones_like(senders))
    assert torch.equal(data // 10, graph.sequence)
    assert data[graph.last].tolist() == [10 * k + n - 1 for k, n in enumerate(lengths)]
    assert graph.edge_index.shape[1] == sum(lengths) - len(lengths)


def test_chains_refuse_bad_batch_sizes():
    with pytest.raises(ValueError, match="non-increasing"):
        chains((2, 3))
    with pytest.raises(ValueError, match="positive"):
        chains((2, 0))


def test_forest_edges_point_from_child_to_parent():
    assert forest_edges([None, 0, 0, 2]).tolist() == [[1, 2, 3], [0, 0, 2]]
    assert forest_edges([None, None]).shape == (2, 0)
    with pytest.raises(ValueError, match="names parent 7"):
        forest_edges([None, 7])
