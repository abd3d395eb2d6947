"""The one segment-sum (scatter-add) primitive of the descriptor engines.

Every fold of per-pair or per-triplet rows onto atoms, centres or feature blocks
goes through :func:`segment_matrix` (a CSR matrix with one entry per input row) or
:func:`segment_sum` (which applies it, with a ``bincount`` fast path for small
inputs). Both sum the rows of a segment in input order, so the two routes give
identical results.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Inputs with at most this many values (rows x columns) are summed with ``bincount``.
_BINCOUNT_MAX = 131072


def segment_matrix(rows: np.ndarray, n_rows: int, values: float | np.ndarray = 1.0,
                   cols: np.ndarray | None = None, n_cols: int | None = None) -> sp.csr_matrix:
    """CSR matrix of shape ``(n_rows, n_cols)`` with ``values[k]`` at ``(rows[k], cols[k])``.

    Parameters
    ----------
    rows : ndarray of shape (K,), int
        Segment (output row) of every input.
    n_rows : int
        Number of segments.
    values : float or ndarray of shape (K,), default 1.0
        Entries; a scalar is used for all of them.
    cols : ndarray of shape (K,), int, optional
        Column of every entry (distinct per row); default ``arange(K)``, so that
        ``segment_matrix(rows, n) @ X`` sums the rows of ``X`` into their segments.
    n_cols : int, optional
        Number of columns; default ``K``.

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    rows = np.asarray(rows, dtype=np.int64)
    K = len(rows)
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    data = np.full(K, values) if np.ndim(values) == 0 else np.asarray(values)[order]
    indices = order if cols is None else np.asarray(cols)[order]
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, K if n_cols is None else n_cols))


def segment_sum(rows: np.ndarray, n_rows: int, X: np.ndarray) -> np.ndarray:
    """``out[r] = sum_{k: rows[k] == r} X[k]`` for ``X`` of shape (K, ...).

    Small inputs: one ``bincount``; large ones: a :func:`segment_matrix` product,
    which forms no index temporaries of the size of ``X``.

    Returns
    -------
    ndarray of shape (n_rows,) + X.shape[1:]
    """
    out_shape = (n_rows,) + X.shape[1:]
    K = len(rows)
    if K == 0:
        return np.zeros(out_shape)
    m = int(np.prod(X.shape[1:], dtype=np.int64))
    flat = X.reshape(K, m)
    if K * m <= _BINCOUNT_MAX:
        idx = rows if m == 1 else (rows[:, None] * m + np.arange(m)[None, :])
        return np.bincount(idx.ravel(), flat.ravel(), minlength=n_rows * m).reshape(out_shape)
    return np.asarray(segment_matrix(rows, n_rows) @ flat).reshape(out_shape)


def fold_pair_gradient(i: np.ndarray, j: np.ndarray, D: np.ndarray, g: np.ndarray,
                       n_atoms: int, strain: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dE/dr, dE/deta)`` from ``g = dE/dD_p`` of the neighbour vectors ``D_p = r_j - r_i``.

    Parameters
    ----------
    i, j : ndarray of shape (P,), int
        Centre and neighbour atom of every pair (periodic images fold onto ``j``).
    D : ndarray of shape (P, 3)
        Neighbour vectors in Å.
    g : ndarray of shape (P, 3)
        ``dE/dD_p`` in eV/Å.
    n_atoms : int
    strain : bool
        Also return ``dE/deta_ab = sum_p g_p[a] D_p[b]`` (eV).

    Returns
    -------
    dE_dr : ndarray of shape (n_atoms, 3)
        eV/Å (forces are ``-dE_dr``).
    dE_deta : ndarray of shape (3, 3) or None
    """
    dE_dr = segment_sum(j, n_atoms, g) - segment_sum(i, n_atoms, g)
    return dE_dr, (g.T @ D if strain else None)
