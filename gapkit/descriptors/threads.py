"""Threads of the descriptor engines: BLAS capped, compiled loops on a set number.

The engines do many small matrix products (per atom and angular momentum). A
multi-threaded BLAS gains nothing on them and, on a loaded machine, can make a call
several times slower, so every engine call runs inside :func:`engine_threads`, which

* caps the BLAS libraries to **one** thread (``threadpoolctl``) for the call
  (OpenMP, which ``sphericart`` uses, keeps the process's setting,
  ``OMP_NUM_THREADS``);
* runs the compiled (numba) loops over centres on :func:`get_engine_threads`
  threads: 1 by default, the ``GAPKIT_NUM_THREADS`` environment variable, or
  :func:`set_engine_threads` (the results do not depend on it).

A large cell (more than one block of atoms, :mod:`gapkit.model.prediction`) is
evaluated on :func:`block_threads` worker threads instead, each block on one engine
and one BLAS thread. By default (nothing set) that is one worker per *free* core:
cores this process may use minus the other runnable tasks at the moment of the call
(``/proc/loadavg``), so a busy machine gets one thread; an explicit setting is used as
it is. The kernel products of smaller structures (large matrix products) are outside
the engine and keep the process's BLAS setting (``OMP_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator

import numba
from threadpoolctl import ThreadpoolController

__all__ = ["block_threads", "current_threads", "engine_threads", "get_engine_threads",
           "set_engine_threads"]

_state = {"threads": None, "controller": None}
_lock = threading.Lock()
_local = threading.local()  # threads of the innermost engine_threads context


def _env_threads() -> int | None:
    """``GAPKIT_NUM_THREADS`` (None when unset or blank); each text is parsed once
    (:func:`_parse_env_threads` is cached), so a change made during the run is seen by
    the next call and an invalid value raises on every call."""
    return _parse_env_threads(os.environ.get("GAPKIT_NUM_THREADS"))


@functools.lru_cache(maxsize=8)
def _parse_env_threads(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"GAPKIT_NUM_THREADS must be a positive integer, got {text!r}") from None
    if n < 1:
        raise ValueError(f"GAPKIT_NUM_THREADS must be a positive integer, got {text!r}")
    return n


def get_engine_threads() -> int:
    """Threads of the engines' compiled loops (default 1, or ``GAPKIT_NUM_THREADS``)."""
    n = _explicit_threads()
    return 1 if n is None else n


def _explicit_threads() -> int | None:
    """:func:`set_engine_threads`, else ``GAPKIT_NUM_THREADS``, else None."""
    n = _state["threads"]
    return _env_threads() if n is None else n


def set_engine_threads(n: int | None) -> None:
    """Set the threads of the engines' compiled loops (``None``: back to the default).

    Raises
    ------
    ValueError
        For ``n < 1``.
    """
    if n is not None and int(n) < 1:
        raise ValueError(f"the number of engine threads must be >= 1, got {n}")
    _state["threads"] = None if n is None else int(n)


def _controller() -> ThreadpoolController:
    with _lock:
        if _state["controller"] is None:
            _state["controller"] = ThreadpoolController()
        return _state["controller"]


@contextlib.contextmanager
def engine_threads(n: int | None = None) -> Iterator[int]:
    """Context of one engine call: BLAS on one thread, numba loops on ``n`` threads.

    Parameters
    ----------
    n : int, optional
        Threads of the compiled loops; default: those of the enclosing context (a
        worker thread's ``engine_threads(1)`` holds inside it), else
        :func:`get_engine_threads`. Capped at numba's ``NUMBA_NUM_THREADS`` (the
        cores it found).

    Yields
    ------
    int
        The number of threads the compiled loops use.
    """
    outer = getattr(_local, "threads", None)
    if n is None:
        n = get_engine_threads() if outer is None else outer
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    _local.threads = n
    try:
        # numba's thread pool is started only when more than one thread is asked for
        previous = numba.get_num_threads() if n > 1 else None
        if previous is not None:
            numba.set_num_threads(n)
        try:
            ctl = None if outer is not None else _controller()  # nested: outer caps hold
            if ctl is None or not any(lc.num_threads > 1 for lc in ctl.lib_controllers
                                      if lc.user_api == "blas"):
                yield n  # already within the cap: nothing to change (about 1 µs)
            else:
                # BLAS only: OpenMP is left as it is (sphericart sizes its per-thread
                # buffers by the OpenMP threads it was built under; raising them later
                # corrupts the heap)
                with ctl.limit(limits=1, user_api="blas"):
                    yield n
        finally:
            if previous is not None:
                numba.set_num_threads(previous)
    finally:
        _local.threads = outer


def current_threads() -> int:
    """Threads of the compiled loops in the current :func:`engine_threads` context (1
    outside one)."""
    return getattr(_local, "threads", None) or 1


def block_threads(n_blocks: int) -> int:
    """Worker threads for ``n_blocks`` independent blocks of atoms (a large cell's
    prediction; each worker runs its blocks on one engine and one BLAS thread).

    The explicit setting (:func:`set_engine_threads`, ``GAPKIT_NUM_THREADS``) if
    there is one, else the free cores (:func:`free_cores`); at most ``n_blocks`` and
    the cores numba found; 1 inside an engine call.
    """
    if getattr(_local, "threads", None) is not None:
        return 1
    n = _explicit_threads()
    n = free_cores() if n is None else n
    return max(1, min(n, int(n_blocks), numba.config.NUMBA_NUM_THREADS))


def free_cores() -> int:
    """Cores this process may use minus the other tasks running right now (>= 1).

    Runnable tasks come from the fourth field of ``/proc/loadavg`` (this thread is
    one of them); without it (not Linux) all usable cores count as free.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return cores
    return max(1, cores - max(0, running - 1))
