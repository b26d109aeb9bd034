"""The ``graftnet`` command: parses, calls the library, prints.

Subcommands live in the modules of ``MODULES``. Each defines ``register(subparsers)``,
which adds its parsers with ``set_defaults(func=handler)`` (``handler(args) -> int``),
and ``COMMANDS``, the names it adds. When two modules add the same command, the later
one in ``MODULES`` wins (the study module's ``demo`` replaces the interim one of
``graftnet.cli.train``). A module that is not there yet is skipped.

    >>> main(["inspect", "runs/fashion_mlp-20250101-120000/model"])   # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import graftnet
from graftnet.errors import GraftnetError

__all__ = ["main", "build_parser", "MODULES"]

MODULES = ("graftnet.cli.train", "graftnet.cli.transfer", "graftnet.cli.convert", "graftnet.cli.study",
           "graftnet.cli.tune", "graftnet.cli.pretrain", "graftnet.cli.catalog", "graftnet.cli.rank")

DESCRIPTION = """\
graftnet trains deep networks and reuses their trained layers (transfer learning).
Every layer has a name (hidden1, hidden2, ..., outputs); commands pick layers by name.

examples:
  graftnet demo                                      Fashion-MNIST A -> B transfer study, 5 seeds, with a report
  graftnet train examples/recipes/fashion_mlp.toml   train from a recipe; writes runs/fashion_mlp-<time>/
  graftnet inspect runs/fashion_mlp-<time>/model     layers, shapes, parameters, what is frozen
  graftnet evaluate runs/fashion_mlp-<time>          loss and accuracy on the test split
  graftnet pretrain examples/recipes/pretrain_mnist_siamese.toml   a base pretrained without the target labels

Run `graftnet COMMAND --help` for a command's options and examples.
Data: Fashion-MNIST is read from /usr/share/datasets/fashion-mnist, $GRAFTNET_DATA or
~/.cache/graftnet (downloaded there with checksums if missing)."""


def _load_modules() -> list[ModuleType]:
    modules = []
    for name in MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            if err.name != name:  # a module that is there but fails to import is a bug: show it
                raise
    return modules


class _Subparsers:
    """Forwards ``add_parser`` to argparse, except for commands a later module replaces."""

    def __init__(self, action: Any, skip: set[str]) -> None:
        self._action, self._skip = action, skip

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if name in self._skip:
            return argparse.ArgumentParser(prog=f"graftnet {name}", add_help=False)  # discarded
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        return self._action.add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The ``graftnet`` parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="graftnet", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"graftnet {graftnet.__version__} (torch {_torch_version()})")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and debug logging (anywhere on the command line)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    modules = _load_modules()
    owner = {command: i for i, module in enumerate(modules) for command in getattr(module, "COMMANDS", ())}
    for i, module in enumerate(modules):
        later = {command for command, j in owner.items() if j > i}
        module.register(_Subparsers(subparsers, later))
    return parser


def _torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 - only for the version line
        return "unknown"


def _take_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether it was there: the flag works anywhere on the
    line (``graftnet train r.toml --debug`` as well as ``graftnet --debug train r.toml``), up to
    a ``--`` after which every word is an argument."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    return [a for a in argv[:end] if a != "--debug"] + argv[end:], debug


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``graftnet`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    argv, debug = _take_debug(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.debug = debug
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="graftnet: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GraftnetError as err:
        if args.debug:
            traceback.print_exc()
        print(f"graftnet: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("graftnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `graftnet predict ... | head`
        return 0
