"""Labelled structures for active learning: checking, copying and oracle labelling.

Units are ASE's: energies in eV, forces in eV/Å, stress in eV/Å³, virials in eV.
"""

from __future__ import annotations

import os

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator

from gapkit.data import as_frame_list, get_labels, stress_to_virial

#: Calculator results that a labelled copy keeps.
LABEL_RESULTS = ("energy", "free_energy", "forces", "stress")


def as_frames(x, what: str) -> list[Atoms]:
    """A non-empty list of structures from one ``ase.Atoms`` or an iterable of them
    (:func:`gapkit.data.as_frame_list`, but no file paths).

    Parameters
    ----------
    x : ase.Atoms or iterable of ase.Atoms
        The structures.
    what : str
        Their name in error messages (e.g. ``"start"``).

    Returns
    -------
    frames : list of ase.Atoms

    Raises
    ------
    TypeError
        If ``x`` is a path, not iterable, or holds something else than Atoms.
    ValueError
        If it is empty.
    """
    if isinstance(x, (str, os.PathLike)):
        raise TypeError(f"{what} must be ase.Atoms or a list of ase.Atoms, "
                        f"got {type(x).__name__}")
    try:
        return as_frame_list(x)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what}: {exc}") from None


def copy_labelled(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` that keeps its calculator's energy (eV), forces (eV/Å) and
    stress (eV/Å³) results as a ``SinglePointCalculator``.

    Parameters
    ----------
    atoms : ase.Atoms

    Returns
    -------
    ase.Atoms
        The copy (``info`` and ``arrays`` copied too); without a calculator when
        ``atoms`` has no such results.
    """
    a = atoms.copy()
    results = getattr(atoms.calc, "results", None) or {}
    keep = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
            for k, v in results.items() if k in LABEL_RESULTS}
    if keep:
        a.calc = SinglePointCalculator(a, **keep)
    return a


def is_labelled(atoms: Atoms, model) -> bool:
    """Whether ``atoms`` has the labels that ``model`` trains on.

    Parameters
    ----------
    atoms : ase.Atoms
    model : GAP
        Its ``label_keys`` say where the labels live; forces are required when
        ``model.use_forces`` (default True).

    Returns
    -------
    bool
        True when an energy (and forces where required) is found and valid.
    """
    try:
        get_labels(atoms, model.label_keys, require_forces=bool(getattr(model, "use_forces", True)))
    except ValueError:
        return False
    return True


def labelled_copies(frames, model, what: str) -> list[Atoms]:
    """Copies (:func:`copy_labelled`) of structures that must all be labelled.

    Parameters
    ----------
    frames : ase.Atoms or iterable of ase.Atoms
    model : GAP
        Whose labels are required (:func:`is_labelled`).
    what : str
        Their name in error messages (e.g. ``"test"``).

    Returns
    -------
    list of ase.Atoms

    Raises
    ------
    ValueError
        Naming the first unlabelled structures.
    """
    out = [copy_labelled(a) for a in as_frames(frames, what)]
    bad = [k for k, a in enumerate(out) if not is_labelled(a, model)]
    if bad:
        raise ValueError(f"{what} structures {bad[:10]} have no energy/forces labels")
    return out


def label_with_oracle(atoms: Atoms, oracle, model) -> Atoms:
    """Label a copy of ``atoms`` with the oracle.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure to label (not modified).
    oracle : ase Calculator
        The reference method.
    model : GAP
        Its ``label_keys``: custom energy / forces / virial keys are filled too.

    Returns
    -------
    ase.Atoms
        A copy with a ``SinglePointCalculator`` holding the energy (eV), forces
        (eV/Å) and, for fully periodic cells whose oracle provides it, the stress
        (eV/Å³, Voigt order); under a custom virial key the virial (eV, 9 values).

    Raises
    ------
    ValueError
        If the oracle returns a non-finite energy or forces. Whatever the oracle
        itself raises is passed on.
    """
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
        a.info[keys.virial] = stress_to_virial(stress, a.get_volume()).ravel()
    return a
