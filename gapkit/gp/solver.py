"""Sparse GP solver: streaming QR, the DTC/projected-process solution, its evidence.

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
``log delta`` and ``log sigma_g`` is analytic (see :func:`log_marginal_likelihood`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from gapkit.progress import progress_bar

logger = logging.getLogger(__name__)


class FactorisationError(np.linalg.LinAlgError):
    """A factorisation failed; the message says what to try."""


# ----------------------------------------------------------------------------------
# triangular QR updates
# ----------------------------------------------------------------------------------
def _qr_r(B: np.ndarray, n: int) -> np.ndarray:
    """R factor of B, padded to (n, n) upper triangular."""
    R = sla.qr(B, mode="r", check_finite=False)[0]
    out = np.zeros((n, n))
    k = min(R.shape[0], n)
    out[:k] = R[:k]
    return out


def tri_update(R: np.ndarray | None, B: np.ndarray) -> np.ndarray:
    """R factor of ``[R; B]`` where ``R`` is (n, n) upper triangular (TSQR step).

    Uses LAPACK ``dtpqrt`` with ``B`` treated as dense (``l = 0``): about
    ``2 m n**2`` flops for an m-row ``B``. (Declaring a triangular ``B`` through ``l``
    would halve the flops in theory but runs an unblocked path that was 5x slower in
    OpenBLAS here: 13.7 s against 2.4 s for n = 1500.)
    """
    n = B.shape[1]
    if R is None:
        return _qr_r(B, n)
    if B.shape[0] == 0:
        return R
    a = np.asfortranarray(R, dtype=np.float64)
    b = np.asfortranarray(B, dtype=np.float64)
    nb = max(1, min(32, n))
    a, _, _, info = lapack.dtpqrt(0, nb, a, b, overwrite_a=1, overwrite_b=1)
    if info != 0:
        raise FactorisationError(f"LAPACK dtpqrt failed (info={info})")
    return np.triu(a)


@dataclass
class RowGroup:
    """Streaming triangular factor of one group of training rows.

    Attributes
    ----------
    R : ndarray of shape (M+1, M+1)
        ``R~_g`` of ``[sqrt(w) K~ | sqrt(w) y]``.
    n_rows : int
        Number of rows seen.
    log_inv_w : float
        ``sum log(1/w_r)`` over the rows (enters ``log|Lambda|``).
    """

    R: np.ndarray | None = None
    n_rows: int = 0
    log_inv_w: float = 0.0
    _buf: list = field(default_factory=list, repr=False)
    _buf_rows: int = 0


class RowAccumulator:
    """Stream training rows into per-group triangular factors (TSQR).

    Parameters
    ----------
    n_sparse : int
        Number of sparse points M.
    block_rows : int, optional
        Rows buffered per group before they are folded into the factor; default
        ``max(2 M, 2000)``. Memory is O(M**2 + block_rows * M).
    """

    def __init__(self, n_sparse: int, block_rows: int | None = None):
        self.M = int(n_sparse)
        self.block_rows = int(block_rows or max(2 * self.M, 2000))
        self.groups: dict[str, RowGroup] = {}

    def add(self, group: str, K: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Add rows ``K`` (r, M) with targets ``y`` (r,) and inverse-variance weights ``w`` (r,)."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape[0] == 0:
            return
        if K.shape[1] != self.M:
            raise ValueError(f"rows have {K.shape[1]} columns, expected {self.M}")
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), y.shape)
        sw = np.sqrt(w)
        g = self.groups.setdefault(group, RowGroup())
        g._buf.append(np.hstack([K * sw[:, None], (y * sw)[:, None]]))
        g._buf_rows += K.shape[0]
        g.n_rows += K.shape[0]
        g.log_inv_w += float(-np.sum(np.log(w)))
        if g._buf_rows >= self.block_rows:
            self._flush(g)

    def _flush(self, g: RowGroup) -> None:
        if g._buf:
            B = np.vstack(g._buf)
            g._buf, g._buf_rows = [], 0
            g.R = tri_update(g.R, B)

    def finalize(self) -> dict[str, RowGroup]:
        """Fold any buffered rows and return the groups."""
        for g in self.groups.values():
            self._flush(g)
        return self.groups

    def merge(self, other: "RowAccumulator") -> None:
        """Combine with another accumulator (for example from a parallel worker)."""
        other.finalize()
        self.finalize()
        for name, og in other.groups.items():
            g = self.groups.setdefault(name, RowGroup())
            g.R = tri_update(g.R, og.R) if g.R is not None else og.R.copy()
            g.n_rows += og.n_rows
            g.log_inv_w += og.log_inv_w


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
        R = gb.R.copy() if ga.R is None else (ga.R.copy() if gb.R is None
                                               else tri_update(ga.R, gb.R))
        out[name] = RowGroup(R=R, n_rows=ga.n_rows + gb.n_rows,
                             log_inv_w=ga.log_inv_w + gb.log_inv_w)
    return out


# ----------------------------------------------------------------------------------
# the sparse kernel factor
# ----------------------------------------------------------------------------------
def cholesky_kmm(Kmm: np.ndarray, jitter: float) -> np.ndarray:
    """Lower Cholesky factor of ``K~_MM + jitter I``.

    Raises
    ------
    FactorisationError
        With the fix to try (more jitter, fewer or more distinct sparse points).
    """
    M = Kmm.shape[0]
    try:
        return np.linalg.cholesky(Kmm + jitter * np.eye(M))
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
           sigmas: dict[str, float]) -> np.ndarray:
    M = Lchol.shape[0]
    a = np.zeros((M + 1, M + 1))
    a[:M, :M] = delta * Lchol.T
    for name, g in groups.items():
        if g.R is None:
            continue
        s = float(sigmas[name])
        b = g.R.copy()
        b[:, :M] *= delta ** 2 / s
        b[:, M] /= s
        a = tri_update(a, b)
    return a


def solve(groups: dict[str, RowGroup], Lchol: np.ndarray, delta: float,
          sigmas: dict[str, float]) -> Solution:
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
    """
    M = Lchol.shape[0]
    a = _stack(groups, Lchol, delta, sigmas)
    R, z, rho = a[:M, :M], a[:M, M], abs(a[M, M])
    d = np.abs(np.diag(R))
    if np.any(d <= d.max() * 1e-14):
        raise FactorisationError(
            "The stacked QR factor is singular: the training rows do not determine the "
            "weights. Increase the noise (energy_noise/force_noise), increase `jitter`, or "
            "reduce `n_sparse`.")
    alpha = sla.solve_triangular(R, z, lower=False, check_finite=False)
    n_rows = sum(g.n_rows for g in groups.values() if g.R is not None)
    log_lam = sum(g.n_rows * np.log(sigmas[k] ** 2) + g.log_inv_w
                  for k, g in groups.items() if g.R is not None)
    ll = (-0.5 * rho ** 2 - 0.5 * log_lam - np.sum(np.log(d))
          + M * np.log(delta) + np.sum(np.log(np.diag(Lchol))) - 0.5 * n_rows * np.log(2 * np.pi))
    return Solution(alpha=alpha, R=R, rho=float(rho), log_likelihood=float(ll))


