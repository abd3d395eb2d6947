"""Calibration diagnostics of predicted stds, and the fit of variance scales.

Vocabulary
----------
* **epistemic** std: the GP's predictive (DTC) std; large away from the training data;
* **aleatoric** std: the learned noise of the reference data (``GAP.noise_``);
* **total** std: both in quadrature. The ``*_std`` names elsewhere mean total.

Calibration of a set of errors ``e`` with predicted total stds ``s`` uses
``z = e / s``: its mean and std (ideal 0 and 1), the Gaussian negative
log-likelihood, the coverage of the central 68 % and 95 % intervals, the
miscalibration area (mean |observed - expected| coverage over levels in (0, 1)),
and Spearman's rank correlation of ``|e|`` with ``s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import warnings

from scipy import stats


def noise_level(noise: dict, kind: str, default: float = 0.0) -> float:
    """Learned noise of one kind (``"energy"``, ``"forces"``, ``"virial"``) from
    ``GAP.noise_``: the root-mean-square over its groups (one per ``config_type`` when
    noise is learned per group), or ``default`` when there is none."""
    vals = [v for k, v in noise.items() if k.split(":")[0] == kind]
    return float(np.sqrt(np.mean(np.square(vals)))) if vals else default


# ----------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------
def calibration_metrics(errors: np.ndarray, std: np.ndarray) -> dict:
    """Calibration of predicted stds against observed errors.

    Parameters
    ----------
    errors : ndarray of shape (n,)
        Prediction minus reference.
    std : ndarray of shape (n,)
        Predicted total standard deviations, same units, > 0.

    Returns
    -------
    dict with ``z_mean``, ``z_std``, ``nll`` (mean Gaussian negative log-likelihood
    per value), ``coverage_68``, ``coverage_95``, ``miscalibration_area`` and
    ``spearman`` (of |error| against std; NaN for constant std).
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    s = np.asarray(std, dtype=np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"errors and std differ in shape: {e.shape} vs {s.shape}")
    if e.size == 0:
        raise ValueError("calibration needs at least one value")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("predicted std must be finite and positive")
    z = e / s
    nll = float(np.mean(0.5 * z ** 2 + np.log(s) + 0.5 * np.log(2 * np.pi)))
    levels = np.linspace(0.01, 0.99, 99)
    observed = observed_coverage(z, levels)
    if np.ptp(s) > 0 and np.ptp(np.abs(e)) > 0:
        rho = float(stats.spearmanr(np.abs(e), s).statistic)
    else:
        rho = float("nan")
    return {
        "z_mean": float(z.mean()),
        "z_std": float(z.std()),
        "nll": nll,
        "coverage_68": float(np.mean(np.abs(z) <= stats.norm.ppf(0.5 + 0.6827 / 2))),
        "coverage_95": float(np.mean(np.abs(z) <= stats.norm.ppf(0.975))),
        "miscalibration_area": float(np.mean(np.abs(observed - levels))),
        "spearman": rho,
    }


def observed_coverage(z: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Fraction of ``|z|`` inside the central Gaussian interval of each level."""
    half = stats.norm.ppf(0.5 + np.asarray(levels) / 2)
    return np.mean(np.abs(np.asarray(z).ravel())[:, None] <= half[None, :], axis=0)


def fit_variance_scales(errors: np.ndarray, nystrom: np.ndarray, posterior: np.ndarray,
                        aleatoric: np.ndarray, bounds: tuple[float, float] = (1e-8, 1e4),
                        fix_nystrom: float | None = None) -> tuple[float, float]:
    """Scales ``(s_N, s_P)`` of the two epistemic variance terms by maximum likelihood.

    Maximises ``sum_k log N(e_k; 0, s_N n_k + s_P p_k + a_k)`` over ``log s_N`` and
    ``log s_P`` within ``bounds`` (L-BFGS-B, analytic gradient). A scale that ends on
    a bound is reported with a ``RuntimeWarning``: the validation errors do not
    support that term (typically the Nyström term in distribution, which then no
    longer inflates sigma far from the data; see ``fix_nystrom``).

    Parameters
    ----------
    errors : ndarray of shape (n,)
        Validation errors (prediction minus reference).
    nystrom, posterior : ndarray of shape (n,)
        The Nyström-residual and weight-posterior variances of the same predictions.
    aleatoric : ndarray of shape (n,)
        Aleatoric variances (kept fixed).
    fix_nystrom : float, optional
        Keep ``s_N`` at this value and fit ``s_P`` only.

    Returns
    -------
    (float, float)
    """
    from scipy.optimize import minimize

    e2 = np.asarray(errors, dtype=np.float64).ravel() ** 2
    n = np.asarray(nystrom, dtype=np.float64).ravel()
    p = np.asarray(posterior, dtype=np.float64).ravel()
    a = np.asarray(aleatoric, dtype=np.float64).ravel()
    if e2.size == 0:
        raise ValueError("need at least one validation error to fit variance scales")

    def nll(theta):
        sN, sP = np.exp(theta)
        v = np.maximum(sN * n + sP * p + a, 1e-300)
        f = 0.5 * np.sum(np.log(v) + e2 / v)
        dv = 0.5 * (1.0 / v - e2 / v ** 2)
        return f, np.array([np.sum(dv * n) * sN, np.sum(dv * p) * sP])

    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    box = [(lo, hi), (lo, hi)]
    starts = ([0.0, 0.0], [np.log(1e-2), 0.0], [np.log(1e-4), np.log(10.0)])
    if fix_nystrom is not None:
        box[0] = (np.log(fix_nystrom),) * 2
        starts = ([np.log(fix_nystrom), 0.0],)
    best = None
    for start in starts:
        res = minimize(nll, np.array(start), jac=True, method="L-BFGS-B", bounds=box)
        if best is None or res.fun < best.fun:
            best = res
    sN, sP = np.exp(best.x)
    for name, val, fixed in (("Nyström", sN, fix_nystrom is not None), ("posterior", sP, False)):
        if not fixed and (np.isclose(np.log(val), lo) or np.isclose(np.log(val), hi)):
            warnings.warn(f"the {name} variance scale ended on its bound ({val:.3g}): the "
                          "validation errors do not support that term", RuntimeWarning,
                          stacklevel=2)
    return float(sN), float(sP)
