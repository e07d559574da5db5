"""Attention as message passing: encoder nodes send to decoder nodes on a bipartite graph.

An edge ``s -> t`` joins encoder node ``s`` to decoder node ``t``; each edge carries a score,
the scores are normalised over each receiver's incoming edges, and the values are summed
with those weights (a softmax aggregation)::

    e_st = score(q_t, k_s)                          # one number per edge
    a_st = exp(e_st) / sum_{s' -> t} exp(e_s't)      # softmax over t's incoming edges
    c_t  = sum_{s -> t} a_st v_s                     # sum aggregation of the weighted values

The scores (:class:`AttentionScore`):

* ``DOT``: ``q_t . k_s`` (Luong et al. 2015);
* ``GENERAL``: ``q_t . (W_a k_s)`` (Luong et al. 2015);
* ``ADDITIVE``: ``w_v . tanh(W_q q_t + b_q + W_k k_s)`` (Bahdanau et al. 2015).

A padded batch ``[B, S, E]`` with lengths is one such graph: edges ``(b, s) -> b`` for
``s < lengths[b]``, encoder node ``b * S + s`` sending to decoder node ``b``
(:func:`padded_edges`). Padding is then no edge at all, so it gets a weight of exactly zero
without any ``-inf`` fill, and no work is spent on it.

Keys change with the source but not from one decoder step to the next, so the key side of
each score (``W_a k_s``, ``W_k k_s``) is computed once per source batch and gathered per edge
once (:meth:`Attention.memory`, the attention's counterpart of a cell's ``project_input``);
a decoder step then costs one gather of the queries per edge (:meth:`Attention.attend`).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.utils import softmax

from ..core.propagate import sum_aggregate

__all__ = ["AttentionScore", "AttentionMemory", "Attention", "softmax_aggregate", "padded_edges", "padded_weights"]


class AttentionScore(enum.Enum):
    """How a query scores a key: Bahdanau's additive score, Luong's dot and general ones."""

    ADDITIVE = "additive"
    DOT = "dot"
    GENERAL = "general"


def softmax_aggregate(scores: Tensor, messages: Tensor, receivers: Tensor, num_receivers: int) -> tuple[Tensor, Tensor]:
    """``a_e = softmax of scores over each receiver's edges``, ``out_t = sum_{e -> t} a_e m_e``.

    Not one of :mod:`structnets.core.propagate`'s aggregators: those are
    ``aggregate(messages, receivers, num_nodes)``, and here the weights come from scores that
    travel beside the messages, so it could not be passed where they are. It is PyG's
    segment softmax (which subtracts each receiver's maximum before ``exp``, so large scores
    do not overflow) followed by the core's :func:`sum_aggregate`.

    Returns:
        ``(aggregated, weights)``: one row per receiver, zeros where no edge arrives; the
        weight of every edge, which sums to one over each receiver's edges.

    Shapes:
        scores: ``[num_edges]``; messages: ``[num_edges, d]``; receivers: ``[num_edges]``;
        aggregated: ``[num_receivers, d]``; weights: ``[num_edges]``.
    """
    weights = softmax(scores, receivers, num_nodes=num_receivers)
    return sum_aggregate(weights.unsqueeze(-1) * messages, receivers, num_receivers), weights


def padded_edges(lengths: Tensor, max_length: int) -> Tensor:
    """The bipartite graph of a padded batch: ``edge_index`` ``[2, sum(lengths)]``.

    Row 0 (senders) is the flattened position ``b * max_length + s`` of every real step
    ``s < lengths[b]``, row 1 (receivers) its row ``b``. Edges come in row-major order,
    grouped by receiver. The number of edges depends on the lengths' values;
    ``torch.export`` takes it as a data-dependent size.
    """
    positions = torch.arange(max_length, device=lengths.device)
    real = positions.unsqueeze(0) < lengths.to(positions.device).unsqueeze(1)  # [B, S]
    senders = real.reshape(-1).nonzero().squeeze(1)
    return torch.stack([senders, torch.div(senders, max_length, rounding_mode="floor")])


def padded_weights(weights: Tensor, edge_index: Tensor, batch: int, max_length: int) -> Tensor:
    """Per-edge weights of :func:`padded_edges` laid out as ``[batch, max_length]``, zeros at padding."""
    out = weights.new_zeros(batch * max_length)
    return out.index_copy(0, edge_index[0], weights).view(batch, max_length)


class AttentionMemory(NamedTuple):
    """What a decoder attends to, prepared once per source batch by :meth:`Attention.memory`.

    Attributes:
        keys: the key side of each edge's score, ``[num_edges, d]`` (``k_s``, ``W_a k_s`` or
            ``W_k k_s``, by score).
        values: each edge's value ``v_s``, ``[num_edges, value_size]``.
        edge_index: ``[2, num_edges]``, row 0 the encoder node, row 1 the decoder node.
        num_receivers: the number of decoder nodes.
    """

    keys: Tensor
    values: Tensor
    edge_index: Tensor
    num_receivers: int


class Attention(nn.Module):
    """Attention of decoder nodes (queries) over encoder nodes (keys and values) along edges.

    ``c_t = sum_{s -> t} softmax_t(score(q_t, k_s)) v_s``; see the module docstring for the
    three scores.

    Args:
        score: the score function.
        query_size: features of a query.
        key_size: features of a key; DOT needs it equal to ``query_size``.
        attention_size: width of ADDITIVE's hidden layer (``query_size`` if None); the other
            scores have none.

    Shapes:
        query: ``[num_receivers, query_size]``; keys: ``[num_senders, key_size]``; values:
        ``[num_senders, value_size]``; edge_index: ``[2, num_edges]``; context:
        ``[num_receivers, value_size]``; weights: ``[num_edges]``.
    """

    def __init__(self, score: AttentionScore, query_size: int, key_size: int, attention_size: int | None = None):
        super().__init__()
        if not isinstance(score, AttentionScore):
            raise TypeError(f"score must be a structnets.nn.AttentionScore, got {score!r}")
        if score is AttentionScore.DOT and query_size != key_size:
            raise ValueError(f"a dot score needs queries and keys of one size, got {query_size} and {key_size}")
        self.score = score
        self.query_size = query_size
        self.key_size = key_size
        self.attention_size = attention_size or query_size
        self.key_projection: nn.Linear | None = None
        self.query_projection: nn.Linear | None = None
        self.energy: nn.Linear | None = None
        if score is AttentionScore.GENERAL:
            self.key_projection = nn.Linear(key_size, query_size, bias=False)
        elif score is AttentionScore.ADDITIVE:
            self.key_projection = nn.Linear(key_size, self.attention_size, bias=False)
            self.query_projection = nn.Linear(query_size, self.attention_size)
            self.energy = nn.Linear(self.attention_size, 1, bias=False)

    def extra_repr(self) -> str:
        return f"{self.score.value}, query_size={self.query_size}, key_size={self.key_size}"

    def memory(self, keys: Tensor, values: Tensor, edge_index: Tensor, num_receivers: int) -> AttentionMemory:
        """The per-edge keys (their side of the score) and values, once per source batch."""
        senders = edge_index[0]
        if self.key_projection is not None:
            keys = self.key_projection(keys)
        return AttentionMemory(
            keys.index_select(0, senders), values.index_select(0, senders), edge_index, num_receivers
        )

    def attend(self, query: Tensor, memory: AttentionMemory) -> tuple[Tensor, Tensor]:
        """One decoder step: ``(context [num_receivers, value_size], weights [num_edges])``."""
        receivers = memory.edge_index[1]
        if self.score is AttentionScore.ADDITIVE:
            hidden = torch.tanh(self.query_projection(query).index_select(0, receivers) + memory.keys)
            scores = self.energy(hidden).squeeze(-1)
        else:
            scores = (query.index_select(0, receivers) * memory.keys).sum(-1)
        return softmax_aggregate(scores, memory.values, receivers, memory.num_receivers)

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor, edge_index: Tensor, num_receivers: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """The graph form: ``(context, weights)`` of ``query``'s nodes over the edges into them.

        ``num_receivers`` defaults to the number of queries.
        """
        num_receivers = query.shape[0] if num_receivers is None else num_receivers
        return self.attend(query, self.memory(keys, values, edge_index, num_receivers))

    def padded_memory(self, keys: Tensor, values: Tensor, lengths: Tensor) -> AttentionMemory:
        """:meth:`memory` of a padded batch ``[B, S, *]`` whose row ``b`` has ``lengths[b]`` real steps."""
        batch, steps = keys.shape[0], keys.shape[1]
        edge_index = padded_edges(lengths.to(keys.device), steps)
        return self.memory(keys.reshape(batch * steps, -1), values.reshape(batch * steps, -1), edge_index, batch)

    def padded(self, query: Tensor, keys: Tensor, values: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The padded form: ``(context [B, value_size], weights [B, S])``, weights zero past each length.

        Shapes:
            query: ``[B, query_size]``; keys: ``[B, S, key_size]``; values: ``[B, S, value_size]``;
            lengths: ``[B]`` integers in ``[0, S]`` (a row of length zero gets a zero context).
        """
        memory = self.padded_memory(keys, values, lengths)
        context, weights = self.attend(query, memory)
        return context, padded_weights(weights, memory.edge_index, keys.shape[0], keys.shape[1])
