"""Compiled (numba) per-pair kernels of :class:`~gapkit.descriptors.soap_engine.SOAPEngine`.

The per-pair work of the SOAP engine runs here without zero-padding the segments
(pairs are sorted by centre, so the pairs of atom ``i`` are ``starts[i]:starts[i+1]``):

* :func:`radial_basis`: ``R[p, l, n] = w_p sum_k B[l, n, k] exp(A[l, k] r_p^2)`` and
  ``Rq = (dR/dr) / r`` (the exponentials come from numpy);
* :func:`expand`: ``c[i, s, lm, n] += R[p, l, n] S[p, lm]`` over the pairs of every
  centre (the neighbour-density expansion);
* :func:`vjp_pairs`: ``dE/dD_p`` of every pair from ``gc = dE/dc`` (the
  vector-Jacobian product of the expansion; the harmonics' gradients are formed
  per pair from the harmonics of degree ``l - 1``, never stored);
* :func:`fold_pairs`: ``dE/dr`` and ``dE/deta`` from ``dE/dD_p``;
* :func:`power` and :func:`grad_power`: the power spectrum of every centre and
  ``dE/dc`` from ``dE/dp`` (one ``n x n`` block per species pair and ``l``).

The loops over centres are ``numba.prange`` loops, compiled twice: serially (used
with one engine thread, the default: no threading-layer overhead) and in parallel
(used with :func:`gapkit.descriptors.threads.set_engine_threads` > 1, compiled on
first use; both are cached on disk). Each centre writes only its own rows, so the
results do not depend on the number of threads. All loops release the GIL
(``nogil``), so blocks of atoms can also run in parallel Python threads. Units: ``r2`` in Å², ``D`` in Å.
"""

from __future__ import annotations

import types

import numba as nb
import numpy as np

from .threads import current_threads

__all__ = ["expand", "fold_pairs", "grad_power", "power", "radial_basis", "vjp_pairs"]

#: Reassociation only (vectorised sums; no assumptions about NaN or infinity).
_FAST = {"reassoc", "contract", "nsz"}


class _Kernel:
    """A loop compiled serially and (on first use) in parallel; called with the
    number of threads set by :func:`~gapkit.descriptors.threads.engine_threads`."""

    def __init__(self, fn):
        self.py_func = fn
        self.__doc__ = fn.__doc__
        self.serial = nb.njit(cache=True, nogil=True, fastmath=_FAST)(fn)
        self._parallel = None

    def __call__(self, *args):
        if current_threads() <= 1:
            return self.serial(*args)
        if self._parallel is None:
            # a copy under its own name, so that its on-disk cache is not the serial one's
            fn = self.py_func
            twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_parallel")
            twin.__qualname__ = fn.__qualname__ + "_parallel"
            self._parallel = nb.njit(cache=True, nogil=True, parallel=True,
                                     fastmath=_FAST)(twin)
        return self._parallel(*args)


def radial_basis(starts, E, w, wq, A, B, R, Rq, derivative):  # pragma: no cover - jitted
    """Fill ``R`` (P, L+1, n) and, with ``derivative``, ``Rq`` (P, L+1, n).

    ``E[p, l, k] = exp(A[l, k] r_p^2)`` (P, L+1, K) (numpy's vectorised ``exp``);
    ``A`` (L+1, K) and ``B`` (L+1, n, K) are the closed-form GTO integrals of the
    engine; ``w`` and ``wq`` the cutoff weight and ``w'(r)/r`` of every pair. Each
    value is one dot product over ``k`` (accumulated in registers).
    """
    n_centres = starts.shape[0] - 1
    L1, nm, K = B.shape
    for c in nb.prange(n_centres):
        f = np.empty(K)
        for p in range(starts[c], starts[c + 1]):
            wp = w[p]
            wqp = wq[p]
            for l in range(L1):
                if derivative:
                    for k in range(K):
                        f[k] = E[p, l, k] * (wqp + 2.0 * A[l, k] * wp)
                    for a in range(nm):
                        s0 = 0.0
                        s1 = 0.0
                        for k in range(K):  # R and Rq share the loads of B
                            b = B[l, a, k]
                            s0 += b * E[p, l, k]
                            s1 += b * f[k]
                        R[p, l, a] = wp * s0
                        Rq[p, l, a] = s1
                else:
                    for a in range(nm):
                        s0 = 0.0
                        for k in range(K):
                            s0 += B[l, a, k] * E[p, l, k]
                        R[p, l, a] = wp * s0


def expand(starts, s, R, S, c):  # pragma: no cover - jitted
    """``c[i, s_p, lm, n] += R[p, l, n] S[p, lm]`` for the pairs ``p`` of every centre.

    ``starts`` (n_centres + 1,) pair ranges, ``s`` (P,) neighbour species,
    ``R`` (P, L+1, n), ``S`` (P, (L+1)^2), ``c`` (n_centres, n_species, (L+1)^2, n)
    (``n`` last: the innermost loop is contiguous in ``R`` and ``c``).
    """
    n_centres = starts.shape[0] - 1
    L1, nm = R.shape[1], R.shape[2]
    for i in nb.prange(n_centres):
        for p in range(starts[i], starts[i + 1]):
            sp = s[p]
            for l in range(L1):
                for lm in range(l * l, (l + 1) * (l + 1)):
                    sv = S[p, lm]
                    for a in range(nm):
                        c[i, sp, lm, a] += R[p, l, a] * sv


