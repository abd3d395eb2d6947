"""Per-``config_type`` multipliers of the calibrated variance.

Training sets are often made of kinds of structures whose errors differ far more than
the GP variance says: mlearn Si has high-temperature AIMD cells, whose energy errors
were ~2.6 times the pooled calibrated std, beside strained perfect crystals
("Elastic"), whose errors were ~1/13 of it (``docs/guide/uncertainty.md``). QUIP's
``gap_fit`` lets users give a noise per ``config_type`` for the same reason. When the
validation structures carry a ``config_type`` (``atoms.info["config_type"]``, or the
estimator's key) and more than one type, :func:`fit_config_type_scales` fits, for
every type with at least :data:`MIN_FRAMES` validation structures, one multiplier of
the energy variance and one of the force variance over the pooled calibration: the
maximum a-posteriori
``c`` of ``sum_k log N(e_k; 0, c v_k)`` with a weak log-normal prior
(:data:`LOG_FACTOR_PRIOR_STD`) about 1. A predicted structure of that type gets the
multipliers; a structure without a type, or of a type the validation data did not
have, keeps the pooled scales (so MD frames, which carry no type, are unchanged).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Sequence

import numpy as np
from ase import Atoms
from scipy.optimize import minimize_scalar

from gapkit.model.state import ConfigTypeScale, FittedState
from gapkit.model.variance import VarianceParts, collect_std

__all__ = ["fit_config_type_scales", "MIN_FRAMES", "LOG_FACTOR_PRIOR_STD"]

#: Validation structures a ``config_type`` needs for multipliers of its own. The log of
#: an energy multiplier fitted on ``n`` structures has a standard error of about
#: ``sqrt(2 / n)`` (a chi-squared mean): 20 structures keep it at 1/3, i.e. the std
#: of the type within about 1.18x (1 sigma); with 8 (e.g. mlearn Si's "Elastic" cells
#: in a 20 % split) it is 0.5, and the fitted factor of those cells was 2.7x too small
#: on the test cells (session 10, docs/guide/uncertainty.md).
MIN_FRAMES = 20
#: Standard deviation of the Gaussian prior on the log of each multiplier, centred on 0
#: (the pooled calibration): the pooled scales are kept where the data say little.
LOG_FACTOR_PRIOR_STD = 3.0
#: Bounds of the log of a multiplier.
LOG_FACTOR_BOUNDS = (np.log(1e-6), np.log(1e6))


def map_factor(z2: np.ndarray) -> float:
    """The maximum a-posteriori multiplier ``c`` of variances whose squared z-scores
    are ``z2``: ``argmin_c 0.5 sum (log c + z2 / c) + 0.5 (log c / s)**2``."""
    z2 = np.asarray(z2, dtype=np.float64).ravel()
    z2 = z2[np.isfinite(z2)]
    if z2.size == 0:
        return 1.0
    n, total = z2.size, float(np.sum(z2))

    def objective(u):
        return 0.5 * (n * u + total * np.exp(-u)) + 0.5 * (u / LOG_FACTOR_PRIOR_STD) ** 2

    res = minimize_scalar(objective, bounds=LOG_FACTOR_BOUNDS, method="bounded",
                          options={"xatol": 1e-10})
    return float(np.exp(res.x))


def fit_config_type_scales(state: FittedState, frames: Sequence[Atoms],
                           parts: Sequence[VarianceParts], energy_errors: np.ndarray,
                           force_errors: Sequence, key: str = "config_type") -> dict:
    """Multipliers of the calibrated variance per ``config_type`` of the validation data.

    Parameters
    ----------
    state : FittedState
        The model with its pooled calibration (``state.calibration``, without
        ``config_types``).
    frames : list of ase.Atoms
        The validation structures.
    parts : list of VarianceParts
        Their raw variance terms.
    energy_errors : ndarray of shape (n_frames,)
        Predicted minus reference energies, eV.
    force_errors : list of ndarray (n_atoms_k, 3) or None
        Predicted minus reference forces, eV/Å.
    key : str
        The ``atoms.info`` key of the ``config_type``.

    Returns
    -------
    dict of str to ConfigTypeScale
        The types with at least :data:`MIN_FRAMES` structures; empty when every
        structure has the same type (or none): that is what the pooled calibration was
        fitted on.
    """
    types = [a.info.get(key) for a in frames]
    counts = Counter(None if t is None else str(t) for t in types)
    kept = sorted(t for t, n in counts.items() if t is not None and n >= MIN_FRAMES)
    if len(counts) < 2:
        return {}
    pooled = state.replace(calibration=replace(state.calibration, config_types={}))
    e_std = collect_std(pooled, parts, frames, forces=False).energy
    e_z2 = (np.asarray(energy_errors, dtype=np.float64) / e_std) ** 2
    out = {}
    for t in kept:
        idx = [k for k, x in enumerate(types) if x is not None and str(x) == t]
        with_f = [k for k in idx if force_errors[k] is not None]
        f_std = collect_std(pooled, [parts[k] for k in with_f], [frames[k] for k in with_f],
                            forces=True).forces if with_f else []
        f_z2 = [((force_errors[k] / s) ** 2).ravel() for k, s in zip(with_f, f_std)]
        out[t] = ConfigTypeScale(energy=map_factor(e_z2[idx]),
                                 forces=map_factor(np.concatenate(f_z2)) if f_z2 else 1.0,
                                 n_frames=len(idx))
    return out
