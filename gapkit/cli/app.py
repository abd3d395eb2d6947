"""Command-line interface: ``gapkit fit | evaluate | predict | recalibrate | ...`` (see :data:`COMMANDS`).

One module per command (:mod:`gapkit.cli.fit`, :mod:`~gapkit.cli.evaluate`,
:mod:`~gapkit.cli.predict`, :mod:`~gapkit.cli.recalibrate`,
:mod:`~gapkit.cli.learning_curve`), each with an
``add_parser(subparsers)`` and a ``run(args)`` handler; the shared flags are in
:mod:`gapkit.cli.common`. The modules of :mod:`gapkit.cli` are the only ones that print.

Every ``--multi-word`` flag also takes the ``--multi_word`` spelling of MACE and
nequip (:func:`gapkit.cli.common.add_underscore_aliases`). ``--log-file PATH`` appends
the log, with timestamps, to ``PATH`` (INFO, DEBUG of gapkit with ``-v``; warnings
too) while the console keeps its level; ``--progress``/``--no-progress`` force the
progress bars on or off (default: on when stderr is a terminal, see
:mod:`gapkit.progress`). Both, like ``-v``/``-q``, may stand before or after the
sub-command, and commands with ``--config`` read them from the file too.

Errors: a user error (bad input, a file that cannot be read or written, a model
file that is not one) prints one line ``gapkit CMD: error: ...`` on stderr and exits
with 2, like a usage error; anything else prints ``gapkit CMD: internal error: ...``
and exits with 1. ``-v`` shows the traceback in both cases. ``-v`` and ``-q`` may
stand before or after the sub-command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

from gapkit._version import __version__
from gapkit.cli import (check_data, evaluate, fit, info, ipi, learning_curve, predict,
                        recalibrate, tune)
from gapkit.cli.common import add_underscore_aliases
from gapkit.cli.config import DEFAULTS_ATTR, resolve
from gapkit.progress import ENV as PROGRESS_ENV
from gapkit.progress import logging_redirect

#: The sub-command modules, in the order of ``gapkit --help``.
COMMANDS = {"fit": fit, "evaluate": evaluate, "predict": predict, "recalibrate": recalibrate,
            "learning-curve": learning_curve, "info": info, "ipi": ipi,
            "check-data": check_data, "tune": tune}
#: Exceptions that are the user's to fix (ModelFileError is a ValueError; OSError
#: covers missing, unreadable and unwritable files and directories).
USER_ERRORS = (ValueError, TypeError, OSError)
#: Console log format, and the log file's (with timestamps).
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The logger of the session records (command line, exit code, tracebacks): file only.
SESSION_LOGGER = "gapkit.cli.session"
logging.getLogger(SESSION_LOGGER).addHandler(logging.NullHandler())
logging.getLogger(SESSION_LOGGER).propagate = False  # never echoed on the console


def _verbosity_flags(p: argparse.ArgumentParser, suppress: bool) -> None:
    """``-v`` / ``-q`` on ``p``; on sub-parsers without defaults, so that a flag given
    before the sub-command is not reset by the sub-parser."""
    default = argparse.SUPPRESS if suppress else False
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log progress; show tracebacks of errors")
    g.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="print only errors (no warnings, progress logs or bars)")
    p.add_argument("--log-file", default=argparse.SUPPRESS, metavar="PATH",
                   help="append the log with timestamps to PATH (INFO; DEBUG with -v; "
                        "warnings too) while the console keeps its level")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="progress bars on stderr (default: only when stderr is a terminal; "
                        "the GAPKIT_PROGRESS environment variable sets the default)")


def build_parser() -> argparse.ArgumentParser:
    """The ``gapkit`` parser with ``--version``, ``-v``/``-q`` and every sub-command of
    :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="gapkit", description="Gaussian Approximation Potentials on DScribe SOAP.",
        epilog="Every --multi-word flag also accepts --multi_word (MACE/nequip spelling).")
    parser.add_argument("--version", action="version", version=f"gapkit {__version__}")
    _verbosity_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        p = module.add_parser(sub)
        _verbosity_flags(p, suppress=True)
        add_underscore_aliases(p)
    add_underscore_aliases(parser)
    return parser


