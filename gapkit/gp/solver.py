"""Sparse GP solver: streaming QR, the DTC/projected-process solution and its variance.

Notation (unit-scale kernel ``k~ = (q . q')**zeta``, physical kernel ``delta**2 k~``)
------------------------------------------------------------------------------------
* ``K~_MM + jitter I = L~ L~^T`` (Cholesky of the unit-scale sparse kernel);
* training rows come in *groups* ``g`` (energies, forces, virials, optionally per
  ``config_type``), each with its own noise ``sigma_g``; a row ``r`` of group ``g``
  has variance ``sigma_g**2 / w_r`` (``w_r = 1/N_atoms`` for energies and virials,
  as in GAP, ``1`` for forces);
* per group we stream the rows ``[sqrt(w) K~_gM | sqrt(w) y_g]`` through a
  tall-skinny QR and keep only the ``(M+1, M+1)`` triangular factor
  ``R~_g = [[R_g, z_g], [0, rho_g]]``. Memory is O(M**2) whatever the number of rows;
* for any ``delta`` and ``sigma_g`` the stacked system of the projected process
  (Quinonero-Candela & Rasmussen 2005, DTC; as solved in GAP and FLARE)

      A = [ (delta**2 / sigma_g) R_g ]  (one block per group)     b = [ z_g / sigma_g ]
          [ delta L~^T               ]                                [ 0           ]

  has the same ``A^T A`` and ``A^T b`` as ``[Lambda^-1/2 K_NM ; L^T]`` with the full
  data. One more QR of the stacked triangles gives ``R_P`` with
  ``R_P^T R_P = K_MM + K_MN Lambda^-1 K_NM``, the weights ``alpha = R_P^-1 z`` (so that
  ``eps(q) = delta**2 sum_m alpha_m k~(q, q_m)``), the posterior covariance
  ``Sigma = (R_P^T R_P)^-1`` of the weights and the residual ``rho``.
  No matrix is inverted and no normal equations are formed.

Log marginal likelihood (DTC evidence)
--------------------------------------
``log p(y) = -rho**2/2 - log|Lambda|/2 - sum log|diag R_P| + sum log diag(delta L~)
- N log(2 pi)/2``, by the matrix determinant lemma; its gradient with respect to
``log delta`` and ``log sigma_g`` is analytic (see
:func:`gapkit.gp.evidence.log_marginal_likelihood`; the value itself is
:attr:`Solution.log_likelihood`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
from gapkit.gp import lapack


class FactorisationError(np.linalg.LinAlgError):
    """A factorisation failed; the message says what to try."""


# ----------------------------------------------------------------------------------
# triangular QR updates
# ----------------------------------------------------------------------------------
#: Block size of LAPACK ``dtpqrt`` (64 was 1.2x faster than 32 for M ~ 1400-2800 with
#: one OpenBLAS thread; 128 no better).
QR_BLOCK = 64


def _fortran(A: np.ndarray) -> np.ndarray:
    """``A`` as a Fortran-ordered float64 array (no copy when it already is one)."""
    return np.asfortranarray(A, dtype=np.float64)


def tri_update(R: np.ndarray | None, B: np.ndarray, triangular: bool = False,
               overwrite: bool = False, threads: int = 1) -> np.ndarray:
    """R factor of ``[R; B]`` where ``R`` is (n, n) upper triangular (TSQR step).

    LAPACK ``dtpqrt`` on Fortran-ordered arrays, updated in place and without the GIL
    (:func:`gapkit.gp.lapack.tpqrt`, so threads fold rows at the same time): about
    ``2 m n**2`` flops for a dense m-row ``B``; for an upper-triangular (n, n) ``B``
    (``triangular=True``: merging two factors) its structure is used (``l = n``,
    ``2 n**3 / 3`` flops; 2.6x less time than the dense path with one OpenBLAS
    thread for n = 1400-2800). The strictly lower part of ``R`` is never read or
    written (it stays zero).

    Parameters
    ----------
    R : ndarray of shape (n, n) or None
        Upper triangular; ``None`` starts from zero (the R factor of ``B`` alone).
    B : ndarray of shape (m, n)
    triangular : bool
        ``B`` is upper triangular (m = n), or upper trapezoidal (the first m < n rows
        of a triangle: ``2 m n**2 - 2 m**3 / 3`` flops).
    overwrite : bool
        ``R`` and ``B`` may be overwritten (``R`` then holds the result when it is a
        Fortran-ordered float64 array); otherwise neither input is changed.
    threads : int
        Threads of the update (:func:`gapkit.gp.lapack.tpqrt_threads`: the trailing
        updates of each panel split by columns; the same result to round-off).

    Returns
    -------
    ndarray of shape (n, n), Fortran order.
    """
    n = B.shape[1]
    if R is None:
        R, overwrite_r = np.zeros((n, n), order="F"), True
    else:
        overwrite_r = overwrite
        if B.shape[0] == 0:
            return _fortran(R)
    a = _fortran(R) if overwrite_r else np.array(R, dtype=np.float64, order="F")
    b = _fortran(B) if overwrite else np.array(B, dtype=np.float64, order="F")
    nb = max(1, min(QR_BLOCK, n))
    info = lapack.tpqrt_threads(a, b, min(b.shape[0], n) if triangular else 0, nb, threads)
    if info != 0:
        raise FactorisationError(f"LAPACK dtpqrt failed (info={info})")
    return a


@dataclass
class RowGroup:
    """Streaming triangular factor of one group of training rows.

    Attributes
    ----------
    R : ndarray of shape (M+1, M+1)
        ``R~_g`` of ``[sqrt(w) K~ | sqrt(w) y]`` (upper triangular, Fortran order).
    n_rows : int
        Number of rows seen.
    log_inv_w : float
        ``sum log(1/w_r)`` over the rows (enters ``log|Lambda|``).
    """

    R: np.ndarray | None = None
    n_rows: int = 0
    log_inv_w: float = 0.0
    _buf: np.ndarray | None = field(default=None, repr=False)
    _fill: int = 0
    _null_ss: float = field(default=0.0, repr=False)

    def absorb(self, other: "RowGroup") -> None:
        """Fold the (finalized) rows of ``other`` into this (finalized) group in place,
        by a QR of the stacked triangles; ``other``'s factor may be overwritten."""
        if other.R is not None:
            self.R = other.R if self.R is None else tri_update(self.R, other.R, triangular=True,
                                                               overwrite=True)
        self.n_rows += other.n_rows
        self.log_inv_w += other.log_inv_w


