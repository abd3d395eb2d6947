"""Geometry checks: what no descriptor can handle, with the frame named.

Two atoms closer than :data:`MIN_DISTANCE` (0.1 Å, periodic images included) overlap;
the comparison allows a relative round-off of 1e-9, so a pair exactly 0.1 Å apart is
accepted by :func:`check_geometry` in fitting, prediction and the ASE calculator
alike (they all call it).

Neighbour lists come from :func:`neighbour_list` (``vesin``'s cell lists), which keeps
the last list it computed: :func:`check_geometry` called with ``neighbour_cutoff`` (the
model's interaction range) computes the list the descriptors then reuse, so one
prediction call builds one neighbour list.
"""

from __future__ import annotations

import threading

import numpy as np
import vesin
from ase import Atoms
from ase.geometry import complete_cell
from scipy.spatial import cKDTree

from gapkit.data._vesin_views import install as _install_vesin_views

_install_vesin_views()  # vesin's result arrays without a ctypes type per call (a leak)

__all__ = ["MIN_DISTANCE", "check_geometry", "clear_neighbour_cache", "closest_distance",
           "neighbour_list"]

#: Closest approach (Å) below which two atoms are treated as overlapping.
MIN_DISTANCE = 0.1
#: Relative slack of the overlap comparison (round-off of distances from positions).
_DISTANCE_RTOL = 1e-9


def check_geometry(atoms: Atoms, index: int = 0, min_distance: float = MIN_DISTANCE,
                   neighbour_cutoff: float | None = None) -> None:
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
    neighbour_cutoff : float, optional
        Find the overlaps in the neighbour list within this range (Å), which
        :func:`neighbour_list` keeps for the descriptors that follow (pass the model's
        interaction range); by default a short list (1 Å) is built.

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
        if neighbour_cutoff is not None and neighbour_cutoff > min_distance:
            neighbour_list(atoms, float(neighbour_cutoff))  # kept for the descriptors
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
    if cutoff is not None and _cached(atoms, cutoff):  # the descriptors' list, filtered
        i, _, d, _ = neighbour_list(atoms, cutoff)
        return d, i
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
        # >= 1 Å keeps the cell lists coarse; filter afterwards
        i, _, d, _ = neighbour_list(atoms, max(cutoff, 1.0))
        close = d < cutoff
        return d[close], i[close]
    for r in (3.0, 6.0, 12.0):
        i, _, d, _ = neighbour_list(atoms, r)
        if len(d):
            return d, i
    return np.zeros(0), np.zeros(0, dtype=int)


# ----------------------------------------------------------------------------------
# neighbour lists (one kept)
# ----------------------------------------------------------------------------------
_lock = threading.Lock()
_last: dict = {}


def _same_structure(atoms: Atoms) -> bool:
    """Whether the kept list belongs to this structure (positions, cell, pbc)."""
    if not _last:
        return False
    return (np.array_equal(_last["pbc"], atoms.pbc) and np.array_equal(_last["cell"], atoms.cell[:])
            and np.array_equal(_last["positions"], atoms.positions))


def _cached(atoms: Atoms, cutoff: float) -> bool:
    with _lock:
        return _same_structure(atoms) and _last["cutoff"] >= cutoff


def clear_neighbour_cache() -> None:
    """Drop the neighbour list kept by :func:`neighbour_list` (frees its memory)."""
    with _lock:
        _last.clear()


def neighbour_list(atoms: Atoms, cutoff: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour pairs within ``cutoff`` (strictly), periodic images included.

    The same pairs as ``ase.neighborlist.neighbor_list("ijdD", atoms, cutoff)`` (self
    pairs with zero shift excluded, an atom's own periodic images included, cells
    smaller than the cutoff allowed, ``pbc`` per axis), from ``vesin``'s cell lists.
    The last list is kept: a later call for the same structure (positions, cell and
    pbc equal) with a cutoff up to the kept one filters it instead of searching again.

    Parameters
    ----------
    atoms : ase.Atoms
    cutoff : float
        Radius in Å (> 0).

    Returns
    -------
    i, j : ndarray of shape (P,), int64
        Centre and neighbour indices, sorted by ``(i, j)`` and then by the cell shift
        of ``j`` (read-only).
    d : ndarray of shape (P,)
        Distances in Å.
    D : ndarray of shape (P, 3)
        ``r_j + shift - r_i`` in Å.

    Raises
    ------
    ValueError
        For a cutoff that is not positive.
    """
    if not cutoff > 0:
        raise ValueError(f"the neighbour-list cutoff must be > 0 Å, got {cutoff}")
    with _lock:
        if _same_structure(atoms) and _last["cutoff"] >= cutoff:
            i, j, d, D = _last["pairs"]
            if _last["cutoff"] == cutoff:
                return i, j, d, D
            keep = d < cutoff
            return i[keep], j[keep], d[keep], D[keep]
    pairs = _search(atoms, float(cutoff))
    for a in pairs:
        a.flags.writeable = False
    with _lock:
        _last.clear()
        _last.update(positions=atoms.positions.copy(), cell=atoms.cell[:].copy(),
                     pbc=np.array(atoms.pbc, dtype=bool), cutoff=float(cutoff), pairs=pairs)
    return pairs


def _search(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(atoms)
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e.copy(), np.zeros(0), np.zeros((0, 3))
    pbc = np.asarray(atoms.pbc, dtype=bool)
    pos = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    box = complete_cell(atoms.cell) if pbc.any() else np.zeros((3, 3))
    nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
    i, j, S, d, D = nl.compute(pos, np.asarray(box, dtype=np.float64),
                               pbc.tolist() if pbc.any() else False, quantities="ijSdD")
    i, j = i.astype(np.int64), j.astype(np.int64)
    keep = d < cutoff
    if not keep.all():
        i, j, S, d, D = i[keep], j[keep], S[keep], d[keep], D[keep]
    S = S.astype(np.int64)
    span = 2 * np.abs(S).max() + 1 if len(S) else 1
    shift = ((S[:, 0] * span) + S[:, 1]) * span + S[:, 2]
    order = np.lexsort((shift, i * n + j))
    return i[order], j[order], np.ascontiguousarray(d[order]), np.ascontiguousarray(D[order])
