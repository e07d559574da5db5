"""structnets: neural networks on structured data, where an RNN is message passing on a chain.

The library is built from three kinds of parts: structures (chains, trees, DAGs and graphs
as an ``edge_index`` in torch_geometric's convention), cells (:mod:`structnets.cells`)
and schedules (:mod:`structnets.schedules`), tied together by one loop,
:func:`structnets.propagate`.
"""

from .core import cells, schedules
from .core.cells import (
    ChildSumTreeGRUCell,
    ChildSumTreeLSTMCell,
    ElmanCell,
    GRUCell,
    LSTMCell,
    NaryTreeLSTMCell,
    Nonlinearity,
)
from .core.chains import chains
from .core.propagate import GraphState, propagate, propagate_levels, propagate_rounds
from .core.rnn import RNN, ProjectedLSTMCell, RNNArgumentError, RNNCallError
from .core.schedules import CycleError, Synchronous, Topological, topological_levels
from .graphs.neighbors import knn, knn_graph, radius, radius_graph

__version__ = "0.6.0"

__all__ = [
    "cells",
    "schedules",
    "RNN",
    "RNNArgumentError",
    "RNNCallError",
    "ProjectedLSTMCell",
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "ChildSumTreeLSTMCell",
    "ChildSumTreeGRUCell",
    "NaryTreeLSTMCell",
    "Nonlinearity",
    "propagate",
    "GraphState",
    "propagate_levels",
    "propagate_rounds",
    "CycleError",
    "Synchronous",
    "Topological",
    "topological_levels",
    "chains",
    "radius_graph",
    "knn_graph",
    "radius",
    "knn",
]
