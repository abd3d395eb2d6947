"""The calibrated every-environment fit with each frame's design rows computed once.

When the sparse set of some species is every training environment (``n_sparse="auto"``
with at most 2000 of them), the final model must have the held-out environments as
sparse points too (10-12 % lower force error on molecules than adding their rows to
the split model; ``docs/guide/scaling.md``). The calibration still needs a model that
has seen neither the held-out labels nor their environments. Instead of fitting the
split model and then refitting on all frames (CUR, ``K_MM`` and the training part's
design rows twice), :func:`fit_split_and_all`

1. chooses the sparse set of all frames once, as a fit on all frames would;
2. gives the split (calibration) model the points of that set from training frames;
3. streams the training frames' rows once, with the columns of all frames' points
   and the targets of the final model (its E0);
4. takes the split model's factor of every group whose targets do not depend on E0
   (forces, virials) from those factors by a QR of its columns
   (:func:`gapkit.gp.solver.column_factor`), and its energy rows (targets with its
   own E0) from a pass without descriptor gradients;
5. after the calibration, adds the held-out rows to the training factors and solves.

The final model equals a fit on all frames with the same hyperparameters (to
round-off: the rows are folded in another order). The split model is a fit of the
training frames on the chosen points that lie in them (not a CUR selection of its
own).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Sequence

import numpy as np
from ase import Atoms

from gapkit.data import split_isolated
from gapkit.metrics import reference_arrays
from gapkit.gp import solver as gp
from gapkit.gp import streaming, terms
from gapkit.model import training as tr
from gapkit.model.sparse_counts import environment_counts
from gapkit.model.calibration_transfer import anchored, with_training_range
from gapkit.model.state import Calibration, FittedState
from gapkit.model.variance import variance_basis
from gapkit.utils import check_random_state

logger = logging.getLogger(__name__)


def takes_every_environment(est, specs, descs, train: Sequence[Atoms], species) -> bool:
    """Whether some term asks for at least as many sparse points of a species as the
    non-isolated ``train`` frames have environments of it."""
    frames = split_isolated(train)[0]
    n_env = environment_counts(frames)
    return any(counts[z] >= n_env.get(z, 0)
               for counts in tr.sparse_counts(est, specs, descs, frames, species) for z in species)


def split_terms(specs, fitted: Sequence[terms.FittedTerm], frame_of, in_train: np.ndarray):
    """The split model's terms: each term's sparse points from training frames.

    Returns
    -------
    (list of FittedTerm, columns, scale) or None
        ``columns`` (m,): their columns in the full sparse set; ``scale`` (m,): the
        split term's kernel scale over the full term's (``weight="auto"`` depends on
        the points). ``None`` when a term would have no point.
    """
    out, cols, scale, start = [], [], [], 0
    for spec, t, own in zip(specs, fitted, frame_of):
        mask = in_train[own]
        if not np.any(mask):
            return None
        Q, Z = t.sparse_q[mask], t.sparse_species[mask]
        weight = terms.auto_weight(Q, t.zeta) if spec.weight == "auto" else float(t.weight)
        s = terms.FittedTerm(t.descriptor, t.zeta, weight, Q, Z, start)
        out.append(s)
        cols.append(t.start + np.flatnonzero(mask))
        scale.append(np.full(len(Z), s.scale / t.scale))
        start += len(Z)
    return out, np.concatenate(cols), np.concatenate(scale)


def _energy_only(data: tr.TrainingData) -> tr.TrainingData:
    labels = [dataclasses.replace(lab, forces=None, virial=None) for lab in data.labels]
    return tr.TrainingData(data.frames, data.isolated, labels)


def _split_groups(est, full: dict, split_spec, data, resid_split, cols, scale) -> dict:
    """The split model's row factors of ``data``: its energy rows streamed (no
    descriptor gradients), every other group from the full factors' columns."""
    energy = tr.accumulate_rows(est, split_spec, _energy_only(data), resid_split)
    threads = streaming.dense_threads(est.n_jobs, len(cols))
    return {g: energy[g] if g.kind == "energy" else gp.column_factor(r, cols, scale, threads)
            for g, r in full.items() if g.kind != "energy" or g in energy}


