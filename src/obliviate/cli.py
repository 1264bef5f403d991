"""The ``obliviate`` command: one subcommand per pipeline stage.

Each subcommand lives in ``obliviate.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args, returning an exit code).
Modules are imported only when building the parser, and heavy libraries only inside ``func``,
so ``obliviate --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

#: Pipeline order, as shown by ``obliviate --help``.
COMMANDS = ["models", "augment", "train", "merge", "eval", "report", "run", "demo"]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="obliviate",
        description="Make a language model forget selected knowledge (ULMR, SNAP, baselines) and measure it.",
    )
    parser.add_argument("--version", action="version", version=f"obliviate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"obliviate.commands.{name}")
        except ModuleNotFoundError as e:  # a command whose optional module is absent is not offered
            if e.name != f"obliviate.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``obliviate`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .config import ConfigError
    from .data.records import DataError
    from .models import ModelLoadError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataError, ModelLoadError, FileNotFoundError, FileExistsError) as e:
        print(f"obliviate {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"obliviate {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
