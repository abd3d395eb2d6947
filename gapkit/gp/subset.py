"""Sub-models of a fitted sparse GP on a subset of its sparse set (the variance basis).

A projected-process (DTC) GP with stacked sparse set ``M`` has the weight-posterior
precision ``P = R_P^T R_P = delta**2 K~_MM + delta**4 K~_MN Lambda^-1 K~_NM`` (the
scaling of :func:`gapkit.gp.solver.solve`). The model fitted to the same data with the
same hyperparameters but only the sparse columns ``v`` (``M_v`` of them) has

* Nyström factor ``L_v = chol(K~_vv)``, where ``K~_vv`` (jitter included) is the
  ``(v, v)`` block of ``L L^T``;
* precision ``P_vv``, the ``(v, v)`` block of ``P``, i.e. ``R_P[:, v]^T R_P[:, v]``, so
  its posterior factor is ``R_v = qr(R_P[:, v])`` (``M x M_v``, ``O(M M_v**2)``).

Neither needs the training data. Its predictive variance of a functional with kernel
row ``k~_v`` (the ``v`` entries of the full row) costs ``O(M_v**2)`` instead of
``O(M**2)``: :func:`gapkit.gp.solver.predictive_variance` with ``(L_v, R_v)``.

The subset is chosen by greedy pivoted Cholesky of ``K~_MM`` (:func:`greedy_columns`):
the column with the largest remaining Nyström residual first, so the subset spans the
sparse set as well as ``M_v`` of its points can, across species and kernel terms.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import scipy.linalg as sla

from gapkit.gp import kernels
from gapkit.gp.terms import FittedTerm, n_columns, sparse_species

__all__ = ["greedy_columns", "subset_factors", "subset_terms", "REDUNDANT_RTOL"]

#: A column whose Nyström residual is below this fraction of the largest prior
#: variance is numerically spanned by those already chosen: the greedy choice stops.
REDUNDANT_RTOL = 1e-10


def _prior_diagonal(terms: Sequence[FittedTerm]) -> np.ndarray:
    """Unit-scale ``diag K~_MM`` (no jitter), shape (M,)."""
    return np.concatenate([t.scale * kernels.self_kernel(t.sparse_q, t.zeta) for t in terms])


def greedy_columns(terms: Sequence[FittedTerm], n: int, return_residual: bool = False):
    """The ``n`` sparse columns that best span ``K~_MM``: greedy pivoted Cholesky.

    Each step takes the column with the largest Nyström residual given those already
    taken, ``K~_jj - K~_jv K~_vv^-1 K~_vj``, and updates the residuals: ``O(M n**2)``
    operations and ``O(M n)`` memory (kernel columns are computed as needed, never the
    whole ``K~_MM``). Deterministic for a given sparse set.

    Parameters
    ----------
    terms : list of FittedTerm
        The kernel terms with their sparse sets (``M`` columns stacked).
    n : int
        Columns wanted, ``1 <= n``; at most ``M`` are returned, fewer when the rest are
        numerically spanned (residual below :data:`REDUNDANT_RTOL` of the largest prior).

    return_residual : bool
        Also return how well the chosen columns span the others.

    Returns
    -------
    columns : ndarray of shape (n_chosen,), int64
        Increasing column indices.
    residual : float
        With ``return_residual``: the largest remaining Nyström residual of a sparse
        point over its prior variance, ``max_m (K~_mm - K~_mv K~_vv^-1 K~_vm) / K~_mm``
        (0: the columns span the whole sparse set).
    """
    M = n_columns(terms)
    n = min(int(n), M)
    if n < 1:
        raise ValueError(f"greedy_columns: n must be at least 1, got {n}")
    z = sparse_species(terms)
    owner = np.concatenate([np.full(len(t.sparse_species), k) for k, t in enumerate(terms)])
    prior = _prior_diagonal(terms).astype(np.float64)
    d = prior.copy()
    floor = REDUNDANT_RTOL * float(d.max())
    G = np.zeros((n, M))  # row k: the k-th column of the partial factor
    chosen = []
    for k in range(n):
        j = int(np.argmax(d))
        if d[j] <= floor:
            break
        t = terms[owner[j]]
        same = np.nonzero(t.sparse_species == z[j])[0]
        col = np.zeros(M)
        col[t.start + same] = t.scale * kernels.dot_kernel(
            t.sparse_q[same], t.sparse_q[j - t.start][None, :], t.zeta)[:, 0]
        if k:
            col -= G[:k, j] @ G[:k]
        col /= np.sqrt(d[j])
        G[k] = col
        d -= col * col
        d[j] = -np.inf
        chosen.append(j)
    cols = np.sort(np.array(chosen, dtype=np.int64))
    if not return_residual:
        return cols
    left = np.isfinite(d) & (prior > 0)
    return cols, float(np.max(np.maximum(d[left], 0) / prior[left])) if np.any(left) else 0.0


def subset_factors(kmm_cholesky: np.ndarray, posterior_factor: np.ndarray,
                   columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Nyström and posterior factors of the sub-model on sparse ``columns``.

    Parameters
    ----------
    kmm_cholesky : ndarray of shape (M, M)
        Lower ``L`` of the full model (``L L^T = K~_MM + jitter I``).
    posterior_factor : ndarray of shape (M, M)
        Upper ``R_P`` of the full model.
    columns : ndarray of shape (M_v,)
        Increasing column indices.

    Returns
    -------
    L_v : ndarray of shape (M_v, M_v)
        Lower Cholesky factor of ``(L L^T)[v, v]``.
    R_v : ndarray of shape (M_v, M_v)
        Upper, with ``R_v^T R_v = R_P[:, v]^T R_P[:, v]``.
    """
    cols = np.asarray(columns, dtype=np.int64)
    Lr = kmm_cholesky[cols]
    L_v = np.linalg.cholesky(Lr @ Lr.T)
    R_v = sla.qr(posterior_factor[:, cols], mode="r", check_finite=False)[0][:len(cols)]
    return L_v, np.ascontiguousarray(R_v)


def subset_terms(terms: Sequence[FittedTerm], columns: np.ndarray) -> list[FittedTerm]:
    """The kernel terms with their sparse sets cut to the stacked ``columns``
    (increasing), in the same order: a term may keep no column. Kernel rows of the
    result are the ``columns`` of the full rows."""
    cols = np.asarray(columns, dtype=np.int64)
    out, start = [], 0
    for t in terms:
        local = cols[(cols >= t.start) & (cols < t.start + len(t.sparse_species))] - t.start
        out.append(replace(t, sparse_q=t.sparse_q[local], sparse_species=t.sparse_species[local],
                           start=start))
        start += len(local)
    return out
