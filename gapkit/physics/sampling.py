"""Sampling for active learning: MD and rattle walkers, scoring, selection.

One iteration of :func:`gapkit.physics.active.learn` calls :func:`sample_and_select`:
it starts ``n_walkers`` walkers from training structures, each of which draws samples
with the current model (:func:`md_walker`: a short MD trajectory with a
:class:`gapkit.GAPCalculator`; :func:`rattle_walker`: random displacements), scores
them against the :class:`gapkit.FlagThreshold` (:func:`assess`) and keeps the most
uncertain flagged ones that are not near-duplicates (:func:`fingerprint`).

All randomness comes from one ``numpy.random.RandomState`` per iteration.

Units: positions and distances in Å, energies in eV, forces in eV/Å, temperatures in
K, time steps in fs, friction in 1/fs, times in s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

from gapkit.calculator import GAPCalculator
from gapkit.data import closest_distance
from gapkit.uncertainty.flags import FlagThreshold

logger = logging.getLogger(__name__)

SAMPLERS = ("md", "rattle")
DYNAMICS = ("langevin", "verlet")

#: A sample is discarded as exploded when two atoms come closer than this fraction
#: of the closest distance in the structure its trajectory (or rattle) started from.
EXPLOSION_DISTANCE_RATIO = 0.5
#: ... or when a force component predicted along the trajectory exceeds this (eV/Å).
EXPLOSION_MAX_FORCE = 50.0


@dataclass(frozen=True)
class SamplingSettings:
    """How an iteration samples (validated by :func:`gapkit.physics.active.learn`).

    Attributes
    ----------
    sampler : {"md", "rattle"}
    md_steps : int
        Steps per MD trajectory; with ``"rattle"``, ``md_steps // sample_interval``
        displaced copies per walker.
    sample_interval : int
        MD steps between scored snapshots.
    temperature : float
        MD temperature in K.
    timestep : float
        MD time step in fs.
    dynamics : {"langevin", "verlet"}
    friction : float
        Langevin friction in 1/fs.
    rattle_stdev : float
        Std of the random displacements in Å.
    n_walkers : int
        Walkers per iteration.
    dedup_distance : float
        Fingerprint distance (dimensionless) below which two samples are duplicates.
    """

    sampler: str
    md_steps: int
    sample_interval: int
    temperature: float
    timestep: float
    dynamics: str
    friction: float
    rattle_stdev: float
    n_walkers: int
    dedup_distance: float


@dataclass
class Sample:
    """One sampled structure with its uncertainty.

    Attributes
    ----------
    atoms : ase.Atoms
    sigma_forces : float
        Largest epistemic force-component std, eV/Å.
    sigma_energy : float
        Epistemic energy std per atom, eV/atom.
    score : float
        :meth:`FlagThreshold.structure_scores` (dimensionless).
    flagged : bool
        ``score > 1``.
    walker : int
        Index of the walker that drew it.
    """

    atoms: Atoms
    sigma_forces: float
    sigma_energy: float
    score: float
    flagged: bool
    walker: int


class _StopWalker(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def assess(model, frames: list[Atoms], threshold: FlagThreshold, walker: int) -> list[Sample]:
    """Predict the stds of ``frames`` and score them against ``threshold``.

    Parameters
    ----------
    model : GAP
        Fitted model.
    frames : list of ase.Atoms
    threshold : FlagThreshold
    walker : int
        Recorded in every sample.

    Returns
    -------
    list of Sample
        One per frame, in order; flagged exactly as ``threshold.evaluate`` flags.
    """
    _, std = model.predict(frames, return_std=True, forces=True, stress=False)
    scores = threshold.structure_scores(std, frames, model.flag_reference())
    return [Sample(atoms=atoms,
                   sigma_forces=float(np.max(std.forces_epistemic[k])),
                   sigma_energy=float(std.energy_epistemic[k]) / len(atoms),
                   score=float(scores[k]), flagged=bool(scores[k] > 1.0), walker=walker)
            for k, atoms in enumerate(frames)]


def fingerprint(model, atoms: Atoms) -> np.ndarray:
    """Structure fingerprint for spotting near-duplicate samples.

    Per species, the mean descriptor vector of its atoms times the species fraction;
    concatenated over ``model.species_`` and scaled to unit length. The descriptor is
    that of the first kernel term whose vectors are unit length (SOAP, or ACSF and
    TwoBody with ``normalize=True``), else of the first term.

    Parameters
    ----------
    model : GAP
        Fitted model.
    atoms : ase.Atoms

    Returns
    -------
    ndarray of shape (n_species * n_features,)
        Dimensionless, unit length (zero for a zero descriptor).
    """
    descriptors = [t.descriptor for t in model.terms_]
    desc = next((d for d in descriptors if getattr(d, "normalize", True)), descriptors[0])
    ds = desc.compute(atoms, gradients=False)
    parts = []
    for z in model.species_:
        sel = ds.numbers == z
        parts.append(ds.q[sel].mean(0) * sel.mean() if sel.any() else np.zeros(ds.q.shape[1]))
    v = np.concatenate(parts)
    return v / max(np.linalg.norm(v), 1e-300)


def md_walker(model, start: Atoms, rng: np.random.RandomState, threshold: FlagThreshold,
              walker: int, settings: SamplingSettings) -> tuple[list[Sample], bool]:
    """One MD trajectory with the model, scoring a snapshot every ``sample_interval`` steps.

    The momenta start Maxwell-Boltzmann at ``settings.temperature`` K (zero total
    momentum); the trajectory stops at its first flagged snapshot, or when it
    explodes (a predicted force component above :data:`EXPLOSION_MAX_FORCE` eV/Å or
    non-finite, two atoms closer than :data:`EXPLOSION_DISTANCE_RATIO` times the
    closest distance of ``start``, or an error of the model).

    Parameters
    ----------
    model : GAP
        Fitted model, attached as a :class:`gapkit.GAPCalculator`.
    start : ase.Atoms
        Starting structure (not modified).
    rng : numpy.random.RandomState
        Source of the initial velocities and the Langevin noise.
    threshold : FlagThreshold
    walker : int
        Index recorded in the samples.
    settings : SamplingSettings

    Returns
    -------
    samples : list of Sample
        The scored snapshots (momenta removed), at most the last one flagged.
    exploded : bool
    """
    atoms = start.copy()
    atoms.calc = GAPCalculator(model)
    d_min = EXPLOSION_DISTANCE_RATIO * closest_distance(atoms)
    temperature = settings.temperature
    masses = atoms.get_masses()[:, None]  # Maxwell-Boltzmann momenta at `temperature`
    kick = rng.standard_normal((len(atoms), 3))
    atoms.set_momenta(np.sqrt(masses * units.kB * temperature) * kick)
    Stationary(atoms)
    if settings.dynamics == "langevin":
        dyn = Langevin(atoms, settings.timestep * units.fs, temperature_K=temperature,
                       friction=settings.friction / units.fs, fixcm=False, rng=rng)
    else:
        dyn = VelocityVerlet(atoms, settings.timestep * units.fs)
    samples: list[Sample] = []

    def observe():
        if dyn.nsteps == 0:
            return
        f = atoms.calc.results.get("forces")
        if f is None or not np.all(np.isfinite(f)) or np.max(np.abs(f)) > EXPLOSION_MAX_FORCE:
            raise _StopWalker("exploded")
        if dyn.nsteps % settings.sample_interval:
            return
        snap = atoms.copy()
        snap.arrays.pop("momenta", None)  # a snapshot is a geometry, not an MD state
        if closest_distance(snap) < d_min:
            raise _StopWalker("exploded")
        s = assess(model, [snap], threshold, walker)[0]
        samples.append(s)
        if s.flagged:
            raise _StopWalker("flagged")

    dyn.attach(observe, interval=1)
    try:
        dyn.run(settings.md_steps)
    except _StopWalker as stop:
        return samples, stop.reason == "exploded"
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        logger.debug("walker %d stopped by %s: %s", walker, type(exc).__name__, exc)
        return samples, True
    return samples, False


def rattle_walker(model, start: Atoms, rng: np.random.RandomState, threshold: FlagThreshold,
                  walker: int, settings: SamplingSettings) -> tuple[list[Sample], int]:
    """Gaussian displacements of one structure, scored.

    Draws ``max(1, md_steps // sample_interval)`` copies of ``start`` with every
    position component displaced by a normal variate of std ``settings.rattle_stdev``
    Å; copies with two atoms closer than :data:`EXPLOSION_DISTANCE_RATIO` times the
    closest distance of ``start`` are discarded as exploded.

    Parameters
    ----------
    model, start, rng, threshold, walker, settings
        As for :func:`md_walker` (``start`` is not modified).

    Returns
    -------
    samples : list of Sample
    n_exploded : int
        Copies discarded.
    """
    d_min = EXPLOSION_DISTANCE_RATIO * closest_distance(start)
    frames, n_bad = [], 0
    for _ in range(max(1, settings.md_steps // settings.sample_interval)):
        a = start.copy()
        a.positions = a.positions + rng.normal(0.0, settings.rattle_stdev, size=a.positions.shape)
        if closest_distance(a) < d_min:
            n_bad += 1
            continue
        frames.append(a)
    return (assess(model, frames, threshold, walker) if frames else []), n_bad


def _walker_starts(train: list[Atoms], n_walkers: int, rng: np.random.RandomState) -> np.ndarray:
    """Training-set indices to start the walkers from (isolated atoms excluded):
    without replacement while possible, then every structure once plus random repeats."""
    pool = [k for k, a in enumerate(train) if a.info.get("config_type") != "isolated_atom"]
    if n_walkers <= len(pool):
        return rng.choice(pool, size=n_walkers, replace=False)
    first = rng.permutation(pool)
    return np.concatenate([first, rng.choice(pool, size=n_walkers - len(pool))])


def _select(model, samples: list[Sample], max_new: int, dedup_distance: float) -> list[Sample]:
    """Up to ``max_new`` flagged samples, most uncertain first, skipping near-duplicates."""
    selected: list[Sample] = []
    prints: list[np.ndarray] = []
    for s in sorted((s for s in samples if s.flagged), key=lambda s: -s.score):
        if len(selected) >= max_new:
            break
        fp = fingerprint(model, s.atoms)
        if any(p.shape == fp.shape and np.linalg.norm(p - fp) < dedup_distance for p in prints):
            continue
        selected.append(s)
        prints.append(fp)
    return selected


def sample_and_select(model, train: list[Atoms], rng: np.random.RandomState,
                      threshold: FlagThreshold, settings: SamplingSettings,
                      max_new: int) -> tuple[dict, list[Sample]]:
    """Sample with ``model`` from walkers started at training structures, flag, select.

    Parameters
    ----------
    model : GAP
        The model fitted on ``train``.
    train : list of ase.Atoms
        The current training set.
    rng : numpy.random.RandomState
        The iteration's random stream (walker starts, velocities, noise, rattles).
    threshold : FlagThreshold
    settings : SamplingSettings
    max_new : int
        Most samples to select.

    Returns
    -------
    entry : dict
        Partial log entry: ``n_sampled``, ``n_flagged``, ``n_exploded``,
        ``n_selected``, ``sigma_forces_max`` / ``sigma_forces_mean`` (eV/Å),
        ``sigma_energy_max`` / ``sigma_energy_mean`` (eV/atom; all four None without
        samples), ``selected_scores`` and ``sample_time`` (s).
    selected : list of Sample
        The samples to label, most uncertain first.
    """
    t0 = time.perf_counter()
    walk = md_walker if settings.sampler == "md" else rattle_walker
    samples: list[Sample] = []
    n_exploded = 0
    for w, k in enumerate(_walker_starts(train, settings.n_walkers, rng)):
        got, exploded = walk(model, train[int(k)], rng, threshold, w, settings)
        n_exploded += int(exploded)
        samples.extend(got)
    sample_time = time.perf_counter() - t0
    selected = _select(model, samples, max_new, settings.dedup_distance)
    sf = np.array([s.sigma_forces for s in samples])
    se = np.array([s.sigma_energy for s in samples])
    entry = {
        "n_sampled": len(samples), "n_flagged": sum(s.flagged for s in samples),
        "n_exploded": n_exploded, "n_selected": len(selected),
        "sigma_forces_max": float(sf.max()) if len(sf) else None,
        "sigma_forces_mean": float(sf.mean()) if len(sf) else None,
        "sigma_energy_max": float(se.max()) if len(se) else None,
        "sigma_energy_mean": float(se.mean()) if len(se) else None,
        "selected_scores": [s.score for s in selected],
        "sample_time": sample_time,
    }
    return entry, selected
