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


def scatter_matrix(pair_j: np.ndarray, n_atoms: int) -> sp.csr_matrix:
    """Sparse (3 n_atoms, 3 n_pairs) matrix: row ``3 j + a`` sums pair rows ``3 p + a``
    with ``pair_j[p] == j``."""
    n_pairs = len(pair_j)
    rows = (3 * np.asarray(pair_j)[:, None] + np.arange(3)[None, :]).ravel()
    return sp.csr_matrix((np.ones(3 * n_pairs), (rows, np.arange(3 * n_pairs))),
                         shape=(3 * n_atoms, 3 * n_pairs))
