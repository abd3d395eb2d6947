"""The GAP estimator: fit on labelled structures, predict energies, forces, stress, sigma.

Model
-----
The total energy is ``E = sum_i E0[Z_i] + sum_i eps_i`` with local energies

    eps_i = delta**2 sum_m alpha_m (q_i . q_m)**zeta        (same species only)

over the sparse environments ``q_m`` (with several descriptor terms, a sum of such
sums, one per term, each with its own weight: see :mod:`gapkit.terms`). Forces ``F_j = -dE/dr_j`` and the virial
``W = -dE/deta`` are analytic: they contract ``d eps_i/d q_i`` with the sparse
descriptor derivatives (a vector-Jacobian product; no force rows are formed at
prediction time unless an uncertainty is asked for).

Training follows GAP: energies with noise ``energy_noise * sqrt(N_atoms)``, force
components with ``force_noise`` and virial components with
``virial_noise * sqrt(N_atoms)``, solved as a projected process by a streaming QR
(:mod:`gapkit.gp`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError

from gapkit.gp import solver as gp
from gapkit.gp import sparsify
from gapkit.gp import streaming
from gapkit.gp import terms
from gapkit.data import (LabelKeys, Labels, as_frame_list, check_geometry,
                   fit_reference_energies, get_labels, isolated_atom_energies, matrix_to_voigt,
                   split_isolated)
from gapkit.descriptors import SOAP, DescriptorSet

logger = logging.getLogger(__name__)

#: Atoms per batch at prediction: the kernel rows of a batch are one matrix product.
PREDICT_BATCH_ATOMS = 512

#: Multipliers of the two epistemic variance terms (Nyström residual, weight
#: posterior) per property; 1 means the raw DTC variance. Set by GAP.recalibrate.
DEFAULT_VARIANCE_SCALE = {"energy_nystrom": 1.0, "energy_posterior": 1.0,
                          "forces_nystrom": 1.0, "forces_posterior": 1.0}


# ----------------------------------------------------------------------------------
# prediction containers
# ----------------------------------------------------------------------------------
@dataclass
class Prediction:
    """Predicted properties of a list of structures.

    Attributes
    ----------
    energy : ndarray of shape (n_frames,)
        Total energies, eV.
    energies : list of ndarray of shape (n_atoms_k,)
        Per-atom energies (E0 included), eV.
    forces : list of ndarray of shape (n_atoms_k, 3) or None
        Forces, eV/Å.
    stress : ndarray of shape (n_frames, 6) or None
        Stress in ASE's Voigt order (xx, yy, zz, yz, xz, xy), eV/Å³; NaN rows for
        frames that are not fully periodic.
    """

    energy: np.ndarray
    energies: list
    forces: list | None = None
    stress: np.ndarray | None = None

    @property
    def forces_flat(self) -> np.ndarray:
        """All force components stacked, shape (sum n_atoms, 3)."""
        return np.vstack(self.forces)


@dataclass
class PredictionStd:
    """Standard deviations of a :class:`Prediction`, split by origin.

    ``epistemic`` is the GP's predictive std (model uncertainty, large away from the
    training data); ``aleatoric`` is the learned noise of the reference data; the
    ``total`` is ``sqrt(epistemic**2 + aleatoric**2)``. Units as in
    :class:`Prediction`.

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


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------
def _n_sparse_for(n_sparse, z: int) -> int:
    if isinstance(n_sparse, dict):
        for key in (chemical_symbols[z], z, str(z)):
            if key in n_sparse:
                return int(n_sparse[key])
        raise ValueError(f"n_sparse dict {n_sparse} has no entry for {chemical_symbols[z]}")
    return int(n_sparse)