#: Rows buffered per group before a QR update. ``dtpqrt`` ran at the same rate (38-41
#: GFLOP/s, one OpenBLAS thread, M = 6150) for 1000, 2000 and 4000 rows, so the buffer
#: need not grow with M (it was ``max(2 M, 2000)``: 605 MB per group and thread at
#: M = 6150, first-touched by every accumulator).
BLOCK_ROWS = 2048


class RowAccumulator:
    """Stream training rows into per-group triangular factors (TSQR).

    Rows are written once, scaled, into a preallocated Fortran-ordered buffer of
    ``block_rows`` rows per group; a full buffer is folded into the group's factor
    in place by one LAPACK ``dtpqrt`` call, with no further copies.

    Parameters
    ----------
    n_sparse : int
        Number of sparse points M.
    block_rows : int, optional
        Rows buffered per group before they are folded into the factor; default
        :data:`BLOCK_ROWS`. Memory is O(M**2 + block_rows * M) per group.
    """

    def __init__(self, n_sparse: int, block_rows: int | None = None):
        self.M = int(n_sparse)
        self.block_rows = int(block_rows or BLOCK_ROWS)
        self.groups: dict[str, RowGroup] = {}

    def add(self, group: str, K: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Add rows ``K`` (r, M) with targets ``y`` (r,) and inverse-variance weights ``w`` (r,)."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape[0] == 0:
            return
        if K.ndim != 2 or K.shape[1] != self.M:
            raise ValueError(f"rows have {K.shape[1:]} columns, expected {self.M}")
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), y.shape)
        sw = np.sqrt(w)
        unit = bool(np.all(w == 1.0))
        g = self.groups.setdefault(group, RowGroup())
        g.n_rows += K.shape[0]
        g.log_inv_w += float(-np.sum(np.log(w)))
        M, start = self.M, 0
        while start < K.shape[0]:
            if g._buf is None:
                g._buf = np.empty((self.block_rows, M + 1), order="F")
            take = min(K.shape[0] - start, self.block_rows - g._fill)
            dst, src = g._buf[g._fill:g._fill + take], slice(start, start + take)
            if unit:
                dst[:, :M] = K[src]
                dst[:, M] = y[src]
            else:
                np.multiply(K[src], sw[src, None], out=dst[:, :M])
                np.multiply(y[src], sw[src], out=dst[:, M])
            g._fill += take
            start += take
            if g._fill == self.block_rows:
                self._flush(g)

    def add_null(self, group: str, ss: float, n: int) -> None:
        """Count ``n`` rows of unit weight whose design part is zero (the net force and
        torque of a structure: :func:`gapkit.gp.streaming.invariant_force_rows`) and
        whose squared targets sum to ``ss``. They change only the residual: folding
        the row ``[0 ... 0 | t]`` into ``[[R, z], [0, rho]]`` gives
        ``rho' = hypot(rho, t)``, done once in :meth:`finalize`."""
        g = self.groups.setdefault(group, RowGroup())
        g.n_rows += int(n)
        g._null_ss += float(ss)

    def _flush(self, g: RowGroup, release: bool = False) -> None:
        if g._fill:
            # a full buffer is folded in place; a partial one (at the end) is copied once
            B = g._buf if g._fill == self.block_rows else _fortran(g._buf[:g._fill])
            g.R = tri_update(g.R, B, overwrite=True)
            g._fill = 0
        if release:
            g._buf = None

    def finalize(self) -> dict[str, RowGroup]:
        """Fold any buffered rows, free the buffers and return the groups."""
        for g in self.groups.values():
            self._flush(g, release=True)
            if g._null_ss:
                if g.R is None:
                    g.R = np.zeros((self.M + 1, self.M + 1), order="F")
                g.R[self.M, self.M] = np.hypot(g.R[self.M, self.M], np.sqrt(g._null_ss))
                g._null_ss = 0.0
        return self.groups

    def merge(self, other: "RowAccumulator") -> None:
        """Combine with another accumulator (for example from a parallel worker);
        ``other`` may be overwritten."""
        other.finalize()
        self.finalize()
        for name, og in other.groups.items():
            self.groups.setdefault(name, RowGroup()).absorb(og)


