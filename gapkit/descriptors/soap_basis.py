"""SOAP building blocks: DScribe's GTO radial basis and the real solid harmonics.

* :func:`gto_basis`: DScribe's orthonormalised GTO radial basis (exponents in
  1/Å², Löwdin coefficients);
* :func:`real_solid_harmonics`: ``S_lm(D) = |D|^l Y_lm(D/|D|)`` and gradients by
  Cartesian recursions (reference implementation);
* :func:`solid_harmonic_coefficients` and :class:`_SolidHarmonicsEvaluator`: the
  same functions as monomial expansions;
* :func:`solid_harmonic_gradient_table`: the gradients of degree ``l`` as sums of at
  most two harmonics of degree ``l - 1`` (the SOAP VJP never stores gradients).

Harmonics are ordered ``l``, then ``m = -l..l`` (index ``l^2 + l + m``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.linalg import inv, sqrtm
from scipy.special import gamma

__all__ = ["GTO_THRESHOLD", "feature_tables", "gto_basis", "real_solid_harmonics",
           "solid_harmonic_coefficients", "solid_harmonic_gradient_table"]

GTO_THRESHOLD = 1e-3  # DScribe's fixed Gaussian decay threshold (basis and padding)


def gto_basis(r_cut: float, n_max: int, l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """DScribe's orthonormalised GTO radial basis (``SOAP.get_basis_gto``).

    Parameters
    ----------
    r_cut : float
        Radial cutoff in Å.
    n_max, l_max : int
        Number of radial functions and maximum angular momentum.

    Returns
    -------
    alphas : ndarray of shape (l_max + 1, n_max)
        Gaussian exponents in 1/Å².
    betas : ndarray of shape (l_max + 1, n_max, n_max)
        Löwdin orthonormalisation coefficients, ``g_nl = sum_k betas[l, n, k]
        r^l exp(-alphas[l, k] r^2)``.
    """
    a = np.linspace(1, r_cut, n_max)
    alphas_full = np.zeros((l_max + 1, n_max))
    betas_full = np.zeros((l_max + 1, n_max, n_max))
    for l in range(l_max + 1):
        alphas = -np.log(GTO_THRESHOLD / np.power(a, l)) / a**2
        m = np.zeros((n_max, n_max))
        m[:, :] = alphas
        m = m + m.transpose()
        S = 0.5 * gamma(l + 3.0 / 2.0) * m ** (-l - 3.0 / 2.0)
        betas = sqrtm(inv(S))
        if np.iscomplexobj(betas):
            if np.abs(betas.imag).max() > 1e-10 * np.abs(betas.real).max():
                raise ValueError(
                    "Could not orthonormalise the GTO radial basis in real numbers; "
                    "lower n_max or increase r_cut."
                )
            betas = betas.real
        alphas_full[l] = alphas
        betas_full[l] = betas
    return alphas_full, betas_full


def feature_tables(ns: int, nm: int, l_max: int) -> dict:
    """DScribe's power-spectrum layout for ``ns`` species, ``n_max = nm``, ``l_max``.

    Species pairs ``s1 <= s2``, then ``l``, then ``(n1, n2)`` with ``n1 <= n2`` when
    ``s1 == s2`` and all pairs otherwise. Returns the per-feature arrays ``sA, sB, l,
    nA, nB``, ``flat`` (index into a ``(l_max + 1, ns nm, ns nm)`` Gram array),
    ``blocks`` (``{(s1, s2): (start, stop)}``, contiguous per species pair) and
    ``triu`` (flat indices of ``n1 <= n2`` in an ``nm x nm`` block).
    """
    sA, sB, fl, nA, nB = [], [], [], [], []
    blocks, off = {}, 0
    for s1 in range(ns):
        for s2 in range(s1, ns):
            for l in range(l_max + 1):
                for n1 in range(nm):
                    for n2 in range(n1 if s1 == s2 else 0, nm):
                        sA.append(s1)
                        sB.append(s2)
                        fl.append(l)
                        nA.append(n1)
                        nB.append(n2)
            blocks[s1, s2] = (off, len(fl))
            off = len(fl)
    t = {k: np.array(v, dtype=np.int64) for k, v in
         (("sA", sA), ("sB", sB), ("l", fl), ("nA", nA), ("nB", nB))}
    nsn = ns * nm
    t["flat"] = (t["l"] * nsn + t["sA"] * nm + t["nA"]) * nsn + t["sB"] * nm + t["nB"]
    t["blocks"] = blocks
    t["triu"] = np.flatnonzero(np.triu(np.ones((nm, nm), dtype=bool)))
    return t


def _sphere_points(n: int) -> np.ndarray:
    """``n`` deterministic points (Fibonacci sphere) with radii in [0.6, 1.4], (n, 3)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = math.pi * (1.0 + math.sqrt(5.0)) * k
    rad = np.sqrt(1.0 - z * z)
    u = np.stack([rad * np.cos(phi), rad * np.sin(phi), z], axis=1)
    return u * (0.6 + 0.8 * ((k * 0.618034) % 1.0))[:, None]


