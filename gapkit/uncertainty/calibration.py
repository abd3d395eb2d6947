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

import numpy as np
from scipy import stats

from gapkit.model.state import noise_level  # noqa: F401  (re-exported)


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
