"""Hyperparameters that never hurt: the evidence, bounded, checked on held-out rows.

``GAP(optimize=True)`` learns the signal scale ``delta`` and the noises by type-II
maximum likelihood (:func:`gapkit.gp.evidence.optimize_hyperparameters`). The evidence
can let a learned noise absorb model error (a model too small for its data explains
its misfit as noise and over-smooths), so the result is bounded and then checked:

1. **Bounds.** ``delta`` in ``[delta0 / 10, 100 delta0]`` and each noise ``sigma_g``
   in ``[sigma0_g / 10, min(5 sigma0_g, target_rms_g / 2)]``, where ``delta0`` and
   ``sigma0_g`` are the values the fit would use without optimisation (the given
   noises, the automatic ``delta``) and ``target_rms_g`` is the root-mean-square of
   the group's training targets (energies after E0 per sqrt(atom), force components,
   virials per sqrt(atom)): a noise as large as the labels themselves would mean the
   model explains nothing.
2. **Candidates.** The defaults, the bounded evidence optimum, and their midpoint in
   log space (where the evidence over-smooths, the midpoint is often the best).
3. **Choice by held-out error.** With validation rows (the fraction that the
   calibration holds out, or ``valid`` frames), each candidate is scored by its
   validation RMSE per label kind relative to the defaults' RMSE of that kind, and
   the candidate with the smallest *largest* ratio wins. The defaults have ratio 1 in
   every kind, so the choice is never worse than the defaults on any label kind of
   the validation data. Without validation rows the bounded evidence optimum is
   taken (with a warning from the caller).

The report (:attr:`Choice.report`) lists every candidate with its ``delta``, noises,
evidence and validation RMSEs, and which was chosen; ``fit`` stores it in the model's
``extra["hyperparameters"]`` and logs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from gapkit.gp import evidence
from gapkit.gp import solver as gp

__all__ = ["Choice", "noise_bounds", "validation_rmse", "choose_hyperparameters"]

logger = logging.getLogger(__name__)

#: Factors of the bounds (see the module docstring).
DELTA_BOUNDS = (0.1, 100.0)
NOISE_BOUNDS = (0.1, 5.0)
NOISE_MAX_FRACTION_OF_TARGETS = 0.5


@dataclass
class Choice:
    """The chosen hyperparameters and how they were chosen.

    Attributes
    ----------
    delta : float
        Signal scale, eV.
    sigmas : dict
        Noise per group (:class:`~gapkit.gp.streaming.NoiseGroup` keys).
    report : dict
        JSON-able: ``method`` (``"validation"`` or ``"evidence"``), ``chosen`` (a
        candidate name), ``bounds`` and ``candidates`` (name, ``delta``, ``noise``,
        ``log_evidence``, ``valid_rmse`` per kind).
    """

    delta: float
    sigmas: dict
    report: dict = field(default_factory=dict)


def _target_rms(g: gp.RowGroup) -> float:
    """RMS of a group's weighted targets: the column norm of ``[A | y]`` is kept by QR."""
    return float(np.sqrt(np.sum(g.R[:, -1] ** 2) / max(g.n_rows, 1)))


def noise_bounds(groups: dict, delta0: float, sigmas0: dict) -> dict:
    """Bounds of the optimisation in physical units (see the module docstring).

    Returns
    -------
    dict
        ``{"delta": (lo, hi), group: (lo, hi), ...}`` for
        :func:`gapkit.gp.evidence.optimize_hyperparameters`.
    """
    out = {"delta": (DELTA_BOUNDS[0] * delta0, DELTA_BOUNDS[1] * delta0)}
    for name, g in groups.items():
        if g.R is None:
            continue
        s0 = float(sigmas0[name])
        hi = min(NOISE_BOUNDS[1] * s0, NOISE_MAX_FRACTION_OF_TARGETS * _target_rms(g))
        out[name] = (NOISE_BOUNDS[0] * s0, max(hi, s0))
    return out


