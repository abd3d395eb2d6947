"""Small helpers used across gapkit: one random-state convention, JSON and atomic writes.

Nothing here imports any other gapkit module.
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state

__all__ = ["check_random_state", "seeded_clone", "to_jsonable", "atomic_write_bytes"]


def seeded_clone(estimator, random_state):
    """Unfitted clone of ``estimator``; a clone whose ``random_state`` is None gets a seed
    drawn from ``random_state`` (int, RandomState or None, see
    :func:`sklearn.utils.check_random_state`), so that repeated fits are reproducible."""
    m = clone(estimator)
    if getattr(m, "random_state", None) is None:
        m.set_params(random_state=int(check_random_state(random_state).randint(2 ** 31 - 1)))
    return m


def to_jsonable(x, fallback=repr):
    """Plain-JSON version of nested dicts/lists with numpy scalars and arrays.

    Non-finite floats become ``None`` (strict JSON); paths become strings; any other
    object goes through ``fallback`` (``repr`` by default).
    """
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v, fallback) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v, fallback) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist(), fallback)
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if np.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (str, int)) or x is None:
        return x
    return fallback(x)


def _umask() -> int:
    """The process umask (read from /proc on Linux, so no thread ever sees it changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Temporary files of a save to ``path`` are ``.<name>.<pid>.<random>.tmp`` beside it.
_STALE_AGE_S = 3600.0


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``.<name>.*.tmp`` files left beside ``path`` by a killed save: those of a
    process that no longer runs, and any older than an hour."""
    now = time.time()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        pid = int(parts[0]) if parts and parts[0].isdigit() else None
        try:
            stale = now - tmp.stat().st_mtime > _STALE_AGE_S or (pid is not None and not _alive(pid))
            if stale:
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to remove


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid < 2 ** 22  # another user's process, or no such pid
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    The file gets the mode of the file it replaces, or else ``0666`` less the umask
    (``0644`` usually), not the ``0600`` of a temporary file. Any failure (a full
    disk, an interrupted write, a failing rename) leaves an existing ``path``
    unchanged and removes the temporary file; temporaries of an earlier save that was
    killed are removed first.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a directory.
    OSError
        If the folder cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"'{path}' is a directory: give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_END = object()


def ordered_map(fn: Callable, items: Iterable, threads: int = 1, ahead: int | None = None
                ) -> Iterator:
    """``fn(item)`` for every item, yielded in the order of ``items``.

    With ``threads > 1`` the calls run on a pool of that many threads, at most
    ``ahead`` (default ``2 threads + 2``) submitted beyond the one whose result is
    awaited, so the consumer's work overlaps the calls and memory stays bounded;
    futures not yet started are cancelled when the consumer stops early. Per-thread resources (descriptor engines
    are not shared between threads) are ``fn``'s business, e.g. a ``threading.local``.
    """
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    ahead = 2 * threads + 2 if ahead is None else max(1, int(ahead))
    todo = iter(items)
    pending: deque = deque()
    with ThreadPoolExecutor(int(threads)) as pool:
        try:
            for item in todo:
                pending.append(pool.submit(fn, item))
                if len(pending) >= ahead:
                    break
            while pending:
                fut = pending.popleft()
                nxt = next(todo, _END)
                if nxt is not _END:
                    pending.append(pool.submit(fn, nxt))
                yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()