def column_factor(group: RowGroup, columns: np.ndarray, scale: np.ndarray,
                  threads: int = 1) -> RowGroup:
    """The row group of the same rows restricted to some columns (and the target),
    each column scaled by a positive factor: the R factor of ``[K[:, c] s | y]`` from
    that of ``[K | y]`` (``K = Q R`` gives ``K[:, c] s = Q R[:, c] s``), by one QR of
    the chosen columns of ``R``. Chosen in ascending order they form a staircase (column
    ``k`` is zero below row ``c_k``), whose QR
    (:func:`gapkit.gp.lapack.staircase_qr`) costs about ``2 (M - m) m**2`` flops
    instead of a dense QR's ``2 M m**2 - 2 m**3 / 3`` (7x less for ``m = 0.9 M``).
    The factor is that of the dense QR up to the signs of its rows (the R factor is
    unique up to them; nothing downstream depends on them).

    Parameters
    ----------
    group : RowGroup
        Finalized, with ``M + 1`` columns (the target last); not changed.
    columns : ndarray of int, shape (m,)
    scale : ndarray of shape (m,)
    threads : int
        Threads of the staircase QR's trailing updates.

    Returns
    -------
    RowGroup
        With ``m + 1`` columns; the same rows (count and weights).
    """
    M = group.R.shape[0] - 1
    cols = np.append(np.asarray(columns, dtype=np.int64), M)
    X = group.R[:, cols] * np.append(np.asarray(scale, dtype=np.float64), 1.0)[None, :]
    if np.all(np.diff(cols) > 0):  # a staircase
        X = np.asfortranarray(X)
        info = lapack.staircase_qr(X, cols + 1, QR_BLOCK, threads)
        if info != 0:
            raise FactorisationError(f"LAPACK dgeqrf/dormqr failed (info={info})")
        R = np.triu(X[:len(cols)])
    else:
        R = sla.qr(X, mode="r", overwrite_a=True, check_finite=False)[0][:len(cols)]
    return RowGroup(R=np.asfortranarray(R), n_rows=group.n_rows, log_inv_w=group.log_inv_w)


