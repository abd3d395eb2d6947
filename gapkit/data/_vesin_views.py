"""vesin's result arrays as numpy views without a new ctypes type per call.

vesin (0.6) turns each result pointer into an array with ``np.ctypeslib.as_array``.
That function builds a ctypes array type ``c_double * n`` and a ``POINTER`` to it for
every new length ``n``, and ctypes keeps both forever (CPython issue #100926). A
neighbour list has a different number of pairs almost every time (a new structure, an
MD step), so each call cost about 15 kB that was never freed: 12 kB per training
structure on a Dask worker, and without bound along a long MD run.

:func:`install` replaces vesin's numpy converter with one that builds the same view
(same address, shape and dtype; no copy) from an ``__array_interface__``, which
creates no type. Only the numpy path changes; torch and cupy inputs are untouched.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["install", "pointer_view"]


class _Interface:
    """An object numpy can view: the address, shape and type string of a buffer."""

    __slots__ = ("__array_interface__",)

    def __init__(self, address: int, shape: tuple, typestr: str):
        self.__array_interface__ = {"version": 3, "data": (address, False),
                                    "shape": shape, "typestr": typestr}


def pointer_view(ptr, shape, dtype, owner=None, device=None) -> np.ndarray:
    """A writable numpy view of ``prod(shape)`` items of ctypes type ``dtype`` at ``ptr``.

    Parameters
    ----------
    ptr : ctypes pointer
        Start of the buffer (any pointer type; only its address is used).
    shape : tuple of int
        Shape of the view (C order).
    dtype : ctypes scalar type
        Item type, e.g. ``ctypes.c_double`` (float64), ``ctypes.c_size_t``.
    owner, device
        Accepted for vesin's signature; the view does not keep ``owner`` alive (as
        vesin's own converter), so copy what must outlive the neighbour list.

    Returns
    -------
    ndarray of shape ``shape``
    """
    address = ctypes.cast(ptr, ctypes.c_void_p).value
    shape = tuple(int(s) for s in shape)
    typestr = np.dtype(dtype).str
    if not address:
        if int(np.prod(shape)):
            raise ValueError(f"null pointer for an array of shape {shape}")
        return np.empty(shape, dtype=typestr)
    return np.asarray(_Interface(address, shape, typestr))


def install() -> bool:
    """Make vesin's numpy path use :func:`pointer_view` (idempotent).

    Returns
    -------
    bool
        Whether vesin's converter is :func:`pointer_view` now (False if this vesin has
        no ``_neighbors._ptr_to_numpy``: it is then left alone).
    """
    try:
        from vesin import _neighbors
    except ImportError:  # pragma: no cover - vesin is a dependency
        return False
    if getattr(_neighbors, "_ptr_to_numpy", None) is None:
        logger.debug("vesin has no _neighbors._ptr_to_numpy: its array converter is kept")
        return False
    if _neighbors._ptr_to_numpy is not pointer_view:
        _neighbors._ptr_to_numpy = pointer_view
    return True
