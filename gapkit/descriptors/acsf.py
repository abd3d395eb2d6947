"""Behler-Parrinello atom-centred symmetry functions and a 2-body descriptor.

Two local descriptors with the same interface as :class:`gapkit.descriptors.SOAP`
(``compute`` returns a :class:`DescriptorSet` with sparse position derivatives and,
for periodic cells, strain derivatives):

:class:`ACSF`
    Atom-centred symmetry functions, feature for feature identical to
    ``dscribe.descriptors.ACSF`` (same definitions, same layout; tested equal to
    ~1e-14), optionally normalised to unit length. As in DScribe, the species of
    the centre is not encoded (the GAP kernel only compares centres of the same
    species).
:class:`TwoBody`
    Radial Gaussians on a grid of distances, per neighbour species: a pure 2-body
    descriptor for "2b + SOAP" models. With the dot-product kernel at ``zeta = 1``
    and no normalisation the GAP energy is a sum of pair potentials.

Both run on one vectorised numpy engine (:class:`_SymmetryFunctionEngine`).

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
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from ase import Atoms
from ase.data import chemical_symbols

from .base import DescriptorSet, LocalDescriptor, normalise, normalise_strain, species_numbers
from .neighbours import neighbour_pairs

__all__ = ["ACSF", "TwoBody", "default_g2_params", "default_g4_params"]



# ----------------------------------------------------------------------------
# Default parameters
# ----------------------------------------------------------------------------
def default_g2_params(r_cut: float = 5.0, n: int = 8) -> np.ndarray:
    """Default radial G2 parameters: ``Rs = 0`` and ``n`` widths spanning the cutoff.

    ``eta_k = 1 / w_k^2`` with the 1/e radii ``w_k`` geometrically spaced from
    ``r_cut`` down to 0.8 Å (for ``r_cut = 5``: ``eta`` from 0.04 to 1.56 1/Å²).

    Parameters
    ----------
    r_cut : float
        Cutoff in Å.
    n : int
        Number of G2 functions.

    Returns
    -------
    ndarray of shape (n, 2)
        Columns ``(eta [1/Å²], Rs [Å])``.
    """
    w = np.geomspace(float(r_cut), min(0.8, float(r_cut)), n)
    return np.column_stack([1.0 / w**2, np.zeros(n)])


def default_g4_params(r_cut: float = 5.0) -> np.ndarray:
    """Default angular G4 parameters: 12 functions.

    ``eta in {1, 4} / r_cut^2`` (1/Å²) x ``zeta in {1, 2, 4}`` x ``lambda in {-1, +1}``,
    ordered eta, then zeta, then lambda.

    Parameters
    ----------
    r_cut : float
        Cutoff in Å.

    Returns
    -------
    ndarray of shape (12, 3)
        Columns ``(eta [1/Å²], zeta, lambda)``.
    """
    rows = [(c / float(r_cut) ** 2, z, lam) for c in (1.0, 4.0) for z in (1.0, 2.0, 4.0)
            for lam in (-1.0, 1.0)]
    return np.array(rows, dtype=np.float64)


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------
def _segment_sum(rows: np.ndarray, n_rows: int, X: np.ndarray) -> np.ndarray:
    """``out[r] = sum_{k: rows[k] == r} X[k]`` for X of shape (K, ...).

    Small inputs: one ``bincount``; large ones: a CSR matrix product (rows sorted
    first if needed), which forms no index temporaries of the size of ``X``.
    """
    out_shape = (n_rows,) + X.shape[1:]
    K = len(rows)
    if K == 0:
        return np.zeros(out_shape)
    m = int(np.prod(X.shape[1:], dtype=np.int64))
    flat = X.reshape(K, m)
    if K * m <= 131072:
        idx = rows if m == 1 else (rows[:, None] * m + np.arange(m)[None, :])
        return np.bincount(idx.ravel(), flat.ravel(), minlength=n_rows * m).reshape(out_shape)
    rows = np.asarray(rows, dtype=np.int64)
    if np.all(rows[1:] >= rows[:-1]):
        cols = np.arange(K)
        indptr = np.searchsorted(rows, np.arange(n_rows + 1))
    else:
        cols = np.argsort(rows, kind="stable")
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    M = sp.csr_matrix((np.ones(K), cols, indptr), shape=(n_rows, K))
    return np.asarray(M @ flat).reshape(out_shape)


def _csr(rows: np.ndarray, cols: np.ndarray, data: np.ndarray,
         shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR matrix from (row, column, value) triplets with distinct positions."""
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    return sp.csr_matrix((data[order], cols[order], indptr), shape=shape)


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