def fit_split_and_all(est, frames_all: Sequence[Atoms], train: Sequence[Atoms],
                      val: Sequence[Atoms], optimize: bool, specs=None, descs=None
                      ) -> tuple[FittedState, FittedState, dict] | None:
    """The split model (uncalibrated, for the calibration on ``val``) and the model of
    all frames (its hyperparameters: the split model's with ``optimize``, else the
    defaults of all frames), with each frame's descriptor gradients and design rows
    computed once. ``specs`` and ``descs``: the terms of ``est.descriptor`` and their
    descriptors fitted to the non-isolated frames of ``frames_all``
    (:func:`gapkit.model.training.fitted_descriptors`), if already made.

    Returns
    -------
    (split_state, final_state, final_groups), or None
        ``None`` when the sparse set of all frames leaves a term without a point in
        the training frames (then fit the two models separately).
    """
    keys = est.label_keys
    data = tr.training_data(train, keys, est.use_forces, est.baseline, checked=True)
    vdata = tr.training_data(val, keys, est.use_forces, est.baseline, checked=True)
    every = split_isolated(frames_all)[0]
    if specs is None or descs is None:
        specs = terms.as_terms(est.descriptor)
        descs = tr.fitted_descriptors(specs, every)
    species = descs[0].species_numbers
    rng = check_random_state(est.random_state)
    fitted, frame_of = tr.select_sparse(est, specs, descs, every, species, rng, owners=True)
    in_split = {id(a) for a in data.frames}
    parts = split_terms(specs, fitted, frame_of, np.array([id(a) in in_split for a in every]))
    if parts is None:
        return None
    split, cols, scale = parts
    both = tr.TrainingData(data.frames + vdata.frames, data.isolated, data.labels + vdata.labels)
    e0_split = tr.reference_energies(est.e0, data, keys, species, est.baseline)
    e0 = tr.reference_energies(est.e0, both, keys, species, est.baseline)
    resid, vresid = tr.energy_residuals(data, e0), tr.energy_residuals(vdata, e0)
    resid_split = tr.energy_residuals(data, e0_split)
    spec = streaming.RowSpec(fitted, est.noise_by_config_type)
    split_spec = streaming.RowSpec(split, est.noise_by_config_type)
    with streaming.SideTasks(est.n_jobs) as side:
        kmm, kmm_split = (side.submit(tr.kmm_factor, est, t) for t in (fitted, split))
        basis, basis_split = (side.submit(variance_basis, t, est.variance_sparse)
                              for t in (fitted, split))
        groups = tr.accumulate_rows(est, spec, data, resid)
        groups_split = _split_groups(est, groups, split_spec, data, resid_split, cols, scale)
        val_groups = val_split = None
        if optimize:  # the held-out rows check the split model's hyperparameters
            val_groups = tr.accumulate_rows(est, spec, vdata, vresid)
            val_split = _split_groups(est, val_groups, split_spec, vdata,
                                      tr.energy_residuals(vdata, e0_split), cols, scale)
        Lchol_split, vbasis_split = kmm_split.result(), basis_split.result()
        Lchol, vbasis = kmm.result(), basis.result()
    n_atoms = np.array([len(a) for a in data.frames], dtype=np.float64)
    state_split = tr.solve_state(est, split, species, e0_split, groups_split, Lchol_split,
                                 vbasis_split, resid_split, n_atoms, data.frames, optimize,
                                 val_split, None, rng)
    del groups_split, val_split
    if val_groups is None:
        merged = tr.accumulate_rows(est, spec, vdata, vresid, start=groups)
    else:
        merged = gp.merge_groups(groups, val_groups)
    hyper = (state_split.delta, dict(state_split.noise)) if optimize else None
    n_all = np.array([len(a) for a in both.frames], dtype=np.float64)
    state = tr.solve_state(est, fitted, species, e0, merged, Lchol, vbasis,
                           np.concatenate([resid, vresid]), n_all, both.frames, False, None,
                           hyper)
    logger.info("split model M = %d (points of training frames), final M = %d",
                len(state_split.alpha), len(state.alpha))
    return state_split, state.replace(extra=state_split.extra), merged


