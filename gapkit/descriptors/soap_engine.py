"""A vectorised numpy re-implementation of DScribe's GTO SOAP power spectrum.

:class:`SOAPEngine` reproduces ``dscribe.descriptors.SOAP(rbf="gto")`` feature for
feature (same values, same order, same normalisation, no averaging, no
compression, no weighting) for finite, periodic and mixed-pbc structures, and adds

* an optional smooth ``"cosine"`` cutoff, so that the descriptor and its
  derivatives are continuous when atoms enter or leave the cutoff sphere;
* exact analytical derivatives ``d p_i / d r_j`` for every neighbour pair
  (periodic images folded onto their atom), stored sparsely;
* exact strain derivatives ``d p_i / d eta_ab`` (virial) for periodic cells;
* a vector-Jacobian product that turns ``dE/dp_i`` into forces and virial at a
  cost of ``O(pairs x n_max x (l_max + 1)^2)``, without forming ``d p / d r``.

Mathematics
-----------
Around centre ``i`` the density of species ``s`` is a sum of Gaussians
``w(r_k) exp(-|r - D_k|^2 / (2 sigma^2))`` over the neighbours ``k`` of species
``s`` (periodic images included), ``D_k = r_k - r_i``, *including the centre atom
itself* at the origin. Projected on DScribe's orthonormalised GTO radial basis
``g_nl(r) = sum_k' beta_{l n k'} r^l exp(-alpha_{l k'} r^2)`` and real spherical
harmonics, each neighbour contributes analytically

    c_{nlm}(D) = R_{nl}(|D|^2) S_{lm}(D),
    R_{nl}(r^2) = w(r) sum_k B_{l n k} exp(A_{l k} r^2),

with ``eta = 1 / (2 sigma^2)``, ``A_{lk} = -alpha_{lk} / (1 + alpha_{lk} / eta)``,
``B_{lnk} = pi^{3/2} eta^{-3/2} beta_{lnk} (1 + alpha_{lk} / eta)^{-(l + 3/2)}`` and
``S_{lm}(D) = |D|^l Y_{lm}(D / |D|)`` the real solid harmonics (orthonormal real
spherical harmonics times ``r^l``, polynomials in ``x, y, z``). The power spectrum
is

    p^{s s'}_{n n' l} = pi sqrt(8 / (2 l + 1)) sum_m c^s_{nlm} c^{s'}_{n'lm}

in DScribe's layout: species pairs ``s <= s'`` (sorted atomic numbers), then
``l``, then ``(n, n')`` with ``n <= n'`` when ``s == s'`` and all pairs otherwise.
Because the sum over ``m`` is invariant under orthogonal changes of the real
basis within each ``l``, the harmonic sign/phase convention does not matter.

Units: positions in Å, ``dp`` in 1/Å (times the units of ``p``), ``dp_strain``
in the units of ``p``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from ase import Atoms
from ase.data import atomic_numbers as _ase_atomic_numbers
from ase.neighborlist import neighbor_list
from scipy.linalg import inv, sqrtm
from scipy.special import gamma

__all__ = ["SOAPEngine", "EngineResult", "gto_basis", "real_solid_harmonics"]

_GTO_THRESHOLD = 1e-3  # DScribe's fixed Gaussian decay threshold (basis and padding)
_DIRECT_NL_MAX_ATOMS = 400  # finite systems up to this size: all-pairs neighbour search


# ----------------------------------------------------------------------------
# Radial basis and angular functions
# ----------------------------------------------------------------------------
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
        alphas = -np.log(_GTO_THRESHOLD / np.power(a, l)) / a**2
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


# ----------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------
@dataclass
class _Environment:
    """Per-structure neighbour data and per-pair expansion terms (internal)."""

    n_atoms: int
    numbers: np.ndarray  # (N,)
    centre_species: np.ndarray  # (N,) species index of every atom
    i: np.ndarray  # (P,) centre of every neighbour pair (images are separate pairs)
    j: np.ndarray  # (P,) neighbour atom index
    s: np.ndarray  # (P,) species index of the neighbour
    D: np.ndarray  # (P, 3) r_j + shift - r_i
    r2: np.ndarray  # (P,)
    w: np.ndarray  # (P,) cutoff weight
    wq: np.ndarray  # (P,) w'(r) / r
    gather: sp.csr_matrix  # (N * n_species, P): sums pair rows onto (centre, species)
    R: np.ndarray | None = None  # (P, n_max, l_max + 1)
    Rq: np.ndarray | None = None  # (P, n_max, l_max + 1), (dR/dr) / r
    S: np.ndarray | None = None  # (P, nlm)
    dS: np.ndarray | None = None  # (P, 3, nlm)
    c: np.ndarray | None = None  # (N, n_species, n_max, nlm)


@dataclass
class EngineResult:
    """SOAP power spectra of one structure and, optionally, their derivatives.

    Attributes
    ----------
    p : ndarray of shape (n_atoms, n_features)
        Unnormalised power spectrum of every atom, in DScribe's exact layout.
    numbers : ndarray of shape (n_atoms,)
        Atomic numbers of the centres.
    pair_i, pair_j : ndarray of shape (n_pairs,) or None
        Centre and moved atom of every derivative block, sorted by ``(i, j)``;
        every atom has its self pair ``(i, i)``; periodic images of ``j`` are
        folded onto ``j``.
    dp : ndarray of shape (n_pairs, 3, n_features) or None
        ``dp[k, a] = d p[pair_i[k]] / d r[pair_j[k], a]`` (1/Å).
    dp_strain : ndarray of shape (n_atoms, 3, 3, n_features) or None
        ``d p_i / d eta_ab`` for the homogeneous deformation
        ``r -> (1 + eta) r`` of positions and cell.
    """

    p: np.ndarray
    numbers: np.ndarray
    pair_i: np.ndarray | None = None
    pair_j: np.ndarray | None = None
    dp: np.ndarray | None = None
    dp_strain: np.ndarray | None = None
    _engine: "SOAPEngine | None" = field(default=None, repr=False)
    _env: _Environment | None = field(default=None, repr=False)

    @property
    def n_atoms(self) -> int:
        return self.p.shape[0]

    def vjp(self, grad_p: np.ndarray, strain: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Vector-Jacobian product with the cached structure (needs ``keep=True``).

        Parameters
        ----------
        grad_p : ndarray of shape (n_atoms, n_features)
            ``dE/dp_i``.
        strain : bool
            Also return ``dE/deta``.

        Returns
        -------
        dE_dr : ndarray of shape (n_atoms, 3)
            ``dE/dr_j`` (forces are ``-dE_dr``).
        dE_deta : ndarray of shape (3, 3) or None
            ``dE/deta_ab`` (the virial is ``-dE_deta``).
        """
        if self._env is None or self._engine is None:
            raise RuntimeError("EngineResult.vjp needs compute(..., keep=True)")
        return self._engine._vjp_env(self._env, grad_p, strain)


