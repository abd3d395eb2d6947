"""Predictive variance of a fitted GAP, split by origin, with its calibration applied.

For a linear functional ``f`` of the local energies (a total energy, a local energy, a
force component) with unit-scale kernel row ``k~`` and prior variance ``k~**``, the
projected-process (DTC) variance has two epistemic terms,

    V_N = delta**2 (k~** - k~^T K~_MM^-1 k~)     (Nyström residual: what the sparse set
                                                  cannot represent; grows off the data)
    V_P = delta**4 k~^T Sigma k~                 (posterior of the weights)

and the aleatoric term is the learned noise ``sigma_g**2`` (times ``N_atoms`` for a
total energy). The model's :class:`~gapkit.model.state.Calibration` scales them
(:class:`~gapkit.model.state.VarianceScale`); uncalibrated, they are the raw DTC
variance.

Force stds come in two kinds:

* **exact**: every force component from the kernel Hessian; needs the descriptor
  derivative arrays (``keep_gradients=True``), about the cost of a training row per
  atom;
* **fast** (calibrated models): atom ``j``'s force variance comes from smooth
  neighbourhood sums of the local-energy terms, ``U_j = sum_i w(r_ij) V_i`` with
  ``w = (1 + cos(pi r / r_cut)) / 2`` (``w = 1`` for ``i = j``), through the same
  map as any other property (a :class:`~gapkit.model.state.VarianceScale` per
  species, fitted to follow the exact force variance). The force on ``j`` is
  ``-sum_i d eps_i / d r_j`` over the same neighbourhood, so where the local
  energies are uncertain the force is too. It needs only the descriptors, no
  derivative arrays: two triangular solves with all local-energy rows at once.

Variance basis (cost)
---------------------
Energies and forces cost ``O(N M)``, the two triangular solves of the variance
``O(N M**2)``. A state with a :class:`~gapkit.model.state.VarianceBasis` computes every
variance term (energies, local energies, exact and fast forces) as the DTC variance of
the sub-model on ``M_v`` of its sparse columns (same data, same hyperparameters; exact,
not an approximation of that sub-model: :mod:`gapkit.gp.subset`), ``O(N M_v**2)``.
The columns are chosen at fit (``GAP(variance_sparse=...)``, :func:`with_variance_basis`)
before the calibration, which is therefore fitted on the same terms that prediction
uses. ``full=True`` (or a state without a basis) gives the variance of all ``M``
columns, for checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg as sla
from ase import Atoms

import scipy.sparse as sp

from gapkit.descriptors.neighbours import neighbour_pairs
from gapkit.gp import solver as gp
from gapkit.gp import subset, terms
from gapkit.model import distance_variance as dv
from gapkit.model.state import FittedState, VarianceBasis, VarianceScale

#: ``variance_sparse="auto"``: the variance basis has ``min(M, AUTO_VARIANCE_SPARSE)``
#: columns (see ``docs/guide/uncertainty.md`` for the measurements behind it).
AUTO_VARIANCE_SPARSE = 1000


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
class Term3:
    """Raw variance terms of some predictions: ``V_N``, ``V_P`` and the unit-scale prior
    variance ``k~**`` (same shapes), eV² or (eV/Å)²."""

    nystrom: np.ndarray
    posterior: np.ndarray
    prior: np.ndarray

    def rho(self, delta: float) -> np.ndarray:
        """``V_N / (delta**2 k~**)`` in [0, 1]: the unexplained fraction of the prior."""
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(self.prior > 0, self.nystrom / (delta ** 2 * self.prior), 1.0)
        return np.clip(r, 0.0, 1.0)


@dataclass
class VarianceParts:
    """Raw (uncalibrated) variance terms of one structure.

    Attributes
    ----------
    numbers : ndarray of shape (n,)
    energy : Term3
        Of the total energy (shape ()).
    energies : Term3
        Of the local energies, (n,).
    forces : Term3 or None
        Of every force component, (n, 3) (exact force stds only).
    neighbours : scipy.sparse matrix of shape (n, n) or None
        The weights ``w(r_ij)`` of the fast force stds.
    compression : CompressionTerms or None
        The term of pairs closer than in training (:mod:`gapkit.model.distance_variance`;
        ``None``: none).
    """

    numbers: np.ndarray
    energy: Term3
    energies: Term3
    forces: Term3 | None = None
    neighbours: sp.csr_matrix | None = None
    compression: dv.CompressionTerms | None = None


def check_variance_sparse(value) -> None:
    """Raise ``ValueError`` unless ``value`` is a valid ``variance_sparse``: a positive
    integer, ``"auto"``, ``"all"`` or ``None``."""
    if value is None or (isinstance(value, str) and value in ("auto", "all")):
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"variance_sparse must be a positive integer (sparse columns of the "
                         f"predictive variance), 'auto' or 'all'/None (all M), got {value!r}")


def resolve_variance_sparse(value, M: int) -> int | None:
    """Columns of the variance basis for ``variance_sparse=value`` and ``M`` sparse
    points: ``None`` for all of them (``"all"``, ``None``, or a number ``>= M``)."""
    check_variance_sparse(value)
    if value is None or value == "all":
        return None
    n = AUTO_VARIANCE_SPARSE if value == "auto" else int(value)
    return None if n >= M else n


def variance_basis(kernel_terms: Sequence, variance_sparse) -> VarianceBasis | None:
    """The variance basis of ``variance_sparse`` (see :func:`resolve_variance_sparse`)
    for the sparse set of ``kernel_terms`` (``FittedTerm``), chosen by
    :func:`gapkit.gp.subset.greedy_columns`; ``None`` when all columns are used. Needs no fit: the fit computes it while the
    rows stream."""
    n = resolve_variance_sparse(variance_sparse, terms.n_columns(kernel_terms))
    return None if n is None else VarianceBasis(subset.greedy_columns(kernel_terms, n))


def with_variance_basis(state: FittedState, variance_sparse) -> FittedState:
    """``state`` with :func:`variance_basis` of its sparse set."""
    return state.replace(variance_basis=variance_basis(state.terms, variance_sparse))


@dataclass
class VarianceFactors:
    """What the variance of a state is computed from: the kernel terms whose sparse
    sets give the rows ``k~`` (the basis columns only), the lower Nyström factor and
    the upper posterior factor of those columns (see :mod:`gapkit.gp.subset`)."""

    terms: list
    kmm_cholesky: np.ndarray
    posterior_factor: np.ndarray


def variance_factors(state: FittedState, full: bool = False) -> VarianceFactors:
    """The :class:`VarianceFactors` of ``state``: of its variance basis (computed once per
    state, ``O(M M_v**2)``), or of all ``M`` columns with ``full`` or without a basis."""
    vb = state.variance_basis
    if full or vb is None:
        return VarianceFactors(list(state.terms), state.kmm_cholesky, state.posterior_factor)

    def make():
        L_v, R_v = subset.subset_factors(state.kmm_cholesky, state.posterior_factor, vb.columns)
        return VarianceFactors(subset.subset_terms(state.terms, vb.columns), L_v, R_v)

    return state.cached("variance_factors", make)


def neighbour_weights(atoms: Atoms, r_cut: float) -> sp.csr_matrix:
    """``W[j, i] = (1 + cos(pi r_ij / r_cut)) / 2`` over neighbour pairs (images summed),
    plus 1 on the diagonal; shape (n, n)."""
    n = len(atoms)
    i, j, d, _ = neighbour_pairs(atoms, r_cut)
    w = 0.5 * (1.0 + np.cos(np.pi * np.asarray(d) / r_cut))
    rows = np.concatenate([j, np.arange(n)])
    cols = np.concatenate([i, np.arange(n)])
    return sp.csr_matrix((np.concatenate([w, np.ones(n)]), (rows, cols)), shape=(n, n))


def variance_parts(state: FittedState, dsets: Sequence, forces: str | None = None,
                   atoms: Atoms | None = None, full: bool = False) -> VarianceParts:
    """The raw variance terms of one structure.

    Parameters
    ----------
    state : FittedState
    dsets : list of DescriptorSet
        One per kernel term; with derivative arrays when ``forces == "exact"``.
    forces : {None, "exact", "fast"}
        Which force terms to compute.
    atoms : ase.Atoms
        The structure (needed for ``forces="fast"``: its neighbour list).
    full : bool
        Use all ``M`` sparse columns even when the state has a variance basis (the
        exact DTC variance of the whole model, for checks; the calibration was fitted
        on the basis).
    """
    d = state.delta
    fac = variance_factors(state, full)
    local = terms.local_rows(fac.terms, dsets)  # (n, M_v)
    k_total, k_diag = terms.local_prior_sum_diag(state.terms, dsets)
    rows = np.vstack([local.sum(0, keepdims=True), local])
    prior = np.concatenate([[k_total], k_diag])
    nys, post = gp.predictive_variance(rows, prior, fac.kmm_cholesky, fac.posterior_factor, d,
                                       parts=True)
    out = VarianceParts(numbers=dsets[0].numbers, energy=Term3(nys[0], post[0], prior[0]),
                        energies=Term3(nys[1:], post[1:], prior[1:]))
    if forces == "exact":
        frows = terms.design_rows(fac.terms, dsets, energy=False, forces=True)["forces"]
        fprior = terms.force_prior(state.terms, dsets)
        fn, fp = gp.predictive_variance(frows, fprior, fac.kmm_cholesky, fac.posterior_factor,
                                        d, parts=True)
        out.forces = Term3(fn.reshape(-1, 3), fp.reshape(-1, 3), fprior.reshape(-1, 3))
    elif forces == "fast":
        out.neighbours = neighbour_weights(atoms, state.descriptor.interaction_range)
    elif forces is not None:
        raise ValueError(f"forces must be None, 'exact' or 'fast', got {forces!r}")
    if atoms is not None:  # pairs closer than in training (gapkit.model.distance_variance)
        out.compression = dv.compression_terms(atoms, state.calibration.compression,
                                               state.descriptor.interaction_range)
    return out


def nystrom_map(rho: np.ndarray, scale: VarianceScale) -> np.ndarray:
    """``min(1, rho / knee)**exponent``: the factor of the Nyström term."""
    if scale.exponent == 0:
        return np.ones_like(np.asarray(rho, dtype=np.float64))
    return np.minimum(1.0, np.asarray(rho) / scale.knee) ** scale.exponent


def posterior_map(v_post: np.ndarray, scale: VarianceScale) -> np.ndarray:
    """``V_P (min(V_P, max) / ref)**(power - 1)``: the posterior term through its power
    map, whose factor stops growing beyond the calibration data's largest ``V_P``."""
    v = np.asarray(v_post, dtype=np.float64)
    if scale.posterior_power == 1.0:
        return v
    x = np.clip(v, 0.0, scale.posterior_max)
    return v * (x / scale.posterior_ref) ** (scale.posterior_power - 1.0)


