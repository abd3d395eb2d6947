"""The fit pipeline: labels → E0 → descriptors → sparse points → streamed rows → solve.

:func:`fit_state` turns the parameters of a :class:`gapkit.GAP` and labelled
structures into a :class:`~gapkit.model.state.FittedState`. Training follows GAP:
energies with noise ``energy_noise * sqrt(N_atoms)``, force components with
``force_noise`` and virial components with ``virial_noise * sqrt(N_atoms)``, solved as
a projected process by a streaming QR (:mod:`gapkit.gp.solver`).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from sklearn.base import clone

from gapkit.data import (LabelKeys, Labels, check_geometry, check_virial_scale,
                         duplicate_frames, equivalent_groups, fit_reference_energies,
                         get_labels, isolated_atom_energies, split_isolated)
from gapkit.gp import solver as gp
from gapkit.gp import distributed, sparsify, streaming, terms
from gapkit.metrics import reference_arrays
from gapkit.model.calibration import fit_calibration, validation_parts
from gapkit.model.delta import baseline_e0, subtract_baseline
from gapkit.model.hyperparameters import choose_hyperparameters
from gapkit.model.params import auto_delta, auto_virial_noise, check_n_sparse
from gapkit.model.prediction import predict_batch
from gapkit.model.sparse_counts import auto_counts, environment_counts
from gapkit.model.state import Calibration, FittedState, GroupValues
from gapkit.model.variance import variance_basis, variance_factors
from gapkit.progress import progress_bar
from gapkit.utils import check_random_state, ordered_map

#: Fewest frames on either side of a calibration split.
MIN_SPLIT_FRAMES = 3

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Checked training structures and their labels (baseline already subtracted)."""

    frames: list
    isolated: list
    labels: list


def n_sparse_for(n_sparse, z: int) -> int:
    """Sparse count of species ``z`` from an int or a dict keyed by symbol or number
    (``"auto"`` is resolved by :func:`sparse_counts` instead)."""
    check_n_sparse(n_sparse)
    if isinstance(n_sparse, str):
        raise ValueError("n_sparse='auto' depends on the data: use sparse_counts()")
    if isinstance(n_sparse, dict):
        for key in (chemical_symbols[z], z, str(z)):
            if key in n_sparse:
                return int(n_sparse[key])
        raise ValueError(f"n_sparse dict {n_sparse} has no entry for {chemical_symbols[z]}")
    return int(n_sparse)


def check_training_set(est, frames_all: Sequence[Atoms]) -> TrainingData:
    """The checks of the whole training set before a fit (indices are those of
    ``frames_all``): geometry and labels (:func:`training_data`), the scale of the
    virials against the energies (:func:`gapkit.data.check_virial_scale`), a virial or
    stress key that no frame has (``ValueError``), and duplicate frames (a
    ``UserWarning`` naming them: they count twice in the fit, while the sparse set
    takes each environment once)."""
    keys = est.label_keys
    data = training_data(frames_all, keys, est.use_forces)
    key = keys.virial or keys.stress
    if key and keys.use_virials and all(lab.virial is None for lab in data.labels):
        raise ValueError(f"{'virial' if keys.virial else 'stress'}_key '{key}' is in no training "
                         f"frame (info keys of frame 0: {sorted(data.frames[0].info)}): check "
                         "the name, or leave it out")
    check_virial_scale(data.frames, data.labels)
    dups = duplicate_frames(frames_all)
    if dups:
        shown = ", ".join(f"{a} and {b}" for a, b in dups[:10])
        warnings.warn(f"{len(dups)} training frame(s) repeat an earlier one (same species, "
                      f"positions and cell): frames {shown}{' ...' if len(dups) > 10 else ''}. "
                      "They count twice in the fit; remove them unless that is intended.",
                      UserWarning, stacklevel=4)
    return data


def training_data(frames_all: Sequence[Atoms], keys: LabelKeys, use_forces: bool,
                  baseline=None, checked: bool = False) -> TrainingData:
    """Split off isolated atoms, check geometries (unless ``checked``: already done by
    :func:`check_training_set`) and read labels."""
    frames, iso = split_isolated(frames_all)
    if not frames:
        raise ValueError("The training set is empty (only isolated atoms or no frames)")
    labels: list[Labels] = []
    for k, atoms in enumerate(frames):
        if not checked:
            check_geometry(atoms, k)
        lab = get_labels(atoms, keys, index=k, require_forces=use_forces)
        if not use_forces:
            lab.forces = None
        labels.append(lab)
    if baseline is not None:
        subtract_baseline(baseline, frames, labels)
    return TrainingData(frames, iso, labels)


