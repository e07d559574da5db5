"""Models built from structnets' cells and schedules."""

from .mpnn import MPNN, EdgeNetwork, MPNNConfig, Set2Set
from .pointgnn import PointGNN, PointGNNConfig
from .tree_lstm import TreeClassifier

__all__ = ["MPNN", "MPNNConfig", "EdgeNetwork", "Set2Set", "TreeClassifier", "PointGNN", "PointGNNConfig"]