def epistemic_variance(t: Term3, scale: VarianceScale, delta: float) -> np.ndarray:
    """``s_N V_N min(1, rho / knee)**beta + s_P V_P (V_P / ref)**(p - 1)`` for one
    property."""
    nys = t.nystrom if scale.exponent == 0 else t.nystrom * nystrom_map(t.rho(delta), scale)
    return scale.nystrom * nys + scale.posterior * posterior_map(t.posterior, scale)


def fast_force_terms(parts: VarianceParts) -> Term3:
    """Neighbourhood sums of the local-energy terms of one structure.

    Returns
    -------
    nystrom : Term3
        ``U_N = sum_i W_ji V_N,i``, ``U_P = sum_i W_ji V_P,i`` and the neighbourhood
        prior ``K_j = sum_i W_ji k~**_i``, (n,) each (so ``rho`` is the neighbourhood's
        unexplained fraction).
    """
    e = parts.energies
    W = parts.neighbours
    return Term3(W @ np.asarray(e.nystrom), W @ np.asarray(e.posterior),
                 W @ np.asarray(e.prior))


def force_variances(state: FittedState, parts: VarianceParts) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ``(epistemic, aleatoric)`` force-component variances, (n, 3) each."""
    cal, d = state.calibration, state.delta
    sF2 = state.noise_level("forces") ** 2
    z = parts.numbers
    if parts.forces is not None:
        epi = np.zeros(parts.forces.nystrom.shape)
        ale = np.zeros_like(epi)
        for s in np.unique(z):
            m = z == s
            sc = cal.force_scale(s)
            t = Term3(parts.forces.nystrom[m], parts.forces.posterior[m], parts.forces.prior[m])
            epi[m] = epistemic_variance(t, sc, d)
            ale[m] = sc.aleatoric * sF2
        if parts.compression is not None:
            epi = epi + parts.compression.forces[:, None]
        return epi, ale
    u = fast_force_terms(parts)
    epi, ale = np.zeros(len(z)), np.zeros(len(z))
    for s in np.unique(z):
        m = z == s
        sc = cal.force_scale(s, fast=True)
        epi[m] = epistemic_variance(Term3(u.nystrom[m], u.posterior[m], u.prior[m]), sc, d)
        ale[m] = sc.aleatoric * sF2
    if parts.compression is not None:
        epi = epi + parts.compression.forces
    return np.repeat(epi[:, None], 3, axis=1), np.repeat(ale[:, None], 3, axis=1)


def collect_std(state: FittedState, parts: Sequence[VarianceParts], frames: Sequence[Atoms],
                forces: bool) -> PredictionStd:
    """Calibrated stds of several structures from their :class:`VarianceParts` (each
    structure with the multipliers of its ``config_type``, if the calibration has them:
    :meth:`~gapkit.model.state.Calibration.config_type_scale`)."""
    cal, d = state.calibration, state.delta
    ct = [cal.config_type_scale(a) for a in frames]
    fE = np.sqrt([1.0 if c is None else c.energy for c in ct])
    sE = state.noise_level("energy") * np.sqrt(cal.energy.aleatoric)
    e_epi = fE * np.sqrt([epistemic_variance(p.energy, cal.energy, d)
                          + (p.compression.energy ** 2 if p.compression is not None else 0.0)
                          for p in parts])
    e_ale = np.array([f * sE * np.sqrt(len(a)) for f, a in zip(fE, frames)])
    es_epi = [f * np.sqrt(epistemic_variance(p.energies, cal.energy, d)
                          + (p.compression.energies ** 2 if p.compression is not None else 0.0))
              for f, p in zip(fE, parts)]
    es_ale = [np.full(len(a), f * sE) for f, a in zip(fE, frames)]
    out = PredictionStd(
        energy_epistemic=e_epi, energy_aleatoric=e_ale, energy=np.hypot(e_epi, e_ale),
        energies_epistemic=es_epi, energies_aleatoric=es_ale,
        energies=[np.hypot(a, b) for a, b in zip(es_epi, es_ale)])
    if forces:
        fF = [1.0 if c is None else c.forces for c in ct]
        fv = [tuple(f * v for v in force_variances(state, p)) for f, p in zip(fF, parts)]
        out.forces_epistemic = [np.sqrt(e) for e, _ in fv]
        out.forces_aleatoric = [np.sqrt(a) for _, a in fv]
        out.forces = [np.sqrt(e + a) for e, a in fv]
    return out


def local_energy_covariance(state: FittedState, dsets: Sequence, full: bool = False
                            ) -> np.ndarray:
    """Raw epistemic covariance of the local energies of one structure, (n, n) eV².

    ``Cov = delta**2 (K~_** - K~_*M K~_MM^-1 K~_M*) + delta**4 K~_*M Sigma K~_M*``, over
    the variance basis of the state (all ``M`` columns with ``full``); the variance of
    the total energy is the sum of all its entries.
    """
    fac = variance_factors(state, full)
    k = terms.local_rows(fac.terms, dsets).T  # (M_v, n)
    kqq = terms.local_prior(state.terms, dsets)
    A = sla.solve_triangular(fac.kmm_cholesky, k, lower=True)
    B = sla.solve_triangular(fac.posterior_factor, k, trans="T", lower=False)
    d = state.delta
    return d ** 2 * (kqq - A.T @ A) + d ** 4 * (B.T @ B)
