"""A fused level loop for LSTM cells: one autograd node for the whole schedule.

Driving the LSTM cell through autograd level by level records about twenty autograd nodes
per level, and backpropagation through them costs more than the arithmetic on CPUs.
:class:`FusedLSTMLevels` runs the same recurrence (``structnets.cells.LSTMCell.step`` with
the senders' states summed, as :func:`structnets.propagate.run_levels` does) inside one
``torch.autograd.Function``:

* forward, without autograd, writes each level's ``h`` and ``c`` in place into
  preallocated ``[num_nodes, hidden]`` buffers (in place is safe here because autograd
  never sees these writes) and keeps the gate activations;
* backward walks the levels in reverse with hand-derived LSTM gradients, adds each level's
  gradient into its senders' rows in place, and computes ``dW_hh`` with one matrix product
  over all levels instead of one per level.

Per level the cost stays proportional to that level's nodes and edges. The parity tests
check this path against the autograd one and against ``torch.nn.LSTM``, and
``torch.autograd.gradcheck`` checks its backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import LevelInputs, Levels

__all__ = ["FusedLSTMLevels", "fused_lstm_levels"]


def _gather_sum(buffer: Tensor, offsets: list[int], level_input: LevelInputs, size: int) -> Tensor:
    """Senders' rows of ``buffer`` summed per receiver (the chain cells' aggregation)."""
    parts = []
    for source, rows, count in level_input.groups:
        start = offsets[source]
        block = buffer[start : start + count] if rows is None else buffer.index_select(0, rows + start)
        parts.append(block)
    per_edge = parts[0] if len(parts) == 1 else torch.cat(parts)
    if level_input.one_to_one:
        return per_edge
    return per_edge.new_zeros(size, per_edge.shape[1]).index_add_(0, level_input.receivers, per_edge)


def _scatter_add(buffer: Tensor, offsets: list[int], level_input: LevelInputs, per_receiver: Tensor) -> None:
    """Adds each receiver's gradient to its senders' rows of ``buffer``, in place."""
    per_edge = per_receiver if level_input.one_to_one else per_receiver.index_select(0, level_input.receivers)
    done = 0
    for source, rows, count in level_input.groups:
        part = per_edge[done : done + count]
        done += count
        start = offsets[source]
        if rows is None:
            buffer[start : start + count].add_(part)
        else:
            buffer.index_add_(0, rows + start, part)


class FusedLSTMLevels(torch.autograd.Function):
    """``(h, c)`` of every node, in level order, from projected inputs ``W_ih x + b``.

    Shapes:
        projected: ``[num_nodes, 4 * hidden]`` in level order; weight_hh: ``[4 * hidden, hidden]``;
        h0, c0: ``[levels.sizes[0], hidden]`` or None; returns two ``[num_nodes, hidden]``.
    """

    @staticmethod
    def forward(ctx, projected: Tensor, weight_hh: Tensor, h0: Tensor | None, c0: Tensor | None, levels: Levels):
        hidden = weight_hh.shape[1]
        num_nodes = projected.shape[0]
        offsets = [0]
        for size in levels.sizes:
            offsets.append(offsets[-1] + size)
        h = projected.new_empty(num_nodes, hidden)
        c = projected.new_empty(num_nodes, hidden)
        tanh_c = projected.new_empty(num_nodes, hidden)
        gates = projected.clone()  # becomes the activated gates i, f, g, o
        h_in = projected.new_zeros(num_nodes, hidden)  # summed senders' h (for dW_hh)
        c_in = projected.new_zeros(num_nodes, hidden)  # summed senders' c
        weight_t = weight_hh.t()
        for depth, level_input in enumerate(levels.inputs):
            a, b = offsets[depth], offsets[depth + 1]
            if level_input is None:
                if h0 is not None:
                    h_in[a:b] = h0
                if c0 is not None:
                    c_in[a:b] = c0
            else:
                h_in[a:b] = _gather_sum(h, offsets, level_input, b - a)
                c_in[a:b] = _gather_sum(c, offsets, level_input, b - a)
            level_gates = gates[a:b]
            if level_input is not None or h0 is not None:
                level_gates.addmm_(h_in[a:b], weight_t)
            i, f, g, o = level_gates.chunk(4, 1)
            torch.sigmoid(i, out=i)
            torch.sigmoid(f, out=f)
            torch.tanh(g, out=g)
            torch.sigmoid(o, out=o)
            torch.mul(f, c_in[a:b], out=c[a:b])
            c[a:b].addcmul_(i, g)
            torch.tanh(c[a:b], out=tanh_c[a:b])
            torch.mul(o, tanh_c[a:b], out=h[a:b])
        # The activations' derivatives, for all levels at once: s(1 - s) for the sigmoid
        # gates, 1 - g^2 for the tanh block, and 1 - tanh(c)^2. Backward then multiplies
        # once per level instead of rebuilding each derivative from its activation.
        slope = gates * (1 - gates)
        g_block = gates[:, 2 * hidden : 3 * hidden]
        torch.addcmul(torch.ones_like(g_block), g_block, g_block, value=-1, out=slope[:, 2 * hidden : 3 * hidden])
        slope_c = torch.addcmul(torch.ones_like(tanh_c), tanh_c, tanh_c, value=-1)
        ctx.levels, ctx.offsets = levels, offsets
        ctx.has_h0, ctx.has_c0 = h0 is not None, c0 is not None
        ctx.save_for_backward(weight_hh, gates, slope, tanh_c, slope_c, h_in, c_in)
        return h, c

    @staticmethod
    def backward(ctx, grad_h: Tensor | None, grad_c: Tensor | None):
        weight_hh, gates, slope, tanh_c, slope_c, h_in, c_in = ctx.saved_tensors
        levels, offsets = ctx.levels, ctx.offsets
        dh = torch.zeros_like(tanh_c) if grad_h is None else grad_h.clone()
        dc = torch.zeros_like(tanh_c) if grad_c is None else grad_c.clone()
        d_gates = torch.empty_like(gates)
        d_h0 = d_c0 = None
        for depth in reversed(range(levels.num_levels)):
            a, b = offsets[depth], offsets[depth + 1]
            i, f, g, o = gates[a:b].chunk(4, 1)
            dh_l, dc_l = dh[a:b], dc[a:b]
            dc_l.addcmul_(dh_l * o, slope_c[a:b])  # dc += dh * o * tanh'(c)
            d_i, d_f, d_g, d_o = d_gates[a:b].chunk(4, 1)
            torch.mul(dc_l, g, out=d_i)  # gradients after activation ...
            torch.mul(dc_l, c_in[a:b], out=d_f)
            torch.mul(dc_l, i, out=d_g)
            torch.mul(dh_l, tanh_c[a:b], out=d_o)
            d_gates[a:b].mul_(slope[a:b])  # ... and before it
            level_input = levels.inputs[depth]
            if level_input is None:
                if ctx.has_h0:
                    d_h0 = d_gates[a:b] @ weight_hh
                if ctx.has_c0:
                    d_c0 = dc_l * f
                continue
            _scatter_add(dh, offsets, level_input, d_gates[a:b] @ weight_hh)
            _scatter_add(dc, offsets, level_input, dc_l * f)
        first = 0 if ctx.has_h0 else offsets[1]
        d_weight = d_gates[first:].t() @ h_in[first:]  # one product for all levels
        return d_gates, d_weight, d_h0, d_c0, None


def fused_lstm_levels(
    projected: Tensor, weight_hh: Tensor, levels: Levels, initial: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Runs :class:`FusedLSTMLevels`; ``initial`` is the sources' ``(h, c)`` or None."""
    h0, c0 = initial if initial is not None else (None, None)
    return FusedLSTMLevels.apply(projected, weight_hh, h0, c0, levels)
