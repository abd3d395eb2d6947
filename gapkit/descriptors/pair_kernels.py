"""Compiled (numba) vector-Jacobian product of pair-sum descriptors with compact columns.

A symmetry-function (or 2-body) feature vector is a sum over neighbour pairs, and the
derivative of centre ``i``'s features with respect to the neighbour vector ``D_p`` of
pair ``p`` is non-zero only in the few feature columns that the neighbour's species
acts on (its radial block and its 3-body blocks). :func:`compact_pair_vjp` contracts
those compact per-pair derivatives ``gC`` (P, 3, n_cols) with ``dE/dp`` gathered at
their columns, so that the dense (P, 3, F) derivative array (mostly zeros; 15 MB for a
576-atom ethanol box with the default 2-body term) is never formed. Same products and
sums as the dense contraction (``einsum("paf,pf->pa")`` over the non-zero columns);
the loop releases the GIL.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["compact_pair_vjp"]


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _compact(i, cols, gC, grad_p, out):  # pragma: no cover - jitted
    P, _, K = gC.shape
    for p in range(P):
        ip = i[p]
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        for k in range(K):
            g = grad_p[ip, cols[p, k]]
            g0 += gC[p, 0, k] * g
            g1 += gC[p, 1, k] * g
            g2 += gC[p, 2, k] * g
        out[p, 0] = g0
        out[p, 1] = g1
        out[p, 2] = g2


def compact_pair_vjp(i: np.ndarray, cols: np.ndarray, gC: np.ndarray,
                     grad_p: np.ndarray) -> np.ndarray:
    """``dE/dD_p = sum_k gC[p, :, k] grad_p[i_p, cols[p, k]]`` for every pair.

    Parameters
    ----------
    i : ndarray of shape (P,), int
        Centre of every pair.
    cols : ndarray of shape (P, K), int
        Feature column of every compact derivative column of every pair.
    gC : ndarray of shape (P, 3, K)
        ``d p_i[cols[p, k]] / d D_p`` (1/Å times the units of ``p``).
    grad_p : ndarray of shape (n_atoms, F)
        ``dE/dp``.

    Returns
    -------
    ndarray of shape (P, 3)
        ``dE/dD_p`` (eV/Å when ``E`` is in eV).
    """
    out = np.empty((len(i), 3))
    if len(i):
        _compact(np.ascontiguousarray(i, dtype=np.int64),
                 np.ascontiguousarray(cols, dtype=np.int64),
                 np.ascontiguousarray(gC, dtype=np.float64),
                 np.ascontiguousarray(grad_p, dtype=np.float64), out)
    return out
