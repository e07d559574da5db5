"""Attention as a softmax aggregation on a bipartite graph: a dense masked reference, the graph form, permutations."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structnets.nn import Attention, AttentionScore, padded_edges, softmax_aggregate

pytestmark = pytest.mark.usefixtures("one_thread")

SCORES = list(AttentionScore)


def dense_reference(attention: Attention, query, keys, values, lengths):
    """The textbook padded attention: every score, ``-inf`` at padding, a softmax per row, a batched product."""
    if attention.score is AttentionScore.DOT:
        scores = torch.einsum("bh,bsh->bs", query, keys)
    elif attention.score is AttentionScore.GENERAL:
        scores = torch.einsum("bh,bsh->bs", query, keys @ attention.key_projection.weight.t())
    else:
        hidden = torch.tanh(attention.query_projection(query).unsqueeze(1) + keys @ attention.key_projection.weight.t())
        scores = (hidden @ attention.energy.weight.t()).squeeze(-1)
    real = torch.arange(keys.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    weights = scores.masked_fill(~real, -torch.inf).softmax(-1)
    return torch.einsum("bs,bse->be", weights, values), weights


def _batch(batch=4, steps=7, query_size=6, key_size=6, value_size=5):
    lengths = torch.tensor([7, 1, 4, 6])[:batch]
    query = torch.randn(batch, query_size, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(batch, steps, key_size, dtype=torch.float64, requires_grad=True)
    values = torch.randn(batch, steps, value_size, dtype=torch.float64, requires_grad=True)
    return query, keys, values, lengths


@pytest.mark.parametrize("score", SCORES, ids=lambda s: s.value)
def test_weights_sum_to_one_padding_gets_exactly_zero_and_the_dense_reference_agrees(score):
    attention = Attention(score, 6, 6, attention_size=8).double()
    query, keys, values, lengths = _batch()
    context, weights = attention.padded(query, keys, values, lengths)
    real = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    assert torch.all(weights[~real] == 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(4, dtype=torch.float64))
    expected_context, expected_weights = dense_reference(attention, query, keys, values, lengths)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, expected_context)
    # gradients too, the padded keys and values getting none
    inputs = (query, keys, values, *attention.parameters())
    ours = torch.autograd.grad((context.sin().sum() + weights.square().sum()), inputs)
    theirs = torch.autograd.grad((expected_context.sin().sum() + expected_weights.square().sum()), inputs)
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference)
    assert torch.all(ours[1][~real] == 0) and torch.all(ours[2][~real] == 0)


@pytest.mark.parametrize("score", SCORES, ids=lambda s: s.value)
def test_the_graph_form_equals_the_padded_form(score):
    """The real steps as a list of encoder nodes in some other order, edges in another still."""
    attention = Attention(score, 6, 6).double()
    query, keys, values, lengths = _batch()
    context, weights = attention.padded(query, keys, values, lengths)
    edge_index = padded_edges(lengths, 7)  # senders are flat padded positions
    nodes = edge_index[0][torch.randperm(edge_index.shape[1])]  # encoder node i is padded position nodes[i]
    node_of_position = torch.empty(4 * 7, dtype=torch.long).index_copy(0, nodes, torch.arange(nodes.shape[0]))
    order = torch.randperm(edge_index.shape[1])
    graph = torch.stack([node_of_position[edge_index[0]], edge_index[1]])[:, order]
    flat_keys, flat_values = keys.reshape(28, 6)[nodes], values.reshape(28, 5)[nodes]
    graph_context, graph_weights = attention(query, flat_keys, flat_values, graph, 4)
    torch.testing.assert_close(graph_context, context)
    torch.testing.assert_close(graph_weights, weights.reshape(-1)[edge_index[0][order]])


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    score=st.sampled_from(SCORES),
    seed=st.integers(0, 2**16),
)
def test_permuting_encoder_positions_permutes_the_weights(lengths, score, seed):
    generator = torch.Generator().manual_seed(seed)
    attention = Attention(score, 4, 4).double()
    batch, steps = len(lengths), 6
    lengths = torch.tensor(lengths)
    query = torch.randn(batch, 4, dtype=torch.float64, generator=generator)
    keys = torch.randn(batch, steps, 4, dtype=torch.float64, generator=generator)
    values = torch.randn(batch, steps, 3, dtype=torch.float64, generator=generator)
    # a permutation of each row's real steps, padding left where it is
    permutation = torch.arange(steps).repeat(batch, 1)
    for row, length in enumerate(lengths.tolist()):
        permutation[row, :length] = torch.randperm(length, generator=generator)
    gather = permutation.unsqueeze(-1)
    context, weights = attention.padded(query, keys, values, lengths)
    moved_context, moved_weights = attention.padded(
        query, keys.gather(1, gather.expand(-1, -1, 4)), values.gather(1, gather.expand(-1, -1, 3)), lengths
    )
    torch.testing.assert_close(moved_weights, weights.gather(1, permutation))
    torch.testing.assert_close(moved_context, context)


def test_receivers_without_edges_get_zero_context_and_no_edges_at_all_works():
    attention = Attention(AttentionScore.ADDITIVE, 3, 5)
    query, keys, values = torch.randn(3, 3), torch.randn(4, 5), torch.randn(4, 2)
    edge_index = torch.tensor([[0, 1, 3], [2, 2, 0]])  # receiver 1 gets nothing
    context, weights = attention(query, keys, values, edge_index)
    assert torch.all(context[1] == 0) and weights.shape == (3,)
    torch.testing.assert_close(weights[:2].sum(), torch.tensor(1.0))
    torch.testing.assert_close(weights[2], torch.tensor(1.0))
    context, weights = attention(query, keys, values, torch.zeros(2, 0, dtype=torch.long))
    assert torch.all(context == 0) and context.shape == (3, 2) and weights.shape == (0,)
    # a row of length zero in the padded form
    context, weights = attention.padded(query, keys.expand(3, 4, 5), values.expand(3, 4, 2), torch.tensor([4, 0, 2]))
    assert torch.all(context[1] == 0) and torch.all(weights[1] == 0)


def test_softmax_aggregate_is_a_per_receiver_softmax_and_stays_finite_on_large_scores():
    scores = torch.tensor([1000.0, 1001.0, -5.0, 3.0, 2.0], dtype=torch.float64)
    receivers = torch.tensor([0, 0, 1, 2, 2])
    messages = torch.eye(5, dtype=torch.float64)
    out, weights = softmax_aggregate(scores, messages, receivers, 4)
    expected = torch.cat([scores[:2].softmax(0), torch.ones(1, dtype=torch.float64), scores[3:].softmax(0)])
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(out.sum(1), torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out[0, :2], expected[:2])


def test_arguments_are_checked():
    assert [s.value for s in AttentionScore] == ["additive", "dot", "general"]
    with pytest.raises(ValueError, match="dot score needs queries and keys of one size"):
        Attention(AttentionScore.DOT, 4, 5)
    with pytest.raises(TypeError, match="AttentionScore"):
        Attention("dot", 4, 4)
