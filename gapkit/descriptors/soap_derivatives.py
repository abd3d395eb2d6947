"""Exact derivatives of the SOAP power spectrum: positions, strain and the VJP.

:class:`_PowerSpectrumDerivatives` is a mixin of
:class:`~gapkit.descriptors.soap_engine.SOAPEngine` (it uses the engine's feature
tables and per-pair environment, :class:`~gapkit.descriptors.soap_environment._Environment`):

* ``_dp``: sparse ``d p_i / d r_j`` (1/Å times the units of ``p``), periodic images
  folded onto their atom, assembled in blocks of pairs;
* ``_dp_strain``: ``d p_i / d eta_ab`` for ``r -> (1 + eta) r`` of positions and cell;
* ``_vjp_env``: ``dE/dr`` (eV/Å) and ``dE/deta`` (eV) from ``dE/dp`` without forming
  ``d p / d r``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from . import soap_kernels as kern
from .segments import segment_matrix
from .threads import engine_threads

if TYPE_CHECKING:  # pragma: no cover
    from .soap_environment import _Environment


def _split_last(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Writable view of ``a`` with its (contiguous) last axis split into ``shape``."""
    item = a.strides[-1]
    sub = tuple(int(np.prod(shape[k + 1:], dtype=np.int64)) * item for k in range(len(shape)))
    return np.lib.stride_tricks.as_strided(
        a, a.shape[:-1] + tuple(shape), a.strides[:-1] + sub, writeable=True
    )