@dataclass
class _EngineResult:
    """Raw (unnormalised) features of one structure and their derivatives (internal).

    ``p`` (N, F); with gradients ``pair_i, pair_j`` (U,) and ``dp`` (U, 3, F) in
    1/Å; with strain ``dp_strain`` (N, 3, 3, F). ``gD`` (P, 3, F), the derivatives
    with respect to the neighbour vectors ``D`` (P, 3) of the neighbour pairs
    ``(i, j)``, is kept for the vector-Jacobian product.
    """

    p: np.ndarray
    pair_i: np.ndarray | None = None
    pair_j: np.ndarray | None = None
    dp: np.ndarray | None = None
    dp_strain: np.ndarray | None = None
    i: np.ndarray | None = None
    j: np.ndarray | None = None
    D: np.ndarray | None = None
    gD: np.ndarray | None = None

    def vjp(self, grad_p: np.ndarray, strain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """``(dE/dr (N, 3), dE/deta (3, 3) or None)`` from ``grad_p = dE/dp`` (N, F)."""
        N = self.p.shape[0]
        gv = np.einsum("paf,pf->pa", self.gD, grad_p[self.i])  # dE/dD_p
        dE_dr = _segment_sum(self.j, N, gv) - _segment_sum(self.i, N, gv)
        dE_deta = gv.T @ self.D if strain else None
        return dE_dr, dE_deta


class _SymmetryFunctionEngine:
    """Vectorised G1-G5 symmetry functions with analytic derivatives (internal).

    Parameters
    ----------
    species : sequence of int or str
        Chemical species (sorted internally).
    r_cut : float
        Cutoff in Å.
    g2, g3, g4, g5 : ndarray
        Parameters, shapes (n2, 2) ``(eta, Rs)``, (n3,) ``kappa``, (n4, 3) and
        (n5, 3) ``(eta, zeta, lambda)``.
    include_g1 : bool
        Include G1 in each per-species radial block (DScribe always does).
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
        self._lut = np.full(max(self.species) + 1, -1, dtype=np.int64)
        self._lut[self.species] = np.arange(ns)
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
    def species_index(self, numbers: np.ndarray) -> np.ndarray:
        """Species index of every atom (``ValueError`` for uncovered species)."""
        numbers = np.asarray(numbers)
        if len(numbers) and (numbers.max() >= len(self._lut) or (self._lut[numbers] < 0).any()):
            bad = sorted(set(numbers.tolist()) - set(self.species))
            raise ValueError(f"Atomic numbers {bad} are not in the descriptor species "
                             f"{self.species}")
        return self._lut[numbers] if len(numbers) else np.zeros(0, dtype=np.int64)

    def _three_body(self, i, sj, d, D, N, gradients):
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
                p3[:, cols] += _segment_sum(rows_v[sel], N * self.n_spair, val)
                if not gradients:
                    continue
                ra_, rb_ = rows_a[sel], rows_b[sel]
                a_, b_ = a[sel], b[sel]
                Tb = len(ra_)
                Ca, Db, X = Z
                if Tb * nb <= 8192:  # small: per-triplet gradient vectors, one segment sum
                    gA = a_[:, :, None] * Ca[:, None, :] + b_[:, :, None] * X[:, None, :]
                    gB = b_[:, :, None] * Db[:, None, :] + a_[:, :, None] * X[:, None, :]
                    g = _segment_sum(np.concatenate([ra_, rb_]), P * ns, np.concatenate([gA, gB]))
                    gC3[..., cols] = g.reshape(P, ns, 3, nb)
                    continue
                # large: d/dD_p = D_p (x) (sum Ca [p = pA] + sum Db [p = pB])
                #                 + sum X b [p = pA] + sum X a [p = pB]
                S = _segment_sum(np.concatenate([ra_, rb_]), P * ns, Z[:2].reshape(2 * Tb, nb))
                k3 = np.arange(3)
                rows = np.concatenate([(3 * ra_[:, None] + k3).ravel(),
                                       (3 * rb_[:, None] + k3).ravel()])
                cols_t = np.concatenate([np.repeat(np.arange(Tb), 3)] * 2)
                data = np.concatenate([b_.ravel(), a_.ravel()])
                Y = _csr(rows, cols_t, data, (3 * P * ns, Tb)) @ X
                gC3[..., cols] = (S.reshape(P, ns, 1, nb) * D[:, None, :, None]
                                  + Y.reshape(P, ns, 3, nb))
        p3 = p3.reshape(N, self.n_spair * na)
        if not gradients:
            return p3, None
        return p3, gC3.transpose(0, 2, 1, 3).reshape(P, 3, ns * na)

    def compute(self, atoms: Atoms, gradients: bool = True, strain: bool = False,
                keep: bool = False) -> _EngineResult:
        """Raw features (N, F) and optionally their sparse position / strain derivatives.

        ``keep`` keeps the per-pair derivatives for :meth:`_EngineResult.vjp`
        instead of folding them onto atoms.
        """
        N = len(atoms)
        cs = self.species_index(atoms.numbers)
        ns, nr, na, F = self.n_species, self.n_radial, self.n_angular, self.n_features
        i, j, d, D = neighbour_pairs(atoms, self.r_cut)
        P = len(i)
        sj = cs[j]
        need_g = gradients or strain or keep
        # 2-body ------------------------------------------------------------------
        g, dg = self._radial(d, need_g)
        p = np.empty((N, F))
        p[:, :self.off3] = _segment_sum(i * ns + sj, N * ns, g).reshape(N, ns * nr)
        # 3-body ------------------------------------------------------------------
        gC3 = None
        if na:
            p[:, self.off3:], gC3 = self._three_body(i, sj, d, D, N, need_g)
        gD = None
        if need_g:
            # compact per-pair derivatives, then scattered to the feature columns of
            # the neighbour's species
            gC = np.empty((P, 3, self._tcols.shape[1]))
            np.multiply((D / d[:, None])[:, :, None], dg[:, None, :], out=gC[:, :, :nr])
            if na:
                gC[:, :, nr:] = gC3
            gD = np.zeros((P, 3, F))
            np.put_along_axis(gD, self._tcols[sj][:, None, :], gC, axis=2)
        res = _EngineResult(p=p)
        if keep:
            res.i, res.j, res.D, res.gD = i, j, D, gD
        if gradients:
            # unique (i, j) blocks, self pairs included; images folded onto their atom
            keys = np.concatenate([i * N + j, np.arange(N) * (N + 1)])
            ukeys, inv = np.unique(keys, return_inverse=True)
            U = len(ukeys)
            gflat = gD.reshape(P, 3 * F)
            dp = _segment_sum(inv[:P], U, gflat)
            dp[inv[P:]] -= _segment_sum(i, N, gflat)  # d/dr_i = -sum of d/dD_p over i's pairs
            res.pair_i, res.pair_j = ukeys // N, ukeys % N
            res.dp = dp.reshape(U, 3, F)
        if strain:
            X = gD[:, :, None, :] * D[:, None, :, None]  # (P, 3, 3, F)
            res.dp_strain = _segment_sum(i, N, X)
        return res


# ----------------------------------------------------------------------------
# Descriptors
# ----------------------------------------------------------------------------
class _SymmetryFunctionDescriptor(LocalDescriptor):
    """Shared interface of :class:`ACSF` and :class:`TwoBody` (``SOAP``'s interface)."""

    _name = "descriptor"
    _key_params: tuple[str, ...] = ()  # parameters checked by _validate (engine cache key)

    def _engine_args(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate_common(self) -> None:
        if self.species is None or len(list(self.species)) == 0:
            raise ValueError(f"{self._name}.species is not set: pass species=[...] or fit a GAP, "
                             "which takes them from the training data")
        species_numbers(self.species)  # unknown symbols raise here
        try:
            r_cut = float(self.r_cut)
        except (TypeError, ValueError):
            raise ValueError(f"r_cut must be a number of Å, got {self.r_cut!r}") from None
        if not (np.isfinite(r_cut) and r_cut > 0):
            raise ValueError(f"r_cut must be a positive finite distance in Å, got {self.r_cut}")
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise ValueError(f"normalize must be True or False, got {self.normalize!r}")

    @property
    def _engine(self) -> _SymmetryFunctionEngine:
        """The numerical engine, rebuilt (after validation) when a parameter changed."""
        key = tuple(_freeze(getattr(self, name)) for name in self._key_params)
        cached = getattr(self, "_engine_cache", None)
        if cached is None or cached[0] != key:
            self._validate()
            engine = _SymmetryFunctionEngine(self.species_numbers, float(self.r_cut),
                                             **self._engine_args())
            self._engine_cache = (key, engine)
            cached = self._engine_cache
        return cached[1]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_engine_cache", None)  # a cache: rebuilt on demand
        return state

    @property
    def n_features(self) -> int:
        """Length of one descriptor vector."""
        return int(self._engine.n_features)

    @property
    def interaction_range(self) -> float:
        """Distance in Å beyond which an atom does not affect a centre's descriptor
        (``r_cut``)."""
        return float(self.r_cut)

    def _check_norms(self, p: np.ndarray, atoms: Atoms, index: int) -> None:
        norms = np.linalg.norm(p, axis=1)
        bad = np.flatnonzero(~(norms > 0))
        if len(bad):
            k = int(bad[0])
            raise ValueError(
                f"frame {index}: atom {k} ({chemical_symbols[atoms.numbers[k]]}) has no neighbour "
                f"within r_cut={self.r_cut} Å ({len(bad)} such atom(s)), so its {self._name} "
                f"vector is zero and cannot be normalised: increase r_cut, or use normalize=False")

    # ------------------------------------------------------------------ compute
    def compute(self, atoms: Atoms, gradients: bool = True, strain: bool | None = None,
                index: int = 0) -> DescriptorSet:
        """Descriptor of every atom of one structure, with sparse derivatives.

        Parameters
        ----------
        atoms : ase.Atoms
            Finite or periodic structure (``pbc`` may be mixed per axis; cells
            smaller than the cutoff are fine, periodic images are included).
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
            ``q`` (n_atoms, n_features); with ``gradients`` ``pair_i, pair_j``
            (n_pairs,) and ``dq`` (n_pairs, 3, n_features) in 1/Å (self pairs
            ``(i, i)`` included, periodic images folded onto their atom); with
            ``strain`` ``dq_strain`` (n_atoms, 3, 3, n_features).
        """
        engine = self._engine  # validates the parameters
        self.check_species(atoms, index)
        if strain is None:
            strain = gradients and bool(np.all(atoms.get_pbc()))
        res = engine.compute(atoms, gradients=gradients, strain=strain)
        numbers = atoms.numbers.copy()
        if not self.normalize:
            return DescriptorSet(q=res.p, numbers=numbers, pair_i=res.pair_i, pair_j=res.pair_j,
                                 dq=res.dp, dq_strain=res.dp_strain)
        self._check_norms(res.p, atoms, index)
        q, dq = normalise(res.p, res.dp, res.pair_i)
        dq_strain = normalise_strain(res.p, q, res.dp_strain) if strain else None
        return DescriptorSet(q=q, numbers=numbers, pair_i=res.pair_i, pair_j=res.pair_j, dq=dq,
                             dq_strain=dq_strain)

    def vjp_setup(self, atoms: Atoms, strain: bool = False, index: int = 0
                  ) -> tuple[DescriptorSet, Callable]:
        """Descriptor values and a vector-Jacobian product for forces and the virial.

        Returns
        -------
        ds : DescriptorSet
            Values only (no derivative arrays).
        vjp : callable
            ``vjp(grad_q)`` with ``grad_q = dE/dq_i`` of shape (n_atoms, F) returns
            ``(dE/dr, dE/deta)``: shapes (n_atoms, 3) in eV/Å and (3, 3) in eV (or
            ``None`` without ``strain``). The per-pair derivatives are contracted
            directly, without folding them onto atom pairs.
        """
        engine = self._engine  # validates the parameters
        self.check_species(atoms, index)
        res = engine.compute(atoms, gradients=False, strain=False, keep=True)
        if self.normalize:
            self._check_norms(res.p, atoms, index)
            norms = np.linalg.norm(res.p, axis=1)
            q = res.p / norms[:, None]

            def vjp(grad_q):
                grad_q = np.asarray(grad_q, dtype=np.float64)
                grad_p = (grad_q - q * np.sum(q * grad_q, axis=1, keepdims=True)) / norms[:, None]
                return res.vjp(grad_p, strain)
        else:
            q = res.p

            def vjp(grad_q):
                return res.vjp(np.asarray(grad_q, dtype=np.float64), strain)

        return DescriptorSet(q=q, numbers=atoms.numbers.copy()), vjp

    def create(self, atoms: Atoms) -> np.ndarray:
        """Descriptor only (normalised if ``normalize``), shape (n_atoms, n_features)."""
        return self.compute(atoms, gradients=False).q


def _freeze(value):
    """Hashable snapshot of a parameter value (for the engine cache key)."""
    if value is None or isinstance(value, (str, bool, int, float, np.number)):
        return (type(value).__name__, value)
    try:
        arr = np.asarray(value)
        if arr.dtype != object:
            return (arr.dtype.str, arr.shape, arr.tobytes())
    except (TypeError, ValueError):
        pass
    return repr(value)


def _param_array(value, name: str, ncol: int | None, what: str) -> np.ndarray:
    """Parameters as a float64 array of shape (n, ncol) (or (n,) for ``ncol=None``)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers {what}, got {value!r}") from None
    if arr.size == 0:
        return np.zeros((0, ncol) if ncol else (0,))
    if ncol is None:
        if arr.ndim != 1:
            raise ValueError(f"{name} must be a 1-d array {what}, got shape {arr.shape}")
    elif arr.ndim != 2 or arr.shape[1] != ncol:
        raise ValueError(f"{name} must be an array of shape (n, {ncol}) {what}, "
                         f"got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


class ACSF(_SymmetryFunctionDescriptor):
    """Atom-centred symmetry functions (Behler-Parrinello), identical to DScribe's ACSF.

    ``q_i = G_i / |G_i|`` (or ``G_i`` with ``normalize=False``) where ``G_i`` is
    ``dscribe.descriptors.ACSF(r_cut, g2_params, g3_params, g4_params, g5_params,
    species, periodic=True)`` of atom ``i``: same features, same order (see the
    module docstring for the definitions and the layout). Derivatives with respect
    to positions and strain are exact (analytic).

    Parameters
    ----------
    species : sequence of str or int, optional
        Chemical species the descriptor covers. ``None`` lets :class:`gapkit.GAP`
        take them from the training data.
    r_cut : float, default 5.0
        Cutoff radius in Å of the cosine cutoff ``0.5 (cos(pi r / r_cut) + 1)``.
    g2_params : array-like of shape (n, 2), optional
        ``(eta [1/Å²], Rs [Å])`` of the radial G2 functions. ``None``:
        :func:`default_g2_params` (8 functions, ``Rs = 0``, 1/e radii from ``r_cut``
        down to 0.8 Å); ``[]``: no G2.
    g3_params : array-like of shape (n,), optional
        ``kappa`` (1/Å) of the G3 functions ``cos(kappa r) fc(r)``. ``None`` or
        ``[]``: no G3.
    g4_params : array-like of shape (n, 3), optional
        ``(eta [1/Å²], zeta, lambda)`` of the angular G4 functions (with the
        ``r_jk`` terms). ``None``: :func:`default_g4_params` (12 functions,
        ``eta in {1, 4} / r_cut^2``, ``zeta in {1, 2, 4}``, ``lambda = +-1``);
        ``[]``: no G4.
    g5_params : array-like of shape (n, 3), optional
        ``(eta [1/Å²], zeta, lambda)`` of the angular G5 functions (no ``r_jk``
        terms). ``None`` or ``[]``: no G5.
    normalize : bool, default True
        Divide each atom's vector by its norm (the derivatives include the
        normalisation). An atom without neighbours then raises ``ValueError``
        (its vector is zero); with ``normalize=False`` it gets a zero vector.

    Notes
    -----
    ``n_features = n_species (1 + n_g2 + n_g3) + n_species (n_species + 1) / 2
    (n_g4 + n_g5)``; 99 for three species with the defaults. ``eta >= 0``,
    ``zeta >= 1`` (so that the derivatives stay finite at ``cos t = -+1``) and
    ``-1 <= lambda <= 1`` are required.
    """

    _name = "ACSF"
    _key_params = ("species", "r_cut", "g2_params", "g3_params", "g4_params", "g5_params",
                   "normalize")

    def __init__(self, species: Sequence[str | int] | None = None, *, r_cut: float = 5.0,
                 g2_params=None, g3_params=None, g4_params=None, g5_params=None,
                 normalize: bool = True):
        self.species = species
        self.r_cut = r_cut
        self.g2_params = g2_params
        self.g3_params = g3_params
        self.g4_params = g4_params
        self.g5_params = g5_params
        self.normalize = normalize

    def _resolved_params(self) -> dict:
        g2 = default_g2_params(float(self.r_cut)) if self.g2_params is None else _param_array(
            self.g2_params, "g2_params", 2, "of (eta, Rs)")
        g3 = np.zeros(0) if self.g3_params is None else _param_array(
            self.g3_params, "g3_params", None, "of kappa values")
        g4 = default_g4_params(float(self.r_cut)) if self.g4_params is None else _param_array(
            self.g4_params, "g4_params", 3, "of (eta, zeta, lambda)")
        g5 = np.zeros((0, 3)) if self.g5_params is None else _param_array(
            self.g5_params, "g5_params", 3, "of (eta, zeta, lambda)")
        return {"g2": g2, "g3": g3, "g4": g4, "g5": g5}

    def _validate(self) -> None:
        """Check the parameters; ``ValueError`` with a clear message otherwise."""
        self._validate_common()
        prm = self._resolved_params()
        if np.any(prm["g2"][:, 0] < 0):
            raise ValueError(f"g2_params: eta (first column) must be >= 0 1/Å², "
                             f"got {prm['g2'][:, 0]}")
        for name in ("g4", "g5"):
            a = prm[name]
            if np.any(a[:, 0] < 0):
                raise ValueError(f"{name}_params: eta (first column) must be >= 0 1/Å², "
                                 f"got {a[:, 0]}")
            if np.any(a[:, 1] < 1):
                raise ValueError(f"{name}_params: zeta (second column) must be >= 1, got {a[:, 1]}")
            if np.any(np.abs(a[:, 2]) > 1):
                raise ValueError(f"{name}_params: lambda (third column) must be in [-1, 1] "
                                 f"(usually +-1), got {a[:, 2]}")

    def _engine_args(self) -> dict:
        return dict(self._resolved_params(), include_g1=True)


class TwoBody(_SymmetryFunctionDescriptor):
    """Pure 2-body (distance) descriptor: radial Gaussians per neighbour species.

    For centre ``i`` and neighbour species ``s``, feature ``k`` is

        ``q_i[s, k] = sum_{j of species s} exp(-(r_ij - mu_k)^2 / (2 sigma^2)) fc(r_ij)``

    with ``mu_k`` evenly spaced from ``r_min`` to ``r_cut`` and the cosine cutoff
    ``fc(r) = 0.5 (cos(pi r / r_cut) + 1)``; layout ``[s, k]`` (species sorted by
    atomic number), ``n_species * n_gaussians`` features. This is a set of
    DScribe-style G2 functions (``eta = 1 / (2 sigma^2)``, ``Rs = mu_k``) without
    G1, computed by the same engine as :class:`ACSF`.

    With the dot-product kernel at ``zeta = 1`` and ``normalize=False`` the local
    energy ``eps_i = sum_m alpha_m q_i . q_m`` is linear in ``q_i``, so the GAP
    energy is exactly a sum of pair potentials,
    ``E = sum_i sum_{j != i} phi_{Z_i Z_j}(r_ij)`` with
    ``phi_{Z s}(r) = fc(r) sum_k w_{Z s k} exp(-(r - mu_k)^2 / (2 sigma^2))``,
    which makes it the 2-body part of a "2b + SOAP" model.

    Parameters
    ----------
    species : sequence of str or int, optional
        Chemical species the descriptor covers. ``None`` lets :class:`gapkit.GAP`
        take them from the training data.
    r_cut : float, default 5.0
        Cutoff radius in Å.
    r_min : float, default 0.5
        First Gaussian centre in Å (``0 <= r_min < r_cut``).
    n_gaussians : int, default 16
        Number of Gaussians.
    sigma : float, optional
        Gaussian width in Å; default the grid spacing
        ``(r_cut - r_min) / (n_gaussians - 1)``.
    normalize : bool, default False
        Divide each atom's vector by its norm (then the energy is no longer a sum
        of pair terms).
    """

    _name = "TwoBody"
    _key_params = ("species", "r_cut", "r_min", "n_gaussians", "sigma", "normalize")

    def __init__(self, species: Sequence[str | int] | None = None, *, r_cut: float = 5.0,
                 r_min: float = 0.5, n_gaussians: int = 16, sigma: float | None = None,
                 normalize: bool = False):
        self.species = species
        self.r_cut = r_cut
        self.r_min = r_min
        self.n_gaussians = n_gaussians
        self.sigma = sigma
        self.normalize = normalize

    @property
    def centres(self) -> np.ndarray:
        """Gaussian centres ``mu_k`` in Å, shape (n_gaussians,)."""
        return np.linspace(float(self.r_min), float(self.r_cut), int(self.n_gaussians))

    @property
    def width(self) -> float:
        """Gaussian width ``sigma`` in Å (the grid spacing unless given)."""
        if self.sigma is not None:
            return float(self.sigma)
        return (float(self.r_cut) - float(self.r_min)) / (int(self.n_gaussians) - 1)

    def _validate(self) -> None:
        """Check the parameters; ``ValueError`` with a clear message otherwise."""
        self._validate_common()
        n = self.n_gaussians
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_gaussians must be a positive integer, got {n!r}")
        if not (np.isfinite(self.r_min) and 0 <= self.r_min < self.r_cut):
            raise ValueError(f"r_min must be in [0, r_cut) Å, got r_min={self.r_min}, "
                             f"r_cut={self.r_cut}")
        if self.sigma is None:
            if n < 2:
                raise ValueError("sigma is needed with n_gaussians=1 (the default is the grid "
                                 "spacing)")
        elif not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive width in Å, got {self.sigma}")

    def _engine_args(self) -> dict:
        eta = 1.0 / (2.0 * self.width**2)
        g2 = np.column_stack([np.full(int(self.n_gaussians), eta), self.centres])
        return {"g2": g2, "g3": np.zeros(0), "g4": np.zeros((0, 3)), "g5": np.zeros((0, 3)),
                "include_g1": False}