def merge_groups(a: dict, b: dict) -> dict:
    """Row groups of the union of two sets of training rows (a QR of the stacked
    triangles per group); neither input is changed."""
    out = {}
    for name in list(a) + [k for k in b if k not in a]:
        ga, gb = a.get(name), b.get(name)
        if ga is None or gb is None:
            g = ga if gb is None else gb
            out[name] = RowGroup(R=None if g.R is None else g.R.copy(), n_rows=g.n_rows,
                                 log_inv_w=g.log_inv_w)
            continue
        R = gb.R.copy(order="F") if ga.R is None else (
            ga.R.copy(order="F") if gb.R is None else tri_update(ga.R, gb.R, triangular=True))
        out[name] = RowGroup(R=R, n_rows=ga.n_rows + gb.n_rows,
                             log_inv_w=ga.log_inv_w + gb.log_inv_w)
    return out


# ----------------------------------------------------------------------------------
# the sparse kernel factor
# ----------------------------------------------------------------------------------
def cholesky_kmm(Kmm: np.ndarray, jitter: float, overwrite: bool = False) -> np.ndarray:
    """Lower Cholesky factor of ``K~_MM + jitter I`` (``overwrite``: the jitter is added
    to the diagonal of ``Kmm`` in place, saving two (M, M) temporaries).

    Raises
    ------
    FactorisationError
        With the fix to try (more jitter, fewer or more distinct sparse points).
    """
    M = Kmm.shape[0]
    try:
        if overwrite:
            Kmm[np.diag_indices(M)] += jitter
        else:
            Kmm = Kmm + jitter * np.eye(M)
        return np.linalg.cholesky(Kmm)
    except np.linalg.LinAlgError as exc:
        raise FactorisationError(
            f"Cholesky of K_MM + jitter*I failed (M={M}, jitter={jitter:g}): the sparse "
            "environments are (nearly) duplicates. Increase `jitter` (e.g. 1e-6), reduce "
            "`n_sparse`, or use sparse_method='fps' to pick more distinct environments.") from exc


# ----------------------------------------------------------------------------------
# solve and evidence
# ----------------------------------------------------------------------------------
@dataclass
class Solution:
    """Result of the sparse GP solve for fixed hyperparameters.

    Attributes
    ----------
    alpha : ndarray of shape (M,)
        Unit-scale weights: ``eps(q) = delta**2 sum_m alpha_m k~(q, q_m)`` (eV).
    R : ndarray of shape (M, M)
        Upper-triangular ``R_P`` with ``R_P^T R_P = K_MM + K_MN Lambda^-1 K_NM``.
    rho : float
        Norm of the whitened residual.
    log_likelihood : float
        DTC log marginal likelihood of the training data.
    """

    alpha: np.ndarray
    R: np.ndarray
    rho: float
    log_likelihood: float


def _stack(groups: dict[str, RowGroup], Lchol: np.ndarray, delta: float,
           sigmas: dict[str, float], threads: int = 1) -> np.ndarray:
    M = Lchol.shape[0]
    a = np.zeros((M + 1, M + 1), order="F")
    a[:M, :M] = delta * Lchol.T
    for name, g in groups.items():
        if g.R is None:
            continue
        s = float(sigmas[name])
        # a factor of fewer rows than columns has only that many rows that are not
        # round-off: its trapezoid costs 2 r M**2 flops, not the triangle's 2 M**3 / 3
        b = np.array(g.R[:min(len(g.R), max(1, g.n_rows))], order="F")
        b[:, :M] *= delta ** 2 / s
        b[:, M] /= s
        a = tri_update(a, b, triangular=True, overwrite=True, threads=threads)
    return a


