"""Structures and their builders: the batch container, trees (PTB brackets, tuples, networkx,
Python source), neighbour graphs of point sets (radius, k nearest) and Point-GNN's point graphs."""

from ..core.chains import Chains, chains, forest_edges
from .neighbors import NeighborBackend, NeighborCapWarning, knn, knn_graph, radius, radius_graph
from .trees import (
    ProgramGraph,
    Tree,
    TreeBatch,
    TreeData,
    TreeSyntaxError,
    Vocabulary,
    batch_trees,
    chain_data,
    dag_edges_from_networkx,
    parse_ptb,
    python_graph,
    read_ptb,
    tree_from_networkx,
    tree_from_python,
    tree_from_tuple,
)

__all__ = [
    "TreeData",
    "chain_data",
    "Chains",
    "chains",
    "forest_edges",
    "NeighborBackend",
    "NeighborCapWarning",
    "knn",
    "knn_graph",
    "radius",
    "radius_graph",
    "ProgramGraph",
    "Tree",
    "TreeBatch",
    "TreeSyntaxError",
    "Vocabulary",
    "batch_trees",
    "dag_edges_from_networkx",
    "parse_ptb",
    "python_graph",
    "read_ptb",
    "tree_from_networkx",
    "tree_from_python",
    "tree_from_tuple",
]
