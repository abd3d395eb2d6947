"""Predictive variance of a fitted GAP, split by origin, and its calibration.

For a linear functional ``f`` of the local energies (a total energy, a local energy, a
force component) with unit-scale kernel row ``k~`` and prior variance ``k~**``, the
projected-process (DTC) variance has two epistemic terms,

    V_N = delta**2 (k~** - k~^T K~_MM^-1 k~)     (Nyström residual: what the sparse set
                                                  cannot represent; grows off the data)
    V_P = delta**4 k~^T Sigma k~                 (posterior of the weights)

and the aleatoric term is the learned noise ``sigma_g**2`` (times ``N_atoms`` for a
total energy). The reported variance is
``s_N V_N + s_P V_P`` (epistemic) and ``s_A sigma_g**2`` (aleatoric) with the scales
of the model's :class:`~gapkit.model.state.Calibration` (all 1 when uncalibrated).

Energy variances need only the descriptors; force variances need the descriptor
derivative arrays (``keep_gradients=True`` at prediction) and the kernel Hessian.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg as sla
from ase import Atoms

from gapkit.gp import solver as gp
from gapkit.gp import terms
from gapkit.model.state import Calibration, FittedState, VarianceScale


@dataclass
class PredictionStd:
    """Standard deviations of a :class:`~gapkit.model.prediction.Prediction`, by origin.

    ``epistemic`` is the GP's predictive std (model uncertainty, large away from the
    training data); ``aleatoric`` is the learned noise of the reference data; the
    ``total`` is ``sqrt(epistemic**2 + aleatoric**2)``. Units as in ``Prediction``
    (eV, eV/Å).

    Attributes
    ----------
    energy_epistemic, energy_aleatoric, energy : ndarray of shape (n_frames,)
    energies_epistemic, energies_aleatoric, energies : list of ndarray (n_atoms_k,)
    forces_epistemic, forces_aleatoric, forces : list of ndarray (n_atoms_k, 3) or None
    """

    energy_epistemic: np.ndarray
    energy_aleatoric: np.ndarray
    energy: np.ndarray
    energies_epistemic: list
    energies_aleatoric: list
    energies: list
    forces_epistemic: list | None = None
    forces_aleatoric: list | None = None
    forces: list | None = None


@dataclass
class VarianceParts:
    """Raw (uncalibrated) variance terms of one structure, eV² or (eV/Å)².

    Attributes
    ----------
    energy : (float, float)
        ``(V_N, V_P)`` of the total energy.
    energies : (ndarray (n,), ndarray (n,))
        ``(V_N, V_P)`` of the local energies.
    forces : (ndarray (n, 3), ndarray (n, 3)) or None
        ``(V_N, V_P)`` of every force component.
    """

    energy: tuple
    energies: tuple
    forces: tuple | None = None


def variance_parts(state: FittedState, dsets: Sequence, forces: bool) -> VarianceParts:
    """The raw variance terms of one structure from its descriptor sets (one per term;
    with derivative arrays when ``forces``)."""
    d = state.delta
    local = terms.local_rows(state.terms, dsets)  # (n, M)
    kqq = terms.local_prior(state.terms, dsets)
    rows = np.vstack([local.sum(0, keepdims=True), local])
    prior = np.concatenate([[kqq.sum()], np.diag(kqq)])
    nys, post = gp.predictive_variance(rows, prior, state.kmm_cholesky,
                                       state.posterior_factor, d, parts=True)
    out = VarianceParts(energy=(nys[0], post[0]), energies=(nys[1:], post[1:]))
    if forces:
        frows = terms.design_rows(state.terms, dsets, energy=False, forces=True)["forces"]
        fprior = terms.force_prior(state.terms, dsets)
        fn, fp = gp.predictive_variance(frows, fprior, state.kmm_cholesky,
                                        state.posterior_factor, d, parts=True)
        out.forces = (fn.reshape(-1, 3), fp.reshape(-1, 3))
    return out


def _epistemic(parts: tuple, scale: VarianceScale) -> np.ndarray:
    return scale.nystrom * np.asarray(parts[0]) + scale.posterior * np.asarray(parts[1])


def collect_std(state: FittedState, parts: Sequence[VarianceParts], frames: Sequence[Atoms],
                forces: bool) -> PredictionStd:
    """Calibrated stds of several structures from their :class:`VarianceParts`."""
    cal = state.calibration
    sE = state.noise_level("energy") * np.sqrt(cal.energy.aleatoric)
    sF = state.noise_level("forces") * np.sqrt(cal.forces.aleatoric)
    e_epi = np.sqrt([_epistemic(p.energy, cal.energy) for p in parts])
    e_ale = np.array([sE * np.sqrt(len(a)) for a in frames])
    es_epi = [np.sqrt(_epistemic(p.energies, cal.energy)) for p in parts]
    es_ale = [np.full(len(a), sE) for a in frames]
    out = PredictionStd(
        energy_epistemic=e_epi, energy_aleatoric=e_ale, energy=np.hypot(e_epi, e_ale),
        energies_epistemic=es_epi, energies_aleatoric=es_ale,
        energies=[np.hypot(a, b) for a, b in zip(es_epi, es_ale)])
    if forces:
        f_epi = [np.sqrt(_epistemic(p.forces, cal.forces)) for p in parts]
        f_ale = [np.full((len(a), 3), sF) for a in frames]
        out.forces_epistemic, out.forces_aleatoric = f_epi, f_ale
        out.forces = [np.hypot(a, b) for a, b in zip(f_epi, f_ale)]
    return out


def local_energy_covariance(state: FittedState, dsets: Sequence) -> np.ndarray:
    """Raw epistemic covariance of the local energies of one structure, (n, n) eV².

    ``Cov = delta**2 (K~_** - K~_*M K~_MM^-1 K~_M*) + delta**4 K~_*M Sigma K~_M*``; the
    variance of the total energy is the sum of all its entries.
    """
    k = terms.local_rows(state.terms, dsets).T  # (M, n)
    kqq = terms.local_prior(state.terms, dsets)
    A = sla.solve_triangular(state.kmm_cholesky, k, lower=True)
    B = sla.solve_triangular(state.posterior_factor, k, trans="T", lower=False)
    d = state.delta
    return d ** 2 * (kqq - A.T @ A) + d ** 4 * (B.T @ B)


# ----------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------
def fit_calibration(state: FittedState, frames: Sequence[Atoms], preds: Sequence,
                    ref: dict, keep_nystrom: bool = False, source: str = "validation"
                    ) -> Calibration:
    """Variance scales of energies and forces fitted on labelled validation structures.

    Parameters
    ----------
    state : FittedState
    frames : list of ase.Atoms
        Validation structures (not used in training).
    preds : list of StructurePrediction
        Their predictions, made with ``keep_gradients=True``.
    ref : dict
        Reference labels, :func:`gapkit.metrics.reference_arrays` of ``frames``.
    keep_nystrom : bool
        Keep the Nyström scales at 1 and fit only the posterior scales.
    source : str
        Recorded in the returned :class:`Calibration`.
    """
    parts = [variance_parts(state, r.descriptors, forces=True) for r in preds]
    fix = 1.0 if keep_nystrom else None
    e_err = np.array([r.energy for r in preds]) - ref["energy"]
    e_ale = np.array([state.noise_level("energy") ** 2 * len(a) for a in frames])
    energy = VarianceScale(*fit_variance_scales(e_err, [p.energy[0] for p in parts],
                                                [p.energy[1] for p in parts], e_ale,
                                                fix_nystrom=fix))
    has_f = [k for k, f in enumerate(ref["forces"]) if f is not None]
    forces = VarianceScale()
    if has_f:
        f_err = np.concatenate([(preds[k].forces - ref["forces"][k]).ravel() for k in has_f])
        f_nys = np.concatenate([parts[k].forces[0].ravel() for k in has_f])
        f_post = np.concatenate([parts[k].forces[1].ravel() for k in has_f])
        f_ale = np.full(f_err.shape, state.noise_level("forces") ** 2)
        forces = VarianceScale(*fit_variance_scales(f_err, f_nys, f_post, f_ale,
                                                    fix_nystrom=fix))
    return Calibration(energy=energy, forces=forces, source=source)


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
    bounds : (float, float)
        Bounds of both scales.
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
