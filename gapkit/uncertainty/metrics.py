"""Uncertainty metrics of errors against predicted stds, and their calibrated reference.

Every statistic takes the errors ``e`` (prediction minus reference) and the predicted
total stds ``s`` (same units, > 0) and returns a number. With ``z = e / s``:

* ``zms = mean(z²)``: 1 for a calibrated σ, ``1/c²`` for a σ ``c`` times too large;
  the robust consistency check (unlike the z std it does not subtract the mean);
* ``coverage(level) = mean(|z| <= Φ⁻¹(1/2 + level/2))``: ``level`` when calibrated;
* ``gaussian_nll = mean(z²/2 + ln s + ln(2π)/2)``: lower is better, ``ln s`` in the
  log of the unit of ``s``;
* ``ence`` (Levi et al. 2022): the values sorted by ``s`` are cut into ``B``
  equal-count bins ``b``; ``RMV_b = sqrt(mean_b s²)``, ``RMSE_b = sqrt(mean_b e²)``
  and ``ENCE = mean_b |RMV_b - RMSE_b| / RMV_b``;
* ``spearman``: Spearman's rank correlation of ``|e|`` with ``s``;
* ``auroc_worst(fraction)``: the area under the ROC curve of ``s`` as a score for
  "``|e|`` is among the largest ``fraction`` of the set".

Ranking (Spearman, AUROC) and adaptivity (ENCE) statistics do not reach their ideal
values even for a perfectly calibrated σ: how far they get depends on the spread of
``s`` and the size of the set. :func:`reference` gives the value a calibrated σ would
reach on the same set: it draws ``e ~ N(0, s²)`` ``n_draws`` times and reports the mean
and the 90 % interval (5th and 95th percentiles) of the statistic.

Forces have three components per atom. ZMS, coverage and NLL are taken over the
components (:func:`zms` etc. of the flattened ``(n_atoms, 3)`` arrays).
:func:`forces_spearman` and :func:`forces_ence` are per atom: the atom's error is the
norm ``|ΔF| = sqrt(ΔF_x² + ΔF_y² + ΔF_z²)`` and its std ``σ_F = sqrt(mean_c σ_c²)`` (the
RMS of its component stds; in the "fast" mode all three are equal). Since
``E|ΔF|² = 3 σ_F²`` for a calibrated σ, the per-atom ENCE compares ``RMV_b`` of ``σ_F``
with ``RMSE_b = sqrt(mean_b |ΔF|² / 3)``. Their :func:`reference` draws component
errors from the component stds and recomputes the same per-atom statistic.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ase.data import chemical_symbols
from scipy import stats
from sklearn.metrics import roc_auc_score

from gapkit.utils import check_random_state

__all__ = ["atom_norms", "auroc_worst", "binned_rmse_rmv", "checked", "coverage", "ence",
           "equal_count_bins", "forces_ence", "forces_spearman", "gaussian_nll", "reference",
           "spearman", "zms", "zms_by_species"]

#: Central Gaussian interval of "68 %" (one σ).
ONE_SIGMA = 0.6827


def checked(errors, std, flatten: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``errors`` and ``std`` as float arrays of one shape, checked.

    Parameters
    ----------
    errors, std : array_like of one shape
    flatten : bool, default False
        Return them as 1-D arrays.

    Returns
    -------
    errors, std : ndarray of float64

    Raises
    ------
    ValueError
        If the shapes differ, there are no values, an error is not finite or a std is
        not finite and positive.
    """
    e = np.asarray(errors, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    if e.shape != s.shape:
        raise ValueError(f"errors and std differ in shape: {e.shape} vs {s.shape}")
    if e.size == 0:
        raise ValueError("uncertainty metrics need at least one value")
    if not np.all(np.isfinite(e)):
        raise ValueError("errors must be finite")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("predicted std must be finite and positive")
    return (e.ravel(), s.ravel()) if flatten else (e, s)


def zms(errors: np.ndarray, std: np.ndarray) -> float:
    """Mean squared z-score ``mean((e / s)²)`` (ideal 1).

    Parameters
    ----------
    errors : ndarray of any shape
        Prediction minus reference.
    std : ndarray of the same shape
        Predicted total stds, same units, > 0.

    Returns
    -------
    float
    """
    e, s = checked(errors, std, flatten=True)
    return float(np.mean((e / s) ** 2))


def coverage(errors: np.ndarray, std: np.ndarray, level: float = 0.95) -> float:
    """Fraction of errors inside the central Gaussian interval ``±Φ⁻¹(1/2 + level/2) s``.

    Parameters
    ----------
    errors, std : ndarray of one shape
        Errors and predicted stds (same units, std > 0).
    level : float in (0, 1), default 0.95
        Nominal coverage of the interval (what a calibrated σ reaches).

    Returns
    -------
    float in [0, 1]
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    e, s = checked(errors, std, flatten=True)
    return float(np.mean(np.abs(e / s) <= stats.norm.ppf(0.5 + level / 2)))


def gaussian_nll(errors: np.ndarray, std: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood ``mean(z²/2 + ln s + ln(2π)/2)`` per value.

    Parameters
    ----------
    errors, std : ndarray of one shape
        Errors and predicted stds (same units, std > 0); ``ln s`` is taken in that unit.

    Returns
    -------
    float
    """
    e, s = checked(errors, std, flatten=True)
    return float(np.mean(0.5 * (e / s) ** 2 + np.log(s) + 0.5 * np.log(2 * np.pi)))


def spearman(errors: np.ndarray, std: np.ndarray) -> float:
    """Spearman's rank correlation of ``|errors|`` with ``std``.

    Parameters
    ----------
    errors, std : ndarray of one shape
        Errors and predicted stds (std > 0).

    Returns
    -------
    float in [-1, 1]
        NaN when ``std`` or ``|errors|`` is constant (no ranking to compare).
    """
    e, s = checked(errors, std, flatten=True)
    a = np.abs(e)
    if np.ptp(s) == 0 or np.ptp(a) == 0:
        return float("nan")
    return float(stats.spearmanr(a, s).statistic)


def equal_count_bins(std: np.ndarray, n_bins: int = 10) -> list[np.ndarray]:
    """Indices of ``std`` sorted by value and cut into ``min(n_bins, n)`` equal-count bins.

    Parameters
    ----------
    std : ndarray of shape (n,)
    n_bins : int, default 10

    Returns
    -------
    list of ndarray of int
        One index array per bin, smallest stds first; bin sizes differ by at most one.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    s = np.asarray(std, dtype=np.float64).ravel()
    order = np.argsort(s, kind="stable")
    return [b for b in np.array_split(order, min(int(n_bins), s.size)) if b.size]


def binned_rmse_rmv(errors: np.ndarray, std: np.ndarray,
                    bins: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """RMSE of ``errors`` and RMS of ``std`` (RMV) in each bin of :func:`equal_count_bins`.

    Parameters
    ----------
    errors, std : ndarray of shape (n,)
    bins : list of index arrays

    Returns
    -------
    rmse, rmv : ndarray of shape (n_bins,)
        In the units of the values.
    """
    e2, s2 = np.asarray(errors) ** 2, np.asarray(std) ** 2
    return (np.array([np.sqrt(np.mean(e2[b])) for b in bins]),
            np.array([np.sqrt(np.mean(s2[b])) for b in bins]))


def ence(errors: np.ndarray, std: np.ndarray, n_bins: int = 10) -> float:
    """Expected normalised calibration error ``mean_b |RMV_b - RMSE_b| / RMV_b``.

    Parameters
    ----------
    errors, std : ndarray of one shape
        Errors and predicted stds (std > 0), flattened.
    n_bins : int, default 10
        Equal-count bins by ``std`` (at most one per value).

    Returns
    -------
    float >= 0
        0 only when every bin's RMSE equals its RMV; finite sets of a calibrated σ
        stay above 0 (see :func:`reference`).
    """
    e, s = checked(errors, std, flatten=True)
    rmse, rmv = binned_rmse_rmv(e, s, equal_count_bins(s, n_bins))
    return float(np.mean(np.abs(rmv - rmse) / rmv))


def auroc_worst(errors: np.ndarray, std: np.ndarray, fraction: float = 0.1) -> float:
    """AUROC of ``std`` as a score for "``|error|`` is among the worst ``fraction``".

    The positives are the ``k = ceil(fraction * n)`` values of largest ``|error|`` (ties
    broken by position); 1 means σ puts all of them above all others, 0.5 is chance.

    Parameters
    ----------
    errors, std : ndarray of one shape
        Errors and predicted stds (std > 0), flattened.
    fraction : float in (0, 1), default 0.1

    Returns
    -------
    float in [0, 1]
        NaN when there are fewer than two values (no negatives).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    e, s = checked(errors, std, flatten=True)
    k = int(np.ceil(fraction * e.size))
    if k >= e.size:
        return float("nan")
    worst = np.zeros(e.size, dtype=bool)
    worst[np.argsort(-np.abs(e), kind="stable")[:k]] = True
    return float(roc_auc_score(worst, s))


def atom_norms(errors: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom force error norms and stds.

    Parameters
    ----------
    errors : ndarray of shape (n_atoms, 3)
        Force-component errors, eV/Å.
    std : ndarray of shape (n_atoms, 3)
        Predicted force-component stds, eV/Å, > 0.

    Returns
    -------
    norm : ndarray of shape (n_atoms,)
        ``|ΔF| = sqrt(sum_c ΔF_c²)``, eV/Å.
    sigma : ndarray of shape (n_atoms,)
        ``σ_F = sqrt(mean_c σ_c²)``, eV/Å.
    """
    e, s = checked(errors, std)
    if e.ndim != 2 or e.shape[1] != 3:
        raise ValueError(f"force errors must have shape (n_atoms, 3), got {e.shape}")
    return np.sqrt(np.sum(e ** 2, axis=1)), np.sqrt(np.mean(s ** 2, axis=1))


def forces_spearman(errors: np.ndarray, std: np.ndarray) -> float:
    """Spearman's rank correlation of per-atom ``|ΔF|`` with ``σ_F`` (:func:`atom_norms`).

    Parameters
    ----------
    errors, std : ndarray of shape (n_atoms, 3)
        Force-component errors and stds, eV/Å.

    Returns
    -------
    float in [-1, 1], NaN when ``σ_F`` is constant
    """
    norm, sigma = atom_norms(errors, std)
    return spearman(norm, sigma)


def forces_ence(errors: np.ndarray, std: np.ndarray, n_bins: int = 10) -> float:
    """Per-atom ENCE: atoms binned by ``σ_F``; ``RMSE_b = sqrt(mean_b |ΔF|² / 3)``.

    Parameters
    ----------
    errors, std : ndarray of shape (n_atoms, 3)
        Force-component errors and stds, eV/Å.
    n_bins : int, default 10

    Returns
    -------
    float >= 0
        :func:`ence` of ``|ΔF| / sqrt(3)`` against ``σ_F``.
    """
    norm, sigma = atom_norms(errors, std)
    return ence(norm / np.sqrt(3.0), sigma, n_bins)


def zms_by_species(errors: np.ndarray, std: np.ndarray, numbers: np.ndarray) -> dict:
    """:func:`zms` of the force components of every species.

    Parameters
    ----------
    errors, std : ndarray of shape (n_atoms, 3) or (n_atoms,)
        Per-atom force-component errors and stds, eV/Å.
    numbers : ndarray of int, shape (n_atoms,)
        Atomic numbers.

    Returns
    -------
    dict of str to float
        ``{chemical symbol: zms}``, by increasing atomic number.
    """
    e, s = checked(errors, std)
    z = np.asarray(numbers).astype(int).ravel()
    if z.shape != e.shape[:1]:
        raise ValueError(f"numbers has {z.size} entries but errors has {e.shape[0]} atoms")
    return {chemical_symbols[k]: zms(e[z == k], s[z == k]) for k in np.unique(z)}


def reference(stat: Callable[[np.ndarray, np.ndarray], float], std: np.ndarray,
              n_draws: int = 200, random_state=0) -> list[float]:
    """What ``stat`` reaches when the errors follow the predicted stds exactly.

    Draws ``e ~ N(0, std²)`` (independently per entry, ``std``'s shape) ``n_draws``
    times and evaluates ``stat(e, std)`` on each draw.

    Parameters
    ----------
    stat : callable ``(errors, std) -> float``
        E.g. :func:`ence`, :func:`spearman`, :func:`forces_ence` (which then gets
        ``(n_atoms, 3)`` component draws).
    std : ndarray
        Predicted stds (> 0), in the shape ``stat`` expects.
    n_draws : int, default 200
    random_state : int, RandomState or None, default 0
        Seed (:func:`sklearn.utils.check_random_state`); a given seed gives the same
        reference.

    Returns
    -------
    list of 3 float
        ``[mean, low, high]``: the mean and the 5th and 95th percentiles over the
        draws of the finite values; NaN where no draw gives a finite value.
    """
    if int(n_draws) < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    s = np.asarray(std, dtype=np.float64)
    checked(s, s)
    rng = check_random_state(random_state)
    values = np.array([stat(rng.standard_normal(s.shape) * s, s) for _ in range(int(n_draws))],
                      dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan")] * 3
    low, high = np.percentile(values, [5.0, 95.0])
    return [float(values.mean()), float(low), float(high)]