class _PowerSpectrumDerivatives:
    """Derivative methods of :class:`~gapkit.descriptors.soap_engine.SOAPEngine` (mixin)."""

    def _dT(self, env: _Environment, idx: np.ndarray) -> np.ndarray:
        """Gradients d(R_nl S_lm)/dD of the selected pairs, shape (P', 3, n_max, nlm)."""
        Rt = env.R[idx].transpose(0, 2, 1)[:, :, self._l_of]  # (P', n, nlm)
        X = env.Rq[idx].transpose(0, 2, 1)[:, :, self._l_of]
        X *= env.S[idx][:, None, :]  # (dR/dr / r) S
        dS = env.dS[idx]
        D = env.D[idx]
        dT = np.empty((X.shape[0], 3) + X.shape[1:])
        tmp = np.empty_like(X)
        for a in range(3):
            np.multiply(X, D[:, a, None, None], out=dT[:, a])
            np.multiply(Rt, dS[:, a, None, :], out=tmp)
            dT[:, a] += tmp
        return dT

    def _chunk(self, per_item: int) -> int:
        """Items per block so that block temporaries stay ~``_block_budget`` doubles."""
        return max(1, int(self._block_budget // max(per_item, 1)))

    def _pair_products(self, cs: list[np.ndarray], ii: np.ndarray, dC: np.ndarray) -> np.ndarray:
        """``H[u, a, l, A, n'] = sum_m cs_l[ii_u, A, m] dC[u, a, lm, n']``.

        ``ii`` must be sorted. The pairs of every centre are stacked side by side
        (zero-padded to the largest count) so that each (centre, l) is a single
        matmul instead of one tiny matmul per pair and component.
        """
        r, _, nm, nlm = dC.shape
        L = self.l_max
        nsn = cs[0].shape[1]
        first = np.ones(r, dtype=bool)
        first[1:] = ii[1:] != ii[:-1]
        starts = np.flatnonzero(first)
        cidx = np.cumsum(first) - 1  # local centre of every pair
        kk = np.arange(r) - starts[cidx]  # position of the pair within its centre
        nc = len(starts)
        kc = int(kk.max()) + 1
        B = np.zeros((nc, nlm, kc, 3, nm))
        B[cidx, :, kk] = dC.transpose(0, 3, 1, 2)
        cen = ii[starts]
        Hp = np.empty((L + 1, nc, nsn, kc * 3 * nm))
        for l in range(L + 1):
            m = 2 * l + 1
            np.matmul(cs[l][cen], B[:, l * l:(l + 1) ** 2].reshape(nc, m, kc * 3 * nm), out=Hp[l])
        Hp = Hp.reshape(L + 1, nc, nsn, kc, 3, nm)
        return Hp[:, cidx, :, kk].transpose(0, 3, 1, 2, 4)

    def _dp(self, env: _Environment, cl: list[np.ndarray]):
        """Sparse position derivatives; returns (pair_i, pair_j, dp).

        Pairs are the unique (centre, moved atom) combinations with
        ``j != i`` (periodic images folded), grouped by the species of ``j`` and
        sorted by ``(i, j)`` within a group, followed by the self pairs ``(i, i)``
        of all atoms in atom order. Moving ``j`` (species s) only changes
        ``c_i^s``, so ``d p_i / d r_j`` is non-zero only in the feature blocks
        ``(s', s)``; they are copied from ``H[l, s' n, n'] = prel_l sum_m
        c_i[s' n, lm] d c_i[s n', lm] / d r_j`` (one batched matmul per l),
        computed in blocks of pairs to bound the temporaries.
        """
        N = env.n_atoms
        nm, nlm, L = self.n_max, self._nlm, self.l_max
        ns = len(self.species)
        nsn = ns * nm
        F = self.n_features
        moving = np.flatnonzero(env.i != env.j)  # pairs i -> image of i do not move
        key = env.i[moving] * N + env.j[moving]
        s_mov = env.s[moving]
        # unique (i, j) sorted by (species of j, i, j); images of j fold onto j
        order = np.lexsort((key, s_mov))
        moving, key, s_mov = moving[order], key[order], s_mov[order]
        new = np.ones(len(key), dtype=bool)
        new[1:] = key[1:] != key[:-1]
        useg = np.cumsum(new) - 1  # unique-pair index of every moving pair
        ukey, us = key[new], s_mov[new]
        U = len(ukey)
        ui, uj = ukey // N, ukey % N
        ustart = np.append(np.flatnonzero(new), len(key))  # moving-pair range of each unique pair

        pair_i = np.concatenate([ui, np.arange(N)])
        pair_j = np.concatenate([uj, np.arange(N)])
        dp = np.empty((U + N, 3, F))
        cs = [x * self._prel[l] for l, x in enumerate(cl)]
        bounds = np.searchsorted(us, np.arange(ns + 1))
        step = self._chunk(6 * nlm * nm + 6 * (L + 1) * nsn * nm)
        for s_ in range(ns):
            for u0 in range(bounds[s_], bounds[s_ + 1], step):
                u1 = min(u0 + step, bounds[s_ + 1])
                r = u1 - u0
                m0, m1 = ustart[u0], ustart[u1]
                dT = self._dT(env, moving[m0:m1])  # (m, 3, n, nlm)
                if m1 - m0 == r:
                    dC = dT
                else:
                    fold = segment_matrix(useg[m0:m1] - u0, r)
                    dC = np.asarray(fold @ dT.reshape(m1 - m0, 3 * nlm * nm)).reshape(r, 3, nm, nlm)
                H = self._pair_products(cs, ui[u0:u1], dC)  # (r, 3, L+1, nsn, n)
                for (s1, s2), (f0, f1) in self._block.items():
                    dst = dp[u0:u1, :, f0:f1]
                    if s_ not in (s1, s2):
                        dst[...] = 0.0
                    elif s1 == s2:  # d(c^s_n . c^s_n')
                        Hb = H[:, :, :, s_ * nm:(s_ + 1) * nm]  # (r, 3, L+1, n, n')
                        M = Hb + Hb.swapaxes(3, 4)
                        dst[...] = M.reshape(r, 3, L + 1, nm * nm)[..., self._triu].reshape(r, 3, f1 - f0)
                    elif s_ == s2:  # c^{s1}_n dc^{s}_n'
                        _split_last(dst, (L + 1, nm, nm))[...] = H[:, :, :, s1 * nm:(s1 + 1) * nm]
                    else:  # dc^{s}_n c^{s2}_n'
                        _split_last(dst, (L + 1, nm, nm))[...] = H[
                            :, :, :, s2 * nm:(s2 + 1) * nm
                        ].swapaxes(3, 4)
        # Translation invariance: d p_i / d r_i = - sum_{j != i} d p_i / d r_j.
        if U:
            self_sum = segment_matrix(ui, N, -1.0)
            dp[U:] = (self_sum @ dp[:U].reshape(U, 3 * F)).reshape(N, 3, F)
        else:
            dp[U:] = 0.0
        return pair_i, pair_j, dp

    def _dp_strain(self, env: _Environment, cl: list[np.ndarray]) -> np.ndarray:
        """``d p_i / d eta_ab`` via ``d c_i / d eta_ab = sum_k d c/d D_k,a D_k,b``."""
        N = env.n_atoms
        ns, nm, nlm, L = len(self.species), self.n_max, self._nlm, self.l_max
        nsn = ns * nm
        # dc[seg, a, b, n, lm] = sum_k D_a D_b S Rq_l + D_b dS_a R_l   (k in seg)
        dcs = np.zeros((env.n_seg, 3, 3, nm, nlm))
        if env.kmax:
            Rp = env.padded("R", env.R)
            Rqp = env.padded("Rq", env.Rq)
            Dp = env.padded("D", env.D)  # (n_seg, kmax, 3)
            Sp = env.padded("S", env.S)
            dSp = env.padded("dS", env.dS)  # (n_seg, kmax, 3, nlm)
            for b in range(3):
                Y = Dp[:, :, :, None] * (Dp[:, :, b, None, None] * Sp[:, :, None, :])  # (seg, k, 3, nlm)
                Z = Dp[:, :, b, None, None] * dSp
                for l in range(L + 1):
                    sl = slice(l * l, (l + 1) ** 2)
                    m = 2 * l + 1
                    Yl = Y[:, :, :, sl].reshape(env.n_seg, env.kmax, 3 * m)
                    Zl = Z[:, :, :, sl].reshape(env.n_seg, env.kmax, 3 * m)
                    t = Rqp[:, :, l].transpose(0, 2, 1) @ Yl + Rp[:, :, l].transpose(0, 2, 1) @ Zl
                    dcs[:, :, b, :, sl] = t.reshape(env.n_seg, nm, 3, m).transpose(0, 2, 1, 3)
        dcs = dcs.reshape(N, ns, 9, nm, nlm).transpose(0, 2, 1, 3, 4).reshape(N, 9, nsn, nlm)
        dG = np.empty((N, 9, L + 1, nsn, nsn))
        for l in range(L + 1):
            K = np.matmul(cl[l][:, None], dcs[..., l * l:(l + 1) ** 2].transpose(0, 1, 3, 2))
            dG[:, :, l] = K + K.transpose(0, 1, 3, 2)
        out = dG.reshape(N, 9, (L + 1) * nsn * nsn)[:, :, self._f_flat] * self._f_prel
        return out.reshape(N, 3, 3, self.n_features)

    def _feature_slices(self):
        """``(s1, s2, l, f0, f1)``: the features of species pair ``s1 <= s2`` and ``l``
        are ``f0:f1``, laid out ``(n1, n2)`` (only ``n1 <= n2`` when ``s1 == s2``)."""
        nm = self.n_max
        for (s1, s2), (off, _) in self._block.items():
            size = nm * (nm + 1) // 2 if s1 == s2 else nm * nm
            for l in range(self.l_max + 1):
                yield s1, s2, l, off + l * size, off + (l + 1) * size

    def _blocks(self) -> np.ndarray:
        """Rows ``(s1, s2, l, f0)`` of :meth:`_feature_slices` (int64, for the kernels)."""
        t = self.__dict__.get("_block_table")
        if t is None:
            t = np.array([(s1, s2, l, f0) for s1, s2, l, f0, _ in self._feature_slices()],
                         dtype=np.int64).reshape(-1, 4)
            self._block_table = t
        return t

    def _power(self, c: np.ndarray) -> np.ndarray:
        """Power spectra (n_centres, F) from c (n_centres, S, nlm, n): one ``n x n``
        block per species pair and ``l`` (compiled, :func:`soap_kernels.power`)."""
        p = np.empty((c.shape[0], self.n_features))
        kern.power(c, self._blocks(), self._prel, p)
        return p

    def _grad_c(self, c: np.ndarray, grad_p: np.ndarray) -> np.ndarray:
        """``dE/dc`` (n_centres, S, nlm, n) from ``grad_p = dE/dp`` (n_centres, F)."""
        gc = np.empty_like(c)
        kern.grad_power(c, self._blocks(), self._prel, np.ascontiguousarray(grad_p), gc)
        return gc

    def _vjp_env(self, env: _Environment, grad_p: np.ndarray, strain: bool,
                 out: tuple[np.ndarray, np.ndarray] | list | None = None):
        """``(dE/dr, dE/deta)`` of the centres of ``env`` from ``grad_p = dE/dp``.

        ``dE/dc_i`` by batched matrix products per species pair and ``l``, then one
        compiled loop over the pairs gives ``dE/dD_p``, folded onto the atoms. With
        ``out = (dE_dr (n_atoms, 3), dE_deta (3, 3))`` the result is added to them;
        with a list ``out`` the fold is appended to it as ``fold(dE_dr, dE_deta)``
        (run later, e.g. in block order after parallel blocks) and None returned.
        """
        nc = env.n_centres
        grad_p = np.asarray(grad_p, dtype=np.float64)
        if grad_p.shape != (nc, self.n_features):
            raise ValueError(f"grad_p must have shape {(nc, self.n_features)}, got {grad_p.shape}")
        deferred = out if isinstance(out, list) else None
        if out is None:
            out = (np.zeros((env.n_atoms, 3)), np.zeros((3, 3)))
        dE_dr, dE_deta = (None, None) if deferred is not None else out
        with engine_threads():
            self._prepare(env, derivative=True)
            gc = self._grad_c(self._coefficients(env), grad_p)  # layout of c
            gD = np.empty((len(env.i), 3))
            kern.vjp_pairs(env.starts, env.s, env.R, env.Rq, env.S, env.D, gc,
                           self._gidx, self._gcoef, gD)
            if deferred is not None:
                deferred.append(partial(kern.fold_pairs, env.i, env.j, env.D, gD))
                return None
            kern.fold_pairs(env.i, env.j, env.D, gD, dE_dr, dE_deta)
        return dE_dr, (dE_deta if strain else None)

    # ------------------------------------------------------------------- API
