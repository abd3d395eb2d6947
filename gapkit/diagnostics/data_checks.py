"""Model-free checks of a labelled data set: energy–force consistency along
trajectories, duplicate frames, label statistics and unit sanity.

Used by :func:`gapkit.diagnostics.check_data.check_data`; every function takes the
frames and their :class:`gapkit.data.Labels` and returns plain dicts (eV, Å, eV/Å).

Energy–force consistency
------------------------
For consecutive frames ``k, k+1`` of the same composition (same atomic numbers in
the same order), the trapezoidal line integral of the forces gives the energy change,
``E_{k+1} - E_k ≈ -½ (F_k + F_{k+1}) · (r_{k+1} - r_k)`` (minimum-image
displacements along periodic axes). The residual ``r = ΔE + ½ (F_k + F_{k+1}) · Δr``
is only meaningful when the step is small: a pair is *eligible* when the largest
atomic displacement is at most ``max_step`` (default 0.1 Å, an MD step of about 1 fs
for H, a few fs for heavier atoms). The frames form a trajectory when at least
``min_fraction`` (default 0.5) of the same-composition consecutive pairs, and at
least 3, are eligible; otherwise (e.g. rMD17, whose frames are shuffled snapshots
0.3–1 Å apart) the check reports ``is_trajectory: false`` and flags nothing. On a
trajectory, the allowed residual is ``tol = max(factor * 1.4826 * MAD(r), atol)``
(``factor`` 6, ``atol`` 1e-4 eV; MAD is the median absolute deviation from the median
of the eligible residuals, a robust scale of the trapezoid and SCF errors that one
wrong frame does not inflate), and pairs with ``|r - median(r)| > tol`` are flagged.
A wrong energy at frame ``j`` breaks both pairs ``(j-1, j)`` and ``(j, j+1)``: a frame
shared by two flagged pairs, or the end frame of a flagged pair at the end of a
trajectory segment, is the one reported.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from gapkit.data import virial_scale_report

__all__ = ["MAX_STEP", "CONSISTENCY_FACTOR", "CONSISTENCY_ATOL", "DUPLICATE_TOL",
           "energy_force_consistency", "find_duplicates", "label_statistics", "unit_sanity"]

#: Largest atomic displacement (Å) for which the trapezoid rule is trusted.
MAX_STEP = 0.1
#: Allowed residual in robust standard deviations of the residuals.
CONSISTENCY_FACTOR = 6.0
#: Smallest allowed residual, eV (floor for noise-free data).
CONSISTENCY_ATOL = 1e-4
#: Near-duplicate tolerance: largest |Δr| of any atom, Å.
DUPLICATE_TOL = 1e-3
#: Exact-duplicate tolerance, Å.
EXACT_TOL = 1e-8


def _displacement(a: Atoms, b: Atoms) -> np.ndarray:
    """``r_b - r_a`` (Å), minimum image along the periodic axes of ``a``'s cell."""
    d = b.get_positions() - a.get_positions()
    pbc = np.asarray(a.get_pbc(), dtype=bool)
    if pbc.any() and a.cell.rank == 3:
        frac = np.linalg.solve(np.asarray(a.cell).T, d.T).T
        frac[:, pbc] -= np.round(frac[:, pbc])
        d = frac @ np.asarray(a.cell)
    return d


