"""Geometry checks: what no descriptor can handle, with the frame named.

Two atoms closer than :data:`MIN_DISTANCE` (0.1 Å, periodic images included) overlap;
the comparison allows a relative round-off of 1e-9, so a pair exactly 0.1 Å apart is
accepted by :func:`check_geometry` in fitting, prediction and the ASE calculator
alike (they all call it).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from scipy.spatial import cKDTree

__all__ = ["MIN_DISTANCE", "check_geometry", "closest_distance"]

#: Closest approach (Å) below which two atoms are treated as overlapping.
MIN_DISTANCE = 0.1
#: Relative slack of the overlap comparison (round-off of distances from positions).
_DISTANCE_RTOL = 1e-9


def check_geometry(atoms: Atoms, index: int = 0, min_distance: float = MIN_DISTANCE) -> None:
    """Reject structures that no descriptor can handle.

    Checks for an empty structure, non-finite positions or cell, a degenerate periodic
    cell (zero or linearly dependent periodic vectors, mixed ``pbc`` included) and
    overlapping atoms (closer than ``min_distance`` Å, periodic images included, so a
    single atom in a tiny periodic cell overlaps its own images).

    Parameters
    ----------
    atoms : ase.Atoms
    index : int
        Frame index, for the message.
    min_distance : float
        Overlap distance in Å (default :data:`MIN_DISTANCE`).

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
        cell = np.asarray(atoms.get_cell(), dtype=np.float64)
        if not np.all(np.isfinite(cell)):
            raise ValueError(f"frame {index}: the cell contains NaN or infinite values")
        lengths = np.linalg.norm(cell, axis=1)
        if np.any(lengths[pbc] < 1e-8):
            raise ValueError(f"frame {index}: periodic along {list(np.where(pbc)[0])} but the "
                             f"cell vectors have lengths {lengths.round(6).tolist()} Å; "
                             "give a full cell or set pbc=False on that axis")
        periodic = cell[pbc]
        # singular values of the periodic vectors: (nearly) dependent ones span no cell
        sv = np.linalg.svd(periodic, compute_uv=False)
        if sv[-1] < 1e-6 * sv[0]:
            what = ("volume {:.3g} Å^3".format(abs(np.linalg.det(cell))) if pbc.all()
                    else f"periodic vectors {periodic.round(6).tolist()}")
            raise ValueError(f"frame {index}: the periodic cell is degenerate ({what}); "
                             "its periodic cell vectors are (nearly) linearly dependent")
        if not pbc.all():
            _check_open_axes(cell, pbc, index)
    if n > 1 or pbc.any():
        closest, atom = closest_distance(atoms, cutoff=min_distance, return_atom=True)
        if closest < min_distance * (1 - _DISTANCE_RTOL):
            raise ValueError(f"frame {index}: atoms overlap (closest distance {closest:.3g} Å "
                             f"< {min_distance} Å, atom {atom}"
                             + (", periodic images included)" if pbc.any() else ")"))


def _check_open_axes(cell: np.ndarray, pbc: np.ndarray, index: int) -> None:
    """With mixed ``pbc``, a non-periodic cell vector that is zero or lies in the span of
    the periodic ones leaves no valid cell for the neighbour search."""
    open_vecs = cell[~pbc]
    if np.all(np.linalg.norm(open_vecs, axis=1) < 1e-8):
        return  # ASE completes missing non-periodic vectors itself
    full = np.linalg.svd(cell, compute_uv=False)
    if full[-1] < 1e-6 * full[0]:
        raise ValueError(f"frame {index}: the cell is degenerate (its vectors "
                         f"{cell.round(6).tolist()} are linearly dependent) with pbc "
                         f"{pbc.tolist()}: give the non-periodic axes a vector out of the "
                         "periodic plane, or a zero vector")


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
