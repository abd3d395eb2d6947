"""Sparse counts that scale with the data: the rule behind ``n_sparse="auto"``.

Per species ``z`` with ``N_z`` training environments (atoms of that species in the
training frames), a kernel term takes

* every environment while ``N_z <= ALL_UP_TO`` (the exact local-energy GP for that
  species), and beyond that ``ALL_UP_TO + FRACTION_BEYOND * (N_z - ALL_UP_TO)``;

then, if the total ``M = sum_z n_z`` exceeds the budget, every count is scaled down
by the same factor, but not below ``min(n_z, FLOOR)`` (the species above the floor
give up the rest). The budget is the largest
``M`` with

* a model file of about ``8 M F + 4 M**2`` bytes (the float64 sparse descriptors of
  ``F`` features and the packed ``M x M`` posterior factor) under ``FILE_BUDGET``, and
* a fit whose peak memory, about ``PEAK_BYTES_PER_M2 * M**2`` bytes (row factors of
  the energy and force groups, the row buffer and the QR work space; measured on
  rMD17 ethanol), stays under ``MEMORY_BUDGET``.

With several terms, each ``"auto"`` term gets an equal share of both budgets. The
constants come from the gain curves of ``benchmarks/sparse_gain.py`` (test error
against sparse points per species on xTB ethanol and isopropanol, EMT Cu and rMD17
ethanol; see ``docs/guide/accuracy.md``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ALL_UP_TO", "FRACTION_BEYOND", "FLOOR", "FILE_BUDGET", "MEMORY_BUDGET",
           "PEAK_BYTES_PER_M2", "budget_m", "auto_counts", "environment_counts"]

#: Every environment of a species is a sparse point up to this many.
ALL_UP_TO = 2000
#: Fraction of the environments beyond ``ALL_UP_TO`` that are taken.
FRACTION_BEYOND = 0.25
#: Fewest sparse points per species when the budget scales counts down.
FLOOR = 500
#: Bytes of the model file the sparse set may take.
FILE_BUDGET = 250e6
#: Bytes of peak memory of the fit.
MEMORY_BUDGET = 6e9
#: Peak bytes of a fit per M**2 (measured: see the module docstring).
PEAK_BYTES_PER_M2 = 80.0


def environment_counts(frames) -> dict[int, int]:
    """Training environments per atomic number: ``{Z: number of atoms}``."""
    numbers = np.concatenate([a.numbers for a in frames]) if len(frames) else np.zeros(0, int)
    zs, n = np.unique(numbers, return_counts=True)
    return {int(z): int(c) for z, c in zip(zs, n)}


def budget_m(n_features: int, share: float = 1.0) -> int:
    """Largest total sparse count within the file and memory budgets (times ``share``).

    Parameters
    ----------
    n_features : int
        Descriptor length F of the term.
    share : float
        Fraction of the budgets this term may use (1 / number of ``"auto"`` terms).
    """
    file_b, mem_b = FILE_BUDGET * share, MEMORY_BUDGET * share
    F = float(n_features)
    # 4 M**2 + 8 F M - file_b = 0
    m_file = (-8 * F + math.sqrt(64 * F * F + 16 * file_b)) / 8
    m_mem = math.sqrt(mem_b / PEAK_BYTES_PER_M2)
    return max(1, int(min(m_file, m_mem)))


def auto_counts(n_env: dict, n_features: int, share: float = 1.0) -> dict[int, int]:
    """Sparse points per species by the rule of this module.

    Parameters
    ----------
    n_env : dict
        Atomic number to the number of training environments.
    n_features : int
        Descriptor length F.
    share : float, default 1
        Fraction of the budgets for this term.

    Returns
    -------
    dict
        Atomic number to a count in ``[1, n_env[z]]``.

    Raises
    ------
    ValueError
        If ``n_env`` is empty or a count is not positive.
    """
    if not n_env or any(int(n) < 1 for n in n_env.values()):
        raise ValueError(f"auto sparse counts need a positive environment count per species, "
                         f"got {n_env!r}")
    want = {int(z): int(n) if n <= ALL_UP_TO else int(ALL_UP_TO + FRACTION_BEYOND * (n - ALL_UP_TO))
            for z, n in n_env.items()}
    cap = budget_m(n_features, share)
    total = sum(want.values())
    if total <= cap:
        return want
    floor = {z: min(n, FLOOR) for z, n in want.items()}
    if sum(floor.values()) >= cap:  # the floors alone are over budget: share it out
        return {z: max(1, int(n * cap / sum(floor.values()))) for z, n in floor.items()}

    def scaled(f):
        return {z: max(floor[z], int(n * f)) for z, n in want.items()}

    lo, hi = 0.0, 1.0  # the largest common factor within the budget
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sum(scaled(mid).values()) <= cap else (lo, mid)
    return scaled(lo)