@streaming.limit_fit_blas
def fit_calibrated_state(est, frames_all: Sequence[Atoms], optimize: bool, client=None,
                         valid: Sequence[Atoms] | None = None) -> tuple[FittedState, dict]:
    """:func:`fit_state`, then (with ``est.calibrate``) the calibration of the std.

    With ``valid`` the model is calibrated on it and never trained on it; otherwise a
    random ``est.valid_fraction`` of the frames is held out, the model fitted on the
    rest is calibrated on it, and its rows are then added to the fit by
    :func:`add_rows` (the calibration of the model without them is kept, its
    posterior power maps anchored on the final model's posterior scale, see
    :func:`gapkit.model.calibration_transfer.anchored`): the design rows of every frame are
    computed once and the sparse set stays the one chosen from the training part.
    When the sparse set of some species is every training environment
    (``n_sparse="auto"`` with at most 2000 of them, the exact local GP), the held-out
    environments must join the sparse set (a 10-12 % lower force error on molecules,
    measured on rMD17 and xTB ethanol, equal on EMT Cu; see ``docs/guide/scaling.md``):
    :func:`fit_split_and_all` fits the split model and the model of all frames with
    each frame's rows computed once; with Dask, or when a term would have no point in
    the training frames, the model is refitted on all frames instead. With
    ``optimize`` the hyperparameters are chosen on the same held-out frames (see
    :mod:`gapkit.model.hyperparameters`), also when ``est.calibrate`` is off. The
    geometries are checked once, by :func:`check_training_set`.
    """
    tr.check_training_set(est, frames_all)
    if not est.calibrate and not optimize:
        return tr.fit_state(est, frames_all, optimize, client, checked=True)
    if valid is not None:
        state, groups = tr.fit_state(est, frames_all, optimize, client, valid=valid, checked=True)
        if not est.calibrate:
            return state, groups
        cal = tr.calibrate_on(state, valid, est.label_keys, est.baseline,
                              source=f"validation file: {len(valid)} frames",
                              progress=est.verbose,
                              threads=streaming.resolve_threads(est.n_jobs, len(valid)))
        return state.replace(calibration=_with_range(est, cal, frames_all, state)), groups
    split = tr.split_validation(frames_all, est.valid_fraction, est.random_state,
                                est.label_keys)
    if split is None:
        what = [w for w, on in (("calibrate the predictive std (it is the raw DTC std)",
                                 est.calibrate),
                                ("check the optimised hyperparameters on held-out data (the "
                                 "bounded evidence optimum is taken unchecked)", optimize))
                if on]
        n = len(split_isolated(frames_all)[0])
        why = (" (equivalent frames, the same composition and energy per atom, stay on one "
               "side of the split, and one group of them is too large)"
               if tr.held_out_count(n, est.valid_fraction) is not None else "")
        warnings.warn(f"too few frames ({len(frames_all)}{why}) to hold out a validation set: "
                      f"cannot {' or '.join(what)}. Give more data or valid=... frames"
                      f"{', or calibrate=False to silence this' if est.calibrate else ''}.",
                      UserWarning, stacklevel=3)
        return tr.fit_state(est, frames_all, optimize, client, checked=True)
    train, val = split
    specs = terms.as_terms(est.descriptor)
    descs = tr.fitted_descriptors(specs, split_isolated(frames_all)[0])
    once = None
    if client is None and takes_every_environment(est, specs, descs, train,
                                                  descs[0].species_numbers):
        once = fit_split_and_all(est, frames_all, train, val, optimize, specs, descs)
    if once is not None:
        split_state, state, groups = once
    else:
        split_state, groups, val_groups = tr.fit_with_valid_rows(est, train, optimize, client,
                                                                 val, None, checked=True)
    cal = Calibration()
    if est.calibrate:
        n_all = len(train) + len(val) - len(split_isolated(train)[1])
        cal = tr.calibrate_on(split_state, val, est.label_keys, est.baseline,
                              source=f"validation split: {len(val)} of {n_all} frames",
                              progress=est.verbose, checked=True,
                              threads=streaming.resolve_threads(est.n_jobs, len(val)))
        # the final model also has the held-out rows: its power maps are anchored on its
        # own V_P scale (gapkit.model.calibration_transfer.anchored)
        cal = anchored(_with_range(est, cal, frames_all, split_state), (n_all - len(val)) / n_all)
    if once is not None:
        return state.replace(calibration=cal), groups
    if _split_takes_every_environment(est, split_state, train):
        # Dask, or a term without a point in the training frames: the refit on all
        # frames (CUR, K_MM and the training part's rows a second time)
        state, groups = tr.fit_state(est, frames_all, False, client,
                                     hyper=(split_state.delta, dict(split_state.noise))
                                     if optimize else None, checked=True)
        state = state.replace(extra=split_state.extra)
    else:
        state, groups = tr.add_rows(est, split_state, groups, val, val_groups, checked=True)
    return state.replace(calibration=cal), groups


def _with_range(est, cal: Calibration, frames_all: Sequence[Atoms], state: FittedState
                ) -> Calibration:
    """``cal`` with the compression term's training range: every frame the final model
    is trained on (:func:`gapkit.model.calibration_transfer.with_training_range`)."""
    forces = reference_arrays(frames_all, est.label_keys)["forces"]
    return with_training_range(cal, frames_all, forces, state.descriptor.interaction_range)


def _split_takes_every_environment(est, state: FittedState, frames: Sequence[Atoms]) -> bool:
    """Whether some term asked for at least as many sparse points of a species as the
    training environments it had in ``frames`` (so the sparse set is all of them)."""
    specs = terms.as_terms(est.descriptor)
    train = split_isolated(frames)[0]
    wanted = tr.sparse_counts(est, specs, [t.descriptor for t in state.terms], train,
                              state.species)
    n_env = environment_counts(train)
    for counts, t in zip(wanted, state.terms):
        for z in state.species:
            got = int(np.sum(t.sparse_species == z))
            if counts[z] > got or got >= n_env.get(z, 0):
                return True
    return False
