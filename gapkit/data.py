"""Reading structures and their reference labels.

Everything that touches raw input lives here: extxyz reading, label extraction
(energies, forces, virials), validation of the geometry and of the labels, and the
per-species reference energies E0.

Units are ASE's: positions in Å, energies in eV, forces in eV/Å, virials in eV.
The virial follows GAP's convention, ``virial = -stress * volume`` (eV), so that a
cell stretched beyond its equilibrium (under tensile stress, ASE stress > 0) has a
negative virial.
"""

from __future__ import annotations

import logging
import warnings
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)

#: Closest approach (Å) below which two atoms are treated as overlapping.
MIN_DISTANCE = 0.1


@dataclass
class Labels:
    """Reference labels of one structure.

    Attributes
    ----------
    energy : float or None
        Total energy in eV.
    forces : ndarray of shape (n_atoms, 3) or None
        Forces in eV/Å.
    virial : ndarray of shape (3, 3) or None
        Virial ``-stress * volume`` in eV.
    config_type : str
        Free-form tag used for per-group reporting (and per-group noise).
    """

    energy: float | None = None
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None
    config_type: str = "default"


@dataclass
class LabelKeys:
    """Where the labels live in an :class:`ase.Atoms`.

    ``None`` (the default) means: take the label from ``atoms.calc`` (a
    ``SinglePointCalculator`` as written by ASE's extxyz reader) and fall back to
    ``atoms.info`` / ``atoms.arrays`` under the conventional names.
    """

    energy: str | None = None
    forces: str | None = None
    virial: str | None = None
    stress: str | None = None
    config_type: str = "config_type"

    def describe(self) -> str:
        return (f"energy={self.energy or 'energy'}, forces={self.forces or 'forces'}, "
                f"virial={self.virial or 'virial'}")


# ----------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------
def read_frames(paths: str | os.PathLike | Sequence[str | os.PathLike],
                index: str = ":") -> list[Atoms]:
    """Read structures from one or more extxyz (or any ASE-readable) files.

    Parameters
    ----------
    paths : path or sequence of paths
        Files to read; their frames are concatenated in order.
    index : str
        ASE index string applied to every file.

    Returns
    -------
    list of ase.Atoms

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        If a file cannot be parsed (for example it is truncated) or holds no frames.
    """
    from ase.io import read

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames: list[Atoms] = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No such structure file: '{path}'")
        try:
            got = read(str(path), index=index)
        except Exception as exc:  # ASE raises many types for malformed files
            raise ValueError(f"Could not read structures from '{path}': {exc}. "
                             "Is the file truncated or not in extxyz format?") from exc
        got = [got] if isinstance(got, Atoms) else list(got)
        if not got:
            raise ValueError(f"'{path}' contains no structures")
        for k, atoms in enumerate(got):
            atoms.info.setdefault("_source", f"{path.name}:{k}")
        frames.extend(got)
    return frames


def as_frame_list(frames: Atoms | Iterable[Atoms]) -> list[Atoms]:
    """Accept a single :class:`ase.Atoms` or an iterable of them; reject the rest."""
    if isinstance(frames, Atoms):
        return [frames]
    if isinstance(frames, (str, os.PathLike)):
        return read_frames(frames)
    try:
        out = list(frames)
    except TypeError:
        raise TypeError(f"Expected ase.Atoms or a list of ase.Atoms, got {type(frames).__name__}") from None
    for k, atoms in enumerate(out):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"frame {k}: expected ase.Atoms, got {type(atoms).__name__}")
    if not out:
        raise ValueError("The dataset is empty: no structures were given")
    return out


