"""Compiled (numba) row normalisation ``q = p / |p|`` and its vector-Jacobian product.

The normalised descriptors of :class:`~gapkit.descriptors.base.Descriptor` need, per
call, the row norms of the raw vectors ``p`` (n_atoms, F), ``q = p / |p|`` and, for
forces, ``dE/dp = (g - q (q . g)) / |p|`` from ``g = dE/dq``. With numpy that is five
to six passes over (n_atoms, F) arrays (two ``norm`` calls, a division, ``einsum``,
a product, a sum, a division), each with its own temporary; here each is one pass
over the rows (the row stays in cache between its two loops). Same operations as the
numpy forms (division by the norm, not multiplication by its inverse), equal to them
up to the order of the sums (~1e-16 relative). The loops release the GIL.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["normalise_rows", "normalised_gradient"]

_FAST = {"reassoc", "contract", "nsz"}


@nb.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _normalise(p, q, norms):  # pragma: no cover - jitted
    for i in range(p.shape[0]):
        t = 0.0
        for f in range(p.shape[1]):
            t += p[i, f] * p[i, f]
        n = np.sqrt(t)
        norms[i] = n
        for f in range(p.shape[1]):
            q[i, f] = p[i, f] / n


@nb.njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _gradient(q, norms, g, out):  # pragma: no cover - jitted
    for i in range(q.shape[0]):
        t = 0.0
        for f in range(q.shape[1]):
            t += q[i, f] * g[i, f]
        n = norms[i]
        for f in range(q.shape[1]):
            out[i, f] = (g[i, f] - q[i, f] * t) / n


def normalise_rows(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row norms and normalised rows of ``p``.

    Parameters
    ----------
    p : ndarray of shape (n, F)
        Raw vectors (float64).

    Returns
    -------
    q : ndarray of shape (n, F)
        ``p / |p|`` row by row (rows with ``|p| = 0`` give NaN, as numpy's division
        does; check the norms first).
    norms : ndarray of shape (n,)
        ``|p_i|``.
    """
    p = np.ascontiguousarray(p, dtype=np.float64)
    q = np.empty_like(p)
    norms = np.empty(p.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        _normalise(p, q, norms)
    return q, norms


def normalised_gradient(q: np.ndarray, norms: np.ndarray, grad_q: np.ndarray) -> np.ndarray:
    """``dE/dp = (g - q (q . g)) / |p|`` row by row, from ``g = dE/dq``.

    Parameters
    ----------
    q : ndarray of shape (n, F)
        Normalised rows (:func:`normalise_rows`).
    norms : ndarray of shape (n,)
        Their raw norms (non-zero).
    grad_q : ndarray of shape (n, F)
        ``dE/dq``.

    Returns
    -------
    ndarray of shape (n, F)
        ``dE/dp`` (a new array; ``grad_q`` is not changed).
    """
    q = np.ascontiguousarray(q, dtype=np.float64)
    g = np.ascontiguousarray(grad_q, dtype=np.float64)
    if g.shape != q.shape or norms.shape != (q.shape[0],):
        raise ValueError(f"shapes differ: q {q.shape}, grad_q {g.shape}, norms {norms.shape}")
    out = np.empty_like(q)
    _gradient(q, np.ascontiguousarray(norms, dtype=np.float64), g, out)
    return out
