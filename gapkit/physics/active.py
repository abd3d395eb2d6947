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
criteria set in the :class:`~gapkit.FlagThreshold` (a flagged sample has score > 1);
selected training structures carry it in ``atoms.info["al_score"]`` together with
``al_iteration``, ``al_sampler``, ``al_sigma_forces`` and ``al_sigma_energy``.

Restart files
-------------
With ``workdir``, every iteration ends by writing, each atomically (temporary file
then ``os.replace``), ``train.xyz`` (extxyz with the labels), ``model.npz``
(:func:`gapkit.save`, the model fitted on ``train.xyz``) and finally ``log.json``
(format ``gapkit-active-learning`` version 1: the counters, the random seed, the
initial entry and the log). ``log.json`` is written last and is the commit record:
``restart=True`` reads it, truncates ``train.xyz`` to its ``n_train`` frames if a
crash left extra frames, reuses ``model.npz`` when it matches (else refits), and
continues the iteration numbering, the oracle budget and the random stream. No
pickle is involved.
"""

from __future__ import annotations

import io as _io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from sklearn.base import clone
from tqdm.auto import tqdm

from gapkit.utils import to_jsonable
from gapkit.uncertainty.flags import FlagThreshold

logger = logging.getLogger(__name__)

FORMAT = "gapkit-active-learning"
VERSION = 1
SAMPLERS = ("md", "rattle")
DYNAMICS = ("langevin", "verlet")
STOP_REASONS = ("no flags", "budget", "iterations")

#: A sample is discarded as exploded when two atoms come closer than this fraction
#: of the closest distance in the structure its trajectory (or rattle) started from.
EXPLOSION_DISTANCE_RATIO = 0.5
#: ... or when a force component predicted along the trajectory exceeds this (eV/Å).
EXPLOSION_MAX_FORCE = 50.0

TRAIN_FILE = "train.xyz"
LOG_FILE = "log.json"
MODEL_FILE = "model.npz"


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


@dataclass
class _Sample:
    atoms: Atoms
    sigma_forces: float  # largest epistemic force-component std, eV/Å
    sigma_energy: float  # epistemic energy std per atom, eV/atom
    score: float
    flagged: bool
    walker: int


class _StopWalker(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------------------------
# helpers
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


def _frames(x, what: str) -> list[Atoms]:
    if isinstance(x, Atoms):
        return [x]
    try:
        out = list(x)
    except TypeError:
        raise TypeError(f"{what} must be ase.Atoms or a list of ase.Atoms, "
                        f"got {type(x).__name__}") from None
    if not out:
        raise ValueError(f"{what} is empty: give at least one structure")
    for k, a in enumerate(out):
        if not isinstance(a, Atoms):
            raise TypeError(f"{what}[{k}]: expected ase.Atoms, got {type(a).__name__}")
    return out


def _copy_labelled(atoms: Atoms) -> Atoms:
    """A copy that keeps calculator results as a SinglePointCalculator."""
    a = atoms.copy()
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    keep = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
            for k, v in results.items() if k in ("energy", "free_energy", "forces", "stress")}
    if keep:
        a.calc = SinglePointCalculator(a, **keep)
    return a


def _is_labelled(atoms: Atoms, model) -> bool:
    from gapkit.data import get_labels

    try:
        get_labels(atoms, model.label_keys, require_forces=bool(getattr(model, "use_forces", True)))
    except ValueError:
        return False
    return True


def _label(atoms: Atoms, oracle, model) -> Atoms:
    """Label a copy of ``atoms`` with the oracle: energy (eV), forces (eV/Å) and, for
    fully periodic cells, stress (eV/Å³), as SinglePointCalculator results (and under
    the model's custom label keys, if it has any)."""
    a = atoms.copy()
    work = atoms.copy()
    work.calc = oracle
    energy = float(work.get_potential_energy())
    forces = np.array(work.get_forces(), dtype=np.float64)
    stress = None
    if a.get_pbc().all():
        try:
            stress = np.array(work.get_stress(voigt=True), dtype=np.float64)
        except (PropertyNotImplementedError, NotImplementedError):
            stress = None
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        raise ValueError("the oracle returned non-finite energy or forces")
    results = {"energy": energy, "forces": forces}
    if stress is not None:
        results["stress"] = stress
    a.calc = SinglePointCalculator(a, **results)
    keys = model.label_keys
    if keys.energy is not None:
        a.info[keys.energy] = energy
    if keys.forces is not None:
        a.arrays[keys.forces] = forces.copy()
    if keys.virial is not None and stress is not None:
        from gapkit.data import voigt_to_matrix

        a.info[keys.virial] = (-voigt_to_matrix(stress) * a.get_volume()).ravel()
    return a


def _closest_distance(atoms: Atoms) -> float:
    """Closest interatomic distance in Å (periodic images included); inf for one atom."""
    if len(atoms) < 2 and not atoms.get_pbc().any():
        return float("inf")
    if not atoms.get_pbc().any():
        from scipy.spatial import cKDTree

        d, _ = cKDTree(atoms.get_positions()).query(atoms.get_positions(), k=2)
        return float(d[:, 1].min())
    from ase.neighborlist import neighbor_list

    for cutoff in (3.0, 6.0, 12.0):
        d = neighbor_list("d", atoms, cutoff)
        if len(d):
            return float(d.min())
    return float("inf")


def _scores(threshold: FlagThreshold, std, frames: Sequence[Atoms], noise: dict) -> np.ndarray:
    """Largest ratio of std to threshold over the threshold's criteria, shape (n_frames,).

    Mirrors :meth:`FlagThreshold.evaluate`: a structure is flagged iff its score is
    above 1 (up to the strictness of the comparisons).
    """
    from gapkit.uncertainty.calibration import noise_level

    epi = threshold.use == "epistemic"
    f_std = std.forces_epistemic if epi else std.forces
    e_std = std.energies_epistemic if epi else std.energies
    E_std = std.energy_epistemic if epi else std.energy
    sF, sE = noise_level(noise, "forces"), noise_level(noise, "energy")
    out = np.zeros(len(frames))
    for k, atoms in enumerate(frames):
        n = len(atoms)
        sf = float(np.max(f_std[k])) if f_std is not None else 0.0
        se = float(np.max(e_std[k]))
        r = [0.0]
        if threshold.forces is not None:
            r.append(sf / threshold.forces)
        if threshold.energy_per_atom is not None:
            r.append(max(se, float(E_std[k]) / n) / threshold.energy_per_atom)
        if threshold.relative is not None:
            if sF > 0:
                r.append(sf / (threshold.relative * sF))
            if sE > 0:
                r.append(se / (threshold.relative * sE))
        out[k] = max(r)
    return out


def _assess(model, frames: list[Atoms], threshold: FlagThreshold, walker: int) -> list[_Sample]:
    """Predict the stds of ``frames`` and wrap them as flagged/scored samples."""
    _, std = model.predict(frames, return_std=True, forces=True, stress=False)
    flags = threshold.evaluate(std, frames, model.noise_)
    scores = _scores(threshold, std, frames, model.noise_)
    out = []
    for k, atoms in enumerate(frames):
        out.append(_Sample(atoms=atoms,
                           sigma_forces=float(np.max(std.forces_epistemic[k])),
                           sigma_energy=float(std.energy_epistemic[k]) / len(atoms),
                           score=float(scores[k]), flagged=bool(flags.structures[k]),
                           walker=walker))
    return out


def _fingerprint(model, atoms: Atoms) -> np.ndarray:
    """Unit-length mean of the normalised SOAP vectors of a structure, per species."""
    ds = model.descriptor_.compute(atoms, gradients=False)
    parts = []
    for z in model.species_:
        sel = ds.numbers == z
        parts.append(ds.q[sel].mean(0) * sel.mean() if sel.any() else np.zeros(ds.q.shape[1]))
    v = np.concatenate(parts)
    return v / max(np.linalg.norm(v), 1e-300)


def _rng_for(seed: int, iteration: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(iteration)])