def log_marginal_likelihood(groups: dict[str, RowGroup], Lchol: np.ndarray, delta: float,
                            sigmas: dict[str, float], eval_gradient: bool = False):
    """DTC log marginal likelihood and its gradient in log space.

    Parameters
    ----------
    groups, Lchol, delta, sigmas
        As for :func:`solve`.
    eval_gradient : bool
        Also return the gradient with respect to ``log delta`` and each
        ``log sigma_g`` (in the order of ``groups``).

    Returns
    -------
    float, or (float, ndarray of shape (1 + n_groups,))

    Notes
    -----
    With ``P = R_P^T R_P``, ``s_g = 1/sigma_g**2``, ``alpha = P^-1 A^T b`` and
    ``T_g = ||R_g R_P^-1||_F**2``:

    * ``d/dlog sigma_g = s_g RSS_g - n_g + delta**4 s_g T_g`` with the weighted residual
      ``RSS_g = ||z_g - delta**2 R_g alpha||**2 + rho_g**2``;
    * ``d/dlog delta = g^T alpha - delta**4 sum_g s_g (||R_g alpha||**2 + T_g)`` with
      ``g = A^T b = delta**2 sum_g s_g R_g^T z_g``.
    """
    sol = solve(groups, Lchol, delta, sigmas)
    if not eval_gradient:
        return sol.log_likelihood
    M = Lchol.shape[0]
    alpha = sol.alpha
    names = [k for k, g in groups.items() if g.R is not None]
    grad_sig = []
    gta = 0.0
    d_delta = 0.0
    for name in names:
        g = groups[name]
        s = 1.0 / sigmas[name] ** 2
        Rg, zg, rhog = g.R[:M, :M], g.R[:M, M], g.R[M, M]
        Ra = Rg @ alpha
        rss = float(np.sum((zg - delta ** 2 * Ra) ** 2) + rhog ** 2)
        X = sla.solve_triangular(sol.R, Rg.T, trans="T", lower=False, check_finite=False)
        T = float(np.sum(X * X))
        grad_sig.append(s * rss - g.n_rows + delta ** 4 * s * T)
        gta += delta ** 2 * s * float(zg @ Ra)
        d_delta -= delta ** 4 * s * (float(Ra @ Ra) + T)
    d_delta += gta
    return sol.log_likelihood, np.array([d_delta] + grad_sig)