def fitted_descriptors(specs: Sequence[terms.Term], frames: Sequence[Atoms]) -> list:
    """Clone each term's descriptor and give it the data's species where it has none."""
    data_species = sorted(set(np.concatenate([a.numbers for a in frames]).tolist()))
    descs = []
    for t, spec in enumerate(specs):
        desc = clone(spec.descriptor) if spec.descriptor is not None else terms.default_soap()
        if getattr(desc, "species", None) is None:
            desc.set_params(species=[chemical_symbols[z] for z in data_species])
        else:
            desc.validate()
        if t and desc.species_numbers != descs[0].species_numbers:
            raise ValueError(f"descriptor term {t} covers species {desc.species_numbers} but "
                             f"term 0 covers {descs[0].species_numbers}: give all terms the "
                             f"same species (or leave them None)")
        for k, atoms in enumerate(frames):
            desc.check_species(atoms, k)
        descs.append(desc)
    return descs


def energy_residuals(data: TrainingData, e0) -> np.ndarray:
    """Training energies minus E0 (eV per structure): what the GP's energy rows fit."""
    return np.array([lab.energy - e0.energy(a.numbers) for a, lab in zip(data.frames, data.labels)])


def accumulate_rows(est, spec: streaming.RowSpec, data: TrainingData, resid: np.ndarray,
                    client=None, start: dict | None = None) -> dict:
    """Per-group triangular row factors of ``data`` with the estimator's chunking,
    threads and progress (:func:`gapkit.gp.streaming.accumulate`; ``start``: factors
    to continue from, consumed); on a Dask ``client`` :func:`gapkit.gp.distributed.accumulate`."""
    if client is not None:
        labels_of = functools.partial(training_data, keys=est.label_keys, use_forces=est.use_forces,
                                      baseline=est.baseline, checked=True)
        return distributed.accumulate(client, spec, data.frames, data.labels, resid, labels_of,
                                      chunk_size=int(est.chunk_size), progress=est.verbose,
                                      start=start)
    return streaming.accumulate(spec, data.frames, data.labels, resid,
                                chunk_size=int(est.chunk_size), n_jobs=est.n_jobs,
                                progress=est.verbose, start=start)


def reference_energies(e0, data: TrainingData, keys: LabelKeys, species, baseline=None):
    """Per-species E0 (:class:`~gapkit.data.ReferenceEnergies`) of the training data."""
    energies = np.array([lab.energy for lab in data.labels])
    if e0 == "isolated":
        if not data.isolated:
            raise ValueError("e0='isolated' needs single-atom frames with "
                             "config_type=isolated_atom in the training data")
        ref = fit_reference_energies(isolated_atom_energies(data.isolated, keys), data.frames,
                                     energies, species)
        ref.method = "isolated"
    else:
        ref = fit_reference_energies(e0, data.frames, energies, species, keys)
    if baseline is not None and ref.method not in ("lstsq", "zero"):
        # E0 came from reference energies of isolated atoms: remove their baseline part
        ref.values.update(baseline_e0(baseline, dict(ref.values)))
    return ref


def sparse_counts(est, specs, descs, frames, species) -> list[dict]:
    """Sparse points per species wanted by each term: its ``n_sparse`` (or the
    estimator's), with ``"auto"`` resolved from the training environments by
    :func:`gapkit.model.sparse_counts.auto_counts` (each ``"auto"`` term gets an equal
    share of the budgets)."""
    wanted = [est.n_sparse if spec.n_sparse is None else spec.n_sparse for spec in specs]
    n_auto = sum(isinstance(n, str) for n in wanted)
    n_env = environment_counts(frames)
    out = []
    for n_sparse, desc in zip(wanted, descs):
        if isinstance(n_sparse, str):
            auto = auto_counts({z: n_env.get(z, 1) for z in species}, desc.n_features,
                               share=1.0 / n_auto)
            out.append({z: auto[z] for z in species})
        else:
            out.append({z: n_sparse_for(n_sparse, z) for z in species})
    return out


