"""Building blocks shared by the models: MLPs, readouts, encoders."""

from .attention import Attention, AttentionMemory, AttentionScore, padded_edges, padded_weights, softmax_aggregate
from .encoders import PointsToVertices, VertexEncoder
from .mlp import MLP
from .readout import Set2Set

__all__ = [
    "MLP",
    "Set2Set",
    "VertexEncoder",
    "PointsToVertices",
    "Attention",
    "AttentionMemory",
    "AttentionScore",
    "softmax_aggregate",
    "padded_edges",
    "padded_weights",
]