def optimize_hyperparameters(groups: dict[str, RowGroup], Lchol: np.ndarray, delta: float,
                             sigmas: dict[str, float], bounds: dict[str, tuple] | None = None,
                             n_restarts: int = 0, random_state=None, optimize_delta: bool = True,
                             progress: bool | None = False
                             ) -> tuple[float, dict[str, float], float]:
    """Type-II maximum likelihood over ``log delta`` and ``log sigma_g`` (L-BFGS-B).

    Parameters
    ----------
    bounds : dict, optional
        ``{"delta": (lo, hi), group: (lo, hi)}`` in physical units; defaults are
        wide (``delta`` in [1e-3, 1e3] eV, noises in [1e-6, 10]).
    n_restarts : int
        Extra starts drawn log-uniformly inside the bounds from ``random_state``.
    progress : bool, optional
        Count the evidence evaluations on a bar (None: in a terminal or Jupyter; see
        :func:`gapkit.progress.progress_bar`).

    Returns
    -------
    delta, sigmas, log_likelihood
    """
    from scipy.optimize import minimize
    from sklearn.utils import check_random_state

    names = [k for k, g in groups.items() if g.R is not None]
    bounds = dict(bounds or {})
    b_delta = bounds.get("delta", (1e-3, 1e3))
    b_list = [b_delta] + [bounds.get(n, (1e-6, 10.0)) for n in names]
    log_bounds = [(np.log(lo), np.log(hi)) for lo, hi in b_list]
    if not optimize_delta:
        log_bounds[0] = (np.log(delta), np.log(delta))

    def unpack(theta):
        return float(np.exp(theta[0])), {n: float(np.exp(t)) for n, t in zip(names, theta[1:])}

    bar = progress_bar(desc="optimise evidence", unit="eval", progress=progress)

    def objective(theta):
        bar.update(1)
        d, s = unpack(theta)
        try:
            ll, g = log_marginal_likelihood(groups, Lchol, d, s, eval_gradient=True)
        except FactorisationError:
            return 1e25, np.zeros_like(theta)
        if not optimize_delta:
            g = g.copy()
            g[0] = 0.0
        return -ll, -g

    theta0 = np.array([np.log(delta)] + [np.log(sigmas[n]) for n in names])
    theta0 = np.clip(theta0, [lo for lo, _ in log_bounds], [hi for _, hi in log_bounds])
    rng = check_random_state(random_state)
    starts = [theta0] + [np.array([rng.uniform(lo, hi) for lo, hi in log_bounds])
                         for _ in range(int(n_restarts))]
    best = None
    with bar:
        for k, t0 in enumerate(starts):
            res = minimize(objective, t0, jac=True, method="L-BFGS-B", bounds=log_bounds)
            logger.info("hyperparameter start %d: log p = %.6g (%s)", k, -res.fun, res.message)
            if best is None or res.fun < best.fun:
                best = res
            bar.set_postfix(start=k, log_p=f"{-best.fun:.6g}")
    if best is None or not np.isfinite(best.fun) or best.fun >= 1e25:
        raise FactorisationError("Hyperparameter optimisation failed at every start; try "
                                 "tighter bounds or larger initial noise")
    if not best.success:
        warnings.warn(f"Hyperparameter optimisation did not converge: {best.message}",
                      RuntimeWarning, stacklevel=2)
    d, s = unpack(best.x)
    return d, s, float(-best.fun)


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
    A = sla.solve_triangular(Lchol, rows.T, lower=True, check_finite=False)
    B = sla.solve_triangular(R, rows.T, trans="T", lower=False, check_finite=False)
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
