"""Calibration of the predictive std on labelled validation structures.

The scales of :class:`~gapkit.model.state.VarianceScale` are fitted by maximum
likelihood of the validation errors, ``sum_k log N(e_k; 0, var_k)``:

1. **Energies and exact force components, jointly**, each block (energies; the force
   components of each species) with a Nyström exponent ``beta`` of its own in
   ``V_N -> V_N min(1, rho / knee)**beta``, a posterior scale and power
   (``s_P V_P (V_P / ref)**(p - 1)``, ``ref`` the median validation ``V_P``: the
   monotone power map that lets the std spread as the errors do) and an aleatoric scale.
   ``rho`` is the fraction of the prior variance the sparse set does not explain:
   small where the model knows the region, growing away from it. The knee is fitted
   between the largest ``rho`` of the validation data and 1, so the map meets the raw
   Nyström term no earlier than where the calibration evidence ends and at the latest
   at the prior (``rho = 1``); beyond the knee the raw term is kept. A free knee is a
   free overall scale of the mapped term inside the data with that bound (a block
   whose validation errors are much smaller than its raw Nyström term, e.g. molecular
   energies, would otherwise be held at the raw term at its largest ``rho``). The
   Nyström multiplier stays 1, so the std keeps growing away from the training data
   while it is calibrated inside it; the aleatoric scale may shrink to ~0 where the
   labels are noise-free and the learned "noise" was model error. A block with fewer
   than :data:`MIN_BLOCK_ITEMS` validation items (the energies of a small validation
   set) keeps power 1 and the other blocks' mean exponent. Files calibrated
   before (one shared exponent, the knee at the largest ``rho``, power 1) load with
   those scales and give the same std.
2. **Fast force stds**, per species: multipliers that map the neighbourhood sums of
   the local-energy Nyström and posterior terms onto the calibrated exact force
   variance of step 1 on the validation atoms (no labels enter; atoms whose force is
   fixed by symmetry are left out), with the exact aleatoric scale; the spread of fast
   over exact std on those atoms is recorded.

The calibrated model also records a high per-atom quantile (:data:`REFERENCE_QUANTILE`)
of the calibrated epistemic stds of the validation atoms, the unit of relative flag
thresholds (``3x``). With the default held-out split the final model, which also has
the held-out rows, gets the split model's calibration with its posterior power maps
anchored on its own posterior scale
(:func:`gapkit.model.calibration_transfer.anchored`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

import numpy as np
from ase import Atoms
from scipy.optimize import minimize

from gapkit.model.config_type_scales import fit_config_type_scales
from gapkit.model.state import ALL_SPECIES, Calibration, FittedState, VarianceScale
from gapkit.model.variance import (Term3, VarianceParts, collect_std, epistemic_variance,
                                   fast_force_terms, neighbour_weights, posterior_map,
                                   variance_parts)

logger = logging.getLogger(__name__)

#: Standard deviation of the weak Gaussian prior on each log-scale (centred on the raw
#: DTC value, scale 1): a scale the validation errors do not determine stays near 1
#: instead of drifting to a bound, where it would decide the std far from the data.
LOG_SCALE_PRIOR_STD = 3.0
#: Standard deviation of the weak Gaussian prior on the Nyström exponent, centred on 0
#: (the raw term): with few validation labels the map stays close to the raw DTC
#: variance; thousands of force components overrule it.
EXPONENT_PRIOR_STD = 2.0
#: Atoms whose exact epistemic force variance is below this fraction of the median
#: are taken as fixed by symmetry and left out of the fast-force map.
SYMMETRY_FLOOR = 0.01
#: The knee of the Nyström map is this many times the largest ``rho`` of the
#: validation data: beyond the calibrated range the raw term returns.
KNEE_FACTOR = 1.0
#: Standard deviation of the weak Gaussian prior on the power of the posterior map,
#: centred on 1 (the raw term).
POWER_PRIOR_STD = 1.0
#: Bounds of the power of the posterior map: at least 1, so that it can only spread the
#: posterior term (a power below 1 flattens it towards a constant, which the aleatoric
#: scale already is: measured, 0.05 eV/Å of injected label noise was then learned as
#: 0.039, with C at 0.023).
POWER_BOUNDS = (1.0, 3.0)
#: Blocks with fewer validation items keep posterior power 1 and take the other blocks'
#: mean Nyström exponent (:func:`fit_calibration`; mlearn Si test energy ZMS 2.50 ->
#: 1.52, EMT Cu and Al unchanged: ``benchmarks/uncertainty_forms.py``, session 8).
MIN_BLOCK_ITEMS = 100
#: Smallest aleatoric force std, as a fraction of the block's RMS validation force
#: error: the std never claims ten times the model's typical precision (symmetry-fixed
#: components of mlearn Si slabs had stds ~1e-5 eV/Å against 1e-3 eV/Å of DFT noise;
#: docs/guide/uncertainty.md). Adds 1 % of the mean squared error to a variance.
FORCE_FLOOR_FRACTION = 0.1
#: Quantile over the validation atoms of the per-atom calibrated epistemic std that is
#: the unit of relative flag thresholds (``3x``; :func:`_reference_stds`).
REFERENCE_QUANTILE = 0.98
#: Bounds of the fitted quantities: log-scales and the Nyström exponent.
LOG_SCALE_BOUNDS = (np.log(1e-8), np.log(1e6))
EXPONENT_BOUNDS = (0.0, 8.0)


def _knee(rho: np.ndarray) -> float:
    """The knee of the Nyström map for validation items with these ``rho``."""
    return float(min(1.0, KNEE_FACTOR * rho.max())) if rho.size and rho.max() > 0 else 1.0


def _log_mapped_rho(rho: np.ndarray, knee: float) -> np.ndarray:
    """``log min(1, rho / knee)``: the Nyström map is ``exp(beta * this)``."""
    return np.minimum(0.0, np.log(np.maximum(rho, 1e-300) / knee))


def _nll(e2: np.ndarray, var: np.ndarray) -> float:
    var = np.maximum(var, 1e-300)
    return 0.5 * float(np.sum(np.log(var) + e2 / var))


class _Block:
    """Validation errors of one property with their raw variance terms.

    ``knee_bounds`` are the bounds of ``log knee``: from the largest validation ``rho``
    (:func:`_knee`, the map meets the raw term where the calibration evidence ends) to
    ``log 1`` (the raw term returns only where the sparse set explains nothing, i.e. at
    the prior).
    """

    def __init__(self, err: np.ndarray, t: Term3, ale: np.ndarray, delta: float):
        self.e2 = np.asarray(err, dtype=np.float64).ravel() ** 2
        self.nys = np.asarray(t.nystrom, dtype=np.float64).ravel()
        self.post = np.asarray(t.posterior, dtype=np.float64).ravel()
        pos = self.post[self.post > 0]
        self.post_ref = float(np.median(pos)) if pos.size else 1.0
        self.post_max = float(np.max(pos)) if pos.size else float("inf")
        self.log_post_rel = np.log(np.maximum(self.post, 1e-300) / self.post_ref)
        rho = np.asarray(t.rho(delta), dtype=np.float64).ravel()
        self.knee = _knee(rho)
        self.log_rho = np.log(np.maximum(rho, 1e-300))
        self.knee_bounds = (float(np.log(self.knee)), 0.0)
        self.ale = np.broadcast_to(np.asarray(ale, dtype=np.float64), self.e2.shape)

    def variance(self, beta: float, log_post: float, log_ale: float,
                 log_knee: float | None = None, power: float = 1.0) -> np.ndarray:
        """The calibrated variance of every item (``log_knee``: default the smallest;
        ``power``: of the posterior map about :attr:`post_ref`)."""
        lk = self.knee_bounds[0] if log_knee is None else log_knee
        mapped = np.minimum(0.0, self.log_rho - lk)
        post = self.post if power == 1.0 else self.post * np.exp((power - 1.0) * self.log_post_rel)
        return (self.nys * np.exp(beta * mapped) + np.exp(log_post) * post
                + np.exp(log_ale) * self.ale)

    def nll(self, beta: float, log_post: float, log_ale: float,
            log_knee: float | None = None, power: float = 1.0) -> float:
        return _nll(self.e2, self.variance(beta, log_post, log_ale, log_knee, power))


def fit_exponent_and_scales(blocks: dict, fix_exponent: float | None = None,
                            groups: dict | None = None, free_knee: bool = False,
                            free_power: bool = False) -> tuple[dict, dict]:
    """Joint maximum-likelihood fit of the exponents and per-block (posterior, aleatoric)
    scales, with ``free_knee`` the knee and with ``free_power`` the posterior power of
    each block.

    Parameters
    ----------
    blocks : dict of name to _Block
    fix_exponent : float, optional
        Keep every exponent at this value (0: the raw Nyström term, and no knee).
    groups : dict of name to hashable, optional
        The exponent group of each block: blocks of one group share one Nyström
        exponent (default: one exponent for all blocks).
    free_knee : bool
        Fit each block's knee between its largest validation ``rho`` and 1 (see
        :class:`_Block`); otherwise the knee is the largest validation ``rho``.
    free_power : bool
        Fit each block's power of the posterior map (:data:`POWER_BOUNDS`, weak prior
        :data:`POWER_PRIOR_STD` about 1); otherwise 1.

    Returns
    -------
    exponents : dict of group to float
    scales : dict of name to VarianceScale
    """
    names = list(blocks)
    groups = {n: 0 for n in names} if groups is None else {n: groups[n] for n in names}
    gnames = list(dict.fromkeys(groups.values()))
    n_free = 0 if fix_exponent is not None else len(gnames)
    free_knee = free_knee and fix_exponent != 0
    n_per = 2 + int(free_knee) + int(free_power)

    def unpack(theta):
        if fix_exponent is not None:
            beta = {g: float(fix_exponent) for g in gnames}
        else:
            beta = dict(zip(gnames, theta[:n_free]))
        rest = theta[n_free:].reshape(-1, n_per)
        per = {}
        for n, r in zip(names, rest):
            lk = r[2] if free_knee else blocks[n].knee_bounds[0]
            per[n] = (r[0], r[1], lk, r[-1] if free_power else 1.0)
        return beta, per

    def objective(theta):
        beta, per = unpack(theta)
        prior = 0.5 * float(np.sum((theta[:n_free] / EXPONENT_PRIOR_STD) ** 2))
        for n in names:
            lp, la, lk, pw = per[n]
            prior += 0.5 * ((lp / LOG_SCALE_PRIOR_STD) ** 2 + (la / LOG_SCALE_PRIOR_STD) ** 2
                            + ((lk - blocks[n].knee_bounds[0]) / LOG_SCALE_PRIOR_STD) ** 2
                            + ((pw - 1.0) / POWER_PRIOR_STD) ** 2)
        return sum(blocks[n].nll(beta[groups[n]], *per[n]) for n in names) + prior

    bounds = [EXPONENT_BOUNDS] * n_free
    for n in names:
        bounds += ([LOG_SCALE_BOUNDS] * 2 + ([blocks[n].knee_bounds] if free_knee else [])
                   + ([POWER_BOUNDS] if free_power else []))
    starts = [(b0, k0) for b0 in ((1.0, 3.0) if n_free else (None,))
              for k0 in ((0.0, 0.5) if free_knee else (0.0,))]
    best = None
    for b0, k0 in starts:
        theta0 = [b0] * n_free
        for n in names:
            lo, hi = blocks[n].knee_bounds
            theta0 += ([0.0, 0.0] + ([lo + k0 * (hi - lo)] if free_knee else [])
                       + ([1.0] if free_power else []))
        # tight tolerances: the optimum, not the stopping point, should decide the
        # scales (two fits equal to round-off gave aleatoric scales 2e-3 apart)
        res = minimize(objective, np.array(theta0, dtype=float), method="L-BFGS-B",
                       bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 5000})
        if best is None or res.fun < best.fun:
            best = res
    beta, per = unpack(best.x)
    beta = {g: float(b) for g, b in beta.items()}
    return beta, {n: _scale(1.0, float(np.exp(lp)), float(np.exp(la)), beta[groups[n]],
                            float(np.exp(lk)), float(pw), blocks[n].post_ref,
                            blocks[n].post_max)
                  for n, (lp, la, lk, pw) in per.items()}


def _scale(nystrom: float, posterior: float, aleatoric: float, exponent: float, knee: float,
           power: float, ref: float, vmax: float = float("inf")) -> VarianceScale:
    """A :class:`VarianceScale`, with the reference and cap of a power-1 map set to 1
    and inf (they have no effect there, and a file stores no power keys for them)."""
    if power == 1.0:
        return VarianceScale(nystrom, posterior, aleatoric, exponent, knee)
    return VarianceScale(nystrom, posterior, aleatoric, exponent, knee, power, ref, vmax)


def fit_fast_force_scales(exact: Term3, fast: Term3, scale: VarianceScale, delta: float
                          ) -> tuple[VarianceScale, list]:
    """Map the fast force terms of one species onto its calibrated exact force variance.

    For the Nyström part the multiplier is the ratio of the prior variances,
    ``c_N = median(k~**_F,j / K_j)`` (so both forms agree where both keep the raw
    term), and the exponent ``e`` of ``c_N U_N min(1, rho_j / knee)**e`` (``knee``:
    :data:`KNEE_FACTOR` times the largest neighbourhood ``rho`` of these atoms) is the
    least-squares slope of ``log(n_j / (c_N U_N,j))`` against ``log(rho_j / knee)``
    over the validation atoms (``n_j``: the atom's exact mapped Nyström force
    variance). The posterior multiplier
    is ``c_P = s_P exp(mean log(p_j / U_P,j))``. No labels enter: the fast std follows
    the exact one, with the exact aleatoric scale.

    Parameters
    ----------
    exact : Term3
        Per atom of the species (mean over the 3 components): exact force Nyström,
        posterior and prior variances.
    fast : Term3
        The neighbourhood sums of the same atoms (:func:`fast_force_terms`).
    scale : VarianceScale
        The species' exact force scales.
    delta : float

    Returns
    -------
    scale : VarianceScale
    ratio : list of float
        5th, 50th and 95th percentiles of fast over exact epistemic std on these atoms
        (those whose force is not fixed by symmetry).
    """
    n_ex = epistemic_variance(Term3(exact.nystrom, 0 * exact.posterior, exact.prior),
                              VarianceScale(1.0, 0.0, 0.0, scale.exponent, scale.knee), delta)
    e_all = epistemic_variance(exact, scale, delta)
    # atoms whose force is fixed by symmetry (exact variance ~0, e.g. a perfect crystal
    # under strain) say nothing about the map: the fast form cannot see symmetry, so
    # it is conservative there; the map is fitted on the others
    live = e_all > SYMMETRY_FLOOR * np.median(e_all[e_all > 0]) if np.any(e_all > 0) else e_all >= 0
    ok = (fast.prior > 0) & (exact.prior > 0)
    cN = float(np.median(exact.prior[ok] / fast.prior[ok])) if np.any(ok) else 1.0
    rho = fast.rho(delta)
    knee = _knee(rho)
    x = _log_mapped_rho(rho, knee)
    good = ok & live & (n_ex > 0) & (fast.nystrom > 0) & (x < 0)
    expo = scale.exponent
    if np.sum(good) > 1 and np.ptp(x[good]) > 0:
        y = np.log(n_ex[good] / (cN * fast.nystrom[good]))
        slope, icpt = np.polyfit(x[good], y, 1)
        expo = float(np.clip(slope, *EXPONENT_BOUNDS))
        if expo > 0:  # an intercept below 0: the map meets the raw term beyond the knee
            icpt = float(np.mean(y - expo * x[good]))
            knee = float(np.exp(np.clip(np.log(knee) - icpt / expo, np.log(knee), 0.0)))
    okp = live & (exact.posterior > 0) & (fast.posterior > 0)
    unit = VarianceScale(1.0, 1.0, 0.0, 0.0, 1.0, scale.posterior_power,
                         float(np.median(fast.posterior[okp])) if np.any(okp) else 1.0,
                         float(np.max(fast.posterior[okp])) if np.any(okp) else float("inf"))
    cP = (float(np.exp(np.mean(np.log(scale.posterior * posterior_map(exact.posterior[okp], scale)
                                      / posterior_map(fast.posterior[okp], unit)))))
          if np.any(okp) else scale.posterior)
    out = _scale(cN, cP, scale.aleatoric, expo, knee, unit.posterior_power, unit.posterior_ref,
                 unit.posterior_max)
    f = epistemic_variance(fast, out, delta)
    e = epistemic_variance(exact, scale, delta)
    pos = live & (e > 0) & (f >= 0)
    r = np.sqrt(f[pos] / e[pos]) if np.any(pos) else np.ones(1)
    return out, [float(v) for v in np.percentile(r, [5, 50, 95])]


def validation_parts(state: FittedState, atoms: Atoms, pred, ref_forces) -> VarianceParts:
    """Raw variance terms of one validation structure for :func:`fit_calibration`: the
    exact force terms (when it has force labels) and the fast-force neighbourhood."""
    parts = variance_parts(state, pred.descriptors,
                           forces="exact" if ref_forces is not None else None, atoms=atoms)
    if ref_forces is not None:
        parts.neighbours = neighbour_weights(atoms, state.descriptor.interaction_range)
    return parts


def fit_calibration(state: FittedState, frames: Sequence[Atoms], parts: Sequence[VarianceParts],
                    energy_errors: np.ndarray, force_errors: Sequence, source: str,
                    keep_nystrom: bool = False, exponents: str = "block",
                    free_knee: bool = True, free_power: bool = True,
                    min_items: int = MIN_BLOCK_ITEMS, small_exponent: bool = True,
                    config_type_key: str | None = "config_type") -> Calibration:
    """Calibration fitted on labelled validation structures.

    Parameters
    ----------
    state : FittedState
        The model (its current calibration is ignored, except the training range of the
        compression term, which is kept).
    frames : list of ase.Atoms
        Validation structures, not used to fit ``state``.
    parts : list of VarianceParts
        Their raw variance terms (:func:`validation_parts`).
    energy_errors : ndarray of shape (n_frames,)
        Predicted minus reference energies, eV.
    force_errors : list of ndarray (n_atoms_k, 3) or None
        Predicted minus reference forces, eV/Å (``None`` for frames without forces).
    source : str
        What the validation data are (recorded).
    keep_nystrom : bool
        Keep the raw Nyström terms (exponent 0) and fit the other scales only.
    exponents : {"block", "shared"}
        One Nyström exponent per block (energies, the forces of each species), or one
        for all (the form before session 7, for comparisons).
    free_knee, free_power : bool
        Fit the knee and the posterior power of each block (see
        :func:`fit_exponent_and_scales`); off: knee at the largest validation ``rho``,
        power 1 (the form before session 7).
    min_items : int
        Blocks with fewer validation items than this (the energies of a few frames, a
        rare species) keep the posterior power at 1 and, with ``small_exponent``, take
        the item-weighted mean Nyström exponent of the other blocks (fitted first)
        instead of their own: a few items do not determine four parameters.
    small_exponent : bool
        See ``min_items``.
    config_type_key : str or None
        The ``atoms.info`` key of the validation structures' ``config_type``: types with
        enough structures get variance multipliers of their own over the pooled scales
        (:mod:`gapkit.model.config_type_scales`); ``None``: pooled scales only.

    Returns
    -------
    Calibration
    """
    if not frames:
        raise ValueError("calibration needs at least one validation structure")
    d = state.delta
    has_f = [k for k, f in enumerate(force_errors) if f is not None]
    sE2, sF2 = state.noise_level("energy") ** 2, state.noise_level("forces") ** 2
    blocks = {"energy": _Block(energy_errors, _stack([p.energy for p in parts]),
                               sE2 * np.array([len(a) for a in frames], dtype=float), d)}
    if has_f:
        z = np.concatenate([frames[k].numbers for k in has_f])
        f_err = np.concatenate([force_errors[k] for k in has_f])
        ft = _stack([parts[k].forces for k in has_f])
        for s in np.unique(z):
            m = z == s
            blocks[int(s)] = _Block(f_err[m], Term3(ft.nystrom[m], ft.posterior[m],
                                                    ft.prior[m]), sF2, d)
    if exponents not in ("block", "shared"):
        raise ValueError(f"exponents must be 'block' or 'shared', got {exponents!r}")
    beta, scales = _fit_blocks(blocks, exponents, keep_nystrom, free_knee, free_power,
                               min_items, small_exponent)
    energy = scales.pop("energy")
    if sF2 > 0:  # never ten times more precise than the block's typical error
        scales = {z: replace(v, aleatoric=max(
            v.aleatoric, FORCE_FLOOR_FRACTION ** 2 * float(np.mean(blocks[z].e2)) / sF2))
            for z, v in scales.items()}
    fast, ratios = {}, {}
    if has_f:
        u = _stack([fast_force_terms(parts[k]) for k in has_f])
        ex = Term3(*(np.mean(getattr(ft, k), axis=1) for k in ("nystrom", "posterior", "prior")))
        for s in np.unique(z):
            m = z == s
            fu = Term3(u.nystrom[m], u.posterior[m], u.prior[m])
            fast[int(s)], ratios[int(s)] = fit_fast_force_scales(
                Term3(ex.nystrom[m], ex.posterior[m], ex.prior[m]), fu, scales[int(s)], d)
    cal = Calibration(energy=energy, forces=scales, forces_fast=fast, source=source,
                      fast_force_ratio=ratios, compression=dict(state.calibration.compression))
    if config_type_key is not None:
        cal = replace(cal, config_type_key=config_type_key, config_types=fit_config_type_scales(
            state.replace(calibration=cal), frames, parts, energy_errors, force_errors,
            config_type_key))
    # the reference stds of relative flags are those of the calibrated model itself
    cal = replace(cal, reference=_reference_stds(state.replace(calibration=cal), parts,
                                                 frames, bool(has_f)))
    logger.info("calibration on %s: exponents %s, energy %s, forces %s, by config_type %s",
                source, beta, energy, scales, cal.config_types)
    return cal


def _fit_blocks(blocks: dict, exponents: str, keep_nystrom: bool, free_knee: bool,
                free_power: bool, min_items: int, small_exponent: bool) -> tuple[dict, dict]:
    """:func:`fit_exponent_and_scales` of the large blocks, then of the small ones
    (fewer than ``min_items`` items; see :func:`fit_calibration`)."""
    fix = 0.0 if keep_nystrom else None
    small = [n for n, b in blocks.items() if b.e2.size < min_items]
    large = [n for n in blocks if n not in small]
    if not large:
        large, small = small, []
    groups = {n: n if exponents == "block" else 0 for n in blocks}
    beta, scales = fit_exponent_and_scales({n: blocks[n] for n in large}, fix_exponent=fix,
                                           groups=groups, free_knee=free_knee,
                                           free_power=free_power)
    if small:
        w = np.array([blocks[n].e2.size for n in large], dtype=float)
        mean = float(np.average([beta[groups[n]] for n in large], weights=w))
        fix_small = fix if fix is not None else (mean if small_exponent else None)
        b2, s2 = fit_exponent_and_scales({n: blocks[n] for n in small}, fix_exponent=fix_small,
                                         groups=groups, free_knee=free_knee, free_power=False)
        beta.update(b2)
        scales.update(s2)
    return beta, scales


def _stack(ts: Sequence[Term3]) -> Term3:
    return Term3(*(np.concatenate([np.atleast_1d(getattr(t, k)) for t in ts])
                   for k in ("nystrom", "posterior", "prior")))


def _reference_stds(state: FittedState, parts: Sequence[VarianceParts],
                    frames: Sequence[Atoms], forces: bool) -> dict:
    """Reference stds of relative flags (``3x``): the :data:`REFERENCE_QUANTILE` quantile
    over the validation atoms of the calibrated epistemic std of one atom (its
    local-energy std; its largest force-component std, exact and fast).

    A per-atom quantile does not depend on how many atoms a frame has (a maximum over a
    frame's atoms grows with its size), so ``3x`` flags an atom whose std is three times
    what a high-std atom of data like the validation data has. The quantile is stored
    under ``"quantile"`` (files written before have none: their references were the RMS
    over frames of each frame's largest std, and are used as stored)."""
    def high(values):
        return float(np.quantile(np.concatenate([np.ravel(v) for v in values]),
                                 REFERENCE_QUANTILE))

    std = collect_std(state, parts, frames, forces=False)
    out = {"energy_per_atom": high(std.energies_epistemic), "quantile": REFERENCE_QUANTILE}
    if forces and all(p.forces is not None for p in parts):
        out["forces"] = high([np.max(f, axis=1) for f in
                              collect_std(state, parts, frames, True).forces_epistemic])
    if forces and state.calibration.has_fast_forces:
        fast = [VarianceParts(p.numbers, p.energy, p.energies, None, p.neighbours) for p in parts]
        out["forces_fast"] = high([np.max(f, axis=1) for f in
                                   collect_std(state, fast, frames, True).forces_epistemic])
    return out


__all__ = ["fit_calibration", "validation_parts", "fit_exponent_and_scales",
           "fit_fast_force_scales", "ALL_SPECIES"]
