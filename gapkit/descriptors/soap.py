"""Normalised SOAP power spectra (DScribe's GTO SOAP) with exact sparse derivatives.

``q_i = p_i / |p_i|`` where ``p_i`` is DScribe's GTO power spectrum of atom ``i``
(same features, same order). Two backends compute it:

``engine`` (default)
    :mod:`gapkit.descriptors.soap_engine`, a vectorised numpy implementation of
    DScribe's GTO SOAP (tested equal to DScribe to ~1e-11) with exact analytic
    position and strain derivatives for finite, periodic and mixed cells, an optional
    smooth cutoff, and a vector-Jacobian product that gives forces and the virial
    without forming the derivative array.
``dscribe``
    DScribe itself (hard cutoff only). Small finite molecules take one DScribe call
    each (dense derivatives thinned to neighbour pairs); periodic cells and large
    systems use one finite cluster per centre: the neighbours and images within
    DScribe's effective cutoff (``r_cut`` plus ``sigma * sqrt(-2 ln 1e-3)``) are cut
    out, DScribe's analytical derivatives of the centre's descriptor with respect to
    every cluster atom are folded back onto the original atoms, and the cluster
    vectors ``r_k - r_i`` give the strain derivative
    ``dq_i/deta_ab = sum_k dq_i/dr_ka (r_k - r_i)_b``. Kept as the reference.

The cutoff
    ``cutoff="cosine"`` (default) multiplies each neighbour's Gaussian density by
    ``f(r) = 1`` below ``r_cut - cutoff_width``, ``(1 + cos(pi (r - r_cut + w)/w))/2``
    in the transition shell and 0 beyond ``r_cut`` (as QUIP's
    ``cutoff_transition_width``): the descriptor and forces are continuous, so NVE
    molecular dynamics conserves energy. ``cutoff="dscribe"`` reproduces DScribe's
    features exactly, including its hard cutoff at ``r_cut`` plus the Gaussian
    padding, where the descriptor jumps (by ~1e-3 for r_cut=5, sigma=0.5) as an atom
    crosses it.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from ase import Atoms

from .base import DescriptorSet, LocalDescriptor, normalise, normalise_strain, species_numbers

logger = logging.getLogger(__name__)

_PADDING_THRESHOLD = 1e-3  # DScribe's Gaussian tail threshold for its cutoff padding


class SOAP(LocalDescriptor):
    """Normalised SOAP power spectrum (DScribe GTO basis) with sparse derivatives.

    Parameters
    ----------
    species : sequence of str or int, optional
        Chemical species the descriptor covers. ``None`` lets :class:`gapkit.GAP`
        take them from the training data.
    r_cut : float, default 5.0
        Radial cutoff in Å (DScribe's ``r_cut``; atoms up to ``r_cut`` plus the
        Gaussian padding still contribute).
    n_max : int, default 8
        Number of radial basis functions.
    l_max : int, default 6
        Maximum angular momentum.
    sigma : float, default 0.5
        Width of the atomic Gaussians in Å.
    cutoff : {"cosine", "dscribe"}, default "cosine"
        Smooth cosine taper of the neighbour densities (energy-conserving), or
        DScribe's exact features with its hard cutoff.
    cutoff_width : float, default 1.0
        Width of the cosine taper in Å (``r_cut - cutoff_width`` to ``r_cut``).
    backend : {"engine", "dscribe"}, default "engine"
        gapkit's numpy SOAP engine, or DScribe itself (needs ``cutoff="dscribe"``).
    cluster_threshold : int, default 48
        ``backend="dscribe"`` only: finite systems with more atoms than this (and
        every periodic system) use the per-centre cluster route.

    Notes
    -----
    The feature layout is DScribe's (``get_number_of_features()`` features, see
    ``dscribe.descriptors.SOAP``). The descriptor is configured once and may be
    called many times; the DScribe object is built lazily and not part of the
    parameters.
    """

    def __init__(self, species: Sequence[str | int] | None = None, *, r_cut: float = 5.0,
                 n_max: int = 8, l_max: int = 6, sigma: float = 0.5,
                 cutoff: str = "cosine", cutoff_width: float = 1.0, backend: str = "engine",
                 cluster_threshold: int = 48):
        self.species = species
        self.r_cut = r_cut
        self.n_max = n_max
        self.l_max = l_max
        self.sigma = sigma
        self.cutoff = cutoff
        self.cutoff_width = cutoff_width
        self.backend = backend
        self.cluster_threshold = cluster_threshold

    # ------------------------------------------------------------------ set-up
    def _validate(self) -> None:
        if self.species is None or len(list(self.species)) == 0:
            raise ValueError("SOAP.species is not set: pass species=[...] or fit a GAP, "
                             "which takes them from the training data")
        if not (np.isfinite(self.r_cut) and self.r_cut > 1.0):
            raise ValueError(f"r_cut must be > 1 Å, got {self.r_cut}")
        if int(self.n_max) < 1 or int(self.l_max) < 0:
            raise ValueError(f"need n_max >= 1 and l_max >= 0, got {self.n_max}, {self.l_max}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 Å, got {self.sigma}")
        if self.cutoff not in ("cosine", "dscribe"):
            raise ValueError(f"cutoff must be 'cosine' or 'dscribe', got {self.cutoff!r}")
        if self.backend not in ("engine", "dscribe"):
            raise ValueError(f"backend must be 'engine' or 'dscribe', got {self.backend!r}")
        if self.backend == "dscribe" and self.cutoff != "dscribe":
            raise ValueError("backend='dscribe' has only DScribe's hard cutoff: use "
                             "cutoff='dscribe', or backend='engine' for a smooth cutoff")
        if self.cutoff == "cosine" and not (0 < self.cutoff_width < self.r_cut):
            raise ValueError(f"cutoff_width must be in (0, r_cut), got {self.cutoff_width}")

    @property
    def _soap(self):
        key = (tuple(species_numbers(self.species or [])), float(self.r_cut), int(self.n_max),
               int(self.l_max), float(self.sigma))
        cached = getattr(self, "_dscribe_cache", None)
        if cached is None or cached[0] != key:
            self._validate()
            from dscribe.descriptors import SOAP as _DSOAP

            obj = _DSOAP(species=list(key[0]), r_cut=key[1], n_max=key[2], l_max=key[3],
                         sigma=key[4], periodic=False, sparse=False, dtype="float64")
            self._dscribe_cache = (key, obj)
            cached = self._dscribe_cache
        return cached[1]

    @property
    def _engine(self):
        key = (tuple(species_numbers(self.species or [])), float(self.r_cut), int(self.n_max),
               int(self.l_max), float(self.sigma), self.cutoff, float(self.cutoff_width))
        cached = getattr(self, "_engine_cache", None)
        if cached is None or cached[0] != key:
            self._validate()
            from .soap_engine import SOAPEngine

            self._engine_cache = (key, SOAPEngine(list(key[0]), key[1], key[2], key[3], key[4],
                                                  cutoff=key[5], cutoff_width=key[6]))
            cached = self._engine_cache
        return cached[1]

    def __getstate__(self):
        # the DScribe object and the engine are caches: rebuilt on demand
        state = dict(self.__dict__)
        state.pop("_dscribe_cache", None)
        state.pop("_engine_cache", None)
        return state

    @property
    def n_features(self) -> int:
        """Length of one descriptor vector."""
        if self.backend == "engine":
            return int(self._engine.n_features)
        return int(self._soap.get_number_of_features())

    @property
    def interaction_range(self) -> float:
        """Distance in Å beyond which an atom does not affect a centre's descriptor:
        ``r_cut`` for the cosine cutoff, ``r_cut`` plus DScribe's Gaussian padding
        otherwise."""
        if self.cutoff == "cosine":
            return float(self.r_cut)
        return float(self.r_cut + self.sigma * np.sqrt(-2.0 * np.log(_PADDING_THRESHOLD)))

    # ------------------------------------------------------------------ compute
    def compute(self, atoms: Atoms, gradients: bool = True, strain: bool | None = None,
                index: int = 0) -> DescriptorSet:
        """Descriptor of every atom of one structure, with sparse derivatives.

        Parameters
        ----------
        atoms : ase.Atoms
            Finite or periodic structure (``pbc`` may be mixed per axis).
        gradients : bool, default True
            Also compute the position derivatives.
        strain : bool, optional
            Also compute the strain derivatives (for the virial and stress).
            Defaults to ``True`` for fully periodic cells when ``gradients`` is set.
        index : int
            Frame index, for error messages.

        Returns
        -------
        DescriptorSet
        """
        self._validate()
        self.check_species(atoms, index)
        periodic = bool(np.any(atoms.get_pbc()))
        if strain is None:
            strain = gradients and bool(np.all(atoms.get_pbc()))
        if self.backend == "engine":
            return self._compute_engine(atoms, gradients, strain)
        if not gradients:
            if periodic or len(atoms) > self.cluster_threshold:
                return self._compute_cluster(atoms, gradients=False, strain=False)
            p = self._soap.create(atoms)
            q, _ = normalise(p, None, None)
            return DescriptorSet(q=q, numbers=atoms.numbers.copy())
        if periodic or strain or len(atoms) > self.cluster_threshold:
            return self._compute_cluster(atoms, gradients=True, strain=strain)
        return self._compute_whole(atoms)

    def _compute_engine(self, atoms: Atoms, gradients: bool, strain: bool) -> DescriptorSet:
        res = self._engine.compute(atoms, gradients=gradients, strain=strain)
        q, dq = normalise(res.p, res.dp, res.pair_i)
        dq_strain = normalise_strain(res.p, q, res.dp_strain) if strain else None
        return DescriptorSet(q=q, numbers=atoms.numbers.copy(), pair_i=res.pair_i,
                             pair_j=res.pair_j, dq=dq, dq_strain=dq_strain)

    def vjp_setup(self, atoms: Atoms, strain: bool = False, index: int = 0):
        """Descriptor values and a vector-Jacobian product for forces and the virial.

        Returns
        -------
        ds : DescriptorSet
            Values only (no derivative arrays).
        vjp : callable
            ``vjp(grad_q)`` with ``grad_q = dE/dq_i`` of shape (n_atoms, F) returns
            ``(dE/dr, dE/deta)``: shapes (n_atoms, 3) in eV/Å and (3, 3) in eV (or
            ``None`` without ``strain``). With the engine backend no derivative
            array is formed; the DScribe backend contracts its sparse derivatives.
        """
        self._validate()
        self.check_species(atoms, index)
        if self.backend == "engine":
            res = self._engine.compute(atoms, gradients=False, keep=True)
            norms = np.linalg.norm(res.p, axis=1)
            if np.any(norms <= 0):
                raise ValueError("A SOAP vector has zero norm; check the species and cutoff")
            q = res.p / norms[:, None]

            def vjp(grad_q):
                grad_p = (grad_q - q * np.sum(q * grad_q, axis=1, keepdims=True)) / norms[:, None]
                return res.vjp(grad_p, strain=strain)

            return DescriptorSet(q=q, numbers=atoms.numbers.copy()), vjp
        ds = self.compute(atoms, gradients=True, strain=strain, index=index)
        return ds, lambda grad_q: ds.contract(grad_q, strain)

    def create(self, atoms: Atoms) -> np.ndarray:
        """Normalised descriptor only, shape (n_atoms, n_features)."""
        return self.compute(atoms, gradients=False).q

    def _compute_whole(self, atoms: Atoms) -> DescriptorSet:
        d, p = self._soap.derivatives(atoms, attach=True, method="analytical",
                                      return_descriptor=True)
        n = len(atoms)
        pos = atoms.get_positions()
        dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        mask = dist < self.interaction_range
        pair_i, pair_j = np.nonzero(mask)
        dp = d[pair_i, pair_j]  # (P, 3, F)
        q, dq = normalise(p, dp, pair_i)
        assert q.shape[0] == n
        return DescriptorSet(q=q, numbers=atoms.numbers.copy(), pair_i=pair_i, pair_j=pair_j, dq=dq)

    def _compute_cluster(self, atoms: Atoms, gradients: bool, strain: bool) -> DescriptorSet:
        from ase.neighborlist import neighbor_list

        n = len(atoms)
        rc = self.interaction_range
        pbc = atoms.get_pbc()
        if np.any(pbc):
            cell = np.asarray(atoms.get_cell())
            if np.any(np.linalg.norm(cell, axis=1)[pbc] < 1e-8):
                raise ValueError("Periodic axis with a zero-length cell vector: cannot build "
                                 "periodic neighbour clusters")
        ii, jj, D = neighbor_list("ijD", atoms, rc)
        order = np.argsort(ii, kind="stable")
        ii, jj, D = ii[order], jj[order], D[order]
        starts = np.searchsorted(ii, np.arange(n + 1))
        numbers = atoms.numbers
        pos = atoms.get_positions()
        soap = self._soap
        F = soap.get_number_of_features()
        q_raw = np.empty((n, F))
        pi_list, pj_list, dp_list = [], [], []
        dps = np.empty((n, 3, 3, F)) if strain else None
        for i in range(n):
            sl = slice(starts[i], starts[i + 1])
            js, Ds = jj[sl], D[sl]
            cl = Atoms(numbers=np.concatenate([[numbers[i]], numbers[js]]),
                       positions=np.vstack([pos[i][None, :], pos[i][None, :] + Ds]), pbc=False)
            if not gradients:
                q_raw[i] = soap.create(cl, centers=[0])[0]
                continue
            d, p = soap.derivatives(cl, centers=[0], attach=True, method="analytical",
                                    return_descriptor=True)
            q_raw[i] = p[0]
            d = d[0]  # (n_cluster, 3, F)
            orig = np.concatenate([[i], js])
            uniq, inv = np.unique(orig, return_inverse=True)
            folded = np.zeros((len(uniq), 3, F))
            np.add.at(folded, inv, d)
            pi_list.append(np.full(len(uniq), i))
            pj_list.append(uniq)
            dp_list.append(folded)
            if strain:
                rel = np.vstack([np.zeros((1, 3)), Ds])  # r_k - r_i, images included
                dps[i] = np.einsum("kaf,kb->abf", d, rel)
        if not gradients:
            q, _ = normalise(q_raw, None, None)
            return DescriptorSet(q=q, numbers=numbers.copy())
        pair_i = np.concatenate(pi_list)
        pair_j = np.concatenate(pj_list)
        dp = np.concatenate(dp_list)
        q, dq = normalise(q_raw, dp, pair_i)
        dq_strain = normalise_strain(q_raw, q, dps) if strain else None
        return DescriptorSet(q=q, numbers=numbers.copy(), pair_i=pair_i, pair_j=pair_j, dq=dq,
                             dq_strain=dq_strain)
