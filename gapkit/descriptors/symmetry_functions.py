"""The radial/angular symmetry-function engine shared by :class:`ACSF` and :class:`TwoBody`.

:class:`SymmetryFunctionEngine` computes DScribe's G1-G5 (exact analytic
derivatives; 2-body terms in numpy, the 3-body triplet loop compiled with numba in
:mod:`~gapkit.descriptors.symmetry_kernels`, its numpy form kept as the reference); :class:`SymmetryFunctionDescriptor` is the part of the
descriptor interface that :class:`~gapkit.descriptors.ACSF` and
:class:`~gapkit.descriptors.TwoBody` share (``r_cut`` / ``normalize`` checks, the
optional normalisation).

Definitions (DScribe's)
-----------------------
With the cosine cutoff ``fc(r) = 0.5 (cos(pi r / r_cut) + 1)`` for ``r <= r_cut``
(0 beyond), the sums running over the neighbours ``j`` (periodic images included,
the centre's own images too) of centre ``i`` within ``r_cut``:

* ``G1 = sum_j fc(r_ij)``
* ``G2(eta, Rs) = sum_j exp(-eta (r_ij - Rs)^2) fc(r_ij)``
* ``G3(kappa) = sum_j cos(kappa r_ij) fc(r_ij)``
* ``G4(eta, zeta, lambda) = 2^(1-zeta) sum_{j<k} (1 + lambda cos t_ijk)^zeta
  exp(-eta (r_ij^2 + r_ik^2 + r_jk^2)) fc(r_ij) fc(r_ik) fc(r_jk)``
  (``fc(r_jk) = 0`` for ``r_jk > r_cut``)
* ``G5(eta, zeta, lambda) = 2^(1-zeta) sum_{j<k} (1 + lambda cos t_ijk)^zeta
  exp(-eta (r_ij^2 + r_ik^2)) fc(r_ij) fc(r_ik)``

where ``t_ijk`` is the angle between ``r_j - r_i`` and ``r_k - r_i`` and ``j < k``
runs over unordered pairs of distinct neighbours. Units: ``eta`` in 1/Å², ``Rs``
in Å, ``kappa`` in 1/Å, ``zeta`` and ``lambda`` dimensionless.

Feature layout (DScribe's; species sorted by atomic number, indices ``s``):

* first, per neighbour species ``s``: ``[G1, G2(params...), G3(params...)]``
  (``1 + n_g2 + n_g3`` features per species);
* then, per unordered species pair ``(s1 >= s2)`` in the order
  ``(0,0), (1,0), (1,1), (2,0), (2,1), (2,2), ...`` (block index
  ``s1 (s1 + 1) / 2 + s2``): ``[G4(params...), G5(params...)]``.

Derivatives
-----------
Every term is a function of the neighbour vectors ``D_p = r_j + shift - r_i`` of
its centre. The engine computes ``g_p = d q_i / d D_p`` analytically for every
neighbour pair ``p`` (2-body terms directly, 3-body terms from each triplet onto
both of its pairs), then

* ``d q_i / d r_j = sum_{p -> j} g_p - delta_ij sum_{p of i} g_p`` (images of
  ``j`` folded onto ``j``; an image of ``i`` itself contributes nothing);
* ``d q_i / d eta_ab = sum_{p of i} g_p[a] D_p[b]`` for the homogeneous
  deformation ``r -> (1 + eta) r`` of positions and cell.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import numpy as np
from ase import Atoms

from .base import Descriptor, Engine, EngineResult, species_index, species_numbers
from .neighbours import neighbour_pairs
from .pair_kernels import compact_pair_vjp
from .segments import fold_pair_gradient, segment_matrix, segment_sum
from .symmetry_kernels import three_body, two_body
from .threads import engine_threads

__all__ = ["SymmetryFunctionDescriptor", "SymmetryFunctionEngine"]


def _ipow(x: np.ndarray, k: float) -> np.ndarray:
    """``x ** k``, by repeated squaring for small non-negative integer ``k``."""
    if k == int(k) and 0 <= k <= 64:
        k = int(k)
        out = np.ones_like(x)
        base = x
        while k:
            if k & 1:
                out = out * base
            k >>= 1
            if k:
                base = base * base
        return out
    return np.power(x, k)




def _compact_vjp(i: np.ndarray, j: np.ndarray, D: np.ndarray, gC: np.ndarray, cols: np.ndarray,
                 n_atoms: int, grad_p: np.ndarray, strain: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dE/dr, dE/deta)`` from ``grad_p = dE/dp`` (N, F) and the kept compact per-pair
    derivatives ``gC`` (P, 3, K) of the feature columns ``cols`` (P, K)."""
    return fold_pair_gradient(i, j, D, compact_pair_vjp(i, cols, gC, grad_p), n_atoms, strain)