@lru_cache(maxsize=16)
def solid_harmonic_gradient_table(l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the real solid harmonics from those of one degree lower.

    ``d S_lm / d D_x = sum_k coef[lm, x, k] S_{idx[lm, x, k]}(D)`` with at most two
    terms (degree ``l - 1``; zero for ``l = 0``), as for every basis of solid
    harmonics. The coefficients are fitted exactly (least squares on 400 points) to
    :func:`real_solid_harmonics`.

    Returns
    -------
    idx : ndarray of shape ((l_max + 1)^2, 3, 2), int
        Harmonic indices (0 with a zero coefficient where there is no term).
    coef : ndarray of shape ((l_max + 1)^2, 3, 2)
        Coefficients in 1/Å.
    """
    nlm = (l_max + 1) ** 2
    idx = np.zeros((nlm, 3, 2), dtype=np.int64)
    coef = np.zeros((nlm, 3, 2))
    D = _sphere_points(400)
    S, dS = real_solid_harmonics(D, l_max, gradients=True)
    for l in range(1, l_max + 1):
        lo = (l - 1) ** 2
        for x in range(3):
            target = dS[:, x, l * l:(l + 1) ** 2]
            C = np.linalg.lstsq(S[:, lo:l * l], target, rcond=None)[0]
            C[np.abs(C) < 1e-9 * np.abs(C).max()] = 0.0
            for col in range(2 * l + 1):
                rows = np.flatnonzero(C[:, col])
                if len(rows) > 2:  # pragma: no cover - a property of solid harmonics
                    raise RuntimeError(f"gradient of S_{l}{col - l} has {len(rows)} terms")
                idx[l * l + col, x, :len(rows)] = lo + rows
                coef[l * l + col, x, :len(rows)] = C[rows, col]
            err = np.abs(S[:, lo:l * l] @ C - target).max() / np.abs(target).max()
            if err > 1e-12:  # pragma: no cover
                raise RuntimeError(f"solid-harmonic gradient table inexact at l={l} ({err:.1e})")
    return idx, coef


@lru_cache(maxsize=32)
def _lm_tables(l_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index tables of the (l_max + 1)^2 real harmonics, ordered l, then m = -l..l.

    Returns ``l_of``, ``am_of`` (= |m|), ``trig_of`` (row of the stacked
    ``[C_0..C_L, S_1..S_L]`` azimuthal polynomials) and the normalisation ``norm``.
    """
    l_of, am_of, trig_of, norm = [], [], [], []
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            l_of.append(l)
            am_of.append(am)
            trig_of.append(am if m >= 0 else l_max + am)
            f = (2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am)
            norm.append(math.sqrt(f) * (math.sqrt(2.0) if m != 0 else 1.0))
    return (np.array(l_of), np.array(am_of), np.array(trig_of), np.array(norm))


def real_solid_harmonics(
    D: np.ndarray, l_max: int, gradients: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Orthonormal real solid harmonics ``S_lm(D) = |D|^l Y_lm(D/|D|)``.

    Evaluated with the Cartesian recursions for the associated Legendre part
    ``Q_l^m(z, r^2)`` and the azimuthal polynomials ``Re/Im (x + i y)^m``, so the
    values and gradients are exact polynomials (well defined at ``D = 0``).

    Parameters
    ----------
    D : ndarray of shape (P, 3)
        Vectors in Å.
    l_max : int
        Maximum degree.
    gradients : bool
        Also return the Cartesian gradients.

    Returns
    -------
    S : ndarray of shape (P, (l_max + 1)^2)
        Values in Å^l, ordered ``l`` then ``m = -l..l`` (index ``l^2 + l + m``).
    dS : ndarray of shape (P, 3, (l_max + 1)^2) or None
        ``dS[k, a, lm] = d S_lm(D_k) / d D_k,a`` in Å^(l-1).
    """
    D = np.asarray(D, dtype=np.float64)
    P = D.shape[0]
    L = l_max
    x, y, z = D[:, 0], D[:, 1], D[:, 2]
    rho = x * x + y * y + z * z

    # Associated-Legendre part Q[l, m] (m <= l), a polynomial in z and rho = r^2.
    Q = np.zeros((L + 1, L + 1, P))
    if gradients:
        Qz = np.zeros_like(Q)  # dQ/dz at fixed rho
        Qr = np.zeros_like(Q)  # dQ/drho at fixed z
    dfact = 1.0
    for m in range(L + 1):
        if m > 0:
            dfact *= 2 * m - 1
        Q[m, m] = dfact
        if m + 1 <= L:
            Q[m + 1, m] = (2 * m + 1) * z * dfact
            if gradients:
                Qz[m + 1, m] = (2 * m + 1) * dfact
    for l in range(2, L + 1):
        ms = np.arange(l - 1)
        a = (2 * l - 1) / (l - ms)[:, None]
        b = ((l + ms - 1) / (l - ms))[:, None]
        Q[l, : l - 1] = a * z * Q[l - 1, : l - 1] - b * rho * Q[l - 2, : l - 1]
        if gradients:
            Qz[l, : l - 1] = a * (Q[l - 1, : l - 1] + z * Qz[l - 1, : l - 1]) - b * rho * Qz[l - 2, : l - 1]
            Qr[l, : l - 1] = a * z * Qr[l - 1, : l - 1] - b * (Q[l - 2, : l - 1] + rho * Qr[l - 2, : l - 1])

    # Azimuthal polynomials C_m = Re (x+iy)^m, S_m = Im (x+iy)^m, stacked as
    # rows [C_0, ..., C_L, S_1, ..., S_L]; row L + 0 is an unused placeholder.
    trig = np.zeros((2 * L + 1, P))
    trig[0] = 1.0
    for m in range(1, L + 1):
        c_prev = trig[m - 1]
        s_prev = trig[L + m - 1] if m > 1 else np.zeros(P)
        trig[m] = x * c_prev - y * s_prev
        trig[L + m] = x * s_prev + y * c_prev

    l_of, am_of, trig_of, norm = _lm_tables(L)
    Qsel = Q[l_of, am_of]  # (nlm, P)
    Tsel = trig[trig_of]  # (nlm, P)
    S = (norm[:, None] * Qsel * Tsel).T
    if not gradients:
        return np.ascontiguousarray(S), None

    # Gradients of the azimuthal polynomials.
    dtrig = np.zeros((2, 2 * L + 1, P))  # (d/dx, d/dy)
    for m in range(1, L + 1):
        c_prev = trig[m - 1]
        s_prev = trig[L + m - 1] if m > 1 else np.zeros(P)
        dtrig[0, m] = m * c_prev
        dtrig[1, m] = -m * s_prev
        dtrig[0, L + m] = m * s_prev
        dtrig[1, L + m] = m * c_prev
    Qr_sel = Qr[l_of, am_of]
    Qz_sel = Qz[l_of, am_of]
    dS = np.empty((P, 3, len(l_of)))
    dS[:, 0, :] = (norm[:, None] * (2 * x * Qr_sel * Tsel + Qsel * dtrig[0][trig_of])).T
    dS[:, 1, :] = (norm[:, None] * (2 * y * Qr_sel * Tsel + Qsel * dtrig[1][trig_of])).T
    dS[:, 2, :] = (norm[:, None] * ((2 * z * Qr_sel + Qz_sel) * Tsel)).T
    return np.ascontiguousarray(S), dS


def _poly_mul(p: dict, q: dict) -> dict:
    out: dict = {}
    for (a1, b1, c1), v1 in p.items():
        for (a2, b2, c2), v2 in q.items():
            k = (a1 + a2, b1 + b2, c1 + c2)
            out[k] = out.get(k, 0.0) + v1 * v2
    return out


def _poly_lin(*terms: tuple[float, dict]) -> dict:
    out: dict = {}
    for f, p in terms:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + f * v
    return out


@lru_cache(maxsize=16)
def solid_harmonic_coefficients(l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Monomial expansion of the orthonormal real solid harmonics.

    ``S_lm(x, y, z) = sum_k C[lm, k] x^a_k y^b_k z^c_k``, derived symbolically from
    the same recursions as :func:`real_solid_harmonics` (exact up to rounding of
    the coefficients).

    Returns
    -------
    powers : ndarray of shape (K, 3), int
        Exponents ``(a, b, c)`` of the monomials of degree 0..l_max.
    C : ndarray of shape ((l_max + 1)^2, K)
        Coefficients, rows ordered like :func:`real_solid_harmonics`.
    """
    L = l_max
    X, Y, Z = {(1, 0, 0): 1.0}, {(0, 1, 0): 1.0}, {(0, 0, 1): 1.0}
    RHO = {(2, 0, 0): 1.0, (0, 2, 0): 1.0, (0, 0, 2): 1.0}
    Q: dict = {}
    dfact = 1.0
    for m in range(L + 1):
        if m > 0:
            dfact *= 2 * m - 1
        Q[m, m] = {(0, 0, 0): dfact}
        if m + 1 <= L:
            Q[m + 1, m] = _poly_lin((2 * m + 1, _poly_mul(Z, Q[m, m])))
    for l in range(2, L + 1):
        for m in range(l - 1):
            Q[l, m] = _poly_lin(
                ((2 * l - 1) / (l - m), _poly_mul(Z, Q[l - 1, m])),
                (-(l + m - 1) / (l - m), _poly_mul(RHO, Q[l - 2, m])),
            )
    Cm = [{(0, 0, 0): 1.0}]
    Sm = [{}]
    for m in range(1, L + 1):
        Cm.append(_poly_lin((1.0, _poly_mul(X, Cm[m - 1])), (-1.0, _poly_mul(Y, Sm[m - 1]))))
        Sm.append(_poly_lin((1.0, _poly_mul(X, Sm[m - 1])), (1.0, _poly_mul(Y, Cm[m - 1]))))
    powers = [(a, b, l - a - b) for l in range(L + 1) for a in range(l, -1, -1) for b in range(l - a, -1, -1)]
    index = {pw: k for k, pw in enumerate(powers)}
    l_of, am_of, _, norm = _lm_tables(L)
    C = np.zeros(((L + 1) ** 2, len(powers)))
    row = 0
    for l in range(L + 1):
        for m in range(-l, l + 1):
            trig = Cm[abs(m)] if m >= 0 else Sm[abs(m)]
            for k, v in _poly_mul(Q[l, abs(m)], trig).items():
                C[row, index[k]] += norm[row] * v
            row += 1
    C[np.abs(C) < 1e-300] = 0.0
    return np.array(powers, dtype=np.int64), C


class _SolidHarmonicsEvaluator:
    """Fast evaluation of real solid harmonics and gradients via monomials."""

    def __init__(self, l_max: int) -> None:
        self.l_max = l_max
        powers, C = solid_harmonic_coefficients(l_max)
        self.a, self.b, self.c = powers[:, 0], powers[:, 1], powers[:, 2]
        self.Ct = np.ascontiguousarray(C.T)  # (K, nlm)
        self.am1 = np.maximum(self.a - 1, 0)
        self.bm1 = np.maximum(self.b - 1, 0)
        self.cm1 = np.maximum(self.c - 1, 0)

    def __call__(
        self, D: np.ndarray, gradients: bool, block: int = 512
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Values (P, nlm) and, with ``gradients``, gradients (P, 3, nlm)."""
        P = D.shape[0]
        if P <= 2 * block:
            return self._eval(D, gradients)
        nlm = self.Ct.shape[1]
        S = np.empty((P, nlm))
        dS = np.empty((P, 3, nlm)) if gradients else None
        for a in range(0, P, block):  # cache-sized blocks of pairs
            Sb, dSb = self._eval(D[a:a + block], gradients)
            S[a:a + block] = Sb
            if gradients:
                dS[a:a + block] = dSb
        return S, dS

    def _eval(self, D: np.ndarray, gradients: bool) -> tuple[np.ndarray, np.ndarray | None]:
        P = D.shape[0]
        L = self.l_max
        K = len(self.a)
        pw = np.empty((3, L + 1, P))  # pw[c, k] = D[:, c]^k
        pw[:, 0] = 1.0
        if L >= 1:
            pw[:, 1] = D.T
        for k in range(2, L + 1):
            np.multiply(pw[:, k - 1], pw[:, 1], out=pw[:, k])
        xa, yb, zc = pw[0][self.a], pw[1][self.b], pw[2][self.c]  # (K, P)
        yz = yb * zc
        mono = xa * yz
        S = mono.T @ self.Ct  # (P, nlm)
        if not gradients:
            return S, None
        dmono = np.empty((3, K, P))
        np.multiply(pw[0][self.am1] * self.a[:, None], yz, out=dmono[0])
        np.multiply(pw[1][self.bm1] * self.b[:, None], xa * zc, out=dmono[1])
        np.multiply(pw[2][self.cm1] * self.c[:, None], xa * yb, out=dmono[2])
        dS = np.empty((P, 3, self.Ct.shape[1]))
        for a in range(3):
            np.matmul(dmono[a].T, self.Ct, out=dS[:, a])
        return S, dS
