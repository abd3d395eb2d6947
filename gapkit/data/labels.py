"""Reference labels of a structure: energies, forces and virials, checked.

Units are ASE's: energies in eV, forces in eV/Å, stress in eV/Å³ and virials in eV.
The virial follows GAP's convention, ``virial = -stress * volume`` (eV), so that a
cell stretched beyond its equilibrium (under tensile stress, ASE stress > 0) has a
negative virial.

Where a virial comes from (:func:`get_labels`):

* ``LabelKeys(virial="KEY")``: only ``atoms.info["KEY"]`` (3x3 or 6 Voigt values, eV);
  a frame without it has no virial label. There is no fall-back to the calculator's
  stress: a key given on purpose is never replaced by something else.
* ``LabelKeys(stress="KEY")``: only ``atoms.info["KEY"]``, a stress in eV/Å³ (MACE's
  ``REF_stress`` style), turned into ``-stress * volume``.
* neither (the default): ``atoms.info["virial"]``, else the calculator's ``stress``
  (what ASE's extxyz reader makes of a ``stress=`` entry).
* ``LabelKeys(use_virials=False)``: no virial at all.

A virial or stress on a structure that is not periodic along all three axes is an
error (a finite system has no stress), never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

__all__ = ["Labels", "LabelKeys", "get_labels", "voigt_to_matrix", "matrix_to_voigt",
           "stress_to_virial"]


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
    ``atoms.info`` / ``atoms.arrays`` under the conventional names. See the module
    docstring for the virial rules; ``virial`` and ``stress`` exclude each other.
    """

    energy: str | None = None
    forces: str | None = None
    virial: str | None = None
    stress: str | None = None
    config_type: str = "config_type"
    use_virials: bool = True


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
        raise ValueError(f"frame {index}: {what} under key '{key}' is not numeric "
                         f"(got {str(value)[:60]!r})") from None
    if arr.shape != tuple(shape) and not (arr.size == int(np.prod(shape))
                                          and (arr.ndim <= 1 or len(shape) == 1)):
        raise ValueError(f"frame {index}: {what} under key '{key}' has shape {arr.shape}, "
                         f"expected {tuple(shape)}")
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


def _tensor(value, what: str, index: int, key: str) -> np.ndarray:
    """A 3x3 tensor from 6 Voigt or 9 values (text and other shapes raise)."""
    arr = _as_float_array(value, (np.size(value),), what, index, key) \
        if np.size(value) in (6, 9) else _as_float_array(value, (3, 3), what, index, key)
    return voigt_to_matrix(arr) if arr.size == 6 else arr.reshape(3, 3)


def _virial_label(atoms: Atoms, keys: LabelKeys, index: int):
    """(virial in eV or None, the key it came from)."""
    if not keys.use_virials:
        return None, None
    if keys.virial and keys.stress:
        raise ValueError("give a virial key or a stress key, not both "
                         f"(virial='{keys.virial}', stress='{keys.stress}')")
    if keys.virial is not None:
        v = atoms.info.get(keys.virial)
        return (None if v is None else _tensor(v, "virial", index, keys.virial)), keys.virial
    if keys.stress is not None:
        s = atoms.info.get(keys.stress)
        if s is None:
            return None, keys.stress
        stress = _tensor(s, "stress", index, keys.stress)
        return _stress_virial(atoms, stress, index, keys.stress), keys.stress
    v = atoms.info.get("virial")
    if v is not None:
        return _tensor(v, "virial", index, "virial"), "virial"
    s = _calc_result(atoms, "stress")
    key = "stress (calculator)"
    if s is None:
        s, key = atoms.info.get("stress"), "stress"
    if s is None:
        return None, None
    return _stress_virial(atoms, _tensor(s, "stress", index, key), index, key), key


def _stress_virial(atoms: Atoms, stress: np.ndarray, index: int, key: str) -> np.ndarray:
    if not atoms.get_pbc().all():
        raise ValueError(f"frame {index}: a stress label under key '{key}' needs a fully "
                         f"periodic cell (pbc is {atoms.get_pbc().tolist()}); remove it or "
                         "leave virials out (use_virials=False, --no-virials)")
    return stress_to_virial(stress, atoms.get_volume())


def get_labels(atoms: Atoms, keys: LabelKeys | None = None, index: int = 0,
               require_energy: bool = True, require_forces: bool = True) -> Labels:
    """Extract and validate the reference labels of one structure.

    Parameters
    ----------
    atoms : ase.Atoms
    keys : LabelKeys, optional
        Where to look. ``None`` uses ``atoms.calc`` results and then the
        ``energy``/``forces``/``virial`` info and array keys (see the module docstring
        for virials and stresses).
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
        If a required label is missing, NaN, not numeric or mis-shaped (forces must be
        (n_atoms, 3): a (3, n_atoms) array is refused, not reshaped), or a stress or
        virial is given for a structure that is not fully periodic; the message names
        the frame index and the key.
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
    virial, vkey = _virial_label(atoms, keys, index)
    if virial is not None and not atoms.get_pbc().all():
        raise ValueError(f"frame {index}: a virial label under key '{vkey}' needs a fully "
                         f"periodic cell (pbc is {atoms.get_pbc().tolist()}); remove it or "
                         "leave virials out (use_virials=False, --no-virials)")

    config_type = str(atoms.info.get(keys.config_type, "default"))
    return Labels(energy=energy, forces=forces, virial=virial, config_type=config_type)