def solve(groups: dict[str, RowGroup], Lchol: np.ndarray, delta: float,
          sigmas: dict[str, float], threads: int = 1) -> Solution:
    """Solve the projected-process system for given ``delta`` (eV) and noises ``sigmas``.

    Parameters
    ----------
    groups : dict
        From :meth:`RowAccumulator.finalize`.
    Lchol : ndarray of shape (M, M)
        :func:`cholesky_kmm` of the unit-scale K_MM.
    delta : float
        Signal scale in eV.
    sigmas : dict
        Noise of each group, in the group's units (eV per sqrt(atom), eV/Å, eV per
        sqrt(atom)).
    threads : int
        Threads of the QR of the stacked triangles (:func:`tri_update`); the result
        is the same to round-off for any number (bit for bit on some CPUs).
    """
    M = Lchol.shape[0]
    a = _stack(groups, Lchol, delta, sigmas, threads)
    R, z, rho = a[:M, :M], a[:M, M], abs(a[M, M])
    d = np.abs(np.diag(R))
    if np.any(d <= d.max() * 1e-14):
        raise FactorisationError(
            "The stacked QR factor is singular: the training rows do not determine the "
            "weights. Increase the noise (energy_noise/force_noise), increase `jitter`, or "
            "reduce `n_sparse`.")
    alpha = lapack.trsm(R, z)
    n_rows = sum(g.n_rows for g in groups.values() if g.R is not None)
    log_lam = sum(g.n_rows * np.log(sigmas[k] ** 2) + g.log_inv_w
                  for k, g in groups.items() if g.R is not None)
    ll = (-0.5 * rho ** 2 - 0.5 * log_lam - np.sum(np.log(d))
          + M * np.log(delta) + np.sum(np.log(np.diag(Lchol))) - 0.5 * n_rows * np.log(2 * np.pi))
    return Solution(alpha=alpha, R=R, rho=float(rho), log_likelihood=float(ll))


# ----------------------------------------------------------------------------------
# predictive variance
# ----------------------------------------------------------------------------------
def predictive_variance(rows: np.ndarray, prior: np.ndarray, Lchol: np.ndarray,
                        R: np.ndarray, delta: float, parts: bool = False):
    """Epistemic (DTC) variance of linear functionals of the local energies.

    ``var = delta**2 (k~** - k~^T K~^-1 k~) + delta**4 k~^T (R_P^T R_P)^-1 k~``:
    the Nyström residual of the prior (what the sparse set cannot represent) plus
    the posterior uncertainty of the weights.

    Parameters
    ----------
    rows : ndarray of shape (n, M)
        Unit-scale rows ``k~`` of the functionals.
    prior : ndarray of shape (n,)
        Unit-scale prior variances ``k~**`` of the same functionals.
    parts : bool
        Return the two terms separately.

    Returns
    -------
    ndarray of shape (n,), in eV**2 (or (eV/Å)**2 for forces), or the tuple
    ``(nystrom, posterior)``. Negative values from round-off are clipped to zero with
    a ``RuntimeWarning``.
    """
    A = lapack.trsm(Lchol, rows.T, lower=True)  # without the GIL (threaded calibration)
    B = lapack.trsm(R, rows.T, trans=True)
    nystrom = clip_variance(delta ** 2 * (prior - np.sum(A * A, axis=0)), "Nyström variance",
                            scale=delta ** 2 * np.abs(prior))
    posterior = delta ** 4 * np.sum(B * B, axis=0)
    if parts:
        return nystrom, posterior
    return nystrom + posterior


#: Negative variances within this fraction of the prior variance are round-off.
CLIP_RTOL = 1e-12


def clip_variance(var: np.ndarray, what: str = "predictive variance",
                  scale: np.ndarray | float | None = None) -> np.ndarray:
    """Clip negative variances to zero.

    Values above ``-CLIP_RTOL * scale`` (``scale``: the prior variance of the same
    quantities, elementwise or one number; default the largest ``|var|``) are
    round-off and are clipped silently. Larger negative values are clipped with one
    ``RuntimeWarning`` whose text does not change between calls, so Python's warning
    filter shows it once, not once per structure.
    """
    var = np.asarray(var, dtype=np.float64)
    neg = var < 0
    if not np.any(neg):
        return var
    ref = np.max(np.abs(var)) if scale is None else np.abs(np.asarray(scale, dtype=np.float64))
    if np.any(var <= -CLIP_RTOL * ref):
        warnings.warn(f"negative {what} values beyond round-off clipped to zero (a larger "
                      "jitter reduces them)", RuntimeWarning, stacklevel=3)
    return np.where(neg, 0.0, var)
