"""A variance term for atoms closer together than anywhere in the training data.

Normalised SOAP barely changes when a bond is compressed below the training range:
the neighbour density moves inwards but its normalised shape stays similar, so the
Nyström residual stays small while the energy climbs the repulsive wall. This term
looks at the pair distances directly.

For every species pair ``(A, B)`` the calibrated model keeps, from its training data
(within the descriptor cutoff): the *floor* ``r_0``, the shortest A–B distance, and the
*width* ``w``, the standard deviation of the distance from an atom to its nearest
neighbour of the other species, over those below :data:`BOND_WINDOW` times the floor
(the thermal spread of the bond); per species, the RMS
training force component ``F_A`` (eV/Å). ``F_A / w`` is a stiffness (eV/Å²) read
from the data. A pair of a new structure at ``r < r_0`` has the deficit
``d = r_0 - r`` and ``x = d / w``, and adds

* to the force-component variance of each of its atoms: ``F_A**2 x**2`` (an error
  that grows linearly with the compression, at the data's stiffness);
* to the total energy std: ``F_AB d x`` with ``F_AB**2 = (F_A**2 + F_B**2) / 2`` (the
  integral of that force error over the compression), half of it to each atom's local
  energy std; the energy terms of the pairs of one structure add linearly (the model
  misses the same repulsion on each: fully correlated).

The term is exactly 0 for every distance the training data cover, so it cannot change
the calibration there (in the spirit of the calibration's "raw beyond the knee" rule:
where the validation data say nothing, the calibration does not shrink the std), and
grows without bound as a bond is compressed below them. Species pairs never within the
cutoff in training have no floor and add nothing (SOAP's Nyström term sees a new
neighbour species on its own); without training forces there is no force scale and
no term.

:func:`training_range` also keeps the ranges of the coordination and strain terms of
:mod:`gapkit.model.coordination_variance` (key ``"coordination"``), and
:func:`compression_terms` adds them (energies only); a range without the key (files
written before them) gives the compression term alone, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from ase import Atoms

from gapkit.descriptors.neighbours import neighbour_pairs
from gapkit.model import coordination_variance as cv

__all__ = ["BOND_WINDOW", "CompressionTerms", "MIN_WIDTH_FRACTION", "compression_terms", "pair_key",
           "training_range"]

#: Smallest width as a fraction of the floor (a perfect crystal has no thermal spread).
MIN_WIDTH_FRACTION = 0.01
#: The width is the spread of the nearest-neighbour distances below this many times the
#: floor (the bond itself, not a farther neighbour of the same species).
BOND_WINDOW = 1.25


def pair_key(z1: int, z2: int) -> str:
    """``"z1-z2"`` with ``z1 <= z2``: the key of a species pair."""
    a, b = sorted((int(z1), int(z2)))
    return f"{a}-{b}"



def training_range(frames: Sequence[Atoms], forces: Sequence, r_cut: float,
                   coordination: bool = True) -> dict:
    """Floors, widths and force scales of the training structures.

    Parameters
    ----------
    frames : list of ase.Atoms
        Every structure the model is trained on (single atoms contribute nothing).
    forces : list of ndarray (n_atoms_k, 3) or None
        Their reference forces, eV/Å (``None`` where a frame has none).
    r_cut : float
        Only pairs closer than this are seen (the descriptor cutoff), Å.
    coordination : bool
        Also keep the ranges of the coordination and strain terms
        (:func:`gapkit.model.coordination_variance.coordination_range`).

    Returns
    -------
    dict
        ``{"pairs": {pair_key: [floor, width]}, "force_rms": {str(z): F_z},
        "coordination": {...}}`` (Å, Å, eV/Å), JSON-able; ``{}`` when no frame has
        forces.

    Raises
    ------
    ValueError
        If ``r_cut`` is not positive or ``forces`` does not match ``frames``.
    """
    if not r_cut > 0:
        raise ValueError(f"r_cut must be positive, got {r_cut!r}")
    if len(forces) != len(frames):
        raise ValueError(f"forces has {len(forces)} entries for {len(frames)} frames")
    floor: dict = {}
    near: dict = {}  # code -> list of nearest-neighbour distances
    f2: dict = {}  # z -> [sum of squared components, count]
    for atoms, f in zip(frames, forces):
        if len(atoms) < 2:
            continue
        z = atoms.numbers
        if f is not None:
            f = np.asarray(f, dtype=np.float64).reshape(len(atoms), 3)
            for s in np.unique(z):
                acc = f2.setdefault(int(s), [0.0, 0])
                acc[0] += float(np.sum(f[z == s] ** 2))
                acc[1] += 3 * int(np.sum(z == s))
        i, j, d, _ = neighbour_pairs(atoms, r_cut)
        if not len(d):
            continue
        code = cv.pair_codes(z[i], z[j])
        for c in np.unique(code):
            m = code == c
            floor[int(c)] = min(floor.get(int(c), np.inf), float(d[m].min()))
        # each centre's nearest neighbour of each species
        key = i.astype(np.int64) * 1000 + z[j]
        order = np.lexsort((d, key))
        first = np.r_[True, key[order][1:] != key[order][:-1]]
        sel = order[first]
        for c in np.unique(code[sel]):
            near.setdefault(int(c), []).append(d[sel][code[sel] == c])
    if not f2:
        return {}
    pairs = {}
    for c, r0 in floor.items():
        nd = np.concatenate(near.get(c, [np.array([r0])]))
        nd = nd[nd < BOND_WINDOW * r0]
        w = max(float(np.std(nd)) if nd.size > 1 else 0.0, MIN_WIDTH_FRACTION * r0)
        pairs[pair_key(c // 1000, c % 1000)] = [r0, w]
    out = {"pairs": pairs,
           "force_rms": {str(z): float(np.sqrt(s / n)) for z, (s, n) in f2.items() if n}}
    if coordination:
        out["coordination"] = cv.coordination_range(frames, pairs, r_cut, BOND_WINDOW,
                                                    MIN_WIDTH_FRACTION)
    return out


@dataclass
class CompressionTerms:
    """The compression term of one structure.

    Attributes
    ----------
    forces : ndarray of shape (n_atoms,)
        Added to every force-component variance of the atom, (eV/Å)².
    energies : ndarray of shape (n_atoms,)
        Local-energy std terms, eV (their squares add to the local-energy variances).
    energy : float
        Total-energy std term, eV (the sum of ``energies``; its square adds to the
        total-energy variance).
    """

    forces: np.ndarray
    energies: np.ndarray
    energy: float


def compression_terms(atoms: Atoms, trange: Mapping, r_cut: float) -> CompressionTerms | None:
    """The compression term of one structure (see the module docstring).

    Parameters
    ----------
    atoms : ase.Atoms
    trange : dict
        :func:`training_range` of the training data; empty: no term.
    r_cut : float
        Cutoff of the neighbour search, Å.

    Returns
    -------
    CompressionTerms or None
        The compression term plus the coordination and strain terms of
        :mod:`gapkit.model.coordination_variance` (where ``trange`` has their range);
        ``None`` when every number is inside its training range (or there is no range).
    """
    if not trange or len(atoms) < 2:
        return None
    pairs = trange.get("pairs") or {}
    crange = trange.get("coordination") or {}
    frms = trange.get("force_rms", {})
    reach = max([p[0] for p in pairs.values()] + [b[1] for b in crange.get("switch", {}).values()]
                + [crange.get("cut", 0.0)], default=0.0)
    reach = min(float(r_cut), reach)
    if not reach > 0:
        return None
    i, j, d, _ = neighbour_pairs(atoms, reach)
    if not len(d):
        return None
    extra = cv.coordination_terms(atoms, crange, frms, i, j, d)
    out = _pair_terms(atoms, pairs, frms, i, j, d) if pairs else None
    if extra is None:
        return out
    if out is None:
        return CompressionTerms(forces=np.zeros(len(atoms)), energies=extra,
                                energy=float(extra.sum()))
    energies = out.energies + extra
    return CompressionTerms(forces=out.forces, energies=energies, energy=float(energies.sum()))


def _pair_terms(atoms, pairs, frms, i, j, d) -> CompressionTerms | None:
    """The compression term proper, from the neighbour pairs ``(i, j, d)``."""
    z = atoms.numbers
    code = cv.pair_codes(z[i], z[j])
    r0, w = np.zeros(len(d)), np.ones(len(d))
    for c in np.unique(code):
        p = pairs.get(pair_key(c // 1000, c % 1000))
        if p is not None:
            r0[code == c], w[code == c] = p
    deficit = np.maximum(r0 - d, 0.0)
    if not np.any(deficit > 0):
        return None
    x = deficit / w
    fz = np.array([frms.get(str(int(s)), 0.0) for s in range(int(z.max()) + 1)])
    f_i, f_j = fz[z[i]], fz[z[j]]
    n = len(atoms)
    # every pair is listed as (i, j) and (j, i): each listing gives its centre the pair's
    # force term once and half of the pair's energy term
    forces = np.bincount(i, weights=f_i ** 2 * x ** 2, minlength=n)
    energies = np.bincount(i, weights=0.5 * np.sqrt(0.5 * (f_i ** 2 + f_j ** 2)) * deficit * x,
                           minlength=n)
    return CompressionTerms(forces=forces, energies=energies, energy=float(energies.sum()))
