#!/usr/bin/env python
"""Generate a small synthetic rock-salt "NaCl" data set for Δ-learning with a Coulomb baseline.

Reference potential
-------------------
:class:`gapkit.physics.baselines.BornMayerCoulomb` with fixed charges ``q_Na = +1``, ``q_Cl = -1``
(e) and a Born--Mayer repulsion between Na and Cl only,

    E = Σ_{i<j, Na-Cl} A exp(-r_ij/ρ) f_c(r_ij) + E_Ewald,
    A = 1220 eV, ρ = 0.317 Å, cosine switch f_c from 5 Å to r_cut = 6 Å,

and no Na--Na or Cl--Cl repulsion (like ions are kept apart by the Coulomb term). The
Coulomb term is the Ewald sum of :class:`gapkit.physics.baselines.CoulombBaseline` with
``accuracy=1e-10``. With these parameters the perfect rock-salt crystal has zero stress at
``a0 = 5.6423 Å`` (experiment: 5.64 Å), a lattice energy of -7.919 eV per NaCl pair and
a bulk modulus of 24.5 GPa (experiment: ~24-25 GPa). A was tuned to put the minimum at
5.64 Å with the classic ρ = 0.317 Å.

Frames
------
Three cell types of ideal rock salt at a random lattice constant
``a = a0 (1 + U(-0.03, 0.03))``, then a random symmetric strain with components
``N(0, 0.015)`` (``cell @ (I + ε).T``, atoms scaled with the cell), then a Gaussian
rattle of every Cartesian coordinate with a standard deviation drawn from U(0.03, 0.15) Å:

* ``rocksalt_cubic8``: 8-atom conventional cubic cell;
* ``rocksalt_2x1x1``: 16-atom 2x1x1 repeat of the conventional cell;
* ``rocksalt_prim2``: 2-atom primitive fcc cell.

A frame is redrawn when two atoms come closer than 2.0 Å or an atomic force reaches
10 eV/Å (with these settings this does not happen). Everything is drawn from one
``numpy.random.default_rng(SEED)`` in a fixed order, so the files are reproducible
byte for byte.

Files written (next to this script)
-----------------------------------
``ionic_train.xyz``
    60 frames: 24 ``rocksalt_cubic8``, 20 ``rocksalt_2x1x1``, 16 ``rocksalt_prim2``.
``ionic_test.xyz``
    20 frames: 8 ``rocksalt_cubic8``, 7 ``rocksalt_2x1x1``, 5 ``rocksalt_prim2``.

Extended XYZ, ``pbc="T T T"``, with the cell, ``energy`` (eV), ``stress`` (eV/Å³, ASE
sign: positive under tension), ``config_type`` and per-atom ``forces`` (eV/Å), stored as
calculator results: after ``ase.io.read(path, ":")``, ``get_potential_energy()``,
``get_forces()`` and ``get_stress()`` return the labels.

Run from the repository root (about 10 s): ``python data/make_ionic_data.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from gapkit.physics.baselines import BornMayerCoulomb

SEED = 20251121
CHARGES = {"Na": 1.0, "Cl": -1.0}
BORN_MAYER = {"Na-Cl": (1220.0, 0.317)}
A0 = 5.6423
CELL_TYPES = ("rocksalt_cubic8", "rocksalt_2x1x1", "rocksalt_prim2")
COUNTS = {"ionic_train.xyz": (24, 20, 16), "ionic_test.xyz": (8, 7, 5)}
MIN_DIST = 2.0      # Å
MAX_FORCE = 10.0    # eV/Å


def ideal(kind: str, a: float) -> Atoms:
    """Ideal rock-salt cell of the given kind and lattice constant a (Å)."""
    if kind == "rocksalt_cubic8":
        return bulk("NaCl", "rocksalt", a=a, cubic=True)
    if kind == "rocksalt_2x1x1":
        return bulk("NaCl", "rocksalt", a=a, cubic=True).repeat((2, 1, 1))
    if kind == "rocksalt_prim2":
        return bulk("NaCl", "rocksalt", a=a)
    raise ValueError(kind)


def make_frame(kind: str, rng: np.random.Generator, calc: BornMayerCoulomb) -> Atoms:
    """One labelled frame: random lattice constant, strain and rattle."""
    while True:
        atoms = ideal(kind, A0 * (1.0 + rng.uniform(-0.03, 0.03)))
        eps = rng.normal(0.0, 0.015, (3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
        atoms.positions += rng.normal(0.0, rng.uniform(0.03, 0.15), atoms.positions.shape)
        dist = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
        if dist.min() < MIN_DIST:
            continue
        r = calc.evaluate(atoms)
        if np.linalg.norm(r["forces"], axis=1).max() >= MAX_FORCE:
            continue
        atoms.info["config_type"] = kind
        atoms.calc = SinglePointCalculator(atoms, energy=r["energy"], forces=r["forces"],
                                           stress=r["stress"])
        return atoms


def main() -> None:
    rng = np.random.default_rng(SEED)
    calc = BornMayerCoulomb(CHARGES, BORN_MAYER, r_cut=6.0, switch_width=1.0, accuracy=1e-10)
    here = Path(__file__).resolve().parent
    for fname, counts in COUNTS.items():
        frames = [make_frame(kind, rng, calc)
                  for kind, n in zip(CELL_TYPES, counts) for _ in range(n)]
        path = here / fname
        write(path, frames, format="extxyz")
        e = np.array([f.get_potential_energy() / len(f) for f in frames])
        fmax = max(np.abs(f.get_forces()).max() for f in frames)
        smax = max(np.abs(f.get_stress()).max() for f in frames)
        print(f"wrote {path} ({path.stat().st_size} bytes): {len(frames)} frames "
              f"({', '.join(f'{n} {k}' for k, n in zip(CELL_TYPES, counts))}), "
              f"{sum(len(f) for f in frames)} atoms; E/atom {e.min():.4f} .. {e.max():.4f} eV, "
              f"max |F_a| {fmax:.3f} eV/Å, max |stress| {smax:.4f} eV/Å³")


if __name__ == "__main__":
    main()
