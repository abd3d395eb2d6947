"""Neighbour lists shared by the descriptor engines (finite and periodic, any cell size).

They come from :func:`gapkit.data.geometry.neighbour_list` (``vesin``'s cell lists),
which keeps the last list: the geometry check of a prediction and the descriptors of
that prediction share one search.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from gapkit.data.geometry import neighbour_list


def neighbour_pairs(atoms: Atoms, r_cut: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour pairs within ``r_cut`` (strictly), periodic images included.

    Same pairs as ``ase.neighborlist.neighbor_list("ijdD", atoms, r_cut)`` (self
    pairs with zero shift excluded, an atom's own periodic images included; cells
    smaller than the cutoff are fine), see :func:`gapkit.data.geometry.neighbour_list`.

    Returns
    -------
    i, j : ndarray of shape (P,), int64
        Centre and neighbour indices, sorted by ``(i, j)`` (read-only arrays).
    d : ndarray of shape (P,)
        Distances in Å.
    D : ndarray of shape (P, 3)
        ``r_j + shift - r_i`` in Å.
    """
    return neighbour_list(atoms, float(r_cut))
