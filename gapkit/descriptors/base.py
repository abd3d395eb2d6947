"""The container every descriptor returns, and the sparse-gradient layout.

A descriptor turns one structure into

* ``q``: one normalised feature vector per atom, shape ``(n_atoms, n_features)``;
* the derivatives of those vectors with respect to atom positions, stored
  *sparsely* as a list of pairs ``(i, j)`` (centre ``i``, moved atom ``j``), with
  ``dq[p] = d q_i / d r_j`` of shape ``(3, n_features)`` for pair ``p``. Only atoms
  inside centre ``i``'s cutoff (and ``i`` itself) have a pair, so memory grows as
  atoms x neighbours x features;
* optionally the strain derivatives ``dq_i / d eta_ab`` of shape
  ``(n_atoms, 3, 3, n_features)`` for periodic cells, where positions and cell map
  as ``r -> (1 + eta) r``; they give the virial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from sklearn.base import BaseEstimator


@dataclass
class DescriptorSet:
    """Descriptor values and sparse derivatives of one structure.

    Attributes
    ----------
    q : ndarray of shape (n_atoms, n_features)
        Normalised descriptor of every atom (dimensionless, unit length).
    numbers : ndarray of shape (n_atoms,)
        Atomic number of each centre.
    pair_i, pair_j : ndarray of shape (n_pairs,)
        Centre index and moved-atom index of each derivative block.
    dq : ndarray of shape (n_pairs, 3, n_features) or None
        ``dq[p, a] = d q[pair_i[p]] / d r[pair_j[p], a]`` in 1/Å.
    dq_strain : ndarray of shape (n_atoms, 3, 3, n_features) or None
        ``d q_i / d eta_ab`` (dimensionless), for periodic cells.
    """

    q: np.ndarray
    numbers: np.ndarray
    pair_i: np.ndarray | None = None
    pair_j: np.ndarray | None = None
    dq: np.ndarray | None = None
    dq_strain: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return self.q.shape[0]

    @property
    def has_gradients(self) -> bool:
        return self.dq is not None

    def scatter_matrix(self) -> sp.csr_matrix:
        """Sparse (3 n_atoms, 3 n_pairs) matrix that sums pair rows onto atom rows."""
        return scatter_matrix(self.pair_j, self.n_atoms)

    def contract(self, grad_q: np.ndarray, strain: bool = False):
        """``(dE/dr, dE/deta)`` from ``grad_q = dE/dq_i`` (n_atoms, F) and the stored
        derivatives: shapes (n_atoms, 3) and (3, 3) (``None`` without ``strain``)."""
        P = len(self.pair_i)
        contrib = np.einsum("paf,pf->pa", self.dq, grad_q[self.pair_i])  # dE/dr_j per pair
        dE_dr = (self.scatter_matrix() @ contrib.reshape(P * 3)).reshape(-1, 3)
        dE_deta = np.einsum("nabf,nf->ab", self.dq_strain, grad_q) if strain else None
        return dE_dr, dE_deta


class LocalDescriptor(BaseEstimator):
    """Members shared by gapkit's descriptors (:class:`~gapkit.descriptors.SOAP`,
    :class:`~gapkit.descriptors.ACSF`, :class:`~gapkit.descriptors.TwoBody`), which
    all have a ``species`` parameter."""

    @property
    def species_numbers(self) -> list[int]:
        """Sorted atomic numbers covered by the descriptor."""
        return species_numbers(self.species or [])

    def check_species(self, atoms: Atoms, index: int = 0) -> None:
        """Raise ``ValueError`` if ``atoms`` holds a species the descriptor does not cover."""
        unknown = sorted(set(np.unique(atoms.numbers).tolist()) - set(self.species_numbers))
        if unknown:
            raise ValueError(f"frame {index}: species {[chemical_symbols[z] for z in unknown]} are "
                             f"not covered by this model (it knows "
                             f"{[chemical_symbols[z] for z in self.species_numbers]})")


def scatter_matrix(pair_j: np.ndarray, n_atoms: int) -> sp.csr_matrix:
    """Sparse (3 n_atoms, 3 n_pairs) matrix: row ``3 j + a`` sums pair rows ``3 p + a``
    with ``pair_j[p] == j``."""
    n_pairs = len(pair_j)
    rows = (3 * np.asarray(pair_j)[:, None] + np.arange(3)[None, :]).ravel()
    return sp.csr_matrix((np.ones(3 * n_pairs), (rows, np.arange(3 * n_pairs))),
                         shape=(3 * n_atoms, 3 * n_pairs))


def species_numbers(species) -> list[int]:
    """Sorted unique atomic numbers from chemical symbols and/or atomic numbers.

    Raises
    ------
    ValueError
        For an unknown chemical symbol.
    """
    out = []
    for s in species:
        if isinstance(s, str):
            if s not in atomic_numbers:
                raise ValueError(f"Unknown chemical symbol {s!r} in species")
            out.append(atomic_numbers[s])
        else:
            out.append(int(s))
    return sorted(set(out))


def normalise(p: np.ndarray, dp: np.ndarray | None, pair_i: np.ndarray | None):
    """``q = p/|p|`` and ``dq = (dp - q (q . dp)) / |p|`` for each pair's centre."""
    norms = np.linalg.norm(p, axis=1)
    if np.any(norms <= 0):
        raise ValueError("A descriptor vector has zero norm: an atom has no neighbour "
                         "within the cutoff; increase r_cut")
    q = p / norms[:, None]
    if dp is None:
        return q, None
    qi = q[pair_i]  # (P, F)
    proj = np.einsum("paf,pf->pa", dp, qi)
    dq = (dp - proj[:, :, None] * qi[:, None, :]) / norms[pair_i][:, None, None]
    return q, dq


def normalise_strain(p: np.ndarray, q: np.ndarray, dps: np.ndarray) -> np.ndarray:
    """Strain derivative of ``q = p/|p|`` from that of ``p`` (n, 3, 3, F)."""
    norms = np.linalg.norm(p, axis=1)
    proj = np.einsum("nabf,nf->nab", dps, q)
    return (dps - proj[..., None] * q[:, None, None, :]) / norms[:, None, None, None]