class SymmetryFunctionEngine(Engine):
    """Vectorised G1-G5 symmetry functions with analytic derivatives.

    Parameters
    ----------
    species : sequence of int or str
        Chemical species (sorted internally).
    r_cut : float
        Cutoff in Å.
    g2, g3, g4, g5 : ndarray
        Parameters, shapes (n2, 2) ``(eta [1/Å²], Rs [Å])``, (n3,) ``kappa [1/Å]``,
        (n4, 3) and (n5, 3) ``(eta [1/Å²], zeta, lambda)``.
    include_g1 : bool
        Include G1 in each per-species radial block (DScribe always does).

    Attributes
    ----------
    n_features : int
        ``n_species n_radial + n_species (n_species + 1) / 2 n_angular``.
    """

    def __init__(self, species: Sequence[int | str], r_cut: float, g2: np.ndarray, g3: np.ndarray,
                 g4: np.ndarray, g5: np.ndarray, include_g1: bool = True) -> None:
        self.species = species_numbers(species)
        self.r_cut = float(r_cut)
        self.g2 = np.asarray(g2, dtype=np.float64).reshape(-1, 2)
        self.g3 = np.asarray(g3, dtype=np.float64).reshape(-1)
        self.g4 = np.asarray(g4, dtype=np.float64).reshape(-1, 3)
        self.g5 = np.asarray(g5, dtype=np.float64).reshape(-1, 3)
        self.include_g1 = bool(include_g1)
        ns = len(self.species)
        self.n_species = ns
        self.n_radial = int(self.include_g1) + len(self.g2) + len(self.g3)
        self.n_angular = len(self.g4) + len(self.g5)
        self.n_spair = ns * (ns + 1) // 2
        self.off3 = ns * self.n_radial
        self.n_features = self.off3 + self.n_spair * self.n_angular
        s1, s2 = np.meshgrid(np.arange(ns), np.arange(ns), indexing="ij")
        hi, lo = np.maximum(s1, s2), np.minimum(s1, s2)
        self._its = hi * (hi + 1) // 2 + lo  # (ns, ns) species-pair block
        # 3-body feature columns of a pair of species s, by partner species: (ns, ns * n_angular)
        self._cols3 = (self.off3 + self._its[:, :, None] * self.n_angular
                       + np.arange(self.n_angular)[None, None, :]).reshape(ns, -1)
        # all feature columns a neighbour of species s acts on: its radial block, then
        # the 3-body blocks by partner species
        self._tcols = np.concatenate(
            [np.arange(ns)[:, None] * self.n_radial + np.arange(self.n_radial)[None, :],
             self._cols3], axis=1)

    # ------------------------------------------------------------------ terms
    def _cutoff(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``fc(r)`` and ``fc'(r)`` (1/Å), zero for ``r > r_cut``."""
        x = math.pi / self.r_cut
        inside = r <= self.r_cut
        fc = np.where(inside, 0.5 * (np.cos(x * r) + 1.0), 0.0)
        dfc = np.where(inside, -0.5 * x * np.sin(x * r), 0.0)
        return fc, dfc

    def _radial(self, d: np.ndarray, gradients: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-pair G1/G2/G3 values (P, n_radial) and ``d/dr`` (1/Å)."""
        fc, dfc = self._cutoff(d)
        vals, ders = [], []
        if self.include_g1:
            vals.append(fc[:, None])
            ders.append(dfc[:, None])
        if len(self.g2):
            eta, rs = self.g2[:, 0], self.g2[:, 1]
            x = d[:, None] - rs[None, :]
            e = np.exp(-eta[None, :] * x * x)
            vals.append(e * fc[:, None])
            if gradients:
                ders.append(e * (dfc[:, None] - 2.0 * eta[None, :] * x * fc[:, None]))
        if len(self.g3):
            kr = d[:, None] * self.g3[None, :]
            c = np.cos(kr)
            vals.append(c * fc[:, None])
            if gradients:
                ders.append(c * dfc[:, None] - self.g3[None, :] * np.sin(kr) * fc[:, None])
        g = np.concatenate(vals, axis=1) if vals else np.zeros((len(d), 0))
        dg = None
        if gradients:
            dg = np.concatenate(ders, axis=1) if ders else np.zeros((len(d), 0))
        return g, dg

    def _triplets(self, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All unordered pairs ``(pA < pB)`` of neighbour pairs with the same centre."""
        P = len(i)
        if P == 0:
            e = np.zeros(0, dtype=np.int64)
            return e, e
        ends = np.searchsorted(i, i, side="right")  # end of each pair's centre range
        rep = ends - np.arange(P) - 1
        T = int(rep.sum())
        pA = np.repeat(np.arange(P), rep)
        start = np.cumsum(rep) - rep
        pB = pA + 1 + (np.arange(T) - start[pA])
        return pA, pB

    @staticmethod
    def _angular(params: np.ndarray, tri: dict, with_jk: bool, gradients: bool):
        """G4 (``with_jk``) or G5 terms of the triplets and their derivative coefficients.

        ``tri`` holds per-triplet (T,) arrays: ``cos``, ``ra``, ``rb`` (Å), ``fa``,
        ``fb`` (cutoffs), ``qa = fc'(ra)/ra``, ``qb`` (1/Å²) and, for G4, ``fjk`` and
        ``qjk = fc'(rjk)/rjk``, ``rjk2``. Returns the values (T, n) and, with
        ``gradients``, ``Z`` of shape (3, T, n) = ``(Ca, Db, X)`` such that the
        derivatives with respect to the two neighbour vectors are
        ``d/da = Ca a + X b`` and ``d/db = Db b + X a``.

        Per column: ``A = 2 (0.5 (1 + lam cos))^zeta``, ``E = exp(-eta s2)``
        (``s2 = ra^2 + rb^2 (+ rjk^2)``), ``FC = fa fb (fjk)``, value ``A E FC``.
        """
        cos, ra, rb = tri["cos"], tri["ra"], tri["rb"]
        fa, fb, qa, qb = tri["fa"], tri["fb"], tri["qa"], tri["qb"]
        T, n = len(cos), len(params)
        s2 = ra * ra + rb * rb
        fab = fa * fb
        if with_jk:
            s2 = s2 + tri["rjk2"]
            FC = fab * tri["fjk"]
            t = fab * tri["qjk"]  # fa fb fc'(rjk)/rjk
            alpha_a = qa * fb * tri["fjk"] + t  # d FC / d a = alpha_a a - t b
            alpha_b = qb * fa * tri["fjk"] + t
            k_self, k_cross = 4.0, 2.0  # d s2/da = 2 (2 a - b)
        else:
            FC = fab
            t = None
            alpha_a = qa * fb
            alpha_b = qb * fa
            k_self, k_cross = 2.0, 0.0
        val = np.empty((T, n))
        Z = np.empty((3, T, n)) if gradients else None
        if gradients:
            inv_ab = 1.0 / (ra * rb)
            va = -cos / (ra * ra)  # d cos / d a = va a + inv_ab b
            vb = -cos / (rb * rb)
        base_c, pow_c, exp_c = {}, {}, {}
        for k, (eta, zeta, lam) in enumerate(params):
            if lam not in base_c:
                base_c[lam] = np.clip(0.5 * (1.0 + lam * cos), 0.0, None)
            if (lam, zeta) not in pow_c:
                bp = _ipow(base_c[lam], zeta - 1.0)  # base^(zeta-1)
                pow_c[lam, zeta] = (2.0 * base_c[lam] * bp, (zeta * lam) * bp)  # A, dA/dcos
            if eta not in exp_c:
                E = np.exp(-eta * s2)
                EF = E * FC
                if gradients:
                    # A-terms of the a/b/cross coefficients: E (dFC + FC dlnE)
                    pa = E * (alpha_a - (k_self * eta) * FC)
                    pb = E * (alpha_b - (k_self * eta) * FC)
                    px = E * ((k_cross * eta) * FC - t) if with_jk else E * 0.0
                    exp_c[eta] = (EF, EF * va, EF * vb, EF * inv_ab, pa, pb, px)
                else:
                    exp_c[eta] = (EF,)
            A, dA = pow_c[lam, zeta]
            ce = exp_c[eta]
            np.multiply(A, ce[0], out=val[:, k])
            if gradients:
                Z[0, :, k] = dA * ce[1] + A * ce[4]
                Z[1, :, k] = dA * ce[2] + A * ce[5]
                Z[2, :, k] = dA * ce[3] + A * ce[6]
        return val, Z

    # ------------------------------------------------------------------ compute
    def _three_body(self, i, sj, d, D, N, gradients):
        """:meth:`_three_body_numpy` by the compiled triplet loop
        (:func:`~gapkit.descriptors.symmetry_kernels.three_body`): nothing per triplet
        is stored."""
        ns, na, P = self.n_species, self.n_angular, len(i)
        p3 = np.zeros((N * self.n_spair, na))
        gC3 = np.zeros((P, ns, 3, na) if gradients else (0, ns, 3, na))
        if P:
            starts = np.searchsorted(i, np.arange(N + 1)).astype(np.int64)
            fc, dfc = self._cutoff(d)
            params = np.ascontiguousarray(np.concatenate([self.g4, self.g5]))
            with_jk = np.arange(na) < len(self.g4)
            with engine_threads():
                three_body(starts, sj.astype(np.int64), d, np.ascontiguousarray(D), fc, dfc / d,
                           self._its.astype(np.int64), self.n_spair, self.r_cut, params, with_jk,
                           bool(gradients), p3, gC3)
        p3 = p3.reshape(N, self.n_spair * na)
        if not gradients:
            return p3, None
        return p3, gC3.transpose(0, 2, 1, 3).reshape(P, 3, ns * na)

    def _three_body_numpy(self, i, sj, d, D, N, gradients):
        """G4/G5 values (N, n_spair * n_angular) and, with ``gradients``, their
        derivatives with respect to the neighbour vectors in compact form
        (P, 3, n_species * n_angular): pair ``p`` (neighbour species ``s_p``), partner
        species ``s``, column ``m`` -> feature ``self._cols3[s_p][s * n_angular + m]``."""
        ns, na, P = self.n_species, self.n_angular, len(i)
        p3 = np.zeros((N * self.n_spair, na))
        gC3 = np.zeros((P, ns, 3, na)) if gradients else None
        pA, pB = self._triplets(i)
        if len(pA):
            a, b = D[pA], D[pB]
            ra, rb = d[pA], d[pB]
            fc, dfc = self._cutoff(d)
            q = dfc / d  # fc'(r) / r
            sA, sB = sj[pA], sj[pB]
            rows_v = i[pA] * self.n_spair + self._its[sA, sB]
            rows_a, rows_b = pA * ns + sB, pB * ns + sA  # (pair, partner species)
            tri_all = {"cos": np.einsum("ta,ta->t", a, b) / (ra * rb), "ra": ra, "rb": rb,
                       "fa": fc[pA], "fb": fc[pB], "qa": q[pA], "qb": q[pB]}
            col = 0
            for params, with_jk in ((self.g4, True), (self.g5, False)):
                nb = len(params)
                if nb == 0:
                    continue
                cols = slice(col, col + nb)
                col += nb
                if with_jk:
                    djk = b - a
                    rjk2 = np.einsum("ta,ta->t", djk, djk)
                    sel = np.flatnonzero(rjk2 <= self.r_cut**2)  # fc(r_jk) = 0 beyond r_cut
                    if len(sel) == len(rjk2):
                        sel = slice(None)
                    tri = {k: v[sel] for k, v in tri_all.items()}
                    rjk = np.sqrt(rjk2[sel])
                    fjk, dfjk = self._cutoff(rjk)
                    tri.update(rjk2=rjk2[sel], fjk=fjk,
                               qjk=np.divide(dfjk, rjk, out=np.zeros_like(rjk), where=rjk > 0))
                else:
                    sel = slice(None)
                    tri = tri_all
                val, Z = self._angular(params, tri, with_jk, gradients)
                p3[:, cols] += segment_sum(rows_v[sel], N * self.n_spair, val)
                if not gradients:
                    continue
                ra_, rb_ = rows_a[sel], rows_b[sel]
                a_, b_ = a[sel], b[sel]
                Tb = len(ra_)
                Ca, Db, X = Z
                if Tb * nb <= 8192:  # small: per-triplet gradient vectors, one segment sum
                    gA = a_[:, :, None] * Ca[:, None, :] + b_[:, :, None] * X[:, None, :]
                    gB = b_[:, :, None] * Db[:, None, :] + a_[:, :, None] * X[:, None, :]
                    g = segment_sum(np.concatenate([ra_, rb_]), P * ns, np.concatenate([gA, gB]))
                    gC3[..., cols] = g.reshape(P, ns, 3, nb)
                    continue
                # large: d/dD_p = D_p (x) (sum Ca [p = pA] + sum Db [p = pB])
                #                 + sum X b [p = pA] + sum X a [p = pB]
                S = segment_sum(np.concatenate([ra_, rb_]), P * ns, Z[:2].reshape(2 * Tb, nb))
                k3 = np.arange(3)
                rows = np.concatenate([(3 * ra_[:, None] + k3).ravel(),
                                       (3 * rb_[:, None] + k3).ravel()])
                cols_t = np.concatenate([np.repeat(np.arange(Tb), 3)] * 2)
                data = np.concatenate([b_.ravel(), a_.ravel()])
                Y = segment_matrix(rows, 3 * P * ns, data, cols_t, Tb) @ X
                gC3[..., cols] = (S.reshape(P, ns, 1, nb) * D[:, None, :, None]
                                  + Y.reshape(P, ns, 3, nb))
        p3 = p3.reshape(N, self.n_spair * na)
        if not gradients:
            return p3, None
        return p3, gC3.transpose(0, 2, 1, 3).reshape(P, 3, ns * na)

    def compute(self, atoms: Atoms, gradients: bool = True, strain: bool = False,
                keep: bool = False) -> EngineResult:
        """Raw features (N, F) and optionally their sparse position / strain derivatives.

        ``keep`` keeps the per-pair derivatives for :meth:`EngineResult.vjp`
        (the VJP contracts them directly, without folding them onto atoms).
        """
        N = len(atoms)
        cs = species_index(atoms.numbers, self.species)
        ns, nr, na, F = self.n_species, self.n_radial, self.n_angular, self.n_features
        i, j, d, D = neighbour_pairs(atoms, self.r_cut)
        P = len(i)
        sj = cs[j]
        need_g = gradients or strain or keep
        # 2-body ------------------------------------------------------------------
        p = np.empty((N, F))
        gC = np.empty((P, 3, self._tcols.shape[1])) if need_g else np.empty((0, 3, 0))
        two_body(i, sj, d, D, float(self.r_cut), self.include_g1, self.g2, self.g3,
                 p[:, :self.off3], gC, need_g)  # compiled; the numpy form is _radial
        # 3-body ------------------------------------------------------------------
        gC3 = None
        if na:
            p[:, self.off3:], gC3 = self._three_body(i, sj, d, D, N, need_g)
        gD = None
        if need_g:
            # compact per-pair derivatives, then scattered to the feature columns of
            # the neighbour's species
            if na:
                gC[:, :, nr:] = gC3
            if gradients or strain:  # the dense array only for the derivative arrays
                gD = np.zeros((P, 3, F))
                np.put_along_axis(gD, self._tcols[sj][:, None, :], gC, axis=2)
        res = EngineResult(p=p, numbers=np.asarray(atoms.numbers).copy())
        if keep:
            res._vjp = partial(_compact_vjp, i, j, D, gC, self._tcols[sj], N)
        if gradients:
            # unique (i, j) blocks, self pairs included; images folded onto their atom
            keys = np.concatenate([i * N + j, np.arange(N) * (N + 1)])
            ukeys, inv = np.unique(keys, return_inverse=True)
            U = len(ukeys)
            gflat = gD.reshape(P, 3 * F)
            dp = segment_sum(inv[:P], U, gflat)
            dp[inv[P:]] -= segment_sum(i, N, gflat)  # d/dr_i = -sum of d/dD_p over i's pairs
            res.pair_i, res.pair_j = ukeys // N, ukeys % N
            res.dp = dp.reshape(U, 3, F)
        if strain:
            X = gD[:, :, None, :] * D[:, None, :, None]  # (P, 3, 3, F)
            res.dp_strain = segment_sum(i, N, X)
        return res


class SymmetryFunctionDescriptor(Descriptor):
    """Shared part of :class:`~gapkit.descriptors.ACSF` and :class:`~gapkit.descriptors.TwoBody`.

    Subclasses have ``species``, ``r_cut`` (Å) and ``normalize`` parameters and
    build a :class:`SymmetryFunctionEngine` in ``_build_engine``; with
    ``normalize=False`` the descriptor is the raw symmetry-function vector.
    """

    _zero_norm_hint = ", or use normalize=False"

    @property
    def _normalised(self) -> bool:
        return bool(self.normalize)

    def _check_params(self) -> None:
        try:
            r_cut = float(self.r_cut)
        except (TypeError, ValueError):
            raise ValueError(f"r_cut must be a number of Å, got {self.r_cut!r}") from None
        if not (np.isfinite(r_cut) and r_cut > 0):
            raise ValueError(f"r_cut must be a positive finite distance in Å, got {self.r_cut}")
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True or False, got {self.normalize!r}")