def _seeded_clone(model, rng: np.random.Generator):
    m = clone(model)
    if getattr(m, "random_state", None) is None:
        m.set_params(random_state=int(rng.integers(2 ** 31 - 1)))
    return m


# ----------------------------------------------------------------------------------
# samplers
# ----------------------------------------------------------------------------------
def _md_walker(model, start: Atoms, rng: np.random.Generator, threshold: FlagThreshold,
               walker: int, *, md_steps: int, sample_interval: int, temperature: float,
               timestep: float, dynamics: str, friction: float) -> tuple[list[_Sample], bool]:
    """One MD trajectory with the model; returns its samples and whether it exploded."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet

    from gapkit.calculator import GAPCalculator

    atoms = start.copy()
    atoms.calc = GAPCalculator(model)
    d_min = EXPLOSION_DISTANCE_RATIO * _closest_distance(atoms)
    masses = atoms.get_masses()[:, None]  # Maxwell-Boltzmann momenta at `temperature`
    kick = rng.standard_normal((len(atoms), 3))
    atoms.set_momenta(np.sqrt(masses * units.kB * temperature) * kick)
    Stationary(atoms)
    if dynamics == "langevin":
        dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature,
                       friction=friction / units.fs, fixcm=False, rng=rng)
    else:
        dyn = VelocityVerlet(atoms, timestep * units.fs)
    samples: list[_Sample] = []

    def observe():
        if dyn.nsteps == 0:
            return
        f = atoms.calc.results.get("forces")
        if f is None or not np.all(np.isfinite(f)) or np.max(np.abs(f)) > EXPLOSION_MAX_FORCE:
            raise _StopWalker("exploded")
        if dyn.nsteps % sample_interval:
            return
        snap = atoms.copy()
        snap.arrays.pop("momenta", None)  # a snapshot is a geometry, not an MD state
        if _closest_distance(snap) < d_min:
            raise _StopWalker("exploded")
        s = _assess(model, [snap], threshold, walker)[0]
        samples.append(s)
        if s.flagged:
            raise _StopWalker("flagged")

    dyn.attach(observe, interval=1)
    try:
        dyn.run(md_steps)
    except _StopWalker as stop:
        return samples, stop.reason == "exploded"
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        logger.debug("walker %d stopped by %s: %s", walker, type(exc).__name__, exc)
        return samples, True
    return samples, False


def _rattle_walker(model, start: Atoms, rng: np.random.Generator, threshold: FlagThreshold,
                   walker: int, *, n_samples: int, stdev: float) -> tuple[list[_Sample], int]:
    """Gaussian displacements (std ``stdev`` Å per component) of one structure."""
    d_min = EXPLOSION_DISTANCE_RATIO * _closest_distance(start)
    frames, n_bad = [], 0
    for _ in range(n_samples):
        a = start.copy()
        a.positions = a.positions + rng.normal(0.0, stdev, size=a.positions.shape)
        if _closest_distance(a) < d_min:
            n_bad += 1
            continue
        frames.append(a)
    return (_assess(model, frames, threshold, walker) if frames else []), n_bad


# ----------------------------------------------------------------------------------
# restart files
# ----------------------------------------------------------------------------------
def _write_state(workdir: Path, model, train: list[Atoms], state: dict) -> None:
    from ase.io import write

    from gapkit.utils import atomic_write_bytes

    buf = _io.StringIO()
    write(buf, train, format="extxyz")
    atomic_write_bytes(workdir / TRAIN_FILE, buf.getvalue().encode("utf-8"))
    model.save(workdir / MODEL_FILE)
    payload = json.dumps(to_jsonable(state), indent=1)
    atomic_write_bytes(workdir / LOG_FILE, payload.encode("utf-8"))


def _read_state(workdir: Path, model_template) -> tuple[dict, list[Atoms], object | None]:
    from ase.io import read

    from gapkit.model.model_file import load

    try:
        state = json.loads((workdir / LOG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the active-learning state "
                         f"'{workdir / LOG_FILE}': {exc}") from exc
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError(f"'{workdir / LOG_FILE}' is not a {FORMAT} v{VERSION} file "
                         f"(format={state.get('format')!r}, version={state.get('version')!r})")
    n_train = int(state["n_train"])
    try:
        train = read(str(workdir / TRAIN_FILE), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types for malformed files
        raise ValueError(f"cannot read '{workdir / TRAIN_FILE}': {exc}") from exc
    if len(train) < n_train:
        raise ValueError(f"'{workdir / TRAIN_FILE}' has {len(train)} frames but {LOG_FILE} "
                         f"records {n_train}: the restart files are inconsistent")
    if len(train) > n_train:
        logger.warning("discarding %d frame(s) of an unfinished iteration from '%s'",
                       len(train) - n_train, workdir / TRAIN_FILE)
        train = train[:n_train]
    fitted = None
    path = workdir / MODEL_FILE
    if path.is_file():
        try:
            fitted = load(path, baseline=getattr(model_template, "baseline", None))
        except ValueError as exc:
            logger.warning("cannot reuse '%s' (%s); refitting", path, exc)
        else:
            info = getattr(fitted, "extra_", {}).get("active_learning", {})
            if info.get("n_train") != n_train:
                logger.warning("'%s' does not match the training set; refitting", path)
                fitted = None
    return state, train, fitted


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
        normalised SOAP vector times the species fraction; concatenated and scaled to
        unit length) are closer than this Euclidean distance count as duplicates; the
        less uncertain one is skipped.
    optimize : bool, optional
        Learn ``delta`` and the noises at every fit (``GAP.fit(optimize=...)``);
        ``None`` keeps the model's own ``optimize`` setting.
    workdir : path, optional
        Folder for the restart files (``train.xyz``, ``model.npz``, ``log.json``),
        written atomically after the first fit and after every iteration.
    restart : bool, default False
        Resume from ``workdir`` (which is then required). Without saved state there,
        a fresh run starts (with a warning).
    random_state : int, numpy Generator or None
        Seed of all randomness (walker starts, velocities, thermostat noise, rattles,
        sparse-point seeds of the clones). The seed used is stored in ``log.json`` so
        that a resumed run continues the same random stream.
    progress : bool or callable, optional
        ``True`` shows a progress bar over iterations (``None``: only in a terminal);
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
    # ---------------------------------------------------------------- arguments
    if not (hasattr(model, "fit") and hasattr(model, "predict") and hasattr(model, "get_params")):
        raise TypeError(f"model must be a gapkit GAP estimator, got {type(model).__name__}")
    if not (hasattr(oracle, "get_property") or hasattr(oracle, "calculate")):
        raise TypeError(f"oracle must be an ASE calculator, got {type(oracle).__name__}")
    if not isinstance(threshold, FlagThreshold):
        raise TypeError("threshold must be a gapkit.FlagThreshold, e.g. FlagThreshold(forces=0.1), "
                        f"got {type(threshold).__name__}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if dynamics not in DYNAMICS:
        raise ValueError(f"dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    n_iterations = _check_int("n_iterations", n_iterations, 0)
    budget = _check_int("budget", budget, 0)
    md_steps = _check_int("md_steps", md_steps, 1)
    sample_interval = _check_int("sample_interval", sample_interval, 1)
    if sample_interval > md_steps:
        raise ValueError(f"sample_interval ({sample_interval}) must not exceed md_steps "
                         f"({md_steps}): no snapshot would be taken")
    n_walkers = _check_int("n_walkers", n_walkers, 1)
    max_new = n_walkers if max_new_per_iteration is None else _check_int(
        "max_new_per_iteration", max_new_per_iteration, 1)
    md_temperature = _check_positive("md_temperature (K)", md_temperature)
    timestep = _check_positive("timestep (fs)", timestep)
    friction = _check_positive("friction (1/fs)", friction)
    rattle_stdev = _check_positive("rattle_stdev (Å)", rattle_stdev)
    if not (isinstance(dedup_distance, (int, float)) and dedup_distance >= 0):
        raise ValueError(f"dedup_distance must be a number >= 0, got {dedup_distance!r}")
    if optimize is not None and not isinstance(optimize, (bool, np.bool_)):
        raise ValueError(f"optimize must be True, False or None, got {optimize!r}")
    if restart and workdir is None:
        raise ValueError("restart=True needs the workdir of the run to resume")
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool) \
            and random_state < 0:
        raise ValueError(f"random_state must be a non-negative integer, got {random_state}")
    if test is not None:
        test = [_copy_labelled(a) for a in _frames(test, "test")]
        bad = [k for k, a in enumerate(test) if not _is_labelled(a, model)]
        if bad:
            raise ValueError(f"test structures {bad[:10]} have no energy/forces labels")
    wd = Path(workdir) if workdir is not None else None
    has_state = wd is not None and (wd / LOG_FILE).is_file()
    if wd is not None and wd.exists() and not wd.is_dir():
        raise ValueError(f"workdir '{wd}' exists and is not a folder")
    if has_state and not restart:
        raise ValueError(f"'{wd}' already holds an active-learning run ({LOG_FILE}); pass "
                         "restart=True to continue it, or choose another workdir")
    if restart and not has_state:
        logger.warning("no saved state in '%s': starting a fresh run", wd)

    callback = progress if callable(progress) else None
    bar_flag = False if callable(progress) else progress

    def fit(frames: list[Atoms], rng: np.random.Generator, n_calls: int) -> tuple[object, float]:
        m = _seeded_clone(model, rng)
        t0 = time.perf_counter()
        m.fit(frames, optimize=optimize)
        dt = time.perf_counter() - t0
        m.extra_ = {**getattr(m, "extra_", {}),
                    "active_learning": {"n_train": len(frames), "n_oracle_calls": n_calls}}
        return m, dt

    def test_errors(m) -> dict:
        keys = ("test_energy_mae_per_atom", "test_energy_rmse_per_atom", "test_forces_mae",
                "test_forces_rmse")
        if test is None:
            return {k: None for k in keys}
        from gapkit.metrics import error_metrics

        e = error_metrics(m.predict(test, stress=False), test, m.label_keys)
        return {k: e[k[len("test_"):]] for k in keys}

    # ---------------------------------------------------------------- state
    if has_state:
        state, train, fitted = _read_state(wd, model)
        seed = int(state["seed"])
        n_calls = int(state["n_oracle_calls"])
        n_failures = int(state.get("n_oracle_failures", 0))
        initial = state["initial"]
        log = list(state["log"])
        if fitted is None:
            fitted, _ = fit(train, _rng_for(seed, len(log)), n_calls)
        logger.info("resuming from '%s': %d iterations done, %d training structures, "
                    "%d oracle calls", wd, len(log), len(train), n_calls)
    else:
        if isinstance(random_state, np.random.Generator):
            seed = int(random_state.integers(2 ** 63 - 1))
        elif isinstance(random_state, np.random.RandomState):
            seed = int(random_state.randint(2 ** 31 - 1))
        elif random_state is None:
            seed = int(np.random.SeedSequence().entropy)
        else:
            seed = int(random_state)
        train = [_copy_labelled(a) for a in _frames(start, "start")]
        todo = [k for k, a in enumerate(train) if not _is_labelled(a, model)]
        if len(todo) > budget:
            raise ValueError(f"{len(todo)} start structure(s) need labels but the oracle budget "
                             f"is {budget}")
        n_calls = n_failures = 0
        t0 = time.perf_counter()
        for k in todo:
            n_calls += 1
            try:
                train[k] = _label(train[k], oracle, model)
            except Exception as exc:  # an oracle may fail in many ways (SCF, I/O, ...)
                raise ValueError(f"the oracle failed on start structure {k}: {exc}") from exc
        for a in train:
            a.info.setdefault("al_iteration", 0)
            a.info.setdefault("al_sampler", "start")
        fitted, dt = fit(train, _rng_for(seed, 0), n_calls)
        initial = {"iteration": 0, "n_train": len(train), "n_oracle_calls": n_calls,
                   "fit_time": dt, "oracle_time": time.perf_counter() - t0 - dt,
                   **test_errors(fitted)}
        log = []
        logger.info("initial fit: %d structures (%d labelled by the oracle), %.2f s",
                    len(train), n_calls, dt)
        if callback is not None:
            callback(dict(initial))
        if wd is not None:
            wd.mkdir(parents=True, exist_ok=True)

    def save_state(stopped: str | None) -> None:
        if wd is None:
            return
        _write_state(wd, fitted, train, {
            "format": FORMAT, "version": VERSION, "seed": seed, "n_train": len(train),
            "n_oracle_calls": n_calls, "n_oracle_failures": n_failures,
            "stopped_because": stopped, "threshold": {
                "forces": threshold.forces, "energy_per_atom": threshold.energy_per_atom,
                "relative": threshold.relative, "use": threshold.use},
            "settings": {"sampler": sampler, "md_steps": md_steps, "md_temperature": md_temperature,
                         "timestep": timestep, "dynamics": dynamics, "n_walkers": n_walkers,
                         "max_new_per_iteration": max_new, "budget": budget},
            "initial": initial, "log": log})

    if not has_state:
        save_state(None)

    # ---------------------------------------------------------------- loop
    stopped = "iterations"
    done = len(log)
    bar = tqdm(total=max(n_iterations - done, 0), desc="active learning", disable=(
        None if bar_flag is None else not bar_flag))
    try:
        for it in range(done + 1, n_iterations + 1):
            if n_calls >= budget:
                stopped = "budget"
                break
            rng = _rng_for(seed, it)
            entry = _iteration(it, fitted, train, rng, threshold=threshold, sampler=sampler,
                               md_steps=md_steps, sample_interval=sample_interval,
                               temperature=md_temperature, timestep=timestep,
                               dynamics=dynamics, friction=friction, rattle_stdev=rattle_stdev,
                               n_walkers=n_walkers, max_new=min(max_new, budget - n_calls),
                               dedup_distance=float(dedup_distance))
            t0 = time.perf_counter()
            added = []
            for s in entry.pop("_selected"):
                n_calls += 1
                try:
                    a = _label(s.atoms, oracle, fitted)
                except Exception as exc:  # an oracle may fail in many ways (SCF, I/O, ...)
                    n_failures += 1
                    logger.warning("iteration %d: the oracle failed on a selected structure "
                                   "(skipped): %s", it, exc)
                    continue
                a.info.update(al_iteration=it, al_sampler=sampler, al_score=s.score,
                              al_sigma_forces=s.sigma_forces, al_sigma_energy=s.sigma_energy)
                added.append(a)
            oracle_time = time.perf_counter() - t0
            train.extend(added)
            if added:
                fitted, fit_time = fit(train, rng, n_calls)
                errs = test_errors(fitted)
            else:
                fit_time = 0.0
                prev = log[-1] if log else initial
                errs = {k: prev.get(k) for k in prev if k.startswith("test_")}
            entry.update(n_added=len(added), n_train=len(train), n_oracle_calls=n_calls,
                         n_oracle_failures=n_failures, oracle_time=oracle_time,
                         fit_time=fit_time, **errs)
            entry = to_jsonable(entry)
            log.append(entry)
            logger.info("iteration %d: %d sampled, %d flagged, %d added (n_train=%d, oracle "
                        "calls %d/%d), max sigma_F %.3g eV/Å, test F MAE %s eV/Å", it,
                        entry["n_sampled"], entry["n_flagged"], entry["n_added"], len(train),
                        n_calls, budget, entry["sigma_forces_max"] or float("nan"),
                        entry.get("test_forces_mae"))
            bar.update(1)
            if callback is not None:
                callback(dict(entry))
            if entry["n_flagged"] == 0 and entry["n_exploded"] == 0:
                stopped = "no flags"
            elif n_calls >= budget:
                stopped = "budget"
            else:
                stopped = "iterations"
            save_state(stopped if (stopped != "iterations" or it == n_iterations) else None)
            if stopped != "iterations":
                break
    finally:
        bar.close()
    if wd is not None and len(log) == done:  # nothing ran: record why
        save_state(stopped)
    logger.info("active learning stopped (%s): %d training structures, %d oracle calls",
                stopped, len(train), n_calls)
    return ActiveLearningResult(model=fitted, train=train, log=log, stopped_because=stopped,
                                initial=initial)


def _iteration(it: int, model, train: list[Atoms], rng: np.random.Generator, *,
               threshold: FlagThreshold, sampler: str, md_steps: int, sample_interval: int,
               temperature: float, timestep: float, dynamics: str, friction: float,
               rattle_stdev: float, n_walkers: int, max_new: int,
               dedup_distance: float) -> dict:
    """Sample with ``model``, flag and select; returns a partial log entry with the
    selected samples under ``"_selected"``."""
    t0 = time.perf_counter()
    pool = [k for k, a in enumerate(train) if a.info.get("config_type") != "isolated_atom"]
    if n_walkers <= len(pool):
        starts = rng.choice(pool, size=n_walkers, replace=False)
    else:
        first = rng.permutation(pool)  # every structure once, then random repeats
        starts = np.concatenate([first, rng.choice(pool, size=n_walkers - len(pool))])
    samples: list[_Sample] = []
    n_exploded = 0
    for w, k in enumerate(starts):
        if sampler == "md":
            got, exploded = _md_walker(model, train[int(k)], rng, threshold, w, md_steps=md_steps,
                                       sample_interval=sample_interval, temperature=temperature,
                                       timestep=timestep, dynamics=dynamics, friction=friction)
            n_exploded += int(exploded)
        else:
            got, n_bad = _rattle_walker(model, train[int(k)], rng, threshold, w,
                                        n_samples=max(1, md_steps // sample_interval),
                                        stdev=rattle_stdev)
            n_exploded += n_bad
        samples.extend(got)
    sample_time = time.perf_counter() - t0

    flagged = sorted((s for s in samples if s.flagged), key=lambda s: -s.score)
    selected: list[_Sample] = []
    prints: list[np.ndarray] = []
    for s in flagged:
        if len(selected) >= max_new:
            break
        fp = _fingerprint(model, s.atoms)
        if any(p.shape == fp.shape and np.linalg.norm(p - fp) < dedup_distance for p in prints):
            continue
        selected.append(s)
        prints.append(fp)
    sf = np.array([s.sigma_forces for s in samples])
    se = np.array([s.sigma_energy for s in samples])
    return {
        "iteration": it, "n_sampled": len(samples), "n_flagged": len(flagged),
        "n_exploded": n_exploded, "n_selected": len(selected),
        "sigma_forces_max": float(sf.max()) if len(sf) else None,
        "sigma_forces_mean": float(sf.mean()) if len(sf) else None,
        "sigma_energy_max": float(se.max()) if len(se) else None,
        "sigma_energy_mean": float(se.mean()) if len(se) else None,
        "selected_scores": [s.score for s in selected],
        "sample_time": sample_time,
        "_selected": selected,
    }
