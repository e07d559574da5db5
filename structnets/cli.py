"""The ``structnets`` command: one subcommand per task."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

__all__ = ["main", "build_parser"]

#: The task modules, in the order ``--help`` lists them, with the command names each
#: registers (for the stand-in when the module's extra is not installed).
TASKS = (
    ("structnets.sequences.palindrome", ("palindrome",), None),
    ("structnets.chem.molprop", ("molprop", "chem"), "chem"),
    ("structnets.text.sentiment", ("trees",), None),
    ("structnets.physics.simulate", ("simulate", "physics"), None),
    ("structnets.lidar.detect", ("detect", "lidar"), "lidar"),
    ("structnets.sequences.copy_recall", ("memory",), None),
    ("structnets.text.charlm", ("charlm",), None),
    ("structnets.sequences.execute", ("sequences",), None),
    ("structnets.text", ("text",), None),
)


def _missing_extra(extra: str, error: ImportError):
    def run(args: argparse.Namespace) -> int:
        print(
            f"structnets {args.command}: error: {error.msg} (install it with pip install 'structnets[{extra}]')",
            file=sys.stderr,
        )
        return 2

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structnets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"structnets {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module, names, extra in TASKS:
        try:
            task = importlib.import_module(module)
        except ImportError as error:
            if extra is None or error.name not in ("rdkit", "shapely"):
                raise
            # A field whose extra is missing still has its command, which says what to install.
            stand_in = subparsers.add_parser(names[0], aliases=list(names[1:]), help=f"(needs structnets[{extra}])")
            stand_in.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            stand_in.set_defaults(func=_missing_extra(extra, error))
            continue
        task.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError, ImportError) as error:
        print(f"structnets {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