def progress_setting(args: argparse.Namespace) -> bool | None:
    """``--progress`` (True), ``--no-progress`` or ``-q`` (False), else None (auto)."""
    progress = getattr(args, "progress", None)
    return False if progress is None and getattr(args, "quiet", False) else progress


@contextmanager
def session(args: argparse.Namespace, argv: Sequence[str]) -> Iterator[None]:
    """Logging and progress bars of one command: the console at WARNING (INFO with
    ``-v``, ERROR with ``-q``), ``--log-file`` (appended, with timestamps: INFO, DEBUG
    of gapkit with ``-v``, warnings captured), console log lines written through the
    bars (:func:`gapkit.progress.logging_redirect`) and ``GAPKIT_PROGRESS`` set from
    :func:`progress_setting`; everything is restored on exit.

    Raises
    ------
    OSError
        If the log file cannot be opened for appending.
    """
    console = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=console, format=CONSOLE_FORMAT)
    root, gapkit_log = logging.getLogger(), logging.getLogger("gapkit")
    session_log = logging.getLogger(SESSION_LOGGER)
    saved = (root.level, gapkit_log.level, os.environ.get(PROGRESS_ENV))
    progress = progress_setting(args)
    if progress is not None:
        os.environ[PROGRESS_ENV] = "1" if progress else "0"
    handler, levels = None, []
    log_file = getattr(args, "log_file", None)
    try:
        if log_file:
            handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
            handler.setLevel(logging.DEBUG if args.verbose else logging.INFO)
            handler.setFormatter(logging.Formatter(FILE_FORMAT))
            # the console keeps its level while the loggers let the file's through
            levels = [(h, h.level) for h in root.handlers if type(h) is logging.StreamHandler]
            for h, _ in levels:
                h.setLevel(max(h.level, console))
            root.addHandler(handler)
            root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
            if args.verbose:
                gapkit_log.setLevel(logging.DEBUG)
            session_log.addHandler(handler)
            logging.captureWarnings(True)
            session_log.info("gapkit %s: %s", __version__, " ".join(["gapkit", *argv]))
        with logging_redirect():
            yield
    finally:
        if handler is not None:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            session_log.removeHandler(handler)
            handler.close()
        for h, level in levels:
            h.setLevel(level)
        root.setLevel(saved[0])
        gapkit_log.setLevel(saved[1])
        if saved[2] is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = saved[2]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gapkit``; returns the exit code (2 on a user error, 1 on an internal one).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-v and -q exclude each other")
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        try:
            if hasattr(args, DEFAULTS_ATTR):  # --config: the file may set --log-file too
                args = resolve(args)
            with session(args, argv):
                code = _run(args)
                logging.getLogger(SESSION_LOGGER).info("exit code %d", code)
                return code
        except USER_ERRORS as exc:  # a bad config or log file: nothing ran yet
            return _report(args, exc, user=True)


def _run(args: argparse.Namespace) -> int:
    """The command's handler, its errors turned into exit codes (see the module docstring)."""
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print(f"gapkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        return _report(args, exc, user=True)
    except Exception as exc:  # a bug: say so, traceback with -v
        return _report(args, exc, user=False)


def _report(args: argparse.Namespace, exc: BaseException, user: bool) -> int:
    """Print the error line (traceback with ``-v``), log it with its traceback to the
    log file; returns 2 for a user error, 1 for a bug."""
    logging.getLogger(SESSION_LOGGER).error("%s: %s", type(exc).__name__, exc, exc_info=exc)
    if args.verbose:
        traceback.print_exc()
    if user:
        print(f"gapkit {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(f"gapkit {args.command}: internal error: {type(exc).__name__}: "
          f"{_one_line(exc)} (run with -v for the traceback)", file=sys.stderr)
    return 1


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (OSErrors with their file name)."""
    text = str(exc) if str(exc) else type(exc).__name__
    return " ".join(text.split())
