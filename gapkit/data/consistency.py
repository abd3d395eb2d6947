"""Label consistency checks run before a fit: stress units and duplicate frames.

Virial scale
------------
A virial is a strain derivative of the energy, ``W = -dE/d eta`` (eV), so its size
per atom is set by the same physics as the energies and forces: in typical training
data ``|W|/N`` is below a few eV (``-stress * V/N`` with stresses up to tens of GPa)
and comparable to the per-atom energy spread or to a force times an interatomic
distance. A stress written in bar, kbar or GPa but read as eV/Å³ is 1.6e6, 1.6e3 or
160 times too large. :func:`check_virial_scale` compares the median ``|W|/N``
(Frobenius norm) with

* an absolute bound, ``|stress| < 1 eV/Å³`` (160 GPa) in the median frame, and
* a data scale, the largest of the spread of energies per atom (after a
  per-species least-squares fit) divided by the spread of linear strains
  (``(V/N)**(1/3)``, relative; at least 0.01: ``dE ~ W d eta``) and the RMS force
  component times the interatomic distance ``(V/N)**(1/3)``,

and raises if the virials are more than :data:`VIRIAL_SCALE_RATIO` times the data
scale or beyond the absolute bound, naming the unit whose conversion brings them in
line and the numbers it found.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.units import GPa, bar

logger = logging.getLogger(__name__)

__all__ = ["VIRIAL_SCALE_RATIO", "MAX_STRESS", "check_virial_scale", "virial_scale_report"]

#: Largest plausible median ratio of |W|/N to the energy scale of the data.
VIRIAL_SCALE_RATIO = 50.0
#: Typical ratio in correct data (EMT, DFT sets: 0.1 to 3), to name the likely unit.
TYPICAL_RATIO = 0.3
#: Largest plausible median |stress| (eV/Å³), 160 GPa.
MAX_STRESS = 1.0
#: Factors by which a stress in these units is too large when read as eV/Å³.
_UNITS = {"GPa": 1 / GPa, "kbar": 1 / (1000 * bar), "bar": 1 / bar}


def virial_scale_report(frames: Sequence[Atoms], labels: Sequence) -> dict | None:
    """The numbers :func:`check_virial_scale` judges by; ``None`` without virials.

    Returns
    -------
    dict or None
        ``n_virials``, ``virial_per_atom`` (median ``|W|/N``, eV), ``stress`` (median
        ``|W|/V``, eV/Å³), ``energy_spread`` (eV/atom), ``strain_spread``, ``force_scale`` (RMS force
        component times the interatomic distance, eV) and ``ratio``.
    """
    idx = [k for k, lab in enumerate(labels) if lab.virial is not None]
    if not idx:
        return None
    w_atom = np.array([np.linalg.norm(labels[k].virial) / len(frames[k]) for k in idx])
    stress = np.array([np.linalg.norm(labels[k].virial) / frames[k].get_volume() for k in idx])
    spread = _energy_spread(frames, labels)
    f = [lab.forces.ravel() for lab in labels if lab.forces is not None]
    f_rms = float(np.sqrt(np.mean(np.concatenate(f) ** 2))) if f else 0.0
    lengths = np.array([(frames[k].get_volume() / len(frames[k])) ** (1 / 3) for k in idx])
    d = float(np.median(lengths))
    strain = min(max(float(lengths.max() / lengths.min() - 1), 0.01), 1.0)
    scale = max(spread / strain, f_rms * d, 1e-3)
    return {"n_virials": len(idx), "virial_per_atom": float(np.median(w_atom)),
            "stress": float(np.median(stress)), "energy_spread": spread, "strain_spread": strain,
            "force_scale": f_rms * d, "ratio": float(np.median(w_atom)) / scale}


def _energy_spread(frames: Sequence[Atoms], labels: Sequence) -> float:
    """Max - min of the energy per atom after a least-squares per-species fit (eV)."""
    e = np.array([lab.energy for lab in labels], dtype=np.float64)
    species = sorted(set(np.concatenate([a.numbers for a in frames]).tolist()))
    counts = np.array([[np.count_nonzero(a.numbers == z) for z in species] for a in frames],
                      dtype=np.float64)
    coef = np.linalg.lstsq(counts, e, rcond=None)[0]
    per_atom = (e - counts @ coef) / counts.sum(axis=1)
    return float(per_atom.max() - per_atom.min()) if len(per_atom) > 1 else 0.0


def check_virial_scale(frames: Sequence[Atoms], labels: Sequence) -> dict | None:
    """Raise if the virial labels are far too large for the energies and forces.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    labels : sequence of Labels
        Their labels (energy required; forces and virials optional).

    Returns
    -------
    dict or None
        :func:`virial_scale_report` (``None`` without virials), when it passes.

    Raises
    ------
    ValueError
        Naming the likely unit of the stresses (bar, kbar or GPa) and what was found.
    """
    rep = virial_scale_report(frames, labels)
    if rep is None:
        return None
    logger.info("virial scale: %s", rep)
    if rep["ratio"] <= VIRIAL_SCALE_RATIO and rep["stress"] <= MAX_STRESS:
        return rep
    # the unit whose conversion brings the virials closest to the data scale
    target = rep["virial_per_atom"] / rep["ratio"]
    unit = min(_UNITS, key=lambda u: abs(np.log(rep["ratio"] / _UNITS[u] / TYPICAL_RATIO)))
    factors = ", ".join(f"{u} x{f:.4g}" for u, f in _UNITS.items())
    raise ValueError(
        f"the virial labels look like stresses in other units: in {rep['n_virials']} frames the "
        f"median |virial| is {rep['virial_per_atom']:.3g} eV per atom (|stress| "
        f"{rep['stress']:.3g} eV/Å³ = {rep['stress'] / GPa:.3g} GPa), {rep['ratio']:.3g} times "
        f"the energy scale of the data ({target:.3g} eV: energy spread "
        f"{rep['energy_spread']:.3g} eV/atom over a strain spread {rep['strain_spread']:.3g}, "
        "RMS force x interatomic "
        f"distance {rep['force_scale']:.3g} eV). Stresses must be in eV/Å³ (virials in eV); "
        f"these look most like {unit} (too large by {factors}). Convert them "
        f"(stress in eV/Å³ = value / {_UNITS[unit]:.4g} for {unit}), or leave the virials out (use_virials=False, "
        "--no-virials).")