def energy_force_consistency(frames: Sequence[Atoms], labels: Sequence, order: Sequence[int],
                             max_step: float = MAX_STEP, factor: float = CONSISTENCY_FACTOR,
                             atol: float = CONSISTENCY_ATOL, min_fraction: float = 0.5) -> dict:
    """Energy differences against the trapezoidal work of the forces (module docstring).

    Parameters
    ----------
    frames : sequence of ase.Atoms
    labels : sequence of Labels
        Energies (eV) and forces (eV/Å); pairs where either frame lacks one are skipped.
    order : sequence of int
        The frame indices in trajectory order (file order, or sorted by a key).
    max_step : float
        Largest atomic displacement of an eligible pair, Å.
    factor, atol : float
        The allowed residual ``max(factor * 1.4826 * MAD, atol)``, eV.
    min_fraction : float
        Fraction of eligible pairs needed to call the frames a trajectory.

    Returns
    -------
    dict
        ``is_trajectory`` (bool), ``message``, ``n_pairs`` (same-composition
        consecutive pairs), ``n_eligible``, ``median_step`` (Å), ``tolerance`` (eV, None
        off a trajectory), ``pairs`` (flagged pairs: ``first``, ``second``, ``residual``
        eV, ``step`` Å) and ``frames`` (the indices blamed).
    """
    pairs = []
    for a, b in zip(order[:-1], order[1:]):
        la, lb = labels[a], labels[b]
        if (len(frames[a]) != len(frames[b]) or not np.array_equal(frames[a].numbers, frames[b].numbers)
                or la.energy is None or lb.energy is None or la.forces is None or lb.forces is None):
            continue
        d = _displacement(frames[a], frames[b])
        work = 0.5 * float(np.sum((la.forces + lb.forces) * d))
        step = float(np.sqrt((d ** 2).sum(axis=1)).max()) if len(d) else 0.0
        pairs.append((int(a), int(b), lb.energy - la.energy + work, step))
    out = {"is_trajectory": False, "n_pairs": len(pairs), "n_eligible": 0,
           "median_step": float(np.median([p[3] for p in pairs])) if pairs else None,
           "max_step": max_step, "tolerance": None, "pairs": [], "frames": []}
    ok = [p for p in pairs if p[3] <= max_step]
    out["n_eligible"] = len(ok)
    if len(ok) < 3 or len(ok) < min_fraction * len(pairs):
        step = "n/a" if out["median_step"] is None else f"{out['median_step']:.3g} Å"
        out["message"] = (f"not a trajectory: {len(ok)} of {len(pairs)} consecutive same-composition "
                          f"pairs move every atom by at most {max_step} Å (median largest step "
                          f"{step}); the energy-force consistency check needs consecutive MD "
                          "frames and was skipped")
        return out
    res = np.array([p[2] for p in ok])
    centre = float(np.median(res))
    tol = max(factor * 1.4826 * float(np.median(np.abs(res - centre))), atol)
    bad = [p for p in ok if abs(p[2] - centre) > tol]
    out.update(is_trajectory=True, tolerance=tol, median_residual=centre,
               pairs=[{"first": a, "second": b, "residual": r, "step": s} for a, b, r, s in bad])
    out["frames"] = _blamed_frames([(p[0], p[1]) for p in bad], [(p[0], p[1]) for p in pairs])
    out["message"] = (f"trajectory: {len(ok)} of {len(pairs)} pairs checked, {len(bad)} with "
                      f"|ΔE + W| above {tol:.3g} eV")
    return out


def _blamed_frames(bad: list, all_pairs: list) -> list[int]:
    """Frames shared by two flagged pairs; both frames of a flagged pair with no flagged
    neighbour unless one of them ends a segment (then that one)."""
    count: dict[int, int] = defaultdict(int)
    for a, b in bad:
        count[a] += 1
        count[b] += 1
    n_pairs: dict[int, int] = defaultdict(int)
    for a, b in all_pairs:
        n_pairs[a] += 1
        n_pairs[b] += 1
    blamed = {k for k, c in count.items() if c >= 2}
    for a, b in bad:
        if a in blamed or b in blamed:
            continue
        ends = [k for k in (a, b) if n_pairs[k] == 1]
        blamed.update(ends if len(ends) == 1 else (a, b))
    return sorted(blamed)


