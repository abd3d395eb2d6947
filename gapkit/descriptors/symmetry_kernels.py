"""Compiled (numba) loops of :class:`~gapkit.descriptors.symmetry_functions.SymmetryFunctionEngine`.

:func:`two_body` fills the G1/G2/G3 features of every centre and, with gradients,
the compact per-pair derivatives ``dG/dD_p`` in one pass over the pairs (the numpy
form, ``SymmetryFunctionEngine._radial`` with a segment sum, is kept as the
reference; on the 576-atom ethanol box it took about 3 ms per call).

:func:`three_body` runs over the unordered pairs ``(pA < pB)`` of neighbour pairs of
every centre (the triplets ``(i, j, k)``) and accumulates DScribe's G4 and G5 terms
and, with gradients, their derivatives with respect to both neighbour vectors, with
the formulas of ``SymmetryFunctionEngine._angular`` (kept as the numpy reference).
Nothing per triplet is stored; each centre writes only its own rows, so the loop over
centres can run on several threads (``numba.prange``, serial by default; GIL
released). Units: distances in Å, ``eta`` in 1/Å².
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .soap_kernels import _FAST, _Kernel

__all__ = ["three_body", "two_body"]


@nb.njit(cache=True, nogil=True, fastmath=_FAST)
def _ipow(x, k):  # pragma: no cover - jitted
    """``x ** k`` by repeated squaring for integer ``0 <= k <= 64`` (as the numpy path)."""
    if k == int(k) and 0 <= k <= 64:
        n = int(k)
        out = 1.0
        base = x
        while n:
            if n & 1:
                out = out * base
            n >>= 1
            if n:
                base = base * base
        return out
    return x ** k


def three_body(starts, sj, d, D, fc, q, its, n_spair, r_cut, params, with_jk, gradients,
               p3, gC3):  # pragma: no cover - jitted
    """Accumulate G4 (``with_jk[k]``) / G5 terms of every triplet into ``p3`` and ``gC3``.

    ``starts`` (N + 1,) pair ranges of the centres (pairs sorted by centre), ``sj`` (P,)
    neighbour species, ``d`` (P,), ``D`` (P, 3), ``fc`` (P,) cutoff values, ``q`` (P,)
    ``fc'(r) / r``, ``its`` (ns, ns) species-pair block, ``params`` (n, 3) ``(eta,
    zeta, lambda)`` (column ``k`` of the angular block), ``with_jk`` (n,) bool. ``p3``
    (N * n_spair, n) gets the values; with ``gradients`` ``gC3`` (P, ns, 3, n) gets
    ``d/dD_p`` of pair ``p`` by partner species.
    """
    n_centres = starts.shape[0] - 1
    n = params.shape[0]
    rc2 = r_cut * r_cut
    x_c = math.pi / r_cut
    for i in nb.prange(n_centres):
        for pA in range(starts[i], starts[i + 1]):
            ra = d[pA]
            sA = sj[pA]
            for pB in range(pA + 1, starts[i + 1]):
                rb = d[pB]
                sB = sj[pB]
                ab = D[pA, 0] * D[pB, 0] + D[pA, 1] * D[pB, 1] + D[pA, 2] * D[pB, 2]
                cos = ab / (ra * rb)
                fa, fb, qa, qb = fc[pA], fc[pB], q[pA], q[pB]
                fab = fa * fb
                e0 = D[pB, 0] - D[pA, 0]
                e1 = D[pB, 1] - D[pA, 1]
                e2 = D[pB, 2] - D[pA, 2]
                rjk2 = e0 * e0 + e1 * e1 + e2 * e2
                fjk = 0.0
                qjk = 0.0
                if rjk2 <= rc2:
                    rjk = math.sqrt(rjk2)
                    fjk = 0.5 * (math.cos(x_c * rjk) + 1.0)
                    if rjk > 0:
                        qjk = -0.5 * x_c * math.sin(x_c * rjk) / rjk
                row = i * n_spair + its[sA, sB]
                inv_ab = 1.0 / (ra * rb)
                va = -cos / (ra * ra)
                vb = -cos / (rb * rb)
                E = 0.0
                last_eta, last_jk = -1.0, -1  # exp(-eta s2) is shared by equal (eta, jk)
                for k in range(n):
                    jk = with_jk[k]
                    if jk and rjk2 > rc2:
                        continue  # fc(r_jk) = 0
                    eta, zeta, lam = params[k, 0], params[k, 1], params[k, 2]
                    if jk:
                        s2 = ra * ra + rb * rb + rjk2
                        FC = fab * fjk
                        t = fab * qjk
                        alpha_a = qa * fb * fjk + t
                        alpha_b = qb * fa * fjk + t
                        k_self, k_cross = 4.0, 2.0
                    else:
                        s2 = ra * ra + rb * rb
                        FC = fab
                        t = 0.0
                        alpha_a = qa * fb
                        alpha_b = qb * fa
                        k_self, k_cross = 2.0, 0.0
                    base = max(0.5 * (1.0 + lam * cos), 0.0)
                    bp = _ipow(base, zeta - 1.0)
                    A = 2.0 * base * bp
                    if eta != last_eta or jk != last_jk:
                        E = math.exp(-eta * s2)
                        last_eta, last_jk = eta, jk
                    EF = E * FC
                    p3[row, k] += A * EF
                    if not gradients:
                        continue
                    dA = (zeta * lam) * bp
                    Ca = dA * EF * va + A * (E * (alpha_a - (k_self * eta) * FC))
                    Db = dA * EF * vb + A * (E * (alpha_b - (k_self * eta) * FC))
                    X = dA * EF * inv_ab + A * (E * ((k_cross * eta) * FC - t))
                    for c in range(3):
                        gC3[pA, sB, c, k] += D[pA, c] * Ca + D[pB, c] * X
                        gC3[pB, sA, c, k] += D[pB, c] * Db + D[pA, c] * X


three_body = _Kernel(three_body)


@nb.njit(cache=True, nogil=True, fastmath=_FAST)
def two_body(i, sj, d, D, r_cut, include_g1, g2, g3, p, gC, gradients):  # pragma: no cover - jitted
    """2-body features ``p`` (N, n_species n_radial) and compact derivatives.

    ``i`` (P,) centre and ``sj`` (P,) neighbour species index of every pair, ``d``
    (P,) distances and ``D`` (P, 3) neighbour vectors (Å); ``g2`` (n2, 2) the G2
    ``(eta, r_s)``, ``g3`` (n3,) the G3 ``kappa``. ``p`` is overwritten; with
    ``gradients``, ``gC[p, a, c] = D[p, a] / d[p] dG_c/dr`` for the ``n_radial``
    columns ``c`` (the first of ``gC``'s last axis). Terms as in ``_radial``:
    ``fc = (cos(pi r / r_cut) + 1) / 2`` (zero beyond ``r_cut``), G1 ``fc``, G2
    ``exp(-eta (r - r_s)^2) fc``, G3 ``cos(kappa r) fc``.
    """
    nr = int(include_g1) + g2.shape[0] + g3.shape[0]
    p[:, :] = 0.0
    x = math.pi / r_cut
    for k in range(d.shape[0]):
        r = d[k]
        if r <= r_cut:
            fc = 0.5 * (math.cos(x * r) + 1.0)
            dfc = -0.5 * x * math.sin(x * r)
        else:
            fc = 0.0
            dfc = 0.0
        row = i[k]
        base = sj[k] * nr
        u0 = D[k, 0] / r
        u1 = D[k, 1] / r
        u2 = D[k, 2] / r
        c = 0
        if include_g1:
            p[row, base] += fc
            if gradients:
                gC[k, 0, 0] = u0 * dfc
                gC[k, 1, 0] = u1 * dfc
                gC[k, 2, 0] = u2 * dfc
            c = 1
        for m in range(g2.shape[0]):
            eta = g2[m, 0]
            t = r - g2[m, 1]
            e = math.exp(-eta * t * t)
            p[row, base + c] += e * fc
            if gradients:
                der = e * (dfc - 2.0 * eta * t * fc)
                gC[k, 0, c] = u0 * der
                gC[k, 1, c] = u1 * der
                gC[k, 2, c] = u2 * der
            c += 1
        for m in range(g3.shape[0]):
            kr = r * g3[m]
            cs = math.cos(kr)
            p[row, base + c] += cs * fc
            if gradients:
                der = cs * dfc - g3[m] * math.sin(kr) * fc
                gC[k, 0, c] = u0 * der
                gC[k, 1, c] = u1 * der
                gC[k, 2, c] = u2 * der
            c += 1
