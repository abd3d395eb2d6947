"""DScribe itself as a SOAP engine (``SOAP(backend="dscribe")``), kept as the reference.

Hard cutoff only. Small finite molecules take one DScribe call each (dense
derivatives thinned to neighbour pairs); periodic cells and large systems use one
finite cluster per centre: the neighbours and images within DScribe's effective
cutoff (``r_cut`` plus ``sigma * sqrt(-2 ln 1e-3)``) are cut out, DScribe's
analytical derivatives of the centre's descriptor with respect to every cluster
atom are folded back onto the original atoms, and the cluster vectors
``r_k - r_i`` give the strain derivative
``dp_i/deta_ab = sum_k dp_i/dr_ka (r_k - r_i)_b``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from .base import Engine, EngineResult
from .segments import segment_sum


class DScribeSOAPEngine(Engine):
    """Raw DScribe GTO power spectra and their sparse derivatives.

    Parameters
    ----------
    species : sequence of int
        Atomic numbers (sorted).
    r_cut : float
        DScribe's ``r_cut`` in Å.
    n_max, l_max : int
        Radial and angular basis sizes.
    sigma : float
        Gaussian width in Å.
    interaction_range : float
        Distance in Å within which atoms affect a centre (``r_cut`` plus padding).
    cluster_threshold : int
        Finite systems with more atoms than this (and every periodic system) use
        the per-centre cluster route.

    Notes
    -----
    No vector-Jacobian product (``supports_vjp = False``): the descriptor contracts
    the sparse derivatives instead.
    """

    supports_vjp = False

    def __init__(self, species: Sequence[int], r_cut: float, n_max: int, l_max: int,
                 sigma: float, interaction_range: float, cluster_threshold: int) -> None:
        from dscribe.descriptors import SOAP as _DSOAP

        self.soap = _DSOAP(species=list(species), r_cut=r_cut, n_max=n_max, l_max=l_max,
                           sigma=sigma, periodic=False, sparse=False, dtype="float64")
        self.interaction_range = float(interaction_range)
        self.cluster_threshold = cluster_threshold

    @property
    def n_features(self) -> int:
        """DScribe's ``get_number_of_features()``."""
        return int(self.soap.get_number_of_features())

    def compute(self, atoms: Atoms, gradients: bool = True, strain: bool = False,
                keep: bool = False) -> EngineResult:
        """Raw features (n_atoms, F); with ``gradients`` the sparse derivatives and, with
        ``strain`` as well, the strain derivatives (``strain`` needs ``gradients``)."""
        periodic = bool(np.any(atoms.get_pbc()))
        clustered = periodic or len(atoms) > self.cluster_threshold
        if not gradients:
            if clustered:
                return self.cluster(atoms, gradients=False, strain=False)
            return EngineResult(p=self.soap.create(atoms), numbers=atoms.numbers.copy())
        if clustered or strain:
            return self.cluster(atoms, gradients=True, strain=strain)
        return self.whole(atoms)

    def whole(self, atoms: Atoms) -> EngineResult:
        """One DScribe call for a finite structure; derivatives thinned to neighbour pairs."""
        d, p = self.soap.derivatives(atoms, attach=True, method="analytical",
                                     return_descriptor=True)
        pos = atoms.get_positions()
        dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        pair_i, pair_j = np.nonzero(dist < self.interaction_range)
        assert p.shape[0] == len(atoms)
        return EngineResult(p=p, numbers=atoms.numbers.copy(), pair_i=pair_i, pair_j=pair_j,
                            dp=d[pair_i, pair_j])

    def cluster(self, atoms: Atoms, gradients: bool, strain: bool) -> EngineResult:
        """One finite DScribe cluster per centre (periodic images included)."""
        from ase.neighborlist import neighbor_list

        n = len(atoms)
        pbc = atoms.get_pbc()
        if np.any(pbc):
            cell = np.asarray(atoms.get_cell())
            if np.any(np.linalg.norm(cell, axis=1)[pbc] < 1e-8):
                raise ValueError("Periodic axis with a zero-length cell vector: cannot build "
                                 "periodic neighbour clusters")
        ii, jj, D = neighbor_list("ijD", atoms, self.interaction_range)
        order = np.argsort(ii, kind="stable")
        ii, jj, D = ii[order], jj[order], D[order]
        starts = np.searchsorted(ii, np.arange(n + 1))
        numbers = atoms.numbers
        pos = atoms.get_positions()
        soap = self.soap
        F = soap.get_number_of_features()
        p_raw = np.empty((n, F))
        pi_list, pj_list, dp_list = [], [], []
        dps = np.empty((n, 3, 3, F)) if strain else None
        for i in range(n):
            sl = slice(starts[i], starts[i + 1])
            js, Ds = jj[sl], D[sl]
            cl = Atoms(numbers=np.concatenate([[numbers[i]], numbers[js]]),
                       positions=np.vstack([pos[i][None, :], pos[i][None, :] + Ds]), pbc=False)
            if not gradients:
                p_raw[i] = soap.create(cl, centers=[0])[0]
                continue
            d, p = soap.derivatives(cl, centers=[0], attach=True, method="analytical",
                                    return_descriptor=True)
            p_raw[i] = p[0]
            d = d[0]  # (n_cluster, 3, F)
            uniq, inv = np.unique(np.concatenate([[i], js]), return_inverse=True)
            pi_list.append(np.full(len(uniq), i))
            pj_list.append(uniq)
            dp_list.append(segment_sum(inv, len(uniq), d))  # images folded onto their atom
            if strain:
                rel = np.vstack([np.zeros((1, 3)), Ds])  # r_k - r_i, images included
                dps[i] = np.einsum("kaf,kb->abf", d, rel)
        res = EngineResult(p=p_raw, numbers=numbers.copy())
        if gradients:
            res.pair_i = np.concatenate(pi_list)
            res.pair_j = np.concatenate(pj_list)
            res.dp = np.concatenate(dp_list)
            res.dp_strain = dps
        return res
