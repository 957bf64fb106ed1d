"""The ``lavislite`` command line. Each module in this package adds one or more subcommands.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>``; ``COMMAND_MODULES`` lists them (adding a command is a file and a
line there, as every plugin kind in lavislite is one import line). Keep module tops light: import torch
and models inside the command function.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from lavislite import __version__
from lavislite.common.errors import LavisliteError

COMMAND_MODULES = (
    "capfilt", "caption", "classify", "demo", "export", "features", "index", "match", "models", "retrieve",
    "search", "serve", "train", "vqa",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lavislite", description="BLIP vision-language models: run, train, evaluate.")
    parser.add_argument("--version", action="version", version=f"lavislite {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from lavislite.common.logging import configure_progress

    configure_progress(quiet=bool(getattr(args, "quiet", False)))  # per call: main() may run many times in one process
    try:
        return int(args.func(args) or 0)
    except LavisliteError as exc:
        # Our errors already say what is wrong and how to fix it: no traceback for users.
        print(f"lavislite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"lavislite {args.command}: error: no space left on device{where}; free some space (or point the output "
              "elsewhere) and run the command again", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