def select_sparse(est, specs, descs, frames, species, rng, owners: bool = False):
    """Sparse environments of every term (descriptors without gradients): a list of
    :class:`gapkit.gp.terms.FittedTerm`; with ``owners`` also, per term, the index in
    ``frames`` of each sparse point's frame."""
    fitted, start, frame_of = [], 0, []
    all_counts = sparse_counts(est, specs, descs, frames, species)
    for t, (spec, desc) in enumerate(zip(specs, descs)):
        zeta = float(est.zeta if spec.zeta is None else spec.zeta)
        counts = all_counts[t]
        Q, Z, own = sparsify.select_from_frames(desc, frames, counts,
                                                spec.sparse_method or est.sparse_method, rng,
                                                progress=est.verbose, owners=True,
                                                threads=streaming.resolve_threads(est.n_jobs,
                                                                                  len(frames)))
        frame_of.append(own)
        weight = terms.auto_weight(Q, zeta) if spec.weight == "auto" else float(spec.weight)
        fitted.append(terms.FittedTerm(desc, zeta, weight, Q, Z, start))
        start += len(Z)
        logger.info("term %d (%s): sparse points %s, weight %.4g", t, type(desc).__name__,
                    {chemical_symbols[z]: int(np.sum(Z == z)) for z in species}, weight)
    return (fitted, frame_of) if owners else fitted


def initial_noise(est, kind: str, frames: Sequence[Atoms] = ()) -> float:
    """The estimator's noise parameter for a label kind (``virial_noise="auto"``:
    :func:`gapkit.model.params.auto_virial_noise` of the training ``frames``)."""
    if kind == "virial" and isinstance(est.virial_noise, str):
        return auto_virial_noise(est.force_noise, frames)
    return {"energy": est.energy_noise, "forces": est.force_noise,
            "virial": est.virial_noise}[kind]


def fit_state(est, frames_all: Sequence[Atoms], optimize: bool, client=None,
              valid: Sequence[Atoms] | None = None, hyper: tuple | None = None,
              checked: bool = False) -> tuple[FittedState, dict]:
    """Fit the parameters of ``est`` (a :class:`gapkit.GAP`) to labelled structures.

    Parameters
    ----------
    est : GAP
    frames_all : list of ase.Atoms
    optimize : bool
        Choose ``delta`` and the noises by
        :func:`gapkit.model.hyperparameters.choose_hyperparameters` (bounded evidence,
        checked on the rows of ``valid`` when given); the report goes to
        ``state.extra["hyperparameters"]``.
    client : dask.distributed.Client, optional
    valid : list of ase.Atoms, optional
        Held-out labelled frames for the choice of hyperparameters (not trained on).
    hyper : (delta, sigmas), optional
        Use these hyperparameters (e.g. chosen on a split) instead of the defaults.
    checked : bool
        The geometries of ``frames_all`` were checked already
        (:func:`check_training_set`): skip :func:`gapkit.data.check_geometry`.

    Returns
    -------
    state : FittedState
        Uncalibrated (raw DTC variance).
    groups : dict
        The per-group triangular factors (:class:`gapkit.gp.solver.RowGroup`), for the
        evidence of other hyperparameters; not saved.
    """
    state, groups, _ = fit_with_valid_rows(est, frames_all, optimize, client, valid, hyper,
                                           checked)
    return state, groups


def fit_with_valid_rows(est, frames_all, optimize, client, valid, hyper, checked=False):
    """:func:`fit_state`, also returning the row factors of ``valid`` (``None`` unless
    ``optimize`` chooses the hyperparameters on them): ``(state, groups, val_groups)``."""
    keys = est.label_keys
    data = training_data(frames_all, keys, est.use_forces, est.baseline, checked)
    frames = data.frames
    specs = terms.as_terms(est.descriptor)
    descs = fitted_descriptors(specs, frames)
    species = descs[0].species_numbers
    e0 = reference_energies(est.e0, data, keys, species, est.baseline)
    n_atoms = np.array([len(a) for a in frames], dtype=np.float64)
    resid = energy_residuals(data, e0)

    rng = check_random_state(est.random_state)
    fitted = select_sparse(est, specs, descs, frames, species, rng)
    spec = streaming.RowSpec(fitted, est.noise_by_config_type)
    with streaming.SideTasks(est.n_jobs) as side:
        # K_MM, its factor and the variance basis need no rows: on one more thread
        # while the rows stream (in turn with n_jobs=1)
        kmm = side.submit(kmm_factor, est, fitted)
        basis = side.submit(variance_basis, fitted, est.variance_sparse)
        groups = accumulate_rows(est, spec, data, resid, client)
        val_groups = None
        if hyper is None and optimize and valid is not None:
            vdata = training_data(valid, keys, est.use_forces, est.baseline)
            val_groups = accumulate_rows(est, spec, vdata, energy_residuals(vdata, e0), client)
        Lchol, vbasis = kmm.result(), basis.result()
    state = solve_state(est, fitted, species, e0, groups, Lchol, vbasis, resid, n_atoms,
                        frames, optimize, val_groups, hyper, rng)
    return state, groups, val_groups


