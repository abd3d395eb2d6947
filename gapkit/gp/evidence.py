"""Evidence of the sparse GP: the DTC log marginal likelihood, its gradient, its maximum.

The value is :attr:`gapkit.gp.solver.Solution.log_likelihood` of
:func:`gapkit.gp.solver.solve`; this module adds its analytic gradient with respect to
``log delta`` and each group's ``log sigma_g`` and type-II maximum likelihood over them
(L-BFGS-B with optional restarts). Notation as in :mod:`gapkit.gp.solver`.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.linalg as sla

from gapkit.gp.solver import FactorisationError, RowGroup, solve
from gapkit.progress import progress_bar

logger = logging.getLogger(__name__)


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
