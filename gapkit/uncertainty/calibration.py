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
and Spearman's rank correlation of ``|e|`` with ``s``. The statistics themselves, with
the reference a calibrated σ reaches, live in :mod:`gapkit.uncertainty.metrics`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from gapkit.uncertainty.metrics import ONE_SIGMA, checked, coverage, gaussian_nll, spearman


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
    ``spearman`` (of ``|error|`` against std; NaN for constant std).
    """
    e, s = checked(errors, std, flatten=True)
    z = e / s
    levels = np.linspace(0.01, 0.99, 99)
    observed = observed_coverage(z, levels)
    return {
        "z_mean": float(z.mean()),
        "z_std": float(z.std()),
        "nll": gaussian_nll(e, s),
        "coverage_68": coverage(e, s, ONE_SIGMA),
        "coverage_95": coverage(e, s, 0.95),
        "miscalibration_area": float(np.mean(np.abs(observed - levels))),
        "spearman": spearman(e, s),
    }


def observed_coverage(z: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Fraction of ``|z|`` inside the central Gaussian interval of each level."""
    half = stats.norm.ppf(0.5 + np.asarray(levels) / 2)
    return np.mean(np.abs(np.asarray(z).ravel())[:, None] <= half[None, :], axis=0)