def validation_rmse(val_groups: dict, alpha: np.ndarray, delta: float) -> dict:
    """Weighted RMSE of the validation rows per label kind for weights ``alpha``.

    ``||[A | y] [delta**2 alpha; -1]||`` is ``||R [delta**2 alpha; -1]||`` for the
    triangular factor ``R`` of the rows, so no prediction is needed.

    Returns
    -------
    dict
        Kind (``"energy"``: eV per sqrt(atom), ``"forces"``: eV/Å, ``"virial"``: eV per
        sqrt(atom)) to RMSE, over the groups of that kind.
    """
    x = np.r_[delta ** 2 * alpha, -1.0]
    sse: dict = {}
    rows: dict = {}
    for name, g in val_groups.items():
        if g.R is None:
            continue
        kind = getattr(name, "kind", str(name))
        sse[kind] = sse.get(kind, 0.0) + float(np.sum((g.R @ x) ** 2))
        rows[kind] = rows.get(kind, 0) + g.n_rows
    return {k: float(np.sqrt(sse[k] / rows[k])) for k in sse}


def choose_hyperparameters(groups: dict, Lchol: np.ndarray, delta0: float, sigmas0: dict,
                           val_groups: dict | None = None, bounds: dict | None = None,
                           n_restarts: int = 0, random_state=None,
                           progress: bool | None = False) -> Choice:
    """Bounded evidence optimum, checked against the defaults on validation rows.

    Parameters
    ----------
    groups : dict
        Training row factors (:func:`gapkit.gp.streaming.accumulate`).
    Lchol : ndarray of shape (M, M)
        Cholesky factor of the unit-scale ``K_MM``.
    delta0 : float
        Default signal scale, eV.
    sigmas0 : dict
        Default noise per group.
    val_groups : dict, optional
        Validation row factors with the same sparse columns; ``None``: take the
        bounded evidence optimum unchecked.
    bounds : dict, optional
        Override of :func:`noise_bounds` (e.g. ``{}`` for the solver's wide bounds).
    n_restarts : int
    random_state : int, RandomState or None
    progress : bool, optional
        A bar over the evidence optimisation (see :func:`gapkit.progress.progress_bar`).

    Returns
    -------
    Choice
    """
    bounds = noise_bounds(groups, delta0, sigmas0) if bounds is None else bounds
    d_opt, s_opt, _ = evidence.optimize_hyperparameters(groups, Lchol, delta0, sigmas0,
                                                  bounds=bounds, n_restarts=n_restarts,
                                                  random_state=random_state,
                                                  progress=progress)
    names = [n for n in sigmas0 if n in s_opt]
    cands = {"default": (float(delta0), dict(sigmas0)),
             "evidence": (d_opt, {**sigmas0, **s_opt}),
             "midpoint": (float(np.sqrt(delta0 * d_opt)),
                          {**sigmas0, **{n: float(np.sqrt(sigmas0[n] * s_opt[n]))
                                         for n in names}})}
    rows, best, best_score = [], "evidence", None
    for cname, (d, s) in cands.items():
        try:
            sol = gp.solve(groups, Lchol, d, s)
        except gp.FactorisationError:
            continue
        row = {"name": cname, "delta": d, "noise": {getattr(k, "label", str(k)): v
                                                    for k, v in s.items()},
               "log_evidence": sol.log_likelihood}
        if val_groups is not None:
            row["valid_rmse"] = validation_rmse(val_groups, sol.alpha, d)
        rows.append(row)
    if val_groups is not None:
        ref = next(r["valid_rmse"] for r in rows if r["name"] == "default")
        for r in rows:
            r["score"] = max((r["valid_rmse"][k] / ref[k] for k in ref if ref[k] > 0),
                             default=1.0)
            if best_score is None or r["score"] < best_score - 1e-12 or (
                    r["name"] == "default" and r["score"] <= best_score):
                best, best_score = r["name"], r["score"]
    d, s = cands[best]
    report = {"method": "validation" if val_groups is not None else "evidence",
              "chosen": best, "candidates": rows,
              "bounds": {getattr(k, "label", str(k)): [float(v[0]), float(v[1])]
                         for k, v in bounds.items()}}
    logger.info("hyperparameters: chose %s (delta=%.4g eV, noise=%s) by %s; candidates %s",
                best, d, {getattr(k, "label", str(k)): round(v, 6) for k, v in s.items()},
                report["method"], [(r["name"], r.get("valid_rmse")) for r in rows])
    return Choice(delta=d, sigmas=s, report=report)
