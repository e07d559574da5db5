"""Models built from structnets' cells, schedules and building blocks (:mod:`structnets.nn`)."""

from ..nn.attention import AttentionScore
from ..nn.readout import Set2Set
from .char_lm import CharLM, CharLMConfig
from .gns import GNSConfig, LearnedSimulator
from .memory_network import Addressing, MemoryConfig, MemoryNetwork
from .mpnn import MPNN, EdgeNetwork, MPNNConfig
from .multi_mpnn import MultiMPNN, MultiMPNNConfig
from .pointgnn import PointGNN, PointGNNConfig
from .seq2seq import CellKind, GreedyDecoder, Seq2Seq, Seq2SeqConfig, decoder_inputs, sequence_loss
from .sequence_classifier import SequenceClassifier, SequenceClassifierConfig
from .tree2seq import Tree2Seq, Tree2SeqConfig
from .tree_lstm import ExportableTreeClassifier, TreeCell, TreeClassifier, TreeClassifierConfig

__all__ = [
    "ExportableTreeClassifier",
    "MPNN",
    "MPNNConfig",
    "EdgeNetwork",
    "MultiMPNN",
    "MultiMPNNConfig",
    "Set2Set",
    "GNSConfig",
    "LearnedSimulator",
    "TreeClassifier",
    "TreeClassifierConfig",
    "TreeCell",
    "CharLM",
    "CharLMConfig",
    "PointGNN",
    "PointGNNConfig",
    "Addressing",
    "MemoryConfig",
    "MemoryNetwork",
    "SequenceClassifier",
    "SequenceClassifierConfig",
    "Seq2Seq",
    "Seq2SeqConfig",
    "GreedyDecoder",
    "Tree2Seq",
    "Tree2SeqConfig",
    "CellKind",
    "sequence_loss",
    "decoder_inputs",
    "AttentionScore",
]