# ----------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------
class SOAPEngine:
    """Vectorised GTO SOAP power spectrum identical to DScribe's, with derivatives.

    Parameters
    ----------
    species : sequence of int or str
        Chemical species (atomic numbers or symbols); sorted internally.
    r_cut : float
        Radial cutoff in Å (must be > 1, as in DScribe).
    n_max : int
        Number of radial basis functions.
    l_max : int
        Maximum angular momentum.
    sigma : float
        Width of the atomic Gaussians in Å.
    cutoff : {"dscribe", "cosine"}
        ``"dscribe"``: exactly DScribe, unit weights for all neighbours within
        ``r_cut + sigma sqrt(-2 ln 1e-3)`` (hard cutoff, the descriptor jumps when
        an atom crosses it). ``"cosine"``: each neighbour's Gaussian is multiplied
        by ``f(r) = 1`` for ``r <= r_cut - w``, ``0.5 (1 + cos(pi (r - r_cut + w) / w))``
        for ``r_cut - w < r < r_cut`` and 0 beyond, so the descriptor is C¹.
    cutoff_width : float
        Width ``w`` of the cosine taper in Å (ignored for ``"dscribe"``).
    """

    def __init__(
        self,
        species: Sequence[int | str],
        r_cut: float,
        n_max: int,
        l_max: int,
        sigma: float,
        cutoff: str = "dscribe",
        cutoff_width: float = 1.0,
    ) -> None:
        numbers = []
        for s in species:
            if isinstance(s, str):
                if s not in _ase_atomic_numbers:
                    raise ValueError(f"Unknown chemical symbol {s!r}")
                numbers.append(_ase_atomic_numbers[s])
            else:
                numbers.append(int(s))
        self.species = sorted(set(numbers))
        if not self.species:
            raise ValueError("species must not be empty")
        if r_cut <= 1:
            raise ValueError("r_cut must be larger than 1 Å")
        if n_max < 1 or l_max < 0:
            raise ValueError("need n_max >= 1 and l_max >= 0")
        if sigma <= 0:
            raise ValueError("sigma must be positive")
        if cutoff not in ("dscribe", "cosine"):
            raise ValueError("cutoff must be 'dscribe' or 'cosine'")
        if cutoff == "cosine" and not (0 < cutoff_width <= r_cut):
            raise ValueError("cutoff_width must be in (0, r_cut]")
        self.r_cut = float(r_cut)
        self.n_max = int(n_max)
        self.l_max = int(l_max)
        self.sigma = float(sigma)
        self.cutoff = cutoff
        self.cutoff_width = float(cutoff_width)
        self.padding = self.sigma * math.sqrt(-2.0 * math.log(_GTO_THRESHOLD))

        self._z_to_s = {z: k for k, z in enumerate(self.species)}
        self._lut = np.full(max(self.species) + 1, -1, dtype=np.int64)
        for z, k in self._z_to_s.items():
            self._lut[z] = k

        # Radial integrals in closed form (see module docstring).
        self.alphas, self.betas = gto_basis(self.r_cut, self.n_max, self.l_max)
        eta = 1.0 / (2.0 * self.sigma**2)
        q = 1.0 / (1.0 + self.alphas / eta)  # (L+1, n)
        self._A = -self.alphas * q  # (L+1, k)
        ls = np.arange(self.l_max + 1)[:, None]
        fac = math.pi**1.5 * eta**-1.5 * q ** (ls + 1.5)  # (L+1, k)
        self._B = self.betas * fac[:, None, :]  # (L+1, n, k)
        self._Bt = np.ascontiguousarray(self._B.transpose(0, 2, 1))  # (L+1, k, n)
        # The centre's own Gaussian at the origin: only l = 0, S_00 = 1/sqrt(4 pi).
        self._self_c0 = self._B[0].sum(axis=1) / math.sqrt(4 * math.pi)  # (n,)

        l_of, _, _, _ = _lm_tables(self.l_max)
        self._l_of = l_of
        self._nlm = (self.l_max + 1) ** 2
        self._prel = math.pi * np.sqrt(8.0 / (2.0 * np.arange(self.l_max + 1) + 1.0))

        # Feature layout.
        ns, nm = len(self.species), self.n_max
        sA, sB, fl, nA, nB = [], [], [], [], []
        for s1 in range(ns):
            for s2 in range(s1, ns):
                for l in range(self.l_max + 1):
                    for n1 in range(nm):
                        for n2 in range(n1 if s1 == s2 else 0, nm):
                            sA.append(s1)
                            sB.append(s2)
                            fl.append(l)
                            nA.append(n1)
                            nB.append(n2)
        self._f_sA, self._f_sB = np.array(sA), np.array(sB)
        self._f_l, self._f_nA, self._f_nB = np.array(fl), np.array(nA), np.array(nB)
        self._f_A = self._f_sA * nm + self._f_nA
        self._f_B = self._f_sB * nm + self._f_nB
        self._f_prel = self._prel[self._f_l]
        nsn = ns * nm
        # flat index into a (L+1, nsn, nsn) Gram array
        self._f_flat = (self._f_l * nsn + self._f_A) * nsn + self._f_B
        # Contiguous feature blocks of every species pair (s1 <= s2), each laid
        # out as (l, n1, n2) with n1 <= n2 kept when s1 == s2.
        self._blocks = []
        off = 0
        for s1 in range(ns):
            for s2 in range(s1, ns):
                size = (self.l_max + 1) * (nm * (nm + 1) // 2 if s1 == s2 else nm * nm)
                self._blocks.append((s1, s2, off, off + size))
                off += size
        self._triu = np.flatnonzero(np.triu(np.ones((nm, nm), dtype=bool)))

    # ------------------------------------------------------------------ info
    @property
    def n_features(self) -> int:
        """Number of power-spectrum features (same as DScribe's)."""
        return len(self._f_l)

    @property
    def search_radius(self) -> float:
        """Neighbour-search radius in Å: ``r_cut + padding`` or ``r_cut`` (cosine)."""
        return self.r_cut + self.padding if self.cutoff == "dscribe" else self.r_cut

    @property
    def feature_layout(self) -> dict[str, np.ndarray]:
        """Per-feature labels: atomic numbers ``Z1, Z2``, ``l``, ``n1, n2``."""
        sp_arr = np.array(self.species)
        return {
            "Z1": sp_arr[self._f_sA],
            "Z2": sp_arr[self._f_sB],
            "l": self._f_l.copy(),
            "n1": self._f_nA.copy(),
            "n2": self._f_nB.copy(),
        }

    def __repr__(self) -> str:
        return (
            f"SOAPEngine(species={self.species}, r_cut={self.r_cut}, n_max={self.n_max}, "
            f"l_max={self.l_max}, sigma={self.sigma}, cutoff={self.cutoff!r}"
            + (f", cutoff_width={self.cutoff_width}" if self.cutoff == "cosine" else "")
            + ")"
        )

    # ------------------------------------------------------------ internals
    def _cutoff_fn(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``f(r)`` and ``f'(r) / r`` of the neighbours."""
        if self.cutoff == "dscribe":
            return np.ones_like(r), np.zeros_like(r)
        w = self.cutoff_width
        r_in = self.r_cut - w
        t = np.clip((r - r_in) / w, 0.0, 1.0)
        f = 0.5 * (1.0 + np.cos(math.pi * t))
        inside = (r > r_in) & (r < self.r_cut)
        df = np.where(inside, -0.5 * math.pi / w * np.sin(math.pi * t), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            fq = np.where(inside, df / np.where(r > 0, r, 1.0), 0.0)
        return f, fq

    def _neighbours(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Neighbour pairs within :attr:`search_radius`, periodic images included.

        Returns ``i, j`` (int64), distances ``d`` and vectors ``D = r_j + shift - r_i``,
        sorted by ``i``; self pairs with zero shift are excluded (as in
        ``ase.neighborlist.neighbor_list``).
        """
        n = len(atoms)
        rc = self.search_radius
        if n == 0:
            e = np.zeros(0, dtype=np.int64)
            return e, e, np.zeros(0), np.zeros((0, 3))
        if not np.any(atoms.pbc) and n <= _DIRECT_NL_MAX_ATOMS:
            pos = atoms.positions
            Dall = pos[None, :, :] - pos[:, None, :]
            d2 = np.einsum("ijk,ijk->ij", Dall, Dall)
            mask = d2 < rc * rc
            np.fill_diagonal(mask, False)
            i, j = np.nonzero(mask)
            return i.astype(np.int64), j.astype(np.int64), np.sqrt(d2[i, j]), Dall[i, j]
        i, j, d, D = neighbor_list("ijdD", atoms, rc)
        return i.astype(np.int64), j.astype(np.int64), d, np.ascontiguousarray(D, dtype=np.float64)

    def _environment(self, atoms: Atoms) -> _Environment:
        numbers = np.asarray(atoms.get_atomic_numbers())
        n = len(atoms)
        if n and (numbers.max() >= len(self._lut) or (self._lut[numbers] < 0).any()):
            bad = sorted(set(numbers.tolist()) - set(self.species))
            raise ValueError(f"Atomic numbers {bad} are not in the engine species {self.species}")
        cs = self._lut[numbers] if n else np.zeros(0, dtype=np.int64)
        i, j, d, D = self._neighbours(atoms)
        if self.cutoff == "cosine":
            keep = d < self.r_cut
            i, j, d, D = i[keep], j[keep], d[keep], D[keep]
        s = cs[j]
        w, wq = self._cutoff_fn(d)
        P = len(i)
        ns = len(self.species)
        # CSR matrix summing the pair rows onto their (centre, neighbour species) row
        key = i * ns + s
        order = np.argsort(key, kind="stable")
        indptr = np.zeros(n * ns + 1, dtype=np.int64)
        np.cumsum(np.bincount(key, minlength=n * ns), out=indptr[1:])
        gather = sp.csr_matrix((np.ones(P), order, indptr), shape=(n * ns, P))
        return _Environment(
            n_atoms=n, numbers=numbers, centre_species=cs, i=i, j=j, s=s,
            D=D, r2=d * d, w=w, wq=wq, gather=gather,
        )

    def _radial(self, env: _Environment, derivative: bool) -> None:
        """Fill ``env.R`` (and ``env.Rq`` = (dR/dr)/r) of shape (P, n_max, l_max+1)."""
        ex = np.exp(env.r2[None, :, None] * self._A[:, None, :])  # (L+1, P, k)
        if env.R is None:
            E = ex * env.w[None, :, None]
            env.R = np.matmul(E, self._Bt).transpose(1, 2, 0)  # (P, n, L+1)
        if derivative and env.Rq is None:
            Eq = ex * (env.wq[None, :, None] + 2.0 * self._A[:, None, :] * env.w[None, :, None])
            env.Rq = np.matmul(Eq, self._Bt).transpose(1, 2, 0)

    def _prepare(self, env: _Environment, derivative: bool) -> None:
        self._radial(env, derivative)
        if env.S is None or (derivative and env.dS is None):
            env.S, env.dS = real_solid_harmonics(env.D, self.l_max, gradients=derivative)

    def _coefficients(self, env: _Environment) -> np.ndarray:
        """Expansion coefficients c of shape (N, n_species, n_max, nlm)."""
        if env.c is not None:
            return env.c
        ns, nm, nlm = len(self.species), self.n_max, self._nlm
        P = len(env.i)
        T = env.R[:, :, self._l_of] * env.S[:, None, :]  # (P, n, nlm)
        c = np.asarray(env.gather @ T.reshape(P, nm * nlm)).reshape(env.n_atoms, ns, nm, nlm)
        c[np.arange(env.n_atoms), env.centre_species, :, 0] += self._self_c0
        env.c = c
        return c

    def _c_by_l(self, c: np.ndarray) -> list[np.ndarray]:
        """Split c (N, S, n, nlm) into per-l blocks (N, S*n, 2l+1)."""
        N = c.shape[0]
        nsn = len(self.species) * self.n_max
        return [c[..., l * l:(l + 1) ** 2].reshape(N, nsn, 2 * l + 1) for l in range(self.l_max + 1)]

    def _power(self, cl: list[np.ndarray]) -> np.ndarray:
        N = cl[0].shape[0]
        G = np.stack([x @ x.transpose(0, 2, 1) for x in cl], axis=1)  # (N, L+1, nsn, nsn)
        return G.reshape(N, -1)[:, self._f_flat] * self._f_prel

    def _dT(self, env: _Environment, idx: np.ndarray | None = None) -> np.ndarray:
        """Gradients d(R_nl S_lm)/dD of the selected pairs, shape (P', nlm, 3, n_max)."""
        sl = slice(None) if idx is None else idx
        Rt = env.R[sl].transpose(0, 2, 1)[:, self._l_of]  # (P', nlm, n)
        Rqt = env.Rq[sl].transpose(0, 2, 1)[:, self._l_of]
        S = env.S[sl]
        dS = env.dS[sl]
        D = env.D[sl]
        X = S[:, :, None] * Rqt  # (P', nlm, n)
        dSt = dS.transpose(0, 2, 1)  # (P', nlm, 3)
        dT = np.empty(X.shape[:2] + (3, X.shape[2]))
        for a in range(3):
            np.multiply(X, D[:, a, None, None], out=dT[:, :, a])
            dT[:, :, a] += Rt * dSt[:, :, a, None]
        return dT

    def _dp(self, env: _Environment, cl: list[np.ndarray]):
        """Sparse position derivatives; returns (pair_i, pair_j, dp)."""
        N = env.n_atoms
        nm, nlm, L = self.n_max, self._nlm, self.l_max
        nsn = len(self.species) * nm
        F = self.n_features
        moving = np.flatnonzero(env.i != env.j)  # pairs i -> image of i do not move
        key = env.i[moving] * N + env.j[moving]
        ukey, first, inv_idx = np.unique(key, return_index=True, return_inverse=True)
        U = len(ukey)
        ui, uj = ukey // N, ukey % N
        if U == len(moving):  # no periodic images to fold (e.g. molecules)
            dC = self._dT(env, moving[first])  # (U, nlm, 3, n)
        else:
            dT = self._dT(env, moving)
            fold = sp.csr_matrix(
                (np.ones(len(moving)), (inv_idx.ravel(), np.arange(len(moving)))),
                shape=(U, len(moving)),
            )
            dC = np.asarray(fold @ dT.reshape(len(moving), -1)).reshape(U, nlm, 3, nm)
        # H[u, l, A, a, n'] = sum_m c_i[A, lm] dc_i[s_j n', lm] / dr_j,a, with i, j = pair u
        # (the l-dependent prefactor of the power spectrum is folded into H)
        H = np.empty((U, L + 1, nsn, 3, nm))
        for l in range(L + 1):
            H[:, l] = np.matmul(
                cl[l][ui] * self._prel[l], dC[:, l * l:(l + 1) ** 2].reshape(U, 2 * l + 1, 3 * nm)
            ).reshape(U, nsn, 3, nm)
        us = self._lut[env.numbers[uj]]

        # Output ordering: sorted by (i, j) with a self pair for every atom.
        all_key = np.concatenate([ukey, np.arange(N) * (N + 1)])
        order = np.argsort(all_key, kind="stable")
        pos = np.empty_like(order)
        pos[order] = np.arange(len(order))
        pos_u, pos_self = pos[:U], pos[U:]
        pair_i = all_key[order] // N
        pair_j = all_key[order] % N
        dp = np.zeros((U + N, 3, F))
        rows_of = [np.flatnonzero(us == s) for s in range(len(self.species))]
        for s1, s2, f0, f1 in self._blocks:
            if s1 == s2:
                r = rows_of[s1]
                if not len(r):
                    continue
                Hb = H[r, :, s1 * nm:(s1 + 1) * nm]  # (r, L+1, n, 3, n')
                M = Hb.transpose(0, 3, 1, 2, 4) + Hb.transpose(0, 3, 1, 4, 2)
                M = np.take(M.reshape(len(r), 3, L + 1, nm * nm), self._triu, axis=3)
                dp[pos_u[r], :, f0:f1] = M.reshape(len(r), 3, f1 - f0)
            else:
                r = rows_of[s2]  # moved atom of species s2: dc^{s2} changes
                if len(r):
                    Hb = H[r, :, s1 * nm:(s1 + 1) * nm]  # (r, L+1, n1, 3, n2)
                    dp[pos_u[r], :, f0:f1] = Hb.transpose(0, 3, 1, 2, 4).reshape(len(r), 3, f1 - f0)
                r = rows_of[s1]  # moved atom of species s1: dc^{s1} changes
                if len(r):
                    Hb = H[r, :, s2 * nm:(s2 + 1) * nm]  # (r, L+1, n2, 3, n1)
                    dp[pos_u[r], :, f0:f1] = Hb.transpose(0, 3, 1, 4, 2).reshape(len(r), 3, f1 - f0)
        # Translation invariance: d p_i / d r_i = - sum_{j != i} d p_i / d r_j.
        self_sum = sp.csr_matrix((-np.ones(U), (ui, pos_u)), shape=(N, U + N))
        dp[pos_self] = (self_sum @ dp.reshape(U + N, 3 * F)).reshape(N, 3, F)
        return pair_i, pair_j, dp

    def _dp_strain(self, env: _Environment, cl: list[np.ndarray]) -> np.ndarray:
        N, P = env.n_atoms, len(env.i)
        ns, nm, nlm, L = len(self.species), self.n_max, self._nlm, self.l_max
        nsn = ns * nm
        dT = self._dT(env)  # (P, nlm, 3, n)
        dTe = dT[:, :, :, None, :] * env.D[:, None, None, :, None]  # (P, nlm, 3, 3, n)
        dCs = np.asarray(env.gather @ dTe.reshape(P, -1)).reshape(N, ns, nlm, 9, nm)
        dG = np.empty((N, 9, L + 1, nsn, nsn))
        for l in range(L + 1):
            # (N, 9, S, n, 2l+1) -> (N, 9, nsn, 2l+1)
            dl = dCs[:, :, l * l:(l + 1) ** 2].transpose(0, 3, 1, 4, 2).reshape(N, 9, nsn, 2 * l + 1)
            K = np.matmul(cl[l][:, None], dl.transpose(0, 1, 3, 2))  # (N, 9, nsn, nsn)
            dG[:, :, l] = K + K.transpose(0, 1, 3, 2)
        out = dG.reshape(N, 9, -1)[:, :, self._f_flat] * self._f_prel
        return out.reshape(N, 3, 3, -1)

    def _vjp_env(self, env: _Environment, grad_p: np.ndarray, strain: bool):
        N, P = env.n_atoms, len(env.i)
        ns, nm, nlm, L = len(self.species), self.n_max, self._nlm, self.l_max
        nsn = ns * nm
        grad_p = np.asarray(grad_p, dtype=np.float64)
        if grad_p.shape != (N, self.n_features):
            raise ValueError(f"grad_p must have shape {(N, self.n_features)}, got {grad_p.shape}")
        self._prepare(env, derivative=True)
        c = self._coefficients(env)
        cl = self._c_by_l(c)
        W = np.zeros((N, (L + 1) * nsn * nsn))
        W[:, self._f_flat] = grad_p * self._f_prel
        W = W.reshape(N, L + 1, nsn, nsn)
        W = W + W.transpose(0, 1, 3, 2)
        gc = np.empty((N, nsn, nlm))
        for l in range(L + 1):
            gc[:, :, l * l:(l + 1) ** 2] = W[:, l] @ cl[l]
        gc = gc.reshape(N, ns, nm, nlm)
        g = gc[env.i, env.s]  # (P, n, nlm)
        gS = np.einsum("pnk,pnk->pk", g, env.R[:, :, self._l_of])  # (P, nlm)
        gq = np.einsum("pnk,pnk->p", g * env.S[:, None, :], env.Rq[:, :, self._l_of])
        gD = np.einsum("pk,pak->pa", gS, env.dS) + gq[:, None] * env.D  # dE/dD_k (P, 3)
        dE_dr = np.zeros((N, 3))
        np.add.at(dE_dr, env.j, gD)
        np.add.at(dE_dr, env.i, -gD)
        dE_deta = gD.T @ env.D if strain else None
        return dE_dr, dE_deta

    # ------------------------------------------------------------------- API
    def compute(
        self,
        atoms: Atoms,
        gradients: bool = True,
        strain: bool = False,
        keep: bool = False,
    ) -> EngineResult:
        """Power spectra and (optionally) their exact derivatives.

        Parameters
        ----------
        atoms : ase.Atoms
            Finite, periodic or mixed-pbc structure (cells smaller than twice the
            cutoff are fine; periodic images are included).
        gradients : bool
            Return the sparse position derivatives ``dp``.
        strain : bool
            Return the strain derivatives ``dp_strain``.
        keep : bool
            Cache the neighbour data so that :meth:`EngineResult.vjp` can be used.

        Returns
        -------
        EngineResult
            ``p`` (n_atoms, F); with ``gradients`` also ``pair_i, pair_j`` (n_pairs,)
            and ``dp`` (n_pairs, 3, F); with ``strain`` ``dp_strain`` (n_atoms, 3, 3, F).
        """
        env = self._environment(atoms)
        self._prepare(env, derivative=gradients or strain or keep)
        c = self._coefficients(env)
        cl = self._c_by_l(c)
        res = EngineResult(p=self._power(cl), numbers=env.numbers.copy())
        if gradients:
            res.pair_i, res.pair_j, res.dp = self._dp(env, cl)
        if strain:
            res.dp_strain = self._dp_strain(env, cl)
        if keep:
            res._engine, res._env = self, env
        return res

    def vjp(
        self, atoms: Atoms, grad_p: np.ndarray, strain: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Vector-Jacobian product: forces/virial from ``dE/dp`` without forming ``dp``.

        Parameters
        ----------
        atoms : ase.Atoms
            The structure.
        grad_p : ndarray of shape (n_atoms, n_features)
            ``dE/dp_i`` for every centre.
        strain : bool
            Also return ``dE/deta``.

        Returns
        -------
        dE_dr : ndarray of shape (n_atoms, 3)
            ``dE/dr_j = sum_i grad_p_i . d p_i / d r_j`` (forces are ``-dE_dr``).
        dE_deta : ndarray of shape (3, 3) or None
            ``dE/deta_ab = sum_i grad_p_i . d p_i / d eta_ab``.

        Notes
        -----
        Cost ``O(n_pairs x n_max x (l_max + 1)^2 + n_atoms x (l_max + 1) x
        (n_species n_max)^2 x (2 l_max + 1))``.
        """
        env = self._environment(atoms)
        return self._vjp_env(env, grad_p, strain)
