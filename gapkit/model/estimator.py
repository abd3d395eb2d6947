"""The GAP estimator: fit on labelled structures, predict energies, forces, stress, sigma.

Model
-----
The total energy is ``E = sum_i E0[Z_i] + sum_i eps_i`` with local energies

    eps_i = delta**2 sum_m alpha_m (q_i . q_m)**zeta        (same species only)

over the sparse environments ``q_m`` (with several descriptor terms, a sum of such
sums, one per term, each with its own weight: see :mod:`gapkit.gp.terms`). Forces
``F_j = -dE/dr_j`` and the virial ``W = -dE/deta`` are analytic.

The estimator holds its parameters (scikit-learn's contract) and, once fitted, one
:class:`~gapkit.model.state.FittedState` in ``state_``; the familiar fitted
attributes (``alpha_``, ``delta_``, ``noise_``, ...) read it. The pipeline lives in
:mod:`gapkit.model.training`, prediction in :mod:`gapkit.model.prediction`, variances
in :mod:`gapkit.model.variance`, the file format in :mod:`gapkit.model.model_file`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
from ase import Atoms
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from gapkit.data import LabelKeys, as_frame_list, check_geometry, get_labels
from gapkit.gp import evidence
from gapkit.gp import terms
from gapkit.model import model_file, std
from gapkit.model.attributes import FittedAttributes
from gapkit.model.prediction import (PREDICT_BATCH_ATOMS, Prediction, StructurePrediction,
                                     batches, predict_batch)
from gapkit.model.params import check_params
from gapkit.model.fit_once import fit_calibrated_state
from gapkit.model.training import calibrate_on
from gapkit.model.variance import (PredictionStd, check_variance_sparse,
                                   local_energy_covariance)
from gapkit.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = ["GAP", "save", "Prediction", "PredictionStd", "StructurePrediction"]


class GAP(FittedAttributes, BaseEstimator):
    """Gaussian Approximation Potential: a sparse GP on local descriptors (SOAP + 2-body by default).

    Parameters
    ----------
    descriptor : descriptor, Term or list of them, optional
        Descriptor (cloned at fit): :class:`~gapkit.descriptors.SOAP`,
        :class:`~gapkit.descriptors.ACSF` or :class:`~gapkit.descriptors.TwoBody`.
        ``None`` (default): SOAP with radial scaling + 2-body,
        ``[Term(SOAP(radial_scaling=4, radial_scaling_r0=2)), Term(TwoBody(r_cut=5),
        zeta=1, n_sparse=50)]`` (:func:`gapkit.gp.terms.default_terms`, which gives it
        with another SOAP, e.g. :func:`gapkit.gp.terms.default_soap` ``(r_cut=6)``:
        the 2-body cutoff follows SOAP's). One descriptor given is
        that descriptor alone. Descriptors left with ``species=None`` take the
        species of the training data. A list gives an additive kernel with one
        :class:`~gapkit.gp.terms.Term` per descriptor (GAP's "2b+SOAP"), each with its
        own exponent, weight and sparse set; see :mod:`gapkit.gp.terms`.
    zeta : float, default 4
        Kernel exponent of ``delta**2 (q . q')**zeta`` (of the terms without their own:
        the SOAP term of the default model; its 2-body term has 1).
    delta : float or "auto", default "auto"
        Signal scale in eV. ``"auto"``: the larger of the RMS training energy per atom
        after E0 and 1.5x the force moment estimate of δ (the δ at which the prior gives
        the forces their variance in the data; independent of E0, so a least-squares
        or rank-deficient E0 no longer drops δ to a floor); see
        :mod:`gapkit.model.params`.
    n_sparse : "auto", int or dict, default "auto"
        Sparse points per species (a dict by symbol); "auto": :mod:`gapkit.model.sparse_counts`.
    sparse_method : {"cur", "random", "fps"}, default "cur"
    energy_noise : float, default 0.001
        sigma_E in eV per sqrt(atom): an energy row has std ``sigma_E sqrt(N)``.
    force_noise : float, default 0.02
        sigma_F in eV/Å per force component.
    virial_noise : float or "auto", default "auto"
        sigma_V in eV per sqrt(atom); ``"auto"``: ``force_noise * (V/N)**(1/3)`` over the
        periodic training cells (:mod:`gapkit.model.params`; tighter costs force accuracy).
    e0 : {"lstsq", "average", "isolated", "zero"}, path or dict, default "lstsq"
        Per-species reference energies in eV (rules: :mod:`gapkit.data.reference`); a
        path reads an isolated-atoms extxyz, a dict gives them (``{"H": -13.6}``).
    jitter : float, default 1e-8
        Added to the unit-scale K_MM diagonal.
    optimize : bool, default False
        Learn ``delta`` and the noises by the bounded evidence, checked on held-out data
        (never worse than the defaults there: :mod:`gapkit.model.hyperparameters`).
    noise_by_config_type : bool, default False
        One noise per ``(kind, config_type)`` instead of per kind.
    n_restarts : int, default 0
        Extra random starts for the hyperparameter optimisation.
    energy_key, forces_key, virial_key : str, optional
        Label keys (``None``: the calculator results, then ``energy``/``forces``/``virial``).
        A ``virial_key`` given is the only place virials are read from (eV); frames
        without it have none (no fall-back to the calculator's stress).
    stress_key : str, optional
        Read virials from a stress in eV/Å³ under this info key instead (MACE's
        ``REF_stress`` style), as ``-stress * volume``; excludes ``virial_key``.
    use_virials : bool, default True
        Train on virial/stress labels where frames have them; ``False`` ignores them.
    use_forces : bool, default True
        Train on forces; every training frame must then have them. ``False`` fits
        energies (and virials) only.
    chunk_size : int, default 32
        Structures per chunk of the streaming fit.
    n_jobs : int, optional
        Threads of the streaming fit, each on a contiguous share of the chunks with
        BLAS capped at one thread (:func:`gapkit.gp.streaming.accumulate`). ``None``:
        every usable core; ``1``: serial with the process's BLAS threads; ``-1``: all
        cores. The model equals the serial one to round-off.
    baseline : ase Calculator, optional
        Delta-learning: the GP learns reference minus baseline (energies, forces and
        virials) and predictions add the baseline back. A gapkit baseline
        (:mod:`gapkit.baselines`, anything with ``to_dict``) is saved with the model;
        any other ASE calculator is recorded by class name and must be passed again
        to :func:`gapkit.load`.
    random_state : int, RandomState or None
        Seed for sparse-point selection and optimiser restarts.
    calibrate : bool, default True
        Calibrate the predictive std on held-out data during :meth:`fit`: a random
        ``valid_fraction`` of the training frames (fitted, used to fit the variance
        scales of :mod:`gapkit.model.calibration`, then added back to the training
        rows, so no data is lost), or the ``valid`` frames given to :meth:`fit`
        (never trained on). Too small a data set (fewer than 3 frames on either side
        of the split) leaves the raw DTC std, with a warning.
    valid_fraction : float, default 0.2
        Held-out fraction for the calibration (drawn at random; frames equivalent by
        composition and energy per atom, e.g. symmetry copies, stay on one side:
        :func:`gapkit.model.training.split_validation`).
    force_std : {"exact", "fast"}, default "exact"
        Force stds of :meth:`predict`: ``"exact"`` (every component from the kernel
        Hessian; roughly a training row per atom; the best calibrated and most
        adaptive) or ``"fast"`` (calibrated models only: per atom, from the
        local-energy variances of its neighbourhood, mapped onto the exact std; costs
        about as much as energies and forces, less adaptive). The ASE calculator uses
        ``"fast"`` by default (every MD step). Uncalibrated models always use the
        exact form.
    variance_sparse : int, "auto", "all" or None, default "auto"
        Sparse columns of the predictive variance: the std is the DTC std of the
        sub-model on ``M_v`` of the ``M`` sparse points (chosen at fit by greedy
        pivoted Cholesky of ``K_MM``; same data and hyperparameters; calibrated on
        the same terms), so it costs ``O(N M_v**2)`` instead of ``O(N M**2)``.
        ``"auto"``: ``min(M, 1000)``; ``"all"``/``None``: all ``M`` (the exact DTC
        std). Energies and forces always use all ``M``. See
        :mod:`gapkit.model.variance`.
    verbose : bool, optional
        Progress bars of :meth:`fit` and of :meth:`predict` (several batches); ``None``
        (default): in a terminal or Jupyter (see :func:`gapkit.progress.progress_bar`).

    Attributes
    ----------
    descriptor_ : descriptor
        The fitted descriptor of the first term (all terms share its species): the
        SOAP term of the default model.
    terms_ : list of FittedTerm
        Every kernel term with its descriptor, exponent, weight and sparse set.
    species_ : list of int
    e0_ : ReferenceEnergies
    sparse_q_ : ndarray of shape (M, F)
        Sparse environments of a one-term model (``AttributeError`` with several
        terms, such as the default model: use ``terms_[t].sparse_q``).
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
                 delta: float | str = "auto", n_sparse: int | dict | str = "auto",
                 sparse_method: str = "cur", energy_noise: float = 0.001,
                 force_noise: float = 0.02, virial_noise: float | str = "auto",
                 e0: str | dict = "lstsq", jitter: float = 1e-8, optimize: bool = False,
                 noise_by_config_type: bool = False, n_restarts: int = 0,
                 energy_key: str | None = None, forces_key: str | None = None,
                 virial_key: str | None = None, stress_key: str | None = None,
                 use_virials: bool = True, use_forces: bool = True, chunk_size: int = 32,
                 n_jobs: int | None = None,
                 baseline=None, random_state=None, calibrate: bool = True,
                 valid_fraction: float = 0.2, force_std: str = "exact",
                 variance_sparse: int | str | None = "auto", verbose: bool | None = None):
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
        self.stress_key = stress_key
        self.use_virials = use_virials
        self.use_forces = use_forces
        self.chunk_size = chunk_size
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.baseline = baseline
        self.calibrate = calibrate
        self.valid_fraction = valid_fraction
        self.force_std = force_std
        self.variance_sparse = variance_sparse
        self.verbose = verbose

    @property
    def label_keys(self) -> LabelKeys:
        return LabelKeys(energy=self.energy_key, forces=self.forces_key, virial=self.virial_key,
                         stress=getattr(self, "stress_key", None),
                         use_virials=bool(getattr(self, "use_virials", True)))

    def _check_params(self) -> None:
        """Raise ``ValueError`` (naming the parameter) for a setting that cannot fit;
        see :func:`gapkit.model.params.check_params`."""
        check_params(self)
        check_variance_sparse(self.variance_sparse)

    def fit(self, X: Iterable[Atoms], y=None, optimize: bool | None = None,
            client=None, valid=None) -> "GAP":
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
            reduce the factors here (see :mod:`gapkit.gp.streaming`).
        valid : list of ase.Atoms or path, optional
            Labelled validation frames for the calibration (with ``calibrate``);
            default: a held-out ``valid_fraction`` of ``X``.

        Returns
        -------
        self
        """
        self._check_params()
        do_opt = self.optimize if optimize is None else optimize
        valid = None if valid is None else as_frame_list(valid)
        self.state_, self._groups = fit_calibrated_state(self, as_frame_list(X), do_opt, client,
                                                         valid)
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
        if getattr(self, "_groups", None) is None:
            raise NotFittedError("The training factors are not kept in a loaded model; refit")
        names = [k for k, g in self._groups.items() if g.R is not None]
        if theta is None:
            theta = np.log([self.delta_] + [self.noise_[n] for n in names])
        theta = np.asarray(theta, dtype=np.float64)
        sig = {n: float(np.exp(t)) for n, t in zip(names, theta[1:])}
        return evidence.log_marginal_likelihood(self._groups, self.state_.kmm_cholesky,
                                          float(np.exp(theta[0])), sig,
                                          eval_gradient=eval_gradient)

    # ------------------------------------------------------------------ predict
    def check_structure(self, atoms: Atoms, index: int = 0) -> None:
        """Raise a ``ValueError`` naming frame ``index`` if ``atoms`` cannot be predicted
        (overlapping atoms, non-finite positions, degenerate cell, unknown species)."""
        state = self._state()
        check_geometry(atoms, index, neighbour_cutoff=state.descriptor.interaction_range)
        state.descriptor.check_species(atoms, index)

    def _prepare(self, X) -> list[Atoms]:
        self._check_fitted()
        frames = as_frame_list(X)
        for k, atoms in enumerate(frames):
            self.check_structure(atoms, k)
        return frames

    def predict_structure(self, atoms: Atoms, forces: bool = True, stress: bool | None = None,
                          index: int = 0, keep_gradients: bool = False) -> StructurePrediction:
        """Energy, per-atom energies, forces and stress of one (checked) structure.

        Parameters
        ----------
        atoms : ase.Atoms
        forces : bool
        stress : bool, optional
            Default: for fully periodic cells.
        index : int
            Frame index for error messages.
        keep_gradients : bool
            Build the descriptor derivative arrays (needed for force uncertainties)
            instead of the cheaper vector-Jacobian product.

        Returns
        -------
        StructurePrediction
            ``energy`` (eV), ``energies`` (n,) eV, ``forces`` (n, 3) eV/Å, ``stress``
            (6,) eV/Å³ (periodic cells), and the descriptor sets for
            :meth:`std_structure`.
        """
        return predict_batch(self._state(), [atoms], forces, stress, keep_gradients,
                             baseline=self.baseline, offset=index)[0]

    def force_std_mode(self, force_std: str | None = None) -> str:
        """``"fast"`` or ``"exact"``: how force stds are computed (see ``force_std``)."""
        return std.force_std_mode(self._state(), self.force_std if force_std is None else force_std)

    def flag_reference(self, force_std: str | None = None) -> dict:
        """Reference stds of relative flag thresholds (``FlagThreshold(relative=3)``):
        ``{"forces": eV/Å, "energy_per_atom": eV}``. Calibrated models: the typical
        epistemic stds of the most uncertain atom of a calibration frame (largest
        force component, largest local energy; RMS over the frames), for the force
        std mode ``force_std`` (default: the ``force_std`` parameter); otherwise the
        learned noises sigma_F and sigma_E."""
        return std.flag_reference(self._state(), self.force_std if force_std is None else force_std)

    def std_structure(self, atoms: Atoms, prediction: StructurePrediction,
                      forces: bool = True, force_std: str | None = None,
                      full: bool = False) -> PredictionStd:
        """Calibrated stds of one structure from its :meth:`predict_structure` result.

        Parameters
        ----------
        atoms : ase.Atoms
        prediction : StructurePrediction
            Made with ``keep_gradients=True`` when exact force stds are wanted
            (``force_std_mode() == "exact"``).
        forces : bool
            Also the force stds; otherwise energies only (the cheapest).
        force_std : {"fast", "exact"}, optional
            Overrides the ``force_std`` parameter.
        full : bool, default False
            Over all ``M`` sparse columns instead of the variance basis
            (``variance_sparse``): the exact DTC terms, for checks.

        Returns
        -------
        PredictionStd
            With one entry per property; ``forces*`` are ``None`` unless ``forces``.
        """
        return std.std_structure(self._state(), atoms, prediction, forces,
                                 self.force_std if force_std is None else force_std, full)

    def predict(self, X, return_std: bool = False, forces: bool = True,
                stress: bool | None = None, force_std: str | None = None):
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
        force_std : {"fast", "exact"}, optional
            Overrides the ``force_std`` parameter.

        Returns
        -------
        Prediction, or (Prediction, PredictionStd) when ``return_std``.
        """
        frames = self._prepare(X)
        state = self._state()
        mode = self.force_std_mode(force_std) if (return_std and forces) else None
        keep = mode == "exact"
        # with exact force stds the derivative arrays are kept: one structure at a time
        results = []
        groups = batches(frames, 1 if keep else PREDICT_BATCH_ATOMS)
        show = self.verbose if len(groups) > 1 else False  # no bar for one batch (MD)
        with progress_bar(total=len(frames), desc="predict", unit="frame", progress=show) as bar:
            for batch in groups:
                results += predict_batch(state, [frames[i] for i in batch], forces, stress,
                                         keep, baseline=self.baseline, offset=batch[0])
                bar.update(len(batch))
        S = [r.stress if r.stress is not None else np.full(6, np.nan) for r in results]
        any_stress = any(r.stress is not None for r in results)
        pred = Prediction(energy=np.array([r.energy for r in results]),
                          energies=[r.energies for r in results],
                          forces=[r.forces for r in results] if forces else None,
                          stress=np.array(S) if any_stress else None)
        if not return_std:
            return pred
        return pred, std.std_of_predictions(state, frames, results, forces, mode, show)

    # ------------------------------------------------------------------ uncertainty
    def recalibrate(self, X, keep_nystrom: bool = False) -> "GAP":
        """Calibrate the predictive std on labelled validation structures (stored in the
        model); see :mod:`gapkit.model.calibration`.

        Parameters
        ----------
        X : list of ase.Atoms
            Labelled validation structures, not used in training.
        keep_nystrom : bool, default False
            Keep the raw Nyström terms (no shrinking where the model knows the region)
            and fit only the posterior and aleatoric scales: conservative far from the
            data, usually too wide in distribution.

        Returns
        -------
        self
        """
        state = self._state()
        frames = as_frame_list(X)  # calibrate_on checks each structure
        cal = calibrate_on(state, frames, self.label_keys, self.baseline,
                           source=f"recalibrate: {len(frames)} validation frames",
                           keep_nystrom=keep_nystrom, progress=self.verbose)
        self.state_ = state.replace(calibration=cal)
        return self

    def local_energy_covariance(self, atoms: Atoms) -> np.ndarray:
        """Raw epistemic covariance of the local energies of one structure, (n, n) eV²;
        see :func:`gapkit.model.variance.local_energy_covariance`."""
        state = self._state()
        state.descriptor.check_species(atoms)
        return local_energy_covariance(state, terms.compute(state.terms, atoms, gradients=False))

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Save to a versioned, pickle-free file; see :mod:`gapkit.model.model_file`."""
        params = self.get_params(deep=False)
        params.pop("descriptor", None)
        baseline = params.pop("baseline", None)
        return model_file.save(path, self._state(), params, self.descriptor, baseline)

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


def save(model: GAP, path) -> Path:
    """Save a fitted model: the same as ``model.save(path)``."""
    return model.save(path)
