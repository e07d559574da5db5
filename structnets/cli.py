"""The ``structnets`` command: one subcommand per task."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .chem import molprop
from .lidar import detect
from .physics import simulate
from .sequences import copy_recall as memory_tasks
from .sequences import palindrome
from .text import charlm, sentiment

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structnets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"structnets {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    palindrome.register(subparsers)
    molprop.register(subparsers)
    sentiment.register(subparsers)
    simulate.register(subparsers)
    detect.register(subparsers)
    memory_tasks.register(subparsers)
    charlm.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as error:
        print(f"structnets {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
