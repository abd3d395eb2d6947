"""Active learning: grow a GAP training set where the model is uncertain.

:func:`learn` runs the loop

1. fit a clone of the model on the current training set (once before the first
   iteration, then after every iteration that added data);
2. **sample** configurations with the current model: short molecular dynamics
   (``sampler="md"``: Langevin or velocity Verlet with a :class:`gapkit.GAPCalculator`
   attached, started from structures of the training set, one snapshot every
   ``sample_interval`` steps; a trajectory stops at its first flagged snapshot or
   when it explodes) or random displacements (``sampler="rattle"``, cheap);
3. compute the uncertainty of every sample (``model.predict(..., return_std=True)``)
   and **flag** those that pass the :class:`gapkit.FlagThreshold`;
4. **select** up to ``max_new_per_iteration`` flagged samples, most uncertain first,
   skipping near-duplicates;
5. **label** them with the oracle (any ASE calculator: energy, forces, and stress for
   fully periodic cells, stored as a ``SinglePointCalculator``) and add them to the
   training set.

It stops when an iteration flags nothing and no trajectory exploded (``"no flags"``),
when the oracle budget is spent (``"budget"``), or after ``n_iterations``
(``"iterations"``). Exploded samples (atoms much closer than in the starting
structure, or absurd forces) are never sent to the oracle.

Units: energies in eV, forces in eV/Å, energies per atom in eV/atom, temperatures in
K, time steps in fs, friction in 1/fs, times in s.

Log entries
-----------
``ActiveLearningResult.initial`` describes the first fit (iteration 0) and every
entry of ``ActiveLearningResult.log`` one iteration ``i >= 1``: the samples drawn
with the model of iteration ``i - 1``, what was added, and the model refitted on the
grown set. Keys:

``iteration``, ``n_train`` (after the iteration), ``n_sampled``, ``n_flagged``,
``n_exploded`` (trajectories or rattled structures discarded as unphysical),
``n_selected``, ``n_added``, ``n_oracle_calls`` (cumulative, start labelling
included), ``n_oracle_failures`` (cumulative), ``sigma_forces_max`` /
``sigma_forces_mean`` (max / mean over the samples of each sample's largest
epistemic force-component std, eV/Å), ``sigma_energy_max`` / ``sigma_energy_mean``
(epistemic energy std per atom, eV/atom), ``selected_scores`` (score of every
selected sample, see below), ``fit_time``, ``sample_time``, ``oracle_time`` (s), and
with a test set ``test_energy_mae_per_atom``, ``test_energy_rmse_per_atom``
(eV/atom), ``test_forces_mae``, ``test_forces_rmse`` (eV/Å) of the refitted model.
Missing values are ``None``.

The **score** of a sample is its largest ratio of std to threshold over the
criteria set in the :class:`~gapkit.FlagThreshold`
(:meth:`~gapkit.FlagThreshold.structure_scores`; a sample is flagged exactly when its
score is above 1);
selected training structures carry it in ``atoms.info["al_score"]`` together with
``al_iteration``, ``al_sampler``, ``al_sigma_forces`` and ``al_sigma_energy``.

Restart files
-------------
With ``workdir``, every iteration ends by writing ``train.xyz``, ``model.npz`` and,
last, ``log.json`` (the commit record), each atomically and without pickle; see
:mod:`gapkit.physics.active_state`. ``restart=True`` continues the iteration
numbering, the oracle budget and the random stream.

Modules
-------
This module holds the loop; :mod:`gapkit.physics.sampling` the walkers, scoring and
selection, :mod:`gapkit.physics.labelling` the oracle labelling and
:mod:`gapkit.physics.active_state` the restart files and the random stream.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms

from gapkit.metrics import error_metrics
from gapkit.physics.active_state import (FORMAT, VERSION, check_seed_argument,
                                         iteration_random_state, open_workdir, read_state,
                                         run_seed, write_state)
from gapkit.physics.labelling import (as_frames, copy_labelled, is_labelled,
                                      label_with_oracle, labelled_copies)
from gapkit.physics.sampling import (DYNAMICS, SAMPLERS, Sample, SamplingSettings,
                                     sample_and_select)
from gapkit.progress import progress_bar
from gapkit.uncertainty.flags import FlagThreshold
from gapkit.utils import seeded_clone, to_jsonable

logger = logging.getLogger(__name__)

TEST_KEYS = ("test_energy_mae_per_atom", "test_energy_rmse_per_atom", "test_forces_mae",
             "test_forces_rmse")


# ----------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------
@dataclass
class ActiveLearningResult:
    """Outcome of :func:`learn`.

    Attributes
    ----------
    model : GAP
        The model fitted on the final training set.
    train : list of ase.Atoms
        The final training set, labelled (``SinglePointCalculator`` results); the
        start structures first, then the added ones in the order they were added.
    log : list of dict
        One entry per iteration (see the module docstring for the keys).
    stopped_because : {"no flags", "budget", "iterations"}
    initial : dict
        The first fit: ``iteration`` 0, ``n_train``, ``n_oracle_calls`` (for
        labelling the start structures), ``fit_time`` and the test errors.
    """

    model: object
    train: list
    log: list
    stopped_because: str
    initial: dict = field(default_factory=dict)

    @property
    def n_oracle_calls(self) -> int:
        """Oracle calls so far, start labelling included."""
        if self.log:
            return int(self.log[-1]["n_oracle_calls"])
        return int(self.initial.get("n_oracle_calls", 0))

    def to_dict(self) -> dict:
        """JSON-ready summary: ``stopped_because``, ``n_train``, ``n_oracle_calls``,
        ``initial`` and ``log`` (the model and the structures are not included)."""
        return to_jsonable({"stopped_because": self.stopped_because, "n_train": len(self.train),
                          "n_oracle_calls": self.n_oracle_calls, "initial": self.initial,
                          "log": self.log})


# ----------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _check_objects(model, oracle, threshold) -> None:
    if not (hasattr(model, "fit") and hasattr(model, "predict") and hasattr(model, "get_params")):
        raise TypeError(f"model must be a gapkit GAP estimator, got {type(model).__name__}")
    if not (hasattr(oracle, "get_property") or hasattr(oracle, "calculate")):
        raise TypeError(f"oracle must be an ASE calculator, got {type(oracle).__name__}")
    if not isinstance(threshold, FlagThreshold):
        raise TypeError("threshold must be a gapkit.FlagThreshold, e.g. FlagThreshold(forces=0.1), "
                        f"got {type(threshold).__name__}")


def _sampling_settings(sampler, dynamics, md_steps, sample_interval, n_walkers, md_temperature,
                       timestep, friction, rattle_stdev, dedup_distance) -> SamplingSettings:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if dynamics not in DYNAMICS:
        raise ValueError(f"dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    md_steps = _check_int("md_steps", md_steps, 1)
    sample_interval = _check_int("sample_interval", sample_interval, 1)
    if sample_interval > md_steps:
        raise ValueError(f"sample_interval ({sample_interval}) must not exceed md_steps "
                         f"({md_steps}): no snapshot would be taken")
    n_walkers = _check_int("n_walkers", n_walkers, 1)
    temperature = _check_positive("md_temperature (K)", md_temperature)
    timestep = _check_positive("timestep (fs)", timestep)
    friction = _check_positive("friction (1/fs)", friction)
    rattle_stdev = _check_positive("rattle_stdev (Å)", rattle_stdev)
    if not (isinstance(dedup_distance, (int, float)) and dedup_distance >= 0):
        raise ValueError(f"dedup_distance must be a number >= 0, got {dedup_distance!r}")
    return SamplingSettings(sampler=sampler, md_steps=md_steps, sample_interval=sample_interval,
                            temperature=temperature, timestep=timestep, dynamics=dynamics,
                            friction=friction, rattle_stdev=rattle_stdev, n_walkers=n_walkers,
                            dedup_distance=float(dedup_distance))


# ----------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------
def learn(model, oracle, start, *, threshold: FlagThreshold, test=None,
          n_iterations: int = 10, budget: int = 50, sampler: str = "md",
          md_steps: int = 200, md_temperature: float = 500.0, timestep: float = 1.0,
          dynamics: str = "langevin", friction: float = 0.02, sample_interval: int = 10,
          rattle_stdev: float = 0.1, n_walkers: int = 4,
          max_new_per_iteration: int | None = None, dedup_distance: float = 1e-4,
          optimize: bool | None = None, workdir: str | os.PathLike | None = None,
          restart: bool = False, random_state=None,
          progress: bool | Callable[[dict], None] | None = None) -> ActiveLearningResult:
    """Grow a training set by sampling with the model and labelling what it is unsure of.

    Parameters
    ----------
    model : GAP
        Estimator template, fitted or not: only its parameters are used. It is cloned
        (``sklearn.base.clone``) and fitted on the current training set at the start
        and after every iteration that added data. A clone whose ``random_state`` is
        None gets a seed drawn from ``random_state`` here.
    oracle : ase Calculator
        Reference method that labels selected structures (e.g. ``EMT()``, tblite's
        ``TBLite``): energy, forces, and stress for fully periodic cells. A structure
        on which the oracle raises is skipped with a warning; the call still counts
        toward the budget.
    start : ase.Atoms or list of ase.Atoms
        Initial structures. Labelled ones (calculator results, or the model's label
        keys) are used as they are; unlabelled ones are labelled by the oracle, which
        counts toward ``budget``. Ignored when resuming from ``workdir``.
    threshold : FlagThreshold
        When a sample is uncertain enough to be labelled.
    test : list of ase.Atoms, optional
        Labelled held-out structures; their errors are logged after every fit.
    n_iterations : int, default 10
        Total number of iterations (resumed runs count the ones already done).
    budget : int, default 50
        Maximum total number of oracle calls, start labelling included.
    sampler : {"md", "rattle"}, default "md"
        Molecular dynamics with the model, or Gaussian displacements of training
        structures.
    md_steps : int, default 200
        Steps per MD trajectory; with ``sampler="rattle"``, ``md_steps //
        sample_interval`` displaced copies are drawn per walker.
    md_temperature : float, default 500
        MD temperature in K (initial Maxwell-Boltzmann velocities and thermostat).
    timestep : float, default 1.0
        MD time step in fs.
    dynamics : {"langevin", "verlet"}, default "langevin"
        Langevin thermostat or plain velocity Verlet (NVE).
    friction : float, default 0.02
        Langevin friction in 1/fs.
    sample_interval : int, default 10
        MD steps between snapshots whose uncertainty is evaluated.
    rattle_stdev : float, default 0.1
        Std of the random displacements in Å (``sampler="rattle"``).
    n_walkers : int, default 4
        Trajectories (or sets of rattled copies) per iteration, each started from a
        training structure drawn at random (without replacement while possible).
    max_new_per_iteration : int, optional
        Most structures labelled per iteration; default ``n_walkers``. An MD walker
        stops at its first flagged snapshot, so it contributes at most one.
    dedup_distance : float, default 1e-4
        Two selected samples whose structure fingerprints (per species, the mean
        descriptor vector times the species fraction; concatenated and scaled to unit
        length; the descriptor of the first term with unit-length vectors, e.g. SOAP,
        see :func:`gapkit.physics.sampling.fingerprint`) are closer than this
        Euclidean distance count as duplicates; the less uncertain one is skipped.
    optimize : bool, optional
        Learn ``delta`` and the noises at every fit (``GAP.fit(optimize=...)``);
        ``None`` keeps the model's own ``optimize`` setting.
    workdir : path, optional
        Folder for the restart files (``train.xyz``, ``model.npz``, ``log.json``),
        written atomically after the first fit and after every iteration.
    restart : bool, default False
        Resume from ``workdir`` (which is then required). Without saved state there,
        a fresh run starts (with a warning).
    random_state : int, numpy RandomState or None
        Seed of all randomness (walker starts, velocities, thermostat noise, rattles,
        sparse-point seeds of the clones), as in scikit-learn: an int is the seed, a
        RandomState (or None: numpy's global one) draws it. The seed is stored in
        ``log.json`` so that a resumed run continues the same random stream.
    progress : bool or callable, optional
        ``True`` shows a progress bar over iterations (``None``: in a terminal or Jupyter);
        a callable is called with every log entry (``initial`` first) after it is
        complete.

    Returns
    -------
    ActiveLearningResult

    Raises
    ------
    ValueError
        For invalid arguments, a budget too small to label the unlabelled start
        structures (or the oracle failing on one), an unlabelled test set, an
        existing run in ``workdir`` without ``restart=True``, or inconsistent
        restart files.
    TypeError
        If ``threshold`` is not a FlagThreshold or the structures are not Atoms.

    Examples
    --------
    >>> from ase.calculators.emt import EMT
    >>> res = learn(GAP(SOAP(r_cut=4.0, n_max=4, l_max=3), n_sparse=200), EMT(), start,
    ...             threshold=FlagThreshold(forces=0.01), test=test, budget=40,
    ...             md_temperature=1200, timestep=2.0, workdir="al_run",
    ...             random_state=0)  # doctest: +SKIP
    >>> res.stopped_because, len(res.train), res.log[-1]["test_forces_mae"]  # doctest: +SKIP
    """
    _check_objects(model, oracle, threshold)
    settings = _sampling_settings(sampler, dynamics, md_steps, sample_interval, n_walkers,
                                  md_temperature, timestep, friction, rattle_stdev,
                                  dedup_distance)
    n_iterations = _check_int("n_iterations", n_iterations, 0)
    budget = _check_int("budget", budget, 0)
    max_new = settings.n_walkers if max_new_per_iteration is None else _check_int(
        "max_new_per_iteration", max_new_per_iteration, 1)
    if optimize is not None and not isinstance(optimize, (bool, np.bool_)):
        raise ValueError(f"optimize must be True, False or None, got {optimize!r}")
    if restart and workdir is None:
        raise ValueError("restart=True needs the workdir of the run to resume")
    check_seed_argument(random_state)
    test = None if test is None else labelled_copies(test, model, "test")
    wd, has_state = open_workdir(workdir, restart)

    loop = _Loop(model, oracle, threshold, settings, budget=budget, max_new=max_new,
                 optimize=optimize, test=test, workdir=wd,
                 callback=progress if callable(progress) else None)
    if has_state:
        loop.resume()
    else:
        loop.begin(start, random_state)
    return loop.run(n_iterations, show_bar=False if callable(progress) else progress)


class _Loop:
    """One run of :func:`learn`: the training set, the fitted model, counters and log."""

    def __init__(self, model, oracle, threshold: FlagThreshold, settings: SamplingSettings, *,
                 budget: int, max_new: int, optimize, test: list[Atoms] | None,
                 workdir: Path | None, callback: Callable[[dict], None] | None):
        self.model, self.oracle, self.threshold, self.settings = model, oracle, threshold, settings
        self.budget, self.max_new, self.optimize, self.test = budget, max_new, optimize, test
        self.workdir, self.callback = workdir, callback
        self.seed = 0
        self.train: list[Atoms] = []
        self.fitted = None
        self.n_calls = self.n_failures = 0
        self.initial: dict = {}
        self.log: list[dict] = []

    # ------------------------------------------------------------------ fitting
    def fit(self, rng: np.random.RandomState) -> float:
        """Fit a clone of the template on the training set; returns the time (s)."""
        m = seeded_clone(self.model, rng)
        t0 = time.perf_counter()
        m.fit(self.train, optimize=self.optimize)
        dt = time.perf_counter() - t0
        m.extra_ = {**getattr(m, "extra_", {}), "active_learning": {
            "n_train": len(self.train), "n_oracle_calls": self.n_calls}}
        self.fitted = m
        return dt

    def test_errors(self) -> dict:
        """Test-set errors of the fitted model (None without a test set)."""
        if self.test is None:
            return {k: None for k in TEST_KEYS}
        e = error_metrics(self.fitted.predict(self.test, stress=False), self.test,
                          self.fitted.label_keys)
        return {k: e[k[len("test_"):]] for k in TEST_KEYS}

    # ------------------------------------------------------------------ start
    def resume(self) -> None:
        """Continue the run saved in the workdir."""
        state, self.train, self.fitted = read_state(self.workdir, self.model)
        self.seed = int(state["seed"])
        self.n_calls = int(state["n_oracle_calls"])
        self.n_failures = int(state.get("n_oracle_failures", 0))
        self.initial = state["initial"]
        self.log = list(state["log"])
        if self.fitted is None:
            self.fit(iteration_random_state(self.seed, len(self.log)))
        logger.info("resuming from '%s': %d iterations done, %d training structures, "
                    "%d oracle calls", self.workdir, len(self.log), len(self.train), self.n_calls)

    def begin(self, start, random_state) -> None:
        """Label the start structures (where needed), fit and save the first state."""
        self.seed = run_seed(random_state)
        self.train = [copy_labelled(a) for a in as_frames(start, "start")]
        todo = [k for k, a in enumerate(self.train) if not is_labelled(a, self.model)]
        if len(todo) > self.budget:
            raise ValueError(f"{len(todo)} start structure(s) need labels but the oracle budget "
                             f"is {self.budget}")
        t0 = time.perf_counter()
        for k in todo:
            self.n_calls += 1
            try:
                self.train[k] = label_with_oracle(self.train[k], self.oracle, self.model)
            except Exception as exc:  # an oracle may fail in many ways (SCF, I/O, ...)
                raise ValueError(f"the oracle failed on start structure {k}: {exc}") from exc
        for a in self.train:
            a.info.setdefault("al_iteration", 0)
            a.info.setdefault("al_sampler", "start")
        dt = self.fit(iteration_random_state(self.seed, 0))
        self.initial = {"iteration": 0, "n_train": len(self.train),
                        "n_oracle_calls": self.n_calls, "fit_time": dt,
                        "oracle_time": time.perf_counter() - t0 - dt, **self.test_errors()}
        logger.info("initial fit: %d structures (%d labelled by the oracle), %.2f s",
                    len(self.train), self.n_calls, dt)
        if self.callback is not None:
            self.callback(dict(self.initial))
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.save(None)

    # ------------------------------------------------------------------ restart files
    def save(self, stopped: str | None) -> None:
        """Write the restart files (with a workdir)."""
        if self.workdir is None:
            return
        t, s = self.threshold, self.settings
        write_state(self.workdir, self.fitted, self.train, {
            "format": FORMAT, "version": VERSION, "seed": self.seed, "n_train": len(self.train),
            "n_oracle_calls": self.n_calls, "n_oracle_failures": self.n_failures,
            "stopped_because": stopped, "threshold": {
                "forces": t.forces, "energy_per_atom": t.energy_per_atom,
                "relative": t.relative, "use": t.use},
            "settings": {"sampler": s.sampler, "md_steps": s.md_steps,
                         "md_temperature": s.temperature, "timestep": s.timestep,
                         "dynamics": s.dynamics, "n_walkers": s.n_walkers,
                         "max_new_per_iteration": self.max_new, "budget": self.budget},
            "initial": self.initial, "log": self.log})

    # ------------------------------------------------------------------ iterations
    def label(self, it: int, selected: list[Sample]) -> list[Atoms]:
        """Oracle labels of the selected samples; failures are skipped and counted."""
        added = []
        for s in selected:
            self.n_calls += 1
            try:
                a = label_with_oracle(s.atoms, self.oracle, self.fitted)
            except Exception as exc:  # an oracle may fail in many ways (SCF, I/O, ...)
                self.n_failures += 1
                logger.warning("iteration %d: the oracle failed on a selected structure "
                               "(skipped): %s", it, exc)
                continue
            a.info.update(al_iteration=it, al_sampler=self.settings.sampler, al_score=s.score,
                          al_sigma_forces=s.sigma_forces, al_sigma_energy=s.sigma_energy)
            added.append(a)
        return added

    def iterate(self, it: int) -> dict:
        """Sample, label, refit; returns the (JSON-ready) log entry of iteration ``it``."""
        rng = iteration_random_state(self.seed, it)
        sampled, selected = sample_and_select(self.fitted, self.train, rng, self.threshold,
                                              self.settings,
                                              min(self.max_new, self.budget - self.n_calls))
        t0 = time.perf_counter()
        added = self.label(it, selected)
        oracle_time = time.perf_counter() - t0
        self.train.extend(added)
        if added:
            fit_time = self.fit(rng)
            errs = self.test_errors()
        else:
            fit_time = 0.0
            prev = self.log[-1] if self.log else self.initial
            errs = {k: prev.get(k) for k in prev if k.startswith("test_")}
        entry = to_jsonable({"iteration": it, **sampled, "n_added": len(added),
                             "n_train": len(self.train), "n_oracle_calls": self.n_calls,
                             "n_oracle_failures": self.n_failures, "oracle_time": oracle_time,
                             "fit_time": fit_time, **errs})
        self.log.append(entry)
        logger.info("iteration %d: %d sampled, %d flagged, %d added (n_train=%d, oracle "
                    "calls %d/%d), max sigma_F %.3g eV/Å, test F MAE %s eV/Å", it,
                    entry["n_sampled"], entry["n_flagged"], entry["n_added"], len(self.train),
                    self.n_calls, self.budget, entry["sigma_forces_max"] or float("nan"),
                    entry.get("test_forces_mae"))
        return entry

    def run(self, n_iterations: int, show_bar: bool | None) -> ActiveLearningResult:
        """Iterate up to ``n_iterations`` (in total) or until a stop criterion."""
        stopped = "iterations"
        done = len(self.log)
        bar = progress_bar(total=max(n_iterations - done, 0), desc="active learning",
                           unit="iteration", progress=show_bar)
        try:
            for it in range(done + 1, n_iterations + 1):
                if self.n_calls >= self.budget:
                    stopped = "budget"
                    break
                entry = self.iterate(it)
                bar.update(1)
                if self.callback is not None:
                    self.callback(dict(entry))
                if entry["n_flagged"] == 0 and entry["n_exploded"] == 0:
                    stopped = "no flags"
                elif self.n_calls >= self.budget:
                    stopped = "budget"
                else:
                    stopped = "iterations"
                self.save(stopped if (stopped != "iterations" or it == n_iterations) else None)
                if stopped != "iterations":
                    break
        finally:
            bar.close()
        if len(self.log) == done:  # nothing ran: record why
            self.save(stopped)
        logger.info("active learning stopped (%s): %d training structures, %d oracle calls",
                    stopped, len(self.train), self.n_calls)
        return ActiveLearningResult(model=self.fitted, train=self.train, log=self.log,
                                    stopped_because=stopped, initial=self.initial)
