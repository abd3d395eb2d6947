"""The fit pipeline: labels → E0 → descriptors → sparse points → streamed rows → solve.

:func:`fit_state` turns the parameters of a :class:`gapkit.GAP` and labelled
structures into a :class:`~gapkit.model.state.FittedState`. Training follows GAP:
energies with noise ``energy_noise * sqrt(N_atoms)``, force components with
``force_noise`` and virial components with ``virial_noise * sqrt(N_atoms)``, solved as
a projected process by a streaming QR (:mod:`gapkit.gp.solver`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from sklearn.base import clone

from gapkit.data import (LabelKeys, Labels, check_geometry, fit_reference_energies, get_labels,
                         isolated_atom_energies, split_isolated)
from gapkit.descriptors import SOAP
from gapkit.gp import solver as gp
from gapkit.gp import sparsify, streaming, terms
from gapkit.model.delta import baseline_e0, subtract_baseline
from gapkit.model.state import FittedState, GroupValues
from gapkit.utils import check_random_state

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Checked training structures and their labels (baseline already subtracted)."""

    frames: list
    isolated: list
    labels: list


def n_sparse_for(n_sparse, z: int) -> int:
    """Sparse count of species ``z`` from an int or a dict keyed by symbol or number."""
    if isinstance(n_sparse, dict):
        for key in (chemical_symbols[z], z, str(z)):
            if key in n_sparse:
                return int(n_sparse[key])
        raise ValueError(f"n_sparse dict {n_sparse} has no entry for {chemical_symbols[z]}")
    return int(n_sparse)


def training_data(frames_all: Sequence[Atoms], keys: LabelKeys, use_forces: bool,
                  baseline=None) -> TrainingData:
    """Split off isolated atoms, check geometries and read labels."""
    frames, iso = split_isolated(frames_all)
    if not frames:
        raise ValueError("The training set is empty (only isolated atoms or no frames)")
    labels: list[Labels] = []
    for k, atoms in enumerate(frames):
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
        desc = clone(spec.descriptor) if spec.descriptor is not None else SOAP()
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


def select_sparse(est, specs, descs, frames, species, rng) -> list[terms.FittedTerm]:
    """Sparse environments of every term (descriptors without gradients)."""
    fitted, start = [], 0
    for t, (spec, desc) in enumerate(zip(specs, descs)):
        zeta = float(est.zeta if spec.zeta is None else spec.zeta)
        n_sparse = est.n_sparse if spec.n_sparse is None else spec.n_sparse
        counts = {z: n_sparse_for(n_sparse, z) for z in species}
        Q, Z = sparsify.select_from_frames(desc, frames, counts,
                                           spec.sparse_method or est.sparse_method, rng,
                                           progress=est.verbose)
        weight = terms.auto_weight(Q, zeta) if spec.weight == "auto" else float(spec.weight)
        fitted.append(terms.FittedTerm(desc, zeta, weight, Q, Z, start))
        start += len(Z)
        logger.info("term %d (%s): sparse points %s, weight %.4g", t, type(desc).__name__,
                    {chemical_symbols[z]: int(np.sum(Z == z)) for z in species}, weight)
    return fitted


def initial_noise(est, kind: str) -> float:
    """The estimator's noise parameter for a label kind."""
    return {"energy": est.energy_noise, "forces": est.force_noise,
            "virial": est.virial_noise}[kind]


def fit_state(est, frames_all: Sequence[Atoms], optimize: bool, client=None
              ) -> tuple[FittedState, dict]:
    """Fit the parameters of ``est`` (a :class:`gapkit.GAP`) to labelled structures.

    Returns
    -------
    state : FittedState
        Uncalibrated (raw DTC variance).
    groups : dict
        The per-group triangular factors (:class:`gapkit.gp.solver.RowGroup`), for the
        evidence of other hyperparameters; not saved.
    """
    keys = est.label_keys
    data = training_data(frames_all, keys, est.use_forces, est.baseline)
    frames = data.frames
    specs = terms.as_terms(est.descriptor)
    descs = fitted_descriptors(specs, frames)
    species = descs[0].species_numbers
    e0 = reference_energies(est.e0, data, keys, species, est.baseline)
    energies = np.array([lab.energy for lab in data.labels])
    n_atoms = np.array([len(a) for a in frames], dtype=np.float64)
    resid = energies - np.array([e0.energy(a.numbers) for a in frames])

    rng = check_random_state(est.random_state)
    fitted = select_sparse(est, specs, descs, frames, species, rng)
    Lchol = gp.cholesky_kmm(terms.kernel_mm(fitted), est.jitter)

    spec = streaming.RowSpec(fitted, est.noise_by_config_type)
    groups = streaming.accumulate(spec, frames, data.labels, resid,
                                  chunk_size=int(est.chunk_size), n_jobs=est.n_jobs,
                                  client=client, progress=est.verbose)
    if est.delta == "auto":
        delta = max(float(np.sqrt(np.mean((resid / n_atoms) ** 2))), 1.0)
    else:
        delta = float(est.delta)
    sigmas = {g: initial_noise(est, g.kind) for g in groups}
    if optimize:
        delta, sigmas, _ = gp.optimize_hyperparameters(groups, Lchol, delta, sigmas,
                                                       n_restarts=est.n_restarts,
                                                       random_state=rng)
        logger.info("optimised: delta=%.4g eV, noise=%s", delta, sigmas)
    sol = gp.solve(groups, Lchol, delta, sigmas)
    state = FittedState(
        terms=tuple(fitted), species=tuple(int(z) for z in species), e0=e0, alpha=sol.alpha,
        kmm_cholesky=Lchol, posterior_factor=sol.R, delta=float(delta),
        noise=GroupValues({g: float(v) for g, v in sigmas.items()}),
        n_train=GroupValues({g: int(r.n_rows) for g, r in groups.items()}),
        log_marginal_likelihood=sol.log_likelihood)
    return state, groups
