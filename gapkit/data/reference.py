"""Per-species reference energies E0 and isolated-atom frames."""

from __future__ import annotations

import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from gapkit.data.labels import LabelKeys, get_labels
from gapkit.data.reading import read_frames

__all__ = ["ReferenceEnergies", "isolated_atom_energies", "fit_reference_energies",
           "split_isolated", "check_e0_dict"]


def check_e0_dict(e0: dict) -> dict[int, float]:
    """Atomic number to E0 (eV) of a user's E0 dict, checked.

    Parameters
    ----------
    e0 : dict
        Chemical symbols (``"H"``) or atomic numbers to energies in eV.

    Raises
    ------
    ValueError
        For an unknown symbol or atomic number, or a value that is not a finite number.
    """
    vals = {}
    for key, val in e0.items():
        if isinstance(key, str) and key in chemical_symbols[1:]:
            z = chemical_symbols.index(key)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool) \
                and 0 < int(key) < len(chemical_symbols):
            z = int(key)
        else:
            raise ValueError(f"e0 dict: unknown chemical symbol or atomic number {key!r} (keys "
                             "are symbols such as 'H' or atomic numbers such as 1)")
        if isinstance(val, bool) or not isinstance(val, numbers.Real) \
                or not np.isfinite(float(val)):
            raise ValueError(f"e0 dict: E0 of {chemical_symbols[z]} is {val!r}; every value must "
                             "be a finite energy in eV")
        vals[z] = float(val)
    return vals


@dataclass
class ReferenceEnergies:
    """Per-species reference energies E0 (eV), subtracted before the GP sees the data.

    Attributes
    ----------
    values : dict[int, float]
        Atomic number to E0 in eV.
    method : str
        ``"isolated"``, ``"lstsq"`` or ``"zero"``.
    """

    values: dict[int, float] = field(default_factory=dict)
    method: str = "zero"

    def energy(self, numbers: np.ndarray) -> float:
        """Sum of E0 over the atoms with the given atomic numbers (eV)."""
        missing = sorted(set(int(z) for z in np.unique(numbers)) - set(self.values))
        if missing and self.method != "zero":
            raise ValueError(f"No reference energy E0 for species "
                             f"{[chemical_symbols[z] for z in missing]}")
        return float(sum(self.values.get(int(z), 0.0) for z in numbers))

    def atomic(self, numbers: np.ndarray) -> np.ndarray:
        """E0 of each atom (eV), shape (n_atoms,)."""
        return np.array([self.values.get(int(z), 0.0) for z in numbers], dtype=np.float64)


def isolated_atom_energies(frames: Sequence[Atoms], keys: LabelKeys | None = None) -> dict[int, float]:
    """E0 from single-atom frames (``config_type=isolated_atom`` or one atom, no PBC)."""
    e0: dict[int, float] = {}
    for k, atoms in enumerate(frames):
        if len(atoms) == 1:
            lab = get_labels(atoms, keys, index=k, require_forces=False)
            e0[int(atoms.numbers[0])] = lab.energy
    if not e0:
        raise ValueError("No isolated atoms (single-atom frames) found for E0")
    return e0


def fit_reference_energies(method: str | os.PathLike | dict, frames: Sequence[Atoms],
                           energies: np.ndarray, species: Sequence[int],
                           keys: LabelKeys | None = None) -> ReferenceEnergies:
    """Per-species reference energies.

    Parameters
    ----------
    method : {"lstsq", "zero"}, path or dict
        ``"lstsq"``: least squares of the training energies on the species counts;
        ``"zero"``: no reference; a path to an extxyz of isolated atoms; or a dict
        mapping chemical symbols or atomic numbers to energies in eV.
    frames : sequence of ase.Atoms
        Training structures.
    energies : ndarray of shape (n_frames,)
        Their total energies, eV.
    species : sequence of int
        Atomic numbers the model covers.
    """
    species = [int(z) for z in species]
    if isinstance(method, dict):
        vals = check_e0_dict(method)
        missing = [chemical_symbols[z] for z in species if z not in vals]
        if missing:
            raise ValueError(f"E0 dict lacks species {missing}")
        return ReferenceEnergies(vals, "dict")
    if method == "zero":
        return ReferenceEnergies({z: 0.0 for z in species}, "zero")
    if method == "lstsq":
        counts = np.array([[np.count_nonzero(a.numbers == z) for z in species] for a in frames],
                          dtype=np.float64)
        coef, _, rank, _ = np.linalg.lstsq(counts, np.asarray(energies, dtype=np.float64), rcond=None)
        if rank < len(species):
            warnings.warn(f"E0 by least squares is rank deficient (rank {rank} < {len(species)} "
                          f"species: the training compositions are collinear), so the per-species "
                          f"split of E0 is arbitrary (minimum-norm) and energies of other "
                          f"compositions carry an offset. Use e0='isolated' or an isolated-atoms "
                          f"file when predicting other compositions.", UserWarning, stacklevel=3)
        return ReferenceEnergies({z: float(c) for z, c in zip(species, coef)}, "lstsq")
    path = Path(method)
    if not path.is_file():
        raise ValueError(f"E0 must be 'lstsq', 'zero' or a path to an isolated-atoms file; got '{method}'")
    vals = isolated_atom_energies(read_frames(path), keys)
    missing = [chemical_symbols[z] for z in species if z not in vals]
    if missing:
        raise ValueError(f"Isolated-atoms file '{path}' has no atom of species {missing}")
    return ReferenceEnergies({z: vals[z] for z in species}, "isolated")


def split_isolated(frames: Sequence[Atoms]) -> tuple[list[Atoms], list[Atoms]]:
    """Separate ``config_type=isolated_atom`` frames from the rest."""
    iso = [a for a in frames if a.info.get("config_type") == "isolated_atom"]
    rest = [a for a in frames if a.info.get("config_type") != "isolated_atom"]
    return rest, iso
