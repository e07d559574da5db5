"""Building blocks shared by the models: MLPs, readouts, encoders."""

from .encoders import PointsToVertices, VertexEncoder
from .mlp import MLP
from .readout import Set2Set

__all__ = ["MLP", "Set2Set", "VertexEncoder", "PointsToVertices"]
