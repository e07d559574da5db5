"""The level loop captured once per schedule: one compiled program, replayed as a CUDA graph.

Eager, the level loop launches a handful of small kernels per level, and on a GPU the
launch overhead, not the arithmetic, sets its speed (a chain of 100 levels of 64 nodes is
several times slower than cuDNN). A schedule fixes every shape and index of the loop, so
the whole forward and backward pass can be captured once and replayed:
:func:`capture_levels` compiles :func:`~structnets.core.propagate.propagate_levels` for
one :class:`~structnets.core.schedules.Levels` with ``torch.compile(fullgraph=True,
mode="reduce-overhead")``, whose CUDA backend records the kernels as CUDA graphs (torch's
cudagraph trees) and replays them on later calls. On a CPU the same call compiles the
loop with inductor and runs it without graphs.

The captured program belongs to its schedule: call it with inputs of that graph's
``num_nodes`` rows (and the same dtype and device). A new graph wants a new capture, which
costs a compilation (seconds), so capture pays where one schedule runs many times: a
fixed batch shape in training, or inference on one structure.

This is what ``benchmarks/core_speed.py --capture`` measures.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .cells import RecurrentCell, State
from .propagate import propagate_levels
from .schedules import Levels, topological_levels

__all__ = ["capture_levels"]


def capture_levels(
    cell: RecurrentCell,
    edge_index: Tensor,
    num_nodes: int,
    *,
    reverse: bool = False,
    mode: str = "reduce-overhead",
) -> Callable[..., State]:
    """The level loop of ``cell`` over one graph, compiled whole for replay.

    Args:
        cell: the step (any cell of :mod:`structnets.cells`).
        edge_index: ``[2, num_edges]``, child -> parent, of a DAG.
        num_nodes: its number of nodes.
        reverse: run against the edges (root to leaves).
        mode: ``torch.compile``'s mode; ``"reduce-overhead"`` captures CUDA graphs on a
            GPU, ``"default"`` compiles without them.

    Returns:
        ``run(inputs, initial=None, edge_attr=None) -> state``, the same as
        ``propagate_levels(cell, inputs, levels, ...)`` for this graph's schedule.

    Raises:
        CycleError: the graph has a cycle.
    """
    levels: Levels = topological_levels(edge_index, num_nodes, reverse=reverse)
    compiled = torch.compile(propagate_levels, fullgraph=True, mode=mode, dynamic=False)

    def run(inputs: Tensor, initial: Tensor | None = None, edge_attr: Tensor | None = None) -> State:
        if inputs.shape[0] != num_nodes:
            raise ValueError(
                f"this capture is of a graph of {num_nodes} nodes, got inputs of {inputs.shape[0]} rows; "
                "capture the other graph's schedule"
            )
        if torch.cuda.is_available() and inputs.is_cuda and mode == "reduce-overhead":
            # Each replay overwrites the previous one's outputs: mark where one step ends.
            torch.compiler.cudagraph_mark_step_begin()
        return compiled(cell, inputs, levels, initial=initial, edge_attr=edge_attr)

    return run
