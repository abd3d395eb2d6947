"""Command-line interface: ``gapkit fit | evaluate | predict | recalibrate | learning-curve``.

One module per command (:mod:`gapkit.cli.fit`, :mod:`~gapkit.cli.evaluate`,
:mod:`~gapkit.cli.predict`, :mod:`~gapkit.cli.recalibrate`,
:mod:`~gapkit.cli.learning_curve`), each with an
``add_parser(subparsers)`` and a ``run(args)`` handler; the shared flags are in
:mod:`gapkit.cli.common`. The modules of :mod:`gapkit.cli` are the only ones that print.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from gapkit.cli import evaluate, fit, learning_curve, predict, recalibrate

#: The sub-command modules, in the order of ``gapkit --help``.
COMMANDS = {"fit": fit, "evaluate": evaluate, "predict": predict, "recalibrate": recalibrate,
            "learning-curve": learning_curve}


def build_parser() -> argparse.ArgumentParser:
    """The ``gapkit`` parser with ``-v`` and every sub-command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="gapkit", description="Gaussian Approximation Potentials on DScribe SOAP.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gapkit``; returns the exit code (2 on a reported error).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"gapkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
