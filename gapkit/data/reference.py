"""Per-species reference energies E0 and isolated-atom frames.

E0 is subtracted from the training energies before the GP sees them. The choices
(:func:`fit_reference_energies`; ``GAP(e0=...)``, ``gapkit fit --e0``, parsed by
:func:`parse_e0`):

* ``"lstsq"`` (default): least squares of the training energies on the species counts.
  When the composition matrix has rank below the number of species (every frame has
  the same composition, e.g. one molecule or an elemental cell set with one species
  less than the model covers, or collinear compositions), the data do not fix the
  per-species split; gapkit then takes the least-squares solution *nearest to one
  shared value per atom* (the mean energy per atom), which for a single composition
  is exactly ``"average"``, and warns, saying how to pass E0 explicitly;
* ``"average"``: one value for every species, the mean over the frames of the energy
  per atom;
* ``"isolated"``: the energies of single-atom frames (``config_type=isolated_atom``)
  in the training data; a path: the same from an extxyz of isolated atoms;
* a dict ``{"H": -13.6, "C": -1029.8}`` (eV; CLI ``--e0 H:-13.6,C:-1029.8``);
* ``"zero"``: no reference.
"""

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
           "split_isolated", "check_e0_dict", "parse_e0", "E0_METHODS"]

#: The named E0 methods (besides a path to an isolated-atoms file and a dict).
E0_METHODS = ("lstsq", "average", "isolated", "zero")


