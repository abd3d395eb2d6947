"""Command-line interface: ``gapkit fit | evaluate | predict | recalibrate | ...`` (see :data:`COMMANDS`).

One module per command (:mod:`gapkit.cli.fit`, :mod:`~gapkit.cli.evaluate`,
:mod:`~gapkit.cli.predict`, :mod:`~gapkit.cli.recalibrate`,
:mod:`~gapkit.cli.learning_curve`), each with an
``add_parser(subparsers)`` and a ``run(args)`` handler; the shared flags are in
:mod:`gapkit.cli.common`. The modules of :mod:`gapkit.cli` are the only ones that print.

Errors: a user error (bad input, a file that cannot be read or written, a model
file that is not one) prints one line ``gapkit CMD: error: ...`` on stderr and exits
with 2, like a usage error; anything else prints ``gapkit CMD: internal error: ...``
and exits with 1. ``-v`` shows the traceback in both cases. ``-v`` and ``-q`` may
stand before or after the sub-command.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from typing import Sequence

from gapkit._version import __version__
from gapkit.cli import check_data, evaluate, fit, info, ipi, learning_curve, predict, recalibrate

#: The sub-command modules, in the order of ``gapkit --help``.
COMMANDS = {"fit": fit, "evaluate": evaluate, "predict": predict, "recalibrate": recalibrate,
            "learning-curve": learning_curve, "info": info, "ipi": ipi,
            "check-data": check_data}
#: Exceptions that are the user's to fix (ModelFileError is a ValueError; OSError
#: covers missing, unreadable and unwritable files and directories).
USER_ERRORS = (ValueError, TypeError, OSError)


def _verbosity_flags(p: argparse.ArgumentParser, suppress: bool) -> None:
    """``-v`` / ``-q`` on ``p``; on sub-parsers without defaults, so that a flag given
    before the sub-command is not reset by the sub-parser."""
    default = argparse.SUPPRESS if suppress else False
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log progress; show tracebacks of errors")
    g.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="print only errors (no warnings or progress logs)")


def build_parser() -> argparse.ArgumentParser:
    """The ``gapkit`` parser with ``--version``, ``-v``/``-q`` and every sub-command of
    :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="gapkit", description="Gaussian Approximation Potentials on DScribe SOAP.")
    parser.add_argument("--version", action="version", version=f"gapkit {__version__}")
    _verbosity_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        _verbosity_flags(module.add_parser(sub), suppress=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gapkit``; returns the exit code (2 on a user error, 1 on an internal one).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-v and -q exclude each other")
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        try:
            return COMMANDS[args.command].run(args)
        except KeyboardInterrupt:
            print(f"gapkit {args.command}: interrupted", file=sys.stderr)
            return 130
        except USER_ERRORS as exc:
            if args.verbose:
                traceback.print_exc()
            print(f"gapkit {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:  # a bug: say so, traceback with -v
            if args.verbose:
                traceback.print_exc()
            print(f"gapkit {args.command}: internal error: {type(exc).__name__}: "
                  f"{_one_line(exc)} (run with -v for the traceback)", file=sys.stderr)
            return 1


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (OSErrors with their file name)."""
    text = str(exc) if str(exc) else type(exc).__name__
    return " ".join(text.split())
