"""Which reference labels are wrong? :func:`check_data` scores every frame of a data set.

Outlier scores from K-fold residuals
------------------------------------
The frames (isolated atoms excepted) are split at random into ``n_folds`` folds over
structures. For each fold a small, fast GAP (SOAP ``n_max=4, l_max=3, r_cut=4 Å``,
``n_sparse=60`` per species, calibrated std; at most ``max_train`` frames drawn from
the other folds) is fitted and predicts the held-out frames with their predictive
std (:class:`gapkit.PredictionStd`, total = epistemic + aleatoric). Per frame:

* energy score ``|E_ref - E_pred| / σ_E`` (σ_E: total energy std, eV);
* force score: the RMS over the frame's 3N components of ``(F_ref - F_pred) / σ_F``
  (σ_F per atom and component, eV/Å), i.e. 1 for labels as good as the model says;
  one atom's flipped force in a 9-atom molecule gives about ``|2 F_i| / σ_F / 3``;
* ``score = max(energy score, force score)``; a frame is flagged when
  ``score > threshold`` (default :data:`THRESHOLD` = 4: for Gaussian energy residuals
  one clean frame in 16 000; the force RMS over 27 components is narrower still).

Model-free checks (:mod:`gapkit.diagnostics.data_checks`)
---------------------------------------------------------
Exact duplicates (same atoms in the same order, positions equal to 1e-8 Å; the later
frame is flagged ``duplicate``) and near-duplicates (every coordinate within
``duplicate_tol``, listed only); energy–force consistency along trajectories (frames
blamed are flagged ``energy-force inconsistency``; data that is not a trajectory is
reported as such and flags nothing); label statistics per species and config_type;
unit sanity.

``reason`` is ``"ok"`` for a frame that is not flagged, else the causes joined by
``", "``: ``"energy"``, ``"forces"`` or ``"energy+forces"`` (the label whose score is
above the threshold), ``"duplicate"`` (``"duplicate (conflicting labels)"`` when the
labels differ), ``"energy-force inconsistency"``.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
from ase import Atoms

from gapkit.data import LabelKeys, as_frame_list, get_labels, isolated_atom_energies
from gapkit.descriptors import SOAP
from gapkit.diagnostics.data_checks import (CONSISTENCY_ATOL, CONSISTENCY_FACTOR, DUPLICATE_TOL,
                                            MAX_STEP, energy_force_consistency, find_duplicates,
                                            label_statistics, unit_sanity)
from gapkit.model import GAP
from gapkit.progress import progress_bar
from gapkit.utils import check_random_state, seeded_clone

logger = logging.getLogger(__name__)

__all__ = ["THRESHOLD", "FOLD_SOAP", "check_data", "fold_model", "worst_frames"]

#: Score above which a frame is flagged (in predictive standard deviations).
THRESHOLD = 4.0
#: The largest per-atom force z counts as a frame score after division by this.
MAX_ATOM_RATIO = 2.0
#: Smallest number of frames of one composition whose scores are rescaled.
MIN_GROUP = 10
#: SOAP of the fold models: small and fast (eV, Å).
FOLD_SOAP = dict(r_cut=4.0, n_max=4, l_max=3, sigma=0.5)


def fold_model(n_sparse: int = 60, e0: str | dict = "lstsq", keys: LabelKeys | None = None,
               random_state=None, force_std: str = "fast", valid_fraction: float = 0.1) -> GAP:
    """The unfitted small GAP fitted once per fold.

    Parameters
    ----------
    n_sparse : int
        Sparse points per species.
    e0 : str or dict
        E0 spec of :class:`gapkit.GAP` (``"lstsq"``, a path, or {species: eV}).
    keys : LabelKeys, optional
        Where the labels live.
    random_state : int, RandomState or None
    force_std : {"fast", "exact"}, default "fast"
        Calibrated force stds per atom from local-energy variances (fast), or every
        component exactly (several times slower on 1000 frames).
    valid_fraction : float, default 0.1
        Fraction of each fold's training frames held out to calibrate the std (fixed
        here, not the GAP default, so the scores do not move with it).

    Returns
    -------
    GAP
    """
    keys = keys or LabelKeys()
    return GAP(SOAP(**FOLD_SOAP), n_sparse=n_sparse, e0=e0, energy_key=keys.energy,
               forces_key=keys.forces, virial_key=keys.virial, stress_key=keys.stress,
               use_virials=keys.use_virials, calibrate=True, random_state=random_state,
               force_std=force_std, valid_fraction=valid_fraction)


def _is_isolated(atoms: Atoms) -> bool:
    return len(atoms) == 1 or atoms.info.get("config_type") == "isolated_atom"


def _fold_scores(frames: list, labels: list, idx: np.ndarray, template: GAP, n_folds: int,
                 max_train: int, rng, progress: bool | None = False) -> dict[int, tuple]:
    """``{frame: (energy score, force score, ΔE eV, σ_E eV)}`` from K-fold residuals."""
    perm = rng.permutation(idx)
    folds = np.array_split(perm, n_folds)
    out = {}
    for f, held in enumerate(progress_bar(folds, desc="check-data folds", unit="fold",
                                          progress=progress)):
        train = np.setdiff1d(perm, held)
        if len(train) > max_train:
            train = np.sort(rng.choice(train, max_train, replace=False))
        t0 = time.perf_counter()
        model = seeded_clone(template, rng).fit([frames[k] for k in train])
        pred, std = model.predict([frames[k] for k in held], return_std=True)
        logger.info("fold %d/%d: %d training frames, %d held out, %.1f s", f + 1, n_folds,
                    len(train), len(held), time.perf_counter() - t0)
        for j, k in enumerate(held):
            lab = labels[k]
            de = float(lab.energy - pred.energy[j])
            e_score = abs(de) / float(std.energy[j])
            f_score = 0.0
            if lab.forces is not None and pred.forces is not None and std.forces is not None:
                z = (lab.forces - pred.forces[j]) / std.forces[j]
                atom = np.sqrt(np.mean(z ** 2, axis=1))
                f_score = max(float(np.sqrt(np.mean(atom ** 2))), float(atom.max()) / MAX_ATOM_RATIO)
            out[int(k)] = (e_score, f_score, de, float(std.energy[j]), f)
    return out


def _rescale(frames: list, fold: dict) -> dict:
    """Divide the scores of each composition in each fold by their robust scale (in place).

    The energy scores of clean frames are |z| of a unit Gaussian when σ is right, with
    median 0.6745; the force scores are RMS z of many components, with median about 1.
    A σ that is off by a constant factor for one composition (a small fold model, a
    composition with few frames) moves that median; dividing by ``median / reference``
    undoes it, and a few wrong frames cannot move a median. Compositions with fewer
    than :data:`MIN_GROUP` frames keep the raw scores. The scale is taken per fold,
    because each fold has its own model and its own σ error (one scale per composition
    over all folds flagged 0-10 % of clean default-data frames across seeds, per fold
    0-1.5 %). Returns ``{formula: [{"fold": i, "energy": factor, "forces": factor,
    "n_frames": n}, ...]}``.
    """
    groups: dict[tuple[str, int], list[int]] = {}
    for k in fold:
        groups.setdefault((frames[k].get_chemical_formula(), fold[k][4]), []).append(k)
    scales: dict = {}
    for (formula, f_id), idx in sorted(groups.items()):
        if len(idx) < MIN_GROUP:
            continue
        e = np.median([fold[k][0] for k in idx]) / 0.6745
        f = np.median([fold[k][1] for k in idx])
        e, f = (float(x) if x > 0 else 1.0 for x in (e, f))
        for k in idx:
            es, fs, de, se, _ = fold[k]
            fold[k] = (es / e, fs / f, de, se, f_id)
        scales.setdefault(formula, []).append({"fold": int(f_id), "energy": e, "forces": f,
                                               "n_frames": len(idx)})
    return scales


def check_data(frames: Sequence[Atoms] | Atoms, *, e0: str | dict = "lstsq",
               keys: LabelKeys | None = None, n_folds: int = 5, max_train: int = 200,
               n_sparse: int = 60, model: GAP | None = None, threshold: float = THRESHOLD,
               order_key: str | None = None, duplicate_tol: float = DUPLICATE_TOL,
               max_step: float = MAX_STEP, consistency_factor: float = CONSISTENCY_FACTOR,
               consistency_atol: float = CONSISTENCY_ATOL, scores: bool = True,
               robust_scale: bool = True,
               random_state=0, progress: bool | None = None) -> dict:
    """Score every frame of a labelled data set for wrong labels (module docstring).

    Parameters
    ----------
    frames : sequence of ase.Atoms, ase.Atoms or path
        Labelled structures (energies in eV, forces in eV/Å), in input order.
    e0 : str or dict, default "lstsq"
        E0 of the fold models: ``"lstsq"``, ``"isolated"`` (the single-atom frames of
        ``frames``), a path to an isolated-atoms file, or {species: eV}.
    keys : LabelKeys, optional
        Where the labels live (default: the calculator results, then
        ``energy``/``forces``).
    n_folds : int, default 5
        Folds over structures (at least 2).
    max_train : int, default 200
        Largest number of frames each fold model is fitted on (drawn at random from the
        other folds; it sets the cost: 5 folds on 1000 rMD17 ethanol frames took 35 s
        on two shared cores, idle; about twice that under load; 400 frames x 80 sparse
        points: 43 s idle, 119 s loaded, more sensitive).
    n_sparse : int, default 60
        Sparse points per species of the fold models.
    model : GAP, optional
        An unfitted GAP to clone for the folds instead of :func:`fold_model`.
    threshold : float, default 4
        Flag frames whose score exceeds it.
    order_key : str, optional
        ``atoms.info`` key (e.g. a time or step) giving the trajectory order of the
        consistency check; default: the input order.
    duplicate_tol : float, default 0.001
        Near-duplicate tolerance, Å.
    max_step, consistency_factor, consistency_atol : float
        Consistency rule (:func:`~gapkit.diagnostics.data_checks.energy_force_consistency`):
        Å, robust standard deviations, eV.
    scores : bool, default True
        Fit the fold models (False: only the model-free checks; every score is 0).
    robust_scale : bool, default True
        Divide the scores of each composition in each fold (with at least :data:`MIN_GROUP`
        frames) by their median over the reference median, so that a σ of the small
        fold models that is off by a constant factor does not flag or hide frames.
    random_state : int, RandomState or None, default 0
        Folds, training subsets and the fold models' seeds.
    progress : bool, optional
        A bar over the fold models (None: in a terminal or Jupyter; see
        :func:`gapkit.progress.progress_bar`).

    Returns
    -------
    dict
        ``frames``: one entry per input frame, sorted by ``score`` descending, each
        with ``index`` (0-based input position), ``score``, ``flagged``, ``reason``,
        ``energy_score``, ``force_score``, ``energy_error`` (reference − predicted,
        eV), ``energy_std`` (eV), ``config_type``, ``source``; ``n_frames``,
        ``n_flagged``, ``threshold``, ``fold_model`` (its settings),
        ``consistency`` (see :func:`~gapkit.diagnostics.data_checks.energy_force_consistency`),
        ``duplicates``, ``near_duplicates``, ``statistics``, ``units``, ``wall_time``
        (s). Plain Python types; NaN and infinities never occur (pass it through
        :func:`gapkit.utils.to_jsonable` for JSON all the same).

    Raises
    ------
    ValueError
        On unreadable labels (the frame index is named), fewer than ``2 n_folds``
        scorable frames, or a missing ``order_key``.
    """
    t_start = time.perf_counter()
    frames = as_frame_list(frames)
    keys = keys or LabelKeys()
    if int(n_folds) < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    labels = [get_labels(a, keys, index=k, require_forces=False) for k, a in enumerate(frames)]
    rng = check_random_state(random_state)
    if isinstance(e0, str) and e0 == "isolated":
        e0 = isolated_atom_energies(frames, keys)
    idx = np.array([k for k, a in enumerate(frames) if not _is_isolated(a)], dtype=int)
    fold, scales = {}, {}
    if scores:
        if len(idx) < 2 * n_folds:
            raise ValueError(f"check_data needs at least {2 * n_folds} frames with more than one atom "
                             f"for {n_folds} folds, got {len(idx)}")
        template = model if model is not None else fold_model(n_sparse, e0, keys)
        fold = _fold_scores(frames, labels, idx, template, int(n_folds), int(max_train), rng,
                            progress)
        scales = _rescale(frames, fold) if robust_scale else {}

    if order_key is None:
        order = list(range(len(frames)))
    else:
        missing = [k for k, a in enumerate(frames) if order_key not in a.info]
        if missing:
            raise ValueError(f"order key '{order_key}' missing from frame {missing[0]} "
                             f"(info keys: {sorted(frames[missing[0]].info)})")
        order = sorted(range(len(frames)), key=lambda k: float(frames[k].info[order_key]))
    traj_idx = [k for k in order if not _is_isolated(frames[k])]
    consistency = energy_force_consistency(frames, labels, traj_idx, max_step=max_step,
                                           factor=consistency_factor, atol=consistency_atol)
    dups = find_duplicates(frames, labels, tol=duplicate_tol)
    exact = [d for d in dups if d["exact"]]
    near = [d for d in dups if not d["exact"]]

    extra: dict[int, list[str]] = {k: [] for k in range(len(frames))}
    for d in exact:
        conflict = ((d["energy_difference"] is not None and abs(d["energy_difference"]) > 1e-6)
                    or (d["max_force_difference"] is not None and d["max_force_difference"] > 1e-6))
        tag = "duplicate (conflicting labels)" if conflict else "duplicate"
        if tag not in extra[d["second"]]:
            extra[d["second"]].append(tag)
    for k in consistency["frames"]:
        extra[k].append("energy-force inconsistency")

    rows = []
    for k, a in enumerate(frames):
        e_s, f_s, de, se, _ = fold.get(k, (0.0, 0.0, None, None, None))
        parts = []
        which = [name for name, s in (("energy", e_s), ("forces", f_s)) if s > threshold]
        if which:
            parts.append("+".join(which))
        parts += extra[k]
        rows.append({"index": k, "score": float(max(e_s, f_s)), "flagged": bool(parts),
                     "reason": ", ".join(parts) if parts else "ok", "energy_score": float(e_s),
                     "force_score": float(f_s), "energy_error": de, "energy_std": se,
                     "config_type": labels[k].config_type,
                     "source": str(a.info.get("_source", k))})
    rows.sort(key=lambda r: (-r["score"], r["index"]))
    n_flagged = sum(r["flagged"] for r in rows)
    return {"frames": rows, "n_frames": len(frames), "n_flagged": int(n_flagged),
            "threshold": float(threshold),
            "fold_model": {"n_folds": int(n_folds), "max_train": int(max_train),
                           "n_sparse": int(n_sparse), "soap": dict(FOLD_SOAP),
                           "custom_model": model is not None, "scored": bool(scores),
                           "score_scales": scales},
            "consistency": consistency, "duplicates": exact, "near_duplicates": near, "duplicate_tol": float(duplicate_tol),
            "statistics": label_statistics(frames, labels), "units": unit_sanity(frames, labels),
            "wall_time": time.perf_counter() - t_start}


def worst_frames(report: dict, n: int = 10) -> list[dict]:
    """The ``n`` highest-scoring frames of a :func:`check_data` report, plus every
    other flagged frame (duplicates, inconsistencies) after them.

    Parameters
    ----------
    report : dict
        What :func:`check_data` returns.
    n : int
        Number of top-scored frames.

    Returns
    -------
    list of dict
        Entries of ``report["frames"]``.
    """
    top = report["frames"][:n]
    seen = {r["index"] for r in top}
    return top + [r for r in report["frames"][n:] if r["flagged"] and r["index"] not in seen]