class GAP(BaseEstimator):
    """Gaussian Approximation Potential: a sparse GP on local descriptors (SOAP by default).

    Parameters
    ----------
    descriptor : descriptor, Term or list of them, optional
        Descriptor (cloned at fit): :class:`~gapkit.descriptors.SOAP`,
        :class:`~gapkit.descriptors.ACSF` or :class:`~gapkit.descriptors.TwoBody`.
        ``None`` means ``SOAP()``. Descriptors left with ``species=None`` take the
        species of the training data. A list gives an additive kernel with one
        :class:`~gapkit.terms.Term` per descriptor (GAP's "2b+SOAP"), each with its own
        exponent, weight and sparse set; see :mod:`gapkit.terms`.
    zeta : float, default 4
        Kernel exponent of ``delta**2 (q . q')**zeta``.
    delta : float or "auto", default "auto"
        Signal scale in eV. ``"auto"`` takes the root-mean-square of the training
        energies per atom after E0, i.e. the data scale, but at least 1 eV: after a
        least-squares E0 that RMS is tiny while local energies still vary on the eV
        scale, and a too-small delta over-regularises (on rMD17 ethanol, 300 frames,
        delta 0.1 / 1 / 4 eV gave force MAE 63 / 43 / 42 meV/Å).
    n_sparse : int or dict, default 1000
        Sparse environments per species (a dict maps symbols to counts); capped at
        the number of environments available.
    sparse_method : {"cur", "random", "fps"}, default "cur"
    energy_noise : float, default 0.001
        sigma_E in eV per sqrt(atom): an energy row has std ``sigma_E sqrt(N)``.
    force_noise : float, default 0.02
        sigma_F in eV/Å per force component.
    virial_noise : float, default 0.1
        sigma_V in eV per sqrt(atom), for virial components (used when labels have them).
        On mlearn Si, sigma_V = 0.01 / 0.1 gave force MAE 0.158 / 0.066 eV/Å and
        stress MAE 0.36 / 0.30 GPa: a too-tight virial noise costs force accuracy.
    e0 : {"lstsq", "zero", "isolated"}, path or dict, default "lstsq"
        Per-species reference energies. ``"isolated"`` takes single-atom frames from
        the training data; a path reads an isolated-atoms extxyz.
    jitter : float, default 1e-8
        Added to the unit-scale K_MM diagonal.
    optimize : bool, default False
        Learn ``delta`` and the noises by type-II maximum likelihood.
    noise_by_config_type : bool, default False
        One noise per ``(kind, config_type)`` instead of per kind.
    n_restarts : int, default 0
        Extra random starts for the hyperparameter optimisation.
    energy_key, forces_key, virial_key : str, optional
        Label keys (``None``: the calculator results, then ``energy``/``forces``/``virial``).
    use_forces : bool, default True
        Train on forces; every training frame must then have them. ``False`` fits
        energies (and virials) only.
    chunk_size : int, default 32
        Structures per chunk of the streaming fit.
    n_jobs : int, optional
        Worker processes for the streaming fit (joblib; -1: all cores). ``None``:
        serial, with multi-threaded BLAS.
    baseline : ase Calculator, optional
        Delta-learning: the GP learns reference minus baseline (energies, forces and
        virials) and predictions add the baseline back. A gapkit baseline
        (:mod:`gapkit.baselines`, anything with ``to_dict``) is saved with the model;
        any other ASE calculator is recorded by class name and must be passed again
        to :func:`gapkit.load`.
    random_state : int, RandomState or None
        Seed for sparse-point selection and optimiser restarts.
    verbose : bool, default False
        Show progress bars.

    Attributes
    ----------
    descriptor_ : descriptor
        The fitted descriptor of the first term (all terms share its species).
    terms_ : list of FittedTerm
        Every kernel term with its descriptor, exponent, weight and sparse set.
    species_ : list of int
    e0_ : ReferenceEnergies
    sparse_q_ : ndarray of shape (M, F)
        Sparse environments (one-term models; see ``terms_`` otherwise).
    sparse_species_ : ndarray of shape (M,)
        Species of all sparse environments, stacked over terms.
    alpha_ : ndarray of shape (M,)
    delta_ : float
    noise_ : dict
        Learned or given noises by group (eV per sqrt(atom) for energies/virials,
        eV/Å for forces): the aleatoric uncertainty.
    log_marginal_likelihood_ : float
    """

    def __init__(self, descriptor: object | list | None = None, *, zeta: float = 4.0,
                 delta: float | str = "auto", n_sparse: int | dict = 1000,
                 sparse_method: str = "cur", energy_noise: float = 0.001,
                 force_noise: float = 0.02, virial_noise: float = 0.1,
                 e0: str | dict = "lstsq", jitter: float = 1e-8, optimize: bool = False,
                 noise_by_config_type: bool = False, n_restarts: int = 0,
                 energy_key: str | None = None, forces_key: str | None = None,
                 virial_key: str | None = None, use_forces: bool = True, chunk_size: int = 32,
                 n_jobs: int | None = None,
                 baseline=None, random_state=None, verbose: bool = False):
        self.descriptor = descriptor
        self.zeta = zeta
        self.delta = delta
        self.n_sparse = n_sparse
        self.sparse_method = sparse_method
        self.energy_noise = energy_noise
        self.force_noise = force_noise
        self.virial_noise = virial_noise
        self.e0 = e0
        self.jitter = jitter
        self.optimize = optimize
        self.noise_by_config_type = noise_by_config_type
        self.n_restarts = n_restarts
        self.energy_key = energy_key
        self.forces_key = forces_key
        self.virial_key = virial_key
        self.use_forces = use_forces
        self.chunk_size = chunk_size
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.baseline = baseline
        self.verbose = verbose

    # ------------------------------------------------------------------ utils
    @property
    def sparse_q_(self) -> np.ndarray:
        """Sparse environments, shape (M, F), of a one-term model."""
        self._check_fitted()
        if len(self.terms_) != 1:
            raise AttributeError("sparse_q_ is defined for one-term models only; this model "
                                 "has several terms: use terms_[t].sparse_q")
        return self.terms_[0].sparse_q

    @property
    def sparse_species_(self) -> np.ndarray:
        """Species of the stacked sparse environments, shape (M,)."""
        self._check_fitted()
        return terms.sparse_species(self.terms_)

    @property
    def label_keys(self) -> LabelKeys:
        return LabelKeys(energy=self.energy_key, forces=self.forces_key, virial=self.virial_key)

    def _check_fitted(self) -> None:
        if not hasattr(self, "alpha_"):
            raise NotFittedError("This GAP is not fitted yet: call fit(frames) first, or "
                                 "gapkit.load(path) a saved model")

    def _check_params(self) -> None:
        for name in ("energy_noise", "force_noise", "virial_noise", "jitter", "zeta"):
            val = getattr(self, name)
            if not (isinstance(val, (int, float)) and np.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive number, got {val!r}")
        if not (self.delta == "auto" or (isinstance(self.delta, (int, float)) and self.delta > 0)):
            raise ValueError(f"delta must be 'auto' or a positive number (eV), got {self.delta!r}")
        if self.sparse_method not in sparsify.METHODS:
            raise ValueError(f"sparse_method must be one of {sparsify.METHODS}, got {self.sparse_method!r}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        for t, spec in enumerate(terms.as_terms(self.descriptor)):
            if spec.zeta is not None and not (isinstance(spec.zeta, (int, float)) and spec.zeta > 0):
                raise ValueError(f"term {t}: zeta must be a positive number, got {spec.zeta!r}")
            if not (spec.weight == "auto" or (isinstance(spec.weight, (int, float))
                                              and np.isfinite(spec.weight) and spec.weight > 0)):
                raise ValueError(f"term {t}: weight must be 'auto' or a positive number, "
                                 f"got {spec.weight!r}")
            if spec.sparse_method is not None and spec.sparse_method not in sparsify.METHODS:
                raise ValueError(f"term {t}: sparse_method must be one of {sparsify.METHODS}, "
                                 f"got {spec.sparse_method!r}")

    def _initial_noise(self, kind: str) -> float:
        return {"energy": self.energy_noise, "forces": self.force_noise,
                "virial": self.virial_noise}[kind]

    # ------------------------------------------------------------------ fit
    def fit(self, X: Iterable[Atoms], y=None, optimize: bool | None = None,
            client=None) -> "GAP":
        """Fit on labelled structures.

        Parameters
        ----------
        X : list of ase.Atoms (or a path to an extxyz file)
            Training structures with energies and forces (and optionally virials).
            Single-atom frames with ``config_type=isolated_atom`` are used for E0 when
            ``e0="isolated"`` and are otherwise dropped from the GP data.
        y : ignored
            Present for scikit-learn compatibility; labels come from ``X``.
        optimize : bool, optional
            Override the ``optimize`` parameter for this call.
        client : dask.distributed.Client, optional
            Compute descriptors and the per-chunk QR factors on a Dask cluster and
            reduce the factors here (see :mod:`gapkit.streaming`).

        Returns
        -------
        self
        """
        self._check_params()
        frames_all = as_frame_list(X)
        keys = self.label_keys
        frames, iso = split_isolated(frames_all)
        if not frames:
            raise ValueError("The training set is empty (only isolated atoms or no frames)")
        labels: list[Labels] = []
        for k, atoms in enumerate(frames):
            check_geometry(atoms, k)
            lab = get_labels(atoms, keys, index=k, require_forces=self.use_forces)
            if not self.use_forces:
                lab.forces = None
            labels.append(lab)
        if self.baseline is not None:
            for k, (atoms, lab) in enumerate(zip(frames, labels)):
                b = baseline_labels(self.baseline, atoms, forces=lab.forces is not None,
                                    virial=lab.virial is not None)
                lab.energy -= b["energy"]
                if lab.forces is not None:
                    lab.forces = lab.forces - b["forces"]
                if lab.virial is not None:
                    lab.virial = lab.virial - b["virial"]

        # species and descriptors ---------------------------------------------------
        data_species = sorted(set(np.concatenate([a.numbers for a in frames]).tolist()))
        specs = terms.as_terms(self.descriptor)
        descs = []
        for t, spec in enumerate(specs):
            desc = clone(spec.descriptor) if spec.descriptor is not None else SOAP()
            if getattr(desc, "species", None) is None:
                desc.set_params(species=[chemical_symbols[z] for z in data_species])
            else:
                desc._validate()
            if t and desc.species_numbers != descs[0].species_numbers:
                raise ValueError(f"descriptor term {t} covers species {desc.species_numbers} but "
                                 f"term 0 covers {descs[0].species_numbers}: give all terms the "
                                 f"same species (or leave them None)")
            for k, atoms in enumerate(frames):
                desc.check_species(atoms, k)
            descs.append(desc)
        self.descriptor_ = descs[0]
        self.species_ = descs[0].species_numbers
        # reference energies -----------------------------------------------------
        energies = np.array([lab.energy for lab in labels])
        if self.e0 == "isolated":
            if not iso:
                raise ValueError("e0='isolated' needs single-atom frames with "
                                 "config_type=isolated_atom in the training data")
            e0 = fit_reference_energies(isolated_atom_energies(iso, keys), frames, energies,
                                        self.species_)
            e0.method = "isolated"
        else:
            e0 = fit_reference_energies(self.e0, frames, energies, self.species_, keys)
        if self.baseline is not None and e0.method not in ("lstsq", "zero"):
            # E0 came from reference energies of isolated atoms: remove their baseline part
            for z in list(e0.values):
                e0.values[z] -= baseline_labels(self.baseline, Atoms(numbers=[z]),
                                                forces=False, virial=False)["energy"]
        self.e0_ = e0
        n_atoms = np.array([len(a) for a in frames], dtype=np.float64)
        resid = energies - np.array([e0.energy(a.numbers) for a in frames])

        # sparse points (descriptors without gradients), one set per term -------------
        rng = np.random.RandomState(self.random_state) if not isinstance(
            self.random_state, np.random.RandomState) else self.random_state
        fitted, start = [], 0
        for t, (spec, desc) in enumerate(zip(specs, descs)):
            zeta = float(self.zeta if spec.zeta is None else spec.zeta)
            n_sparse = self.n_sparse if spec.n_sparse is None else spec.n_sparse
            counts = {z: _n_sparse_for(n_sparse, z) for z in self.species_}
            Q, Z = sparsify.select_from_frames(desc, frames, counts,
                                               spec.sparse_method or self.sparse_method, rng,
                                               progress=self.verbose)
            weight = terms.auto_weight(Q, zeta) if spec.weight == "auto" else float(spec.weight)
            fitted.append(terms.FittedTerm(desc, zeta, weight, Q, Z, start))
            start += len(Z)
            logger.info("term %d (%s): sparse points %s, weight %.4g", t, type(desc).__name__,
                        {chemical_symbols[z]: int(np.sum(Z == z)) for z in self.species_}, weight)
        self.terms_ = fitted

        Kmm = terms.kernel_mm(fitted)
        self.kmm_cholesky_ = gp.cholesky_kmm(Kmm, self.jitter)
        del Kmm

        # streaming rows ------------------------------------------------------------
        spec = streaming.RowSpec(fitted, self.noise_by_config_type)
        groups = streaming.accumulate(spec, frames, labels, resid, chunk_size=int(self.chunk_size),
                                      n_jobs=self.n_jobs, client=client, progress=self.verbose)

        # hyperparameters -----------------------------------------------------------
        if self.delta == "auto":
            delta = max(float(np.sqrt(np.mean((resid / n_atoms) ** 2))), 1.0)
        else:
            delta = float(self.delta)
        sigmas = {name: self._initial_noise(name.split(":")[0]) for name in groups}
        do_opt = self.optimize if optimize is None else optimize
        if do_opt:
            delta, sigmas, _ = gp.optimize_hyperparameters(
                groups, self.kmm_cholesky_, delta, sigmas, n_restarts=self.n_restarts,
                random_state=rng)
            logger.info("optimised: delta=%.4g eV, noise=%s", delta, sigmas)
        sol = gp.solve(groups, self.kmm_cholesky_, delta, sigmas)
        self.delta_ = float(delta)
        self.noise_ = {k: float(v) for k, v in sigmas.items()}
        self.alpha_ = sol.alpha
        self.posterior_factor_ = sol.R
        self.log_marginal_likelihood_ = sol.log_likelihood
        self.n_train_ = {name: g.n_rows for name, g in groups.items()}
        self.variance_scale_ = dict(DEFAULT_VARIANCE_SCALE)
        self._groups = groups  # kept in memory for log_marginal_likelihood(); not saved
        return self

    def log_marginal_likelihood(self, theta: np.ndarray | None = None,
                                eval_gradient: bool = False):
        """DTC log marginal likelihood of the training data.

        Parameters
        ----------
        theta : ndarray, optional
            ``[log delta, log sigma_g ...]`` in the order of ``noise_``; default the
            fitted values.
        eval_gradient : bool
            Also return the gradient with respect to ``theta``.
        """
        self._check_fitted()
        if not hasattr(self, "_groups"):
            raise NotFittedError("The training factors are not kept in a loaded model; refit")
        names = [k for k, g in self._groups.items() if g.R is not None]
        if theta is None:
            theta = np.log([self.delta_] + [self.noise_[n] for n in names])
        theta = np.asarray(theta, dtype=np.float64)
        sig = {n: float(np.exp(t)) for n, t in zip(names, theta[1:])}
        return gp.log_marginal_likelihood(self._groups, self.kmm_cholesky_, float(np.exp(theta[0])),
                                          sig, eval_gradient=eval_gradient)

    # ------------------------------------------------------------------ predict
    def _prepare(self, X) -> list[Atoms]:
        self._check_fitted()
        frames = as_frame_list(X)
        for k, atoms in enumerate(frames):
            check_geometry(atoms, k)
            self.descriptor_.check_species(atoms, k)
        return frames

    def predict_structure(self, atoms: Atoms, forces: bool = True, stress: bool | None = None,
                          index: int = 0, keep_gradients: bool = False) -> dict:
        """Energy, per-atom energies, forces and stress of one structure.

        Parameters
        ----------
        atoms : ase.Atoms
        forces : bool
        stress : bool, optional
            Default: for fully periodic cells.
        index : int
            Frame index for error messages.
        keep_gradients : bool
            Build the descriptor derivative arrays (needed for uncertainties) instead
            of the cheaper vector-Jacobian product.

        Returns
        -------
        dict with ``energy`` (eV), ``energies`` (n,) eV, ``forces`` (n, 3) eV/Å,
        ``stress`` (6,) eV/Å³ in Voigt order (periodic cells only), and the
        descriptor sets, one per kernel term, under ``"_descriptor"``.
        """
        return self._predict_batch([atoms], forces, stress, keep_gradients, offset=index)[0]

    def _predict_batch(self, frames: Sequence[Atoms], forces: bool, stress: bool | None,
                       keep_gradients: bool, offset: int = 0) -> list[dict]:
        """:meth:`predict_structure` for several structures, with the kernel work of all
        their atoms done in one matrix product per species."""
        tlist = self.terms_
        items = []
        for k, atoms in enumerate(frames):
            periodic = bool(np.all(atoms.get_pbc()))
            st = periodic if stress is None else (stress and periodic)
            dsets, vjps = [], []
            for t in tlist:
                desc, vjp = t.descriptor, None
                if keep_gradients:
                    ds = desc.compute(atoms, gradients=True, strain=st, index=offset + k)
                elif forces or st:
                    ds, vjp = desc.vjp_setup(atoms, strain=st, index=offset + k)
                else:
                    ds = desc.compute(atoms, gradients=False, index=offset + k)
                dsets.append(ds)
                vjps.append(vjp)
            items.append((atoms, st, dsets, vjps))
        stacked = [DescriptorSet(q=np.vstack([it[2][t].q for it in items]),
                                 numbers=np.concatenate([it[2][t].numbers for it in items]))
                   for t in range(len(tlist))]
        d2 = self.delta_ ** 2
        need_g = forces or any(it[1] for it in items)
        eps_all, g_all = terms.local_energies_and_gradients(tlist, stacked, self.alpha_,
                                                            gradients=need_g)
        eps_all = d2 * eps_all
        outs, start = [], 0
        for atoms, st, dsets, vjps in items:
            n = len(atoms)
            sl = slice(start, start + n)
            start += n
            e_atoms = eps_all[sl] + self.e0_.atomic(atoms.numbers)
            base = None
            if self.baseline is not None:
                base = baseline_labels(self.baseline, atoms, forces=forces, virial=st, energies=True)
                e_atoms = e_atoms + base["energies"]
            out = {"energy": float(e_atoms.sum()), "energies": e_atoms, "_descriptor": dsets}
            outs.append(out)
            if not (forces or st):
                continue
            dE_dr, dE_deta = 0.0, 0.0
            for ds, vjp, g in zip(dsets, vjps, g_all):
                g = d2 * g[sl]  # d eps_i / d q_i of this term
                r_t, eta_t = vjp(g) if vjp is not None else ds.contract(g, st)
                dE_dr = dE_dr + r_t
                if st:
                    dE_deta = dE_deta + eta_t
            if forces:
                out["forces"] = -dE_dr + (base["forces"] if base is not None else 0.0)
            if st:
                sigma = 0.5 * (dE_deta + dE_deta.T) / atoms.get_volume()
                if base is not None:
                    sigma = sigma - base["virial"] / atoms.get_volume()
                out["stress"] = matrix_to_voigt(sigma)
        return outs

    def predict(self, X, return_std: bool = False, forces: bool = True,
                stress: bool | None = None):
        """Predict energies, per-atom energies, forces (and stress) of structures.

        Parameters
        ----------
        X : ase.Atoms, list of ase.Atoms, or a path
        return_std : bool, default False
            Also return a :class:`PredictionStd` with epistemic, aleatoric and total
            standard deviations.
        forces : bool, default True
        stress : bool, optional
            Default: for fully periodic cells.

        Returns
        -------
        Prediction, or (Prediction, PredictionStd) when ``return_std``.
        """
        frames = self._prepare(X)
        E, Es, Fs, S = [], [], [], []
        stds = [] if return_std else None
        keep = return_std and forces
        batch: list[int] = []

        def flush():
            results = self._predict_batch([frames[i] for i in batch], forces, stress, keep,
                                          offset=batch[0])
            for r in results:
                E.append(r["energy"])
                Es.append(r["energies"])
                if forces:
                    Fs.append(r["forces"])
                S.append(r.get("stress", np.full(6, np.nan)))
                if return_std:
                    stds.append(self._std_structure(r["_descriptor"], forces=forces))
            batch.clear()

        # with uncertainties the derivative arrays are kept: one structure at a time
        limit = 1 if keep else PREDICT_BATCH_ATOMS
        n_atoms = 0
        for k, atoms in enumerate(frames):
            batch.append(k)
            n_atoms += len(atoms)
            if n_atoms >= limit:
                flush()
                n_atoms = 0
        if batch:
            flush()
        any_stress = any(np.isfinite(s).all() for s in S)
        pred = Prediction(energy=np.array(E), energies=Es, forces=Fs if forces else None,
                          stress=np.array(S) if any_stress else None)
        if not return_std:
            return pred
        return pred, self._collect_std(stds, frames, forces)

    # ------------------------------------------------------------------ uncertainty
    def _aleatoric(self, kind: str) -> float:
        from gapkit.uncertainty.calibration import noise_level

        return noise_level(self.noise_, kind)

    def _std_structure(self, dsets: list[DescriptorSet], forces: bool) -> dict:
        d = self.delta_
        tlist = self.terms_
        local = terms.local_rows(tlist, dsets)  # (n, M)
        kqq = terms.local_prior(tlist, dsets)
        rows = np.vstack([local.sum(0, keepdims=True), local])
        prior = np.concatenate([[kqq.sum()], np.diag(kqq)])
        nys, post = gp.predictive_variance(rows, prior, self.kmm_cholesky_,
                                           self.posterior_factor_, d, parts=True)
        out = {"energy": (nys[0], post[0]), "energies": (nys[1:], post[1:])}
        if forces:
            frows = terms.design_rows(tlist, dsets, energy=False, forces=True)["forces"]
            fprior = terms.force_prior(tlist, dsets)
            fn, fp = gp.predictive_variance(frows, fprior, self.kmm_cholesky_,
                                            self.posterior_factor_, d, parts=True)
            out["forces"] = (fn.reshape(-1, 3), fp.reshape(-1, 3))
        return out

    def _epistemic_var(self, parts: tuple, prop: str) -> np.ndarray:
        sc = self.variance_scale_
        return (sc.get(f"{prop}_nystrom", 1.0) * np.asarray(parts[0])
                + sc.get(f"{prop}_posterior", 1.0) * np.asarray(parts[1]))

    def _collect_std(self, stds: list[dict], frames: list[Atoms], forces: bool) -> PredictionStd:
        sE = self._aleatoric("energy")
        sF = self._aleatoric("forces")
        e_epi = np.sqrt([self._epistemic_var(s["energy"], "energy") for s in stds])
        e_ale = np.array([sE * np.sqrt(len(a)) for a in frames])
        es_epi = [np.sqrt(self._epistemic_var(s["energies"], "energy")) for s in stds]
        es_ale = [np.full(len(a), sE) for a in frames]
        out = PredictionStd(
            energy_epistemic=e_epi, energy_aleatoric=e_ale, energy=np.hypot(e_epi, e_ale),
            energies_epistemic=es_epi, energies_aleatoric=es_ale,
            energies=[np.hypot(a, b) for a, b in zip(es_epi, es_ale)])
        if forces:
            f_epi = [np.sqrt(self._epistemic_var(s["forces"], "forces")) for s in stds]
            f_ale = [np.full((len(a), 3), sF) for a in frames]
            out.forces_epistemic, out.forces_aleatoric = f_epi, f_ale
            out.forces = [np.hypot(a, b) for a, b in zip(f_epi, f_ale)]
        return out

    def recalibrate(self, X, keep_nystrom: bool = False) -> "GAP":
        """Fit the epistemic variance scales on a labelled validation set (stored in the model).

        The DTC variance has two terms: the Nyström residual
        ``delta**2 (k** - k K_MM^-1 k)``, i.e. the prior variance of what the sparse set
        cannot represent, and the posterior variance of the weights. With ``delta``
        learned on the projected model, the residual term is usually far too large in
        distribution. For energies and for forces separately, this method multiplies
        the two terms by scales ``(s_N, s_P)`` that maximise the Gaussian likelihood of
        the validation errors, with the learned noise as the aleatoric part (see
        :func:`gapkit.uncertainty.fit_variance_scales`). The ranking of structures by
        sigma and the growth of the residual term away from the data are kept.

        Parameters
        ----------
        X : list of ase.Atoms
            Labelled validation structures, not used in training.
        keep_nystrom : bool, default False
            Keep the Nyström term unscaled and fit only the posterior scale. In
            distribution the fitted Nyström scale is often ~0, which calibrates sigma
            there but makes sigma far from the data several times smaller than the
            errors (it still ranks them first); keeping it gives conservative sigma
            out of distribution at the cost of over-wide sigma in distribution.

        Returns
        -------
        self
        """
        from gapkit.metrics import reference_arrays
        from gapkit.uncertainty.calibration import fit_variance_scales

        frames = self._prepare(X)
        ref = reference_arrays(frames, self.label_keys)
        parts = []
        for k, atoms in enumerate(frames):
            r = self.predict_structure(atoms, forces=True, stress=False, index=k,
                                       keep_gradients=True)
            parts.append((r, self._std_structure(r["_descriptor"], forces=True)))
        e_err = np.array([r["energy"] for r, _ in parts]) - ref["energy"]
        e_nys = np.array([s["energy"][0] for _, s in parts])
        e_post = np.array([s["energy"][1] for _, s in parts])
        e_ale = np.array([self._aleatoric("energy") ** 2 * len(a) for a in frames])
        scale = {}
        fix = 1.0 if keep_nystrom else None
        scale["energy_nystrom"], scale["energy_posterior"] = fit_variance_scales(
            e_err, e_nys, e_post, e_ale, fix_nystrom=fix)
        has_f = [k for k, f in enumerate(ref["forces"]) if f is not None]
        if has_f:
            f_err = np.concatenate([(parts[k][0]["forces"] - ref["forces"][k]).ravel() for k in has_f])
            f_nys = np.concatenate([parts[k][1]["forces"][0].ravel() for k in has_f])
            f_post = np.concatenate([parts[k][1]["forces"][1].ravel() for k in has_f])
            f_ale = np.full(f_err.shape, self._aleatoric("forces") ** 2)
            scale["forces_nystrom"], scale["forces_posterior"] = fit_variance_scales(
                f_err, f_nys, f_post, f_ale, fix_nystrom=fix)
        else:
            scale["forces_nystrom"] = scale["forces_posterior"] = 1.0
        self.variance_scale_ = scale
        return self

    def local_energy_covariance(self, atoms: Atoms) -> np.ndarray:
        """Epistemic covariance of the local energies of one structure, shape (n, n), eV².

        ``Cov = delta**2 (K~_** - K~_*M K~_MM^-1 K~_M*) + delta**4 K~_*M Sigma K~_M*``; the
        variance of the total energy equals the sum of all its entries.
        """
        self._check_fitted()
        self.descriptor_.check_species(atoms)
        dsets = terms.compute(self.terms_, atoms, gradients=False)
        import scipy.linalg as sla

        k = terms.local_rows(self.terms_, dsets).T  # (M, n)
        kqq = terms.local_prior(self.terms_, dsets)
        A = sla.solve_triangular(self.kmm_cholesky_, k, lower=True)
        B = sla.solve_triangular(self.posterior_factor_, k, trans="T", lower=False)
        d = self.delta_
        return d ** 2 * (kqq - A.T @ A) + d ** 4 * (B.T @ B)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> "Path":
        """Save to a versioned, pickle-free file; see :mod:`gapkit.io`."""
        from gapkit.model.model_file import save

        return save(self, path)

    # ------------------------------------------------------------------ scoring
    def score(self, X, y=None) -> float:
        """Negative force RMSE (eV/Å) on labelled structures: higher is better.

        Follows scikit-learn's "greater is better" convention so that model selection
        tools can maximise it. Structures without forces are skipped; if none has
        forces, the negative energy RMSE per atom (eV/atom) is returned instead.
        """
        frames = as_frame_list(X)
        pred = self.predict(frames)
        keys = self.label_keys
        errs, e_errs = [], []
        for k, (atoms, f, e) in enumerate(zip(frames, pred.forces, pred.energy)):
            lab = get_labels(atoms, keys, index=k, require_forces=False)
            if lab.forces is not None:
                errs.append((f - lab.forces).ravel())
            e_errs.append((e - lab.energy) / len(atoms))
        if errs:
            return -float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))
        return -float(np.sqrt(np.mean(np.square(e_errs))))


def baseline_labels(calc, atoms: Atoms, forces: bool = True, virial: bool = False,
                    energies: bool = False) -> dict:
    """Energy (eV), forces (n, 3) eV/Å, virial (3, 3) eV and per-atom energies of a
    baseline calculator for one structure.

    Per-atom energies come from the calculator when it implements ``energies``;
    otherwise the total is shared equally among the atoms.
    """
    from ase.calculators.calculator import PropertyNotImplementedError

    from gapkit.data import voigt_to_matrix

    a = atoms.copy()
    a.calc = calc
    out = {"energy": float(a.get_potential_energy())}
    if forces:
        out["forces"] = np.asarray(a.get_forces(), dtype=np.float64)
    if virial:
        out["virial"] = -voigt_to_matrix(a.get_stress(voigt=True)) * a.get_volume()
    if energies:
        try:
            out["energies"] = np.asarray(a.get_potential_energies(), dtype=np.float64)
        except (PropertyNotImplementedError, NotImplementedError, AttributeError):
            out["energies"] = np.full(len(a), out["energy"] / len(a))
    return out
