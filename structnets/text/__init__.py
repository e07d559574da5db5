"""Text as sequences and trees: SST sentiment, arithmetic on syntax trees, the character language model."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``structnets text``, the field's group: ``text classify`` and, under the field's name,
    the same ``trees`` and ``charlm`` commands as at the top level."""
    from . import charlm, classify, sentiment  # imported when the command line is built, not with the package

    parser = subparsers.add_parser(
        "text", help="the text field: classify (LSTM/GRU sentiment on SST sentences), and trees and charlm as above"
    )
    tasks = parser.add_subparsers(dest="text_task", metavar="TASK", required=True)
    classify.register(tasks)
    sentiment.register(tasks)
    charlm.register(tasks)
    return parser
