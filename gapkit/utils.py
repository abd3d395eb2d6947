"""Small helpers used across gapkit: one random-state convention, JSON and atomic writes.

Nothing here imports any other gapkit module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