def find_duplicates(frames: Sequence[Atoms], labels: Sequence, tol: float = DUPLICATE_TOL,
                    chunk: int = 256) -> list[dict]:
    """Pairs of frames with the same atoms (same order) whose positions differ by less
    than ``tol`` for every atom (no re-ordering, no wrapping).

    Parameters
    ----------
    frames : sequence of ase.Atoms
    labels : sequence of Labels
    tol : float
        Largest |Δr| of any atomic coordinate, Å.
    chunk : int
        Frames compared at a time (memory).

    Returns
    -------
    list of dict
        ``first``, ``second`` (``first < second``), ``max_dr`` (Å), ``exact`` (below
        1e-8 Å), ``energy_difference`` (eV, None without energies) and
        ``max_force_difference`` (eV/Å, None without forces).
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for k, a in enumerate(frames):
        groups[(tuple(a.numbers.tolist()), tuple(np.round(np.asarray(a.cell), 6).ravel()))].append(k)
    out = []
    for idx in groups.values():
        if len(idx) < 2:
            continue
        X = np.array([frames[k].get_positions().ravel() for k in idx])
        for s in range(0, len(idx), chunk):
            d = np.abs(X[s:s + chunk, None, :] - X[None, :, :]).max(axis=2)
            for i, j in zip(*np.nonzero(d < tol)):
                gi, gj = s + i, j
                if gi >= gj:
                    continue
                a, b = idx[gi], idx[gj]
                la, lb = labels[a], labels[b]
                de = None if la.energy is None or lb.energy is None else lb.energy - la.energy
                df = (None if la.forces is None or lb.forces is None
                      else float(np.abs(lb.forces - la.forces).max()))
                out.append({"first": a, "second": b, "max_dr": float(d[i, j]),
                            "exact": bool(d[i, j] < EXACT_TOL), "energy_difference": de,
                            "max_force_difference": df})
    return sorted(out, key=lambda p: (p["second"], p["first"]))


def _per_atom_residual(frames: Sequence[Atoms], labels: Sequence) -> np.ndarray:
    """Energy per atom after a least-squares per-species fit (eV/atom)."""
    e = np.array([lab.energy for lab in labels], dtype=np.float64)
    species = sorted(set(np.concatenate([a.numbers for a in frames]).tolist()))
    counts = np.array([[np.count_nonzero(a.numbers == z) for z in species] for a in frames],
                      dtype=np.float64)
    coef = np.linalg.lstsq(counts, e, rcond=None)[0]
    return (e - counts @ coef) / counts.sum(axis=1)


def label_statistics(frames: Sequence[Atoms], labels: Sequence) -> dict:
    """Label statistics per species and per config_type.

    Returns
    -------
    dict
        ``species``: per chemical symbol ``n_atoms``, ``force_mean`` and ``force_std``
        (of |F_i|, eV/Å), ``force_max``; ``config_types``: per tag ``n_frames``,
        ``energy_per_atom_mean`` / ``_std`` (raw E/N, eV/atom),
        ``energy_residual_std`` (E/N after a per-species least-squares fit over all
        frames, eV/atom), ``force_mean`` (mean |F_i|, eV/Å).
    """
    has_e = all(lab.energy is not None for lab in labels)
    resid = _per_atom_residual(frames, labels) if has_e and frames else None
    species: dict[str, list] = defaultdict(list)
    for a, lab in zip(frames, labels):
        if lab.forces is not None:
            norms = np.linalg.norm(lab.forces, axis=1)
            for z, f in zip(a.numbers, norms):
                species[chemical_symbols[z]].append(f)
    sp = {s: {"n_atoms": len(v), "force_mean": float(np.mean(v)), "force_std": float(np.std(v)),
              "force_max": float(np.max(v))} for s, v in sorted(species.items())}
    ct: dict[str, list[int]] = defaultdict(list)
    for k, lab in enumerate(labels):
        ct[lab.config_type].append(k)
    cts = {}
    for name, idx in sorted(ct.items()):
        row = {"n_frames": len(idx)}
        if has_e:
            epa = np.array([labels[k].energy / len(frames[k]) for k in idx])
            row.update(energy_per_atom_mean=float(epa.mean()), energy_per_atom_std=float(epa.std()),
                       energy_residual_std=float(np.std(resid[idx])))
        f = [np.linalg.norm(labels[k].forces, axis=1) for k in idx if labels[k].forces is not None]
        row["force_mean"] = float(np.mean(np.concatenate(f))) if f else None
        cts[name] = row
    return {"species": sp, "config_types": cts}


def unit_sanity(frames: Sequence[Atoms], labels: Sequence) -> dict:
    """Force scale against energy scale, and stress × volume against energy.

    ``force_energy_ratio`` is the RMS force component times a bond length (1.5 Å)
    over the per-atom energy spread (std of E/N after a per-species fit). In eV and
    eV/Å it was 52 on the default xTB ethanol/methanol data and 86 on rMD17 ethanol
    (thermal molecular data: tens); forces in kcal/mol/Å or Hartree/Bohr read as
    eV/Å raise it 23 or 51 times, energies in kcal/mol or Hartree lower it as much.
    A warning is given outside [2, 2000]: a coarse heuristic, not a proof.

    Returns
    -------
    dict
        ``energy_spread`` (eV/atom), ``force_rms`` (eV/Å), ``force_energy_ratio``,
        ``virial`` (:func:`gapkit.data.virial_scale_report`, None without virials),
        ``warnings`` (list of str).
    """
    warnings_ = []
    out: dict = {"energy_spread": None, "force_rms": None, "force_energy_ratio": None}
    if frames and all(lab.energy is not None for lab in labels):
        out["energy_spread"] = float(np.std(_per_atom_residual(frames, labels)))
    f = [lab.forces.ravel() for lab in labels if lab.forces is not None]
    if f:
        out["force_rms"] = float(np.sqrt(np.mean(np.concatenate(f) ** 2)))
    if out["energy_spread"] and out["force_rms"]:
        ratio = out["force_rms"] * 1.5 / out["energy_spread"]
        out["force_energy_ratio"] = ratio
        if not 2 <= ratio <= 2000:
            warnings_.append(f"force scale x 1.5 Å is {ratio:.3g} times the per-atom energy "
                             "spread: are the forces in eV/Å and the energies in eV?")
    if any(getattr(lab, "virial", None) is not None for lab in labels) and out["energy_spread"] is not None:
        rep = virial_scale_report(frames, labels)
        out["virial"] = rep
        if rep and rep["ratio"] > 50:
            warnings_.append(f"|virial|/N is {rep['ratio']:.3g} times the energy scale: stresses "
                             "in bar/kbar/GPa read as eV/Å³?")
    else:
        out["virial"] = None
    out["warnings"] = warnings_
    return out