# ----------------------------------------------------------------------------------
# geometry validation
# ----------------------------------------------------------------------------------
def check_geometry(atoms: Atoms, index: int = 0, min_distance: float = MIN_DISTANCE) -> None:
    """Reject structures that no descriptor can handle.

    Checks for an empty structure, non-finite positions, a degenerate periodic cell
    and overlapping atoms (closer than ``min_distance`` Å, images included).

    Raises
    ------
    ValueError
        With the frame index and what is wrong.
    """
    n = len(atoms)
    if n == 0:
        raise ValueError(f"frame {index}: the structure has no atoms")
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        raise ValueError(f"frame {index}: positions contain NaN or infinite values")
    pbc = atoms.get_pbc()
    if pbc.any():
        cell = np.asarray(atoms.get_cell())
        lengths = np.linalg.norm(cell, axis=1)
        if np.any(lengths[pbc] < 1e-8):
            raise ValueError(f"frame {index}: periodic along {list(np.where(pbc)[0])} but the "
                             f"cell vectors have lengths {lengths.round(6).tolist()} Å; "
                             "give a full cell or set pbc=False on that axis")
        vol = abs(np.linalg.det(cell)) if pbc.all() else None
        if vol is not None and vol < 1e-6 * max(lengths.prod(), 1e-300):
            raise ValueError(f"frame {index}: the periodic cell is degenerate (volume {vol:.3g} Å^3); "
                             "its cell vectors are (nearly) linearly dependent")
    if n > 1:
        closest, atom = closest_distance(atoms, cutoff=min_distance, return_atom=True)
        if closest < min_distance:
            raise ValueError(f"frame {index}: atoms overlap (closest distance {closest:.3g} Å "
                             f"< {min_distance} Å, atom {atom})")


def closest_distance(atoms: Atoms, cutoff: float | None = None, return_atom: bool = False):
    """Closest interatomic distance, periodic images included.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure; periodic along the directions of ``atoms.pbc``.
    cutoff : float, optional
        Only look for distances below this, in Å (cheaper); a structure without such
        a pair gives inf. By default the closest distance is searched at any range
        (for a periodic cell, within 12 Å).
    return_atom : bool, default False
        Also return the index of an atom of the closest pair (-1 when the distance is
        inf).

    Returns
    -------
    float or (float, int)
        The distance in Å (inf for a single atom in a finite system or when no pair
        is found), and with ``return_atom`` the atom index.
    """
    d, i = _pair_distances(atoms, cutoff)
    if len(d) == 0:
        return (np.inf, -1) if return_atom else np.inf
    k = int(np.argmin(d))
    return (float(d[k]), int(i[k])) if return_atom else float(d[k])


