"""Energy-std terms for atoms with fewer or more neighbours, and for structures strained
further, than anywhere in the training data: the coordination counterpart of the
compression term of :mod:`gapkit.model.distance_variance`.

Normalised SOAP barely changes when an atom loses a neighbour (a surface, a vacancy, a
broken bond) or when a whole cell is strained uniformly: the shape of the neighbour
density stays similar, so the Nyström residual stays small while the energy error
grows. These terms look at three numbers the training data bound directly.

Shell coordination ``c_i = sum_j f_AB(r_ij)``
    For every species pair with a compression floor ``r_0`` (its shortest training
    distance) ``f_AB`` is 1 up to ``r_0``, ``(1 + cos(pi t)) / 2`` with ``t = (r - r_0) /
    (r_1 - r_0)`` up to ``r_1 = SWITCH_OUTER * r_0`` (at most the cutoff), 0 beyond:
    the first shell counts, with a slope there, the second hardly (nearest-neighbour
    distances are ~1.1–1.2 ``r_0`` in thermal data; second shells are 1.15–1.63 times
    the first in bcc, fcc and diamond crystals, 1.4–2 times a covalent bond in
    molecules; no per-set choice).
Density ``n_i = sum_j (1 + cos(pi r_ij / r_cut)) / 2``
    The smooth number of atoms within the descriptor cutoff (vacuum above a surface).
Mean first-shell distance ``m_AB`` of a structure
    ``sum f r / sum f`` over its A–B pairs: it moves with a uniform strain of a few per
    cent, which thermal noise hides in one atom's ``c`` or ``n``, and hardly with
    temperature (unlike the mean nearest-neighbour distance, which falls as the
    thermal spread grows).

The model keeps, per species, ``[c_min, c_max]``, ``[n_min, n_max]`` and their spreads
``s_c``, ``s_n`` (std over training atoms) and ``w_A``, the std of an atom's nearest
neighbour distance within ``BOND_WINDOW`` times its floor; per species pair
``[m_min, m_max]`` over training structures. An atom outside its ranges has
``x = max(Δc / s_c, Δn / s_n)`` and adds ``F_A w_A x`` to its local-energy std term:
the force error ``F_A x`` of the compression term over one bond width. A structure
whose ``m_AB`` lies ``d`` Å outside its range (compressed or stretched) adds, to each
atom with a first-shell A–B neighbour, half the compression term of one bond
compressed by ``d``: ``F_AB d**2 / (2 w_AB)`` (``w_AB`` the pair's width).
``F_A`` is the species' RMS training force component, ``F_AB**2 = (F_A**2 +
F_B**2) / 2``. The energy terms of a structure add linearly, to each other and to
the compression term (fully correlated, as the compression term).

Energies only: with a force term ``(F_A x)**2`` the force stds of EMT Cu vacancies,
strained cells and slabs were 100–1000 times their errors (which the Nyström term
already covers), and the mlearn Si surface atoms with eV/Å force errors lie inside all
three training ranges (its AIMD-NVT data reach ``c`` from 0.3 to 6.6), so no force term
on these numbers would help there (``docs/guide/uncertainty.md``).

Every term is exactly 0 inside the training ranges, so the in-distribution calibration
is untouched (a training structure gets bit-for-bit the std it had without them). Needs
only the neighbour list: no descriptor derivatives.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from ase import Atoms

from gapkit.descriptors.neighbours import neighbour_pairs

__all__ = ["SWITCH_OUTER", "coordination_range", "coordination_terms", "density", "pair_codes",
           "switching"]

#: The switching function falls from 1 at the floor ``r_0`` to 0 at this many ``r_0``.
SWITCH_OUTER = 1.6
#: Smallest spread of a species' coordination (a perfect crystal has none).
MIN_SPREAD = 0.01


def switching(d: np.ndarray, r_in: np.ndarray, r_out: np.ndarray) -> np.ndarray:
    """``1`` below ``r_in``, ``(1 + cos(pi t)) / 2`` with ``t = (d - r_in) / (r_out -
    r_in)`` up to ``r_out``, ``0`` beyond; all arrays of shape (P,), Å."""
    t = np.clip((d - r_in) / (r_out - r_in), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def pair_codes(zi: np.ndarray, zj: np.ndarray) -> np.ndarray:
    """``min * 1000 + max`` of the atomic numbers of each pair, int64 of shape (P,)."""
    return np.minimum(zi, zj).astype(np.int64) * 1000 + np.maximum(zi, zj)


def _pair_arrays(z, i, j, switch: Mapping):
    """Per pair: the switching bounds (0, 0 where the species pair has none) and the
    pair code (:func:`pair_codes`)."""
    code = pair_codes(z[i], z[j])
    r_in, r_out = np.zeros(len(i)), np.ones(len(i))
    known = np.zeros(len(i), dtype=bool)
    for c in np.unique(code):
        b = switch.get(f"{c // 1000}-{c % 1000}")
        if b is not None:
            m = code == c
            r_in[m], r_out[m], known[m] = b[0], b[1], True
    return code, r_in, r_out, known


def _switched(z, i, j, d, switch: Mapping):
    """Pair codes and switching-function values (0 for species pairs without one)."""
    code, r_in, r_out, known = _pair_arrays(z, i, j, switch)
    return code, np.where(known, switching(d, r_in, r_out), 0.0), r_in


def density(n: int, i: np.ndarray, d: np.ndarray, r_cut: float) -> np.ndarray:
    """``sum_j (1 + cos(pi r_ij / r_cut)) / 2`` of every atom, shape (n,): the smooth
    number of atoms within the cutoff (pairs ``(i, d)`` closer than ``r_cut``)."""
    return np.bincount(i, weights=0.5 * (1.0 + np.cos(np.pi * d / r_cut)), minlength=n)


def _outside(v: np.ndarray, rng) -> np.ndarray:
    """How far ``v`` lies outside ``[rng[0], rng[1]]``, in units of ``rng[2]``."""
    return np.maximum(np.maximum(rng[0] - v, v - rng[1]), 0.0) / rng[2]


def _mean_distances(i, d, code, f) -> dict:
    """``{code: (mean first-shell distance, its centres)}``: per pair code, the mean
    distance of the pairs weighted by the switching function ``f`` (pairs with
    ``f > 0`` only)."""
    out = {}
    for c in np.unique(code[f > 0]):
        m = (code == c) & (f > 0)
        out[int(c)] = (float(np.sum(f[m] * d[m]) / np.sum(f[m])), np.unique(i[m]))
    return out


def coordination_range(frames: Sequence[Atoms], pairs: Mapping, r_cut: float,
                       bond_window: float, min_width_fraction: float) -> dict:
    """The training ranges of the coordination and strain terms.

    Parameters
    ----------
    frames : list of ase.Atoms
        Every structure the model is trained on.
    pairs : dict
        ``{pair_key: [floor, width]}`` of :func:`gapkit.model.distance_variance.
        training_range` (Å).
    r_cut : float
        The descriptor cutoff, Å (no switching function reaches beyond it).
    bond_window, min_width_fraction : float
        The bond is the nearest neighbour within ``bond_window`` times its floor; the
        smallest width, as a fraction of the floor (those of the compression term).

    Returns
    -------
    dict
        ``{"switch": {pair_key: [r_0, r_1]}, "species": {str(z): [c_min, c_max, s,
        w]}, "strain": {pair_key: [m_min, m_max, w]}}`` (Å; ``c`` and ``s``
        dimensionless), JSON-able; ``{}`` without pairs.
    """
    if not pairs:
        return {}
    switch = {k: [float(p[0]), float(min(SWITCH_OUTER * p[0], r_cut))] for k, p in pairs.items()}
    reach = max(b[1] for b in switch.values())
    cs: dict = {}  # z -> coordinations of its atoms
    nn: dict = {}  # z -> rows [nearest-neighbour distance, its floor]
    means: dict = {}  # code -> mean first-shell distance of each structure
    for atoms in frames:
        if len(atoms) < 2:
            continue
        z = atoms.numbers
        ii, jj, dd, _ = neighbour_pairs(atoms, r_cut)  # one search: reach <= r_cut
        rho = density(len(atoms), ii, dd, r_cut)
        near = dd < reach
        i, j, d = ii[near], jj[near], dd[near]
        code, f, r0 = _switched(z, i, j, d, switch)
        c = np.bincount(i, weights=f, minlength=len(atoms))
        for s in np.unique(z):
            cs.setdefault(int(s), []).append(np.c_[c[z == s], rho[z == s]])
        for k, (m, _) in _mean_distances(i, d, code, f).items():
            means.setdefault(k, []).append(m)
        on = f > 0
        if on.any():  # every centre's nearest neighbour (the bond), for w_A
            ii, dd, rr = i[on], d[on], r0[on]
            order = np.lexsort((dd, ii))
            first = order[np.r_[True, ii[order][1:] != ii[order][:-1]]]
            for s in np.unique(z[ii[first]]):
                m = z[ii[first]] == s
                nn.setdefault(int(s), []).append(np.c_[dd[first][m], rr[first][m]])
    species, dens = {}, {}
    for s, v in cs.items():
        v = np.concatenate(v)
        dens[str(s)] = [float(v[:, 1].min()), float(v[:, 1].max()),
                        max(float(np.std(v[:, 1])), MIN_SPREAD)]
        v = v[:, 0]
        w = 0.0
        if s in nn:
            a = np.concatenate(nn[s])
            r_min = float(a[:, 1].min())
            a = a[a[:, 0] < bond_window * a[:, 1]]
            w = max(float(np.std(a[:, 0])) if len(a) > 1 else 0.0, min_width_fraction * r_min)
        spread = max(float(np.std(v)), MIN_SPREAD)
        species[str(s)] = [float(v.min()), float(v.max()), spread, w]
    strain = {}
    for k, v in means.items():
        key = f"{k // 1000}-{k % 1000}"
        strain[key] = [float(min(v)), float(max(v)), float(pairs[key][1])]
    return {"switch": switch, "species": species, "density": dens, "cut": float(r_cut),
            "strain": strain}


def coordination_terms(atoms: Atoms, crange: Mapping, force_rms: Mapping, i: np.ndarray,
                       j: np.ndarray, d: np.ndarray) -> np.ndarray | None:
    """The coordination and strain terms of one structure (see the module docstring).

    Parameters
    ----------
    atoms : ase.Atoms
    crange : dict
        :func:`coordination_range` of the training data; empty: no term.
    force_rms : dict
        ``{str(z): F_z}``, eV/Å.
    i, j, d : ndarray of shape (P,)
        Its neighbour pairs (each listed both ways) out to at least the largest
        ``r_1`` of ``crange["switch"]``, Å.

    Returns
    -------
    ndarray of shape (n_atoms,) or None
        Local-energy std terms, eV (they add linearly to the total-energy std term);
        ``None`` when every number is inside its training range.
    """
    if not crange or not crange.get("switch"):
        return None
    z = atoms.numbers
    n = len(atoms)
    code, f, _ = _switched(z, i, j, d, crange["switch"])
    fz = np.zeros(int(z.max()) + 1)
    for s in np.unique(z):
        fz[s] = force_rms.get(str(int(s)), 0.0)
    energies = np.zeros(n)
    hit = False
    c = np.bincount(i, weights=f, minlength=n)
    cut = crange.get("cut")
    rho = None if cut is None else density(n, i[d < cut], d[d < cut], cut)
    for s in np.unique(z):
        sp = crange["species"].get(str(int(s)))
        if sp is None:
            continue
        m = z == s
        x = _outside(c[m], sp)
        dn = crange.get("density", {}).get(str(int(s)))
        if rho is not None and dn is not None:
            x = np.maximum(x, _outside(rho[m], dn))
        if np.any(x > 0):
            hit = True
            energies[m] += fz[s] * sp[3] * x
    for k, (mean, centres) in _mean_distances(i, d, code, f).items():
        st = crange["strain"].get(f"{k // 1000}-{k % 1000}")
        dev = 0.0 if st is None else max(st[0] - mean, mean - st[1], 0.0)
        if dev > 0:
            hit = True
            # each atom's mean bond of the pair displaced by dev: half the compression
            # term F d x of one bond to each of those atoms
            f_ab = np.sqrt(0.5 * (fz[k // 1000] ** 2 + fz[k % 1000] ** 2))
            energies[centres] += 0.5 * f_ab * dev ** 2 / st[2]
    return energies if hit else None
