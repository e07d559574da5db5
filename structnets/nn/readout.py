"""Readouts: one vector per graph from the states of its nodes."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from ..core.cells import LSTMCell

__all__ = ["Set2Set"]


class Set2Set(nn.Module):
    """Order-invariant readout by attention with an LSTM query (Vinyals et al. 2016).

    For ``t = 1..steps``: ``q_t = LSTM(q*_{t-1})``, ``a_i = softmax_i(x_i . q_t)`` within each
    graph, ``r_t = sum_i a_i x_i``, ``q*_t = [q_t, r_t]``. Returns ``q*_steps``. The query
    recurrence is structnets' LSTM cell, with torch_geometric's ``Set2Set`` weights and
    results (the tests compare the two).

    Shapes:
        x: ``[num_nodes, in_size]``; batch: ``[num_nodes]``; returns ``[num_graphs, 2 * in_size]``.
    """

    def __init__(self, in_size: int, steps: int) -> None:
        super().__init__()
        self.in_size = in_size
        self.steps = steps
        self.cell = LSTMCell(2 * in_size, in_size)

    def forward(self, x: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        q_star = x.new_zeros(num_graphs, 2 * self.in_size)
        state = None
        for _ in range(self.steps):
            state = self.cell(q_star, state)
            query = state[0]
            scores = (x * query.index_select(0, batch)).sum(-1)
            attention = softmax(scores, batch, num_nodes=num_graphs)
            read = scatter(attention.unsqueeze(-1) * x, batch, 0, num_graphs, reduce="sum")
            q_star = torch.cat([query, read], -1)
        return q_star