def vjp_pairs(starts, s, R, Rq, S, D, gc, gidx, gcoef, gD):  # pragma: no cover - jitted
    """``gD[p] = dE/dD_p`` from ``gc[i, s, lm, n] = dE/dc``.

    ``dE/dD_p = sum_lm tS_lm grad S_lm(D_p) + (sum_lm tQ_lm S_lm(D_p)) D_p`` with
    ``tS_lm = sum_n gc[i, s_p, lm, n] R[p, l, n]`` and ``tQ`` the same with ``Rq``.
    The gradients of the solid harmonics are never stored: ``d S_lm / d D_x = sum_t
    gcoef[lm, x, t] S[p, gidx[lm, x, t]]`` (two harmonics of degree ``l - 1``,
    :func:`~gapkit.descriptors.soap_basis.solid_harmonic_gradient_table`), formed per
    pair in a small buffer.
    """
    n_centres = starts.shape[0] - 1
    L1, nm = R.shape[1], R.shape[2]
    nlm = S.shape[1]
    for i in nb.prange(n_centres):
        ds = np.empty((3, nlm))
        for p in range(starts[i], starts[i + 1]):
            sp = s[p]
            for lm in range(nlm):
                for x in range(3):
                    ds[x, lm] = (gcoef[lm, x, 0] * S[p, gidx[lm, x, 0]]
                                 + gcoef[lm, x, 1] * S[p, gidx[lm, x, 1]])
            gq = 0.0
            gx = 0.0
            gy = 0.0
            gz = 0.0
            for l in range(L1):
                for lm in range(l * l, (l + 1) * (l + 1)):
                    tS = 0.0
                    tQ = 0.0
                    for a in range(nm):
                        v = gc[i, sp, lm, a]
                        tS += v * R[p, l, a]
                        tQ += v * Rq[p, l, a]
                    gq += tQ * S[p, lm]
                    gx += tS * ds[0, lm]
                    gy += tS * ds[1, lm]
                    gz += tS * ds[2, lm]
            gD[p, 0] = gx + gq * D[p, 0]
            gD[p, 1] = gy + gq * D[p, 1]
            gD[p, 2] = gz + gq * D[p, 2]


def power(c, blocks, prel, p):  # pragma: no cover - jitted
    """Power spectra ``p`` (n_centres, F) from ``c`` (n_centres, S, (L+1)^2, n).

    ``blocks`` (n_blocks, 4) rows ``(s1, s2, l, f0)``: the features ``f0 ..`` of
    species pair ``s1 <= s2`` and ``l`` are ``prel[l] sum_m c[s1, lm, n1] c[s2, lm,
    n2]`` in the order ``(n1, n2)`` (``n1 <= n2`` when ``s1 == s2``).
    """
    n_centres, nm = c.shape[0], c.shape[3]
    for i in nb.prange(n_centres):
        H = np.empty((nm, nm))
        for b in range(blocks.shape[0]):
            s1, s2, l, f0 = blocks[b, 0], blocks[b, 1], blocks[b, 2], blocks[b, 3]
            H[:, :] = 0.0
            for lm in range(l * l, (l + 1) * (l + 1)):
                for n1 in range(nm):
                    v = c[i, s1, lm, n1]
                    for n2 in range(nm):
                        H[n1, n2] += v * c[i, s2, lm, n2]
            pr = prel[l]
            f = f0
            for n1 in range(nm):
                for n2 in range(n1 if s1 == s2 else 0, nm):
                    p[i, f] = pr * H[n1, n2]
                    f += 1


def grad_power(c, blocks, prel, grad_p, gc):  # pragma: no cover - jitted
    """``gc = dE/dc`` (zeroed here, layout of ``c``) from ``grad_p = dE/dp``
    (n_centres, F), for the features of :func:`power`."""
    n_centres, nm = c.shape[0], c.shape[3]
    for i in nb.prange(n_centres):
        M = np.empty((nm, nm))
        gc[i] = 0.0
        for b in range(blocks.shape[0]):
            s1, s2, l, f0 = blocks[b, 0], blocks[b, 1], blocks[b, 2], blocks[b, 3]
            pr = prel[l]
            f = f0
            if s1 == s2:  # p = sum_{n1 <= n2} g c_n1 . c_n2: M = G + G^T
                M[:, :] = 0.0
                for n1 in range(nm):
                    for n2 in range(n1, nm):
                        g = pr * grad_p[i, f]
                        M[n1, n2] += g
                        M[n2, n1] += g
                        f += 1
            else:
                for n1 in range(nm):
                    for n2 in range(nm):
                        M[n1, n2] = pr * grad_p[i, f]
                        f += 1
            for lm in range(l * l, (l + 1) * (l + 1)):
                for n1 in range(nm):
                    v = c[i, s1, lm, n1]
                    for n2 in range(nm):
                        gc[i, s2, lm, n2] += v * M[n1, n2]
                if s1 != s2:
                    for n1 in range(nm):
                        t = 0.0
                        for n2 in range(nm):
                            t += M[n1, n2] * c[i, s2, lm, n2]
                        gc[i, s1, lm, n1] += t


radial_basis = _Kernel(radial_basis)
expand = _Kernel(expand)
vjp_pairs = _Kernel(vjp_pairs)
power = _Kernel(power)
grad_power = _Kernel(grad_power)


@nb.njit(cache=True, nogil=True)
def fold_pairs(i, j, D, gD, dE_dr, dE_deta):  # pragma: no cover - jitted
    """``dE_dr[j_p] += gD_p``, ``dE_dr[i_p] -= gD_p``, ``dE_deta += gD_p (x) D_p``
    (accumulates into the given arrays, in pair order)."""
    for p in range(i.shape[0]):
        for a in range(3):
            g = gD[p, a]
            dE_dr[j[p], a] += g
            dE_dr[i[p], a] -= g
            for b in range(3):
                dE_deta[a, b] += g * D[p, b]