def _pair_distances(atoms: Atoms, cutoff: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pair distances (Å) and an atom of each pair; contains the closest pair
    (below ``cutoff``, if one is given)."""
    pos = atoms.get_positions()
    if not atoms.get_pbc().any():
        if len(atoms) < 2:
            return np.zeros(0), np.zeros(0, dtype=int)
        tree = cKDTree(pos)
        if cutoff is None:
            d, _ = tree.query(pos, k=2)
            return d[:, 1], np.arange(len(atoms))
        pairs = tree.query_pairs(cutoff, output_type="ndarray")
        if len(pairs) == 0:
            return np.zeros(0), np.zeros(0, dtype=int)
        return np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1), pairs[:, 0]
    if cutoff is not None:
        # A cutoff of ~1 Å keeps ASE's cell binning coarse; filter afterwards.
        i, d = neighbor_list("id", atoms, max(cutoff, 1.0))
        close = d < cutoff
        return d[close], i[close]
    for r in (3.0, 6.0, 12.0):
        i, d = neighbor_list("id", atoms, r)
        if len(d):
            return d, i
    return np.zeros(0), np.zeros(0, dtype=int)


# ----------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------
def _calc_result(atoms: Atoms, name: str):
    calc = atoms.calc
    if calc is None:
        return None
    results = getattr(calc, "results", {}) or {}
    return results.get(name)


def _as_float_array(value, shape, what: str, index: int, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"frame {index}: {what} under key '{key}' is not numeric") from None
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"frame {index}: {what} under key '{key}' has shape {arr.shape}, "
                         f"expected {shape}")
    arr = arr.reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"frame {index}: {what} under key '{key}' contains NaN or infinite values")
    return arr


def voigt_to_matrix(v: np.ndarray) -> np.ndarray:
    """ASE Voigt order (xx, yy, zz, yz, xz, xy) to a symmetric 3x3 matrix."""
    xx, yy, zz, yz, xz, xy = np.asarray(v, dtype=np.float64)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    """Symmetric 3x3 matrix to ASE Voigt order (xx, yy, zz, yz, xz, xy)."""
    m = np.asarray(m)
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


def stress_to_virial(stress_voigt: np.ndarray, volume: float) -> np.ndarray:
    """Virial ``-stress * volume`` (GAP's convention) of a stress.

    Parameters
    ----------
    stress_voigt : array_like of shape (6,) or (3, 3)
        Stress in eV/Å³, ASE's sign (positive under tension), in ASE Voigt order
        (xx, yy, zz, yz, xz, xy) or as a 3x3 matrix.
    volume : float
        Cell volume in Å³.

    Returns
    -------
    ndarray of shape (3, 3)
        The virial in eV.
    """
    s = np.asarray(stress_voigt, dtype=np.float64)
    matrix = voigt_to_matrix(s) if s.shape == (6,) else s.reshape(3, 3)
    return -matrix * volume


def get_labels(atoms: Atoms, keys: LabelKeys | None = None, index: int = 0,
               require_energy: bool = True, require_forces: bool = True) -> Labels:
    """Extract and validate the reference labels of one structure.

    Parameters
    ----------
    atoms : ase.Atoms
    keys : LabelKeys, optional
        Where to look. ``None`` uses ``atoms.calc`` results and then the
        ``energy``/``forces``/``virial`` info and array keys.
    index : int
        Frame index, used in error messages.
    require_energy, require_forces : bool
        Raise if the label is missing.

    Returns
    -------
    Labels

    Raises
    ------
    ValueError
        If a required label is missing, NaN or mis-shaped; the message names the
        frame index and the key.
    """
    keys = keys or LabelKeys()
    n = len(atoms)

    # energy ------------------------------------------------------------------
    ekey = keys.energy or "energy"
    if keys.energy is None:
        e = _calc_result(atoms, "energy")
        if e is None:
            e = _calc_result(atoms, "free_energy")
        if e is None:
            e = atoms.info.get("energy")
    else:
        e = atoms.info.get(keys.energy)
        if e is None and keys.energy in ("energy", "free_energy"):
            e = _calc_result(atoms, keys.energy)
    energy = None
    if e is None:
        if require_energy:
            raise ValueError(f"frame {index}: no energy label found under key '{ekey}' "
                             f"(info keys: {sorted(atoms.info)}); set --energy-key / LabelKeys(energy=...)")
    else:
        energy = float(_as_float_array(e, (1,), "energy", index, ekey)[0])

    # forces ------------------------------------------------------------------
    fkey = keys.forces or "forces"
    if keys.forces is None:
        f = _calc_result(atoms, "forces")
        if f is None:
            f = atoms.arrays.get("forces")
    else:
        f = atoms.arrays.get(keys.forces)
        if f is None and keys.forces == "forces":
            f = _calc_result(atoms, "forces")
    forces = None
    if f is None:
        if require_forces:
            raise ValueError(f"frame {index}: no forces found under key '{fkey}' "
                             f"(array keys: {sorted(atoms.arrays)}); set --forces-key / LabelKeys(forces=...)")
    else:
        forces = _as_float_array(f, (n, 3), "forces", index, fkey)

    # virial (optional) -------------------------------------------------------
    virial = None
    vkey = keys.virial or "virial"
    v = atoms.info.get(vkey)
    if v is not None:
        v = np.asarray(v, dtype=np.float64)
        if v.size == 6:
            virial = voigt_to_matrix(_as_float_array(v, (6,), "virial", index, vkey))
        else:
            virial = _as_float_array(v, (3, 3), "virial", index, vkey)
    else:
        skey = keys.stress
        s = atoms.info.get(skey) if skey else _calc_result(atoms, "stress")
        if s is not None and atoms.get_pbc().all():
            s = np.asarray(s, dtype=np.float64)
            stress = _as_float_array(s, (6,) if s.size == 6 else (3, 3), "stress", index,
                                     skey or "stress")
            virial = stress_to_virial(stress, atoms.get_volume())
    if virial is not None and not atoms.get_pbc().all():
        raise ValueError(f"frame {index}: a virial label needs a fully periodic cell")

    config_type = str(atoms.info.get(keys.config_type, "default"))
    return Labels(energy=energy, forces=forces, virial=virial, config_type=config_type)


# ----------------------------------------------------------------------------------
# reference energies
# ----------------------------------------------------------------------------------
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
        vals = {}
        for key, val in method.items():
            z = chemical_symbols.index(key) if isinstance(key, str) else int(key)
            vals[z] = float(val)
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


def default_data_dir() -> Path:
    """The folder with the project's default data (``$GAPKIT_DATA`` or the source checkout's ``data/``)."""
    env = os.environ.get("GAPKIT_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "data")
    for c in candidates:
        if (c / "train.xyz").is_file():
            return c
    raise FileNotFoundError("Default data not found (looked in "
                            f"{[str(c) for c in candidates]}); set GAPKIT_DATA to a folder "
                            "with train.xyz, or pass training files explicitly")