def parse_e0(text: str | dict) -> str | dict:
    """An E0 spec from the command line: a method name, a path, or ``SYMBOL:eV,...``.

    Parameters
    ----------
    text : str or dict
        One of :data:`E0_METHODS`, a path to an isolated-atoms extxyz, or
        ``"H:-13.6,C:-1029.8"`` (energies in eV); a dict (from a config file) is
        checked and returned.

    Returns
    -------
    str or dict
        The method or path unchanged, or a dict of symbol to E0 (eV).

    Raises
    ------
    ValueError
        For a ``SYMBOL:VALUE`` list with an unknown symbol, a value that is not a
        finite number, a repeated symbol or an empty entry.
    """
    if isinstance(text, dict):
        check_e0_dict(text)
        return dict(text)
    text = str(text).strip()
    if text in E0_METHODS or ":" not in text or Path(text).is_file():
        return text
    form = "SYMBOL:eV,SYMBOL:eV (e.g. H:-13.6,C:-1029.8)"
    out: dict = {}
    for part in text.split(","):
        sym, sep, val = (x.strip() for x in part.partition(":"))
        if not sep or not sym or not val:
            raise ValueError(f"--e0 {text!r}: entry {part.strip()!r} is not SYMBOL:eV; "
                             f"expected {form}")
        if sym in out:
            raise ValueError(f"--e0 {text!r}: {sym} is given twice; expected {form}")
        try:
            out[sym] = float(val)
        except ValueError:
            raise ValueError(f"--e0 {text!r}: E0 of {sym} is {val!r}, not a number of eV; "
                             f"expected {form}") from None
    try:
        check_e0_dict(out)
    except ValueError as exc:
        raise ValueError(f"--e0 {text!r}: {exc}; expected {form}") from None
    return out


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
        ``"isolated"``, ``"lstsq"``, ``"average"``, ``"dict"`` or ``"zero"``.
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
        """E0 of each atom (eV), shape (n_atoms,); 0 for a species without E0 (one
        look-up per species, not per atom)."""
        numbers = np.asarray(numbers)
        species, inverse = np.unique(numbers, return_inverse=True)
        table = np.array([self.values.get(int(z), 0.0) for z in species], dtype=np.float64)
        return table[inverse.reshape(numbers.shape)]


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
    """Per-species reference energies (see the module docstring for the rules).

    Parameters
    ----------
    method : {"lstsq", "average", "zero"}, path or dict
        ``"lstsq"``: least squares of the training energies on the species counts
        (rank deficient: the solution nearest to one shared value per atom, with a
        warning); ``"average"``: the mean energy per atom for every species;
        ``"zero"``: no reference; a path to an extxyz of isolated atoms; or a dict
        mapping chemical symbols or atomic numbers to energies in eV. (``"isolated"``,
        the single-atom frames of the training data, is resolved by the fit with
        :func:`isolated_atom_energies` and passed here as a dict.)
    frames : sequence of ase.Atoms
        Training structures.
    energies : ndarray of shape (n_frames,)
        Their total energies, eV.
    species : sequence of int
        Atomic numbers the model covers.
    keys : LabelKeys, optional
        Where the energies of an isolated-atoms file are.

    Returns
    -------
    ReferenceEnergies
        ``values`` in eV per atom of each species.

    Raises
    ------
    ValueError
        For an unknown method, a dict or isolated-atoms file that lacks a species, or
        a path that is not a file.
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
    if method in ("lstsq", "average"):
        counts = np.array([[np.count_nonzero(a.numbers == z) for z in species] for a in frames],
                          dtype=np.float64)
        energies = np.asarray(energies, dtype=np.float64)
        mean = float(np.mean(energies / counts.sum(axis=1)))
        if method == "average":
            return ReferenceEnergies({z: mean for z in species}, "average")
        return ReferenceEnergies(dict(zip(species, _lstsq_e0(counts, energies, mean, species))),
                                 "lstsq")
    path = Path(method)
    if not path.is_file():
        raise ValueError(f"E0 must be 'lstsq', 'zero' or a path to an isolated-atoms extxyz "
                         f"file (also 'average', 'isolated' or a dict of symbol to eV such as "
                         f"{{'H': -13.6}}); got '{method}'")
    vals = isolated_atom_energies(read_frames(path), keys)
    missing = [chemical_symbols[z] for z in species if z not in vals]
    if missing:
        raise ValueError(f"Isolated-atoms file '{path}' has no atom of species {missing}")
    return ReferenceEnergies({z: vals[z] for z in species}, "isolated")


def _lstsq_e0(counts: np.ndarray, energies: np.ndarray, mean: float,
              species: Sequence[int]) -> list[float]:
    """Least-squares E0 of ``energies ~ counts @ e0``; when ``counts`` has rank below the
    number of species, the least-squares solution nearest to ``mean`` for every species
    (``mean + minimum-norm solution for energies - counts @ mean``), with a warning."""
    shift = np.full(len(species), mean)
    coef, _, rank, _ = np.linalg.lstsq(counts, energies - counts @ shift, rcond=None)
    coef = coef + shift
    if rank < len(species):
        same = len(np.unique(counts, axis=0)) == 1
        why = ("every training frame has the same composition" if same
               else "the training compositions are collinear")
        warnings.warn(
            f"E0 by least squares is rank deficient (rank {rank} < {len(species)} species: "
            f"{why}), so the data do not fix the per-species split of E0. gapkit took the "
            f"least-squares E0 nearest to one shared value per atom (the mean energy per atom, "
            f"{mean:.6g} eV{'; the same as e0=average' if same else ''}): energies of this "
            f"composition are unaffected, energies of other compositions carry an offset. "
            f"To predict other compositions pass E0 explicitly: e0='isolated' (single-atom "
            f"frames in the data), a path to an isolated-atoms file, or a dict (CLI: --e0 "
            f"{','.join(f'{chemical_symbols[z]}:EV' for z in species)}).",
            UserWarning, stacklevel=4)
    return [float(c) for c in coef]


def split_isolated(frames: Sequence[Atoms]) -> tuple[list[Atoms], list[Atoms]]:
    """Separate ``config_type=isolated_atom`` frames from the rest."""
    iso = [a for a in frames if a.info.get("config_type") == "isolated_atom"]
    rest = [a for a in frames if a.info.get("config_type") != "isolated_atom"]
    return rest, iso
