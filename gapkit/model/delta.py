"""Delta-learning: labels of a baseline calculator, subtracted at fit and added back at
prediction (the GP learns reference minus baseline)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from gapkit.data import Labels, stress_to_virial


def baseline_labels(calc, atoms: Atoms, forces: bool = True, virial: bool = False,
                    energies: bool = False) -> dict:
    """Labels of a baseline calculator for one structure.

    Parameters
    ----------
    calc : ase Calculator
    atoms : ase.Atoms
    forces, virial, energies : bool
        Which labels to compute besides the energy.

    Returns
    -------
    dict
        ``energy`` (eV), ``forces`` (n, 3) eV/Å, ``virial`` (3, 3) eV (``-stress x V``)
        and ``energies`` (n,) eV. Per-atom energies come from the calculator when it
        implements ``energies``; otherwise the total is shared equally.
    """
    a = atoms.copy()
    a.calc = calc
    out = {"energy": float(a.get_potential_energy())}
    if forces:
        out["forces"] = np.asarray(a.get_forces(), dtype=np.float64)
    if virial:
        out["virial"] = stress_to_virial(a.get_stress(voigt=True), a.get_volume())
    if energies:
        try:
            out["energies"] = np.asarray(a.get_potential_energies(), dtype=np.float64)
        except (PropertyNotImplementedError, NotImplementedError, AttributeError):
            out["energies"] = np.full(len(a), out["energy"] / len(a))
    return out


def subtract_baseline(calc, frames: list[Atoms], labels: list[Labels]) -> None:
    """Replace ``labels`` (in place) by reference minus baseline."""
    for atoms, lab in zip(frames, labels):
        b = baseline_labels(calc, atoms, forces=lab.forces is not None,
                            virial=lab.virial is not None)
        lab.energy -= b["energy"]
        if lab.forces is not None:
            lab.forces = lab.forces - b["forces"]
        if lab.virial is not None:
            lab.virial = lab.virial - b["virial"]


def baseline_e0(calc, e0_values: dict) -> dict:
    """Isolated-atom reference energies minus the baseline's isolated-atom energies."""
    return {z: v - baseline_labels(calc, Atoms(numbers=[z]), forces=False)["energy"]
            for z, v in e0_values.items()}
