"""Progress bars a person can see: one helper around tqdm for the whole package.

:func:`progress_bar` returns a :class:`tqdm.tqdm` (a notebook widget in Jupyter when
ipywidgets is installed) that is shown

* when asked: ``progress=True`` (``False`` hides it whatever the environment);
* otherwise (``progress=None``) when the environment variable ``GAPKIT_PROGRESS`` is
  ``1``/``true``/``yes``/``on`` (``0``/``false``/``no``/``off`` hides it), else when
  standard error is a terminal or the code runs in a Jupyter kernel.

So a script in a terminal and a notebook cell show bars by default, while a batch
job whose stderr goes to a file (or a test run) prints none unless asked. In Jupyter
without ipywidgets the plain text bar is used (tqdm.auto would warn there).

Bars and log lines share standard error: inside :func:`logging_redirect` the
console log handlers write through :func:`tqdm.tqdm.write`, so a log record never
breaks a bar's line (``gapkit`` commands run inside it). Nothing here imports any
other gapkit module (the utils layer).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

from tqdm.std import tqdm as text_tqdm

__all__ = ["ENV", "progress_enabled", "progress_bar", "in_jupyter", "logging_redirect"]

#: The environment variable that turns bars on or off where ``progress`` is None.
ENV = "GAPKIT_PROGRESS"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def in_jupyter() -> bool:
    """Whether this process is a Jupyter kernel (notebook, lab, VS Code, Colab), as
    :mod:`tqdm.autonotebook` decides it (qtconsole and Spyder count as terminals)."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    if any(k == "QT_API" or k.startswith("SPYDER") for k in os.environ):
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except (KeyError, AttributeError):
        return False
    name = type(shell).__name__.lower()
    return shell is not None and "qt" not in name and "spyder" not in name


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_enabled(progress: bool | None = None, file=None) -> bool:
    """Whether a bar is shown (see the module docstring).

    Parameters
    ----------
    progress : bool, optional
        ``True``/``False`` decide; ``None``: :data:`ENV`, else a terminal or Jupyter.
    file : file-like, optional
        Where the bar goes (default: ``sys.stderr``).

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        If :data:`ENV` holds anything but the accepted spellings of on and off.
    """
    if progress is not None:
        return bool(progress)
    env = os.environ.get(ENV, "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    if env:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected one of "
                         f"{', '.join(_TRUE + _FALSE)} (or leave it unset)")
    return in_jupyter() or _isatty(sys.stderr if file is None else file)


def _bar_class(file):
    """tqdm's notebook bar in Jupyter with ipywidgets (and no explicit file), else the
    text bar."""
    if file is None and in_jupyter():
        from tqdm.notebook import IProgress, tqdm as notebook_tqdm  # imports ipywidgets

        if IProgress is not None:
            return notebook_tqdm
    return text_tqdm


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None,
                 desc: str | None = None, progress: bool | None = None, file=None,
                 leave: bool | None = None, **kwargs) -> text_tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand), shown per :func:`progress_enabled`.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate; without it, call ``update(n)`` on the bar.
    total : float, optional
        Expected iterations (default ``len(iterable)``; None and no length: a counter).
    desc : str, optional
        Label in front of the bar.
    progress : bool, optional
        ``True``/``False``: show/hide; ``None``: decide from the environment.
    file : file-like, optional
        Stream of a text bar (default: ``sys.stderr`` when the bar starts).
    leave : bool, optional
        Keep the finished bar on screen; ``None`` (default): only a bar at the top
        (nested bars, e.g. the fits inside a learning curve, disappear when done).
    **kwargs
        Passed on to :class:`tqdm.tqdm` (``unit``, ``postfix``, ...).

    Returns
    -------
    tqdm.tqdm
        Disabled (a no-op that still iterates) when not shown; use it as a context
        manager or call ``close()``.
    """
    show = progress_enabled(progress, file)
    cls = _bar_class(file) if show else text_tqdm
    if leave is None and cls is not text_tqdm:
        # the notebook bar reads leave=None as False: keep it when nothing else is open
        leave = not any(not bar.disable for bar in list(getattr(cls, "_instances", ())))
    return cls(iterable, total=total, desc=desc, disable=not show, file=file, leave=leave,
               dynamic_ncols=True, **kwargs)


class _BarSafeHandler(logging.StreamHandler):
    """A console handler that writes through ``tqdm.write`` (bars are cleared and
    redrawn around the record)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text_tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's own contract: never raise from emit
            self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
    return (type(handler) is logging.StreamHandler
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr))


@contextmanager
def logging_redirect(logger: logging.Logger | None = None) -> Iterator[None]:
    """Within the block, console handlers of ``logger`` (default: the root logger)
    write through tqdm, keeping their level, formatter and filters; file handlers are
    left alone. Handlers are restored on exit.

    Parameters
    ----------
    logger : logging.Logger, optional
    """
    logger = logging.getLogger() if logger is None else logger
    swapped = []
    for handler in list(logger.handlers):
        if _is_console(handler):
            safe = _BarSafeHandler(handler.stream)
            safe.setLevel(handler.level)
            safe.setFormatter(handler.formatter)
            for f in handler.filters:
                safe.addFilter(f)
            logger.removeHandler(handler)
            logger.addHandler(safe)
            swapped.append((handler, safe))
    try:
        yield
    finally:
        for handler, safe in swapped:
            logger.removeHandler(safe)
            logger.addHandler(handler)