def solve_state(est, fitted, species, e0, groups: dict, Lchol: np.ndarray, vbasis, resid,
                n_atoms, frames, optimize: bool, val_groups=None, hyper=None, rng=None
                ) -> FittedState:
    """The hyperparameters (defaults, ``delta="auto"``, ``hyper`` or the evidence) and
    the solve of a fit whose row factors ``groups`` (of the ``frames``, with energy
    residuals ``resid`` (eV) and atom counts ``n_atoms``), sparse terms ``fitted`` and
    ``K_MM`` factor ``Lchol`` are known: an uncalibrated :class:`FittedState`."""
    sigmas = {g: initial_noise(est, g.kind, frames) for g in groups}
    extra = {}
    threads = streaming.dense_threads(est.n_jobs, len(Lchol))
    with streaming.dense_blas(est.n_jobs, len(Lchol)):  # runs alone (see dense_blas)
        if hyper is not None:
            delta = float(hyper[0])
            sigmas.update({g: float(v) for g, v in hyper[1].items() if g in sigmas})
        elif est.delta == "auto":
            delta, how = auto_delta(groups, Lchol, resid, n_atoms, est.force_noise,
                                    threads=threads)
            logger.info("delta='auto': %.4g eV (%s)", delta, how)
        else:
            delta = float(est.delta)
        if hyper is None and optimize:
            choice = choose_hyperparameters(groups, Lchol, delta, sigmas, val_groups,
                                            n_restarts=est.n_restarts, random_state=rng,
                                            progress=est.verbose)
            delta, sigmas = choice.delta, choice.sigmas
            extra = {"hyperparameters": choice.report}
        with progress_bar(total=1, desc="solve", progress=est.verbose) as bar:
            sol = gp.solve(groups, Lchol, delta, sigmas, threads=threads)
            bar.update(1)
    return FittedState(
        terms=tuple(fitted), species=tuple(int(z) for z in species), e0=e0, alpha=sol.alpha,
        kmm_cholesky=Lchol, posterior_factor=sol.R, delta=float(delta),
        noise=GroupValues({g: float(v) for g, v in sigmas.items()}),
        n_train=GroupValues({g: int(r.n_rows) for g, r in groups.items()}),
        log_marginal_likelihood=sol.log_likelihood, extra=extra,
        variance_basis=vbasis)  # the std's sparse columns, before any calibration


def kmm_factor(est, fitted: Sequence[terms.FittedTerm]) -> np.ndarray:
    """Lower Cholesky factor of the unit-scale ``K_MM`` (+ jitter) of the sparse set."""
    with progress_bar(total=1, desc="factorise K_MM", progress=est.verbose) as bar:
        Lchol = gp.cholesky_kmm(terms.kernel_mm(fitted), est.jitter, overwrite=True)
        bar.update(1)
    return Lchol


def held_out_count(n_frames: int, fraction: float) -> int | None:
    """Frames a plain random split of ``n_frames`` holds out, ``ceil(fraction n)``;
    ``None`` when either side would have fewer than :data:`MIN_SPLIT_FRAMES`."""
    n_val = math.ceil(float(fraction) * n_frames)
    return None if min(n_val, n_frames - n_val) < MIN_SPLIT_FRAMES else n_val


def split_validation(frames_all: Sequence[Atoms], fraction: float, random_state,
                     keys: LabelKeys | None = None) -> tuple[list, list] | None:
    """Random (train, validation) split of the non-isolated frames; isolated atoms stay
    in train. ``None`` when either side would have fewer than
    :data:`MIN_SPLIT_FRAMES` frames.

    Equivalent frames (same composition and energy per atom, e.g. a cell strained along
    x, y and z: :func:`gapkit.data.reading.equivalent_groups`; energies read with
    ``keys``) go to the same side: whole groups are drawn in random order until the
    validation side has ``ceil(fraction n)`` frames. When every frame is its own group
    this is the plain random split."""
    frames, iso = split_isolated(frames_all)
    n_val = held_out_count(len(frames), fraction)
    if n_val is None:
        return None
    energies = [get_labels(a, keys, index=k, require_energy=False,
                           require_forces=False).energy for k, a in enumerate(frames)]
    group = equivalent_groups(frames, energies)
    members: dict[int, list[int]] = {}
    for k, g in enumerate(group):
        members.setdefault(int(g), []).append(k)
    val_idx: set = set()
    for g in check_random_state(random_state).permutation(len(members)).tolist():
        if len(val_idx) >= n_val:
            break
        val_idx.update(members[g])
    if len(frames) - len(val_idx) < MIN_SPLIT_FRAMES:
        return None
    train = [a for k, a in enumerate(frames) if k not in val_idx]
    return iso + train, [frames[k] for k in sorted(val_idx)]


def calibrate_on(state: FittedState, frames: Sequence[Atoms], keys: LabelKeys, baseline,
                 source: str, keep_nystrom: bool = False, progress: bool | None = False,
                 checked: bool = False, threads: int = 1) -> Calibration:
    """Calibration of ``state`` on labelled validation structures, one at a time per
    thread (the descriptor derivatives of a frame are dropped before the next);
    ``progress``: a bar over them (see :func:`gapkit.progress.progress_bar`);
    ``checked``: their geometries were checked already; ``threads``: frames predicted
    by a pool of threads (each with its own copy of the descriptors), with the same
    result as one thread; one thread with a ``baseline`` (calculators are not
    thread-safe: tblite aborted the process)."""
    ref = reference_arrays(frames, keys)
    if baseline is not None:
        threads = 1  # a baseline calculator (tblite, EMT, ...) is not thread-safe
    for k, atoms in enumerate(frames):
        if not checked:
            check_geometry(atoms, k)
        state.descriptor.check_species(atoms, k)

    def one(st, k):
        atoms, f_ref = frames[k], ref["forces"][k]
        pred = predict_batch(st, [atoms], f_ref is not None, False, f_ref is not None,
                             baseline=baseline, offset=k)[0]
        return (validation_parts(st, atoms, pred, f_ref), pred.energy - ref["energy"][k],
                None if f_ref is None else pred.forces - f_ref)

    with streaming.dense_blas(threads, len(state.alpha)):  # the variance basis' factors
        variance_factors(state)
    with progress_bar(total=len(frames), desc="calibrate", unit="frame",
                      progress=progress) as bar:
        out = list(_map_frames(state, one, len(frames), threads, bar))
    parts, e_err, f_err = (list(x) for x in zip(*out))
    return fit_calibration(state, frames, parts, np.array(e_err), f_err, source,
                           keep_nystrom=keep_nystrom, config_type_key=keys.config_type)


def _map_frames(state: FittedState, fn, n: int, threads: int, bar):
    """``fn(state_copy, k)`` for ``k < n`` in order; with ``threads > 1`` frame 0 runs
    here first (filling the state's caches), the rest on a thread pool whose threads
    each own a copy of the state with private descriptors (engines are not shared)
    and the caches of ``state`` (:func:`gapkit.utils.ordered_map`)."""
    if threads <= 1 or n < 3:
        for k in range(n):
            yield fn(state, k)
            bar.update(1)
        return
    yield fn(state, 0)
    bar.update(1)
    local = threading.local()

    def work(k):
        st = getattr(local, "state", None)
        if st is None:
            st = local.state = state.with_private_descriptors()
        return fn(st, k)

    for out in ordered_map(work, range(1, n), threads):
        yield out
        bar.update(1)


def add_rows(est, state: FittedState, groups: dict, frames: Sequence[Atoms],
             extra: dict | None = None, checked: bool = False) -> tuple[FittedState, dict]:
    """Refit ``state`` with the rows of more frames added, same sparse set, E0 and
    hyperparameters (``extra``: their row factors, if already computed; ``checked``:
    the geometries of ``frames`` were checked already).

    Only the design rows of ``frames`` are computed (once) and folded into the factors
    ``groups`` (consumed: updated in place), or ``extra`` is merged with them by a QR of
    the stacked triangles; then the system is solved again: no sparse selection, no
    ``K_MM`` factorisation and no row of the earlier frames again."""
    if extra is None:
        data = training_data(frames, est.label_keys, est.use_forces, est.baseline, checked)
        spec = streaming.RowSpec(list(state.terms), est.noise_by_config_type)
        merged = accumulate_rows(est, spec, data, energy_residuals(data, state.e0),
                                 start=groups)
    else:
        merged = gp.merge_groups(groups, extra)
    sigmas = {g: state.noise[g] if g in state.noise else initial_noise(est, g.kind, frames)
              for g in merged}
    with streaming.dense_blas(est.n_jobs, len(state.alpha)):
        sol = gp.solve(merged, state.kmm_cholesky, state.delta, sigmas,
                       threads=streaming.dense_threads(est.n_jobs, len(state.alpha)))
    return state.replace(alpha=sol.alpha, posterior_factor=sol.R,
                         noise=GroupValues(sigmas),
                         n_train=GroupValues({g: int(r.n_rows) for g, r in merged.items()}),
                         log_marginal_likelihood=sol.log_likelihood), merged
