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

Usage
-----
>>> eng = SOAPEngine(["H", "C", "O"], r_cut=5.0, n_max=8, l_max=6, sigma=0.5)
>>> res = eng.compute(atoms)                    # p, pair_i, pair_j, dp  # doctest: +SKIP
>>> res = eng.compute(atoms, gradients=False, keep=True)                 # doctest: +SKIP
>>> dE_dr, dE_deta = res.vjp(dE_dp, strain=True)  # forces = -dE_dr      # doctest: +SKIP

Implementation notes
--------------------
* Neighbours: all-pairs distances for small finite systems, otherwise a k-d
  tree over the atoms and their periodic images (same pairs as
  ``ase.neighborlist.neighbor_list``).
* Pairs are sorted by segment (centre, neighbour species) and zero-padded to the
  largest segment, so the expansion ``c = sum_k R_k S_k``, the VJP and the strain
  derivative are batched matmuls; ``dp`` is assembled in blocks of pairs, with
  ``c_i x dc_i/dr_j`` computed per centre, so that temporaries stay bounded.
  Memory is linear in the number of pairs.
* Modules: :mod:`~gapkit.descriptors.soap_basis` (radial basis, solid
  harmonics), this module (environment, expansion, power spectrum, API) and
  :mod:`~gapkit.descriptors.soap_derivatives` (position / strain derivatives, VJP).
* Differences to DScribe at the 1e-11 level come from its hard-coded constants
  (e.g. ``pi sqrt(3) / 2`` for l = 1); DScribe's analytical derivatives also skip
  terms whose coefficients are below 1e-8 in magnitude. Only unit weights
  (``weighting=None``) and ``compression="off"`` are reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import numpy as np
from ase import Atoms

from .base import Engine, EngineResult, species_index, species_numbers
from .neighbours import neighbour_pairs
from .soap_basis import (GTO_THRESHOLD, _lm_tables, _SolidHarmonicsEvaluator, gto_basis,
                         real_solid_harmonics, solid_harmonic_coefficients)
from .soap_derivatives import _PowerSpectrumDerivatives

__all__ = [
    "SOAPEngine",
    "EngineResult",
    "gto_basis",
    "real_solid_harmonics",
    "solid_harmonic_coefficients",
]


@dataclass
class _Environment:
    """Per-structure neighbour data and per-pair expansion terms (internal).

    The P neighbour pairs are sorted by *segment* ``seg = i * n_species + s``
    (centre, neighbour species); ``slot`` is the position of a pair inside its
    segment, so that per-pair arrays can be scattered into zero-padded
    ``(n_seg, kmax, ...)`` blocks and contracted with batched matmuls.
    """

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
    seg: np.ndarray  # (P,) i * n_species + s, non-decreasing
    slot: np.ndarray  # (P,) index of the pair inside its segment
    n_seg: int  # N * n_species
    kmax: int  # largest segment
    R: np.ndarray | None = None  # (P, l_max + 1, n_max)
    Rq: np.ndarray | None = None  # (P, l_max + 1, n_max), (dR/dr) / r
    S: np.ndarray | None = None  # (P, nlm)
    dS: np.ndarray | None = None  # (P, 3, nlm)
    c: np.ndarray | None = None  # (N, n_species, n_max, nlm)
    pad: dict = field(default_factory=dict)  # cached padded blocks

    def padded(self, name: str, values: np.ndarray) -> np.ndarray:
        """Zero-padded copy ``(n_seg, kmax) + values.shape[1:]`` of a per-pair array."""
        out = self.pad.get(name)
        if out is None:
            out = np.zeros((self.n_seg, self.kmax) + values.shape[1:])
            out[self.seg, self.slot] = values
            self.pad[name] = out
        return out



class SOAPEngine(_PowerSpectrumDerivatives, Engine):
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

    #: Pairs per block when streaming the coefficients (p only, nothing cached).
    _pair_block: int = 1024
    #: Approximate size (float64 values) of the per-block temporaries of ``dp``.
    _block_budget: int = 1_000_000

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
        self.species = species_numbers(species)
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
        self.padding = self.sigma * math.sqrt(-2.0 * math.log(GTO_THRESHOLD))

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
        self._ylm = _SolidHarmonicsEvaluator(self.l_max)
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
        # Contiguous feature block (start, stop) of every species pair s1 <= s2,
        # laid out as (l, n1, n2) with only n1 <= n2 kept when s1 == s2.
        self._block = {}
        off = 0
        for s1 in range(ns):
            for s2 in range(s1, ns):
                size = (self.l_max + 1) * (nm * (nm + 1) // 2 if s1 == s2 else nm * nm)
                self._block[s1, s2] = (off, off + size)
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
        """``(i, j, d, D)`` within :attr:`search_radius` (see :func:`neighbour_pairs`)."""
        return neighbour_pairs(atoms, self.search_radius)

    def _environment(self, atoms: Atoms) -> _Environment:
        numbers = np.asarray(atoms.get_atomic_numbers())
        n = len(atoms)
        cs = species_index(numbers, self.species)
        i, j, d, D = self._neighbours(atoms)
        if self.cutoff == "cosine":
            keep = d < self.r_cut
            i, j, d, D = i[keep], j[keep], d[keep], D[keep]
        ns = len(self.species)
        s = cs[j]
        seg = i * ns + s
        order = np.argsort(seg, kind="stable")
        i, j, s, d, D, seg = i[order], j[order], s[order], d[order], D[order], seg[order]
        counts = np.bincount(seg, minlength=n * ns)
        starts = np.cumsum(counts) - counts
        slot = np.arange(len(seg)) - starts[seg]
        w, wq = self._cutoff_fn(d)
        return _Environment(
            n_atoms=n, numbers=numbers, centre_species=cs, i=i, j=j, s=s,
            D=np.ascontiguousarray(D), r2=d * d, w=w, wq=wq, seg=seg, slot=slot,
            n_seg=n * ns, kmax=int(counts.max()) if len(counts) else 0,
        )

    def _radial_arrays(
        self, r2: np.ndarray, w: np.ndarray, wq: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Radial factors ``R`` and ``(dR/dr)/r`` (if ``wq`` given), shape (P, l_max+1, n_max)."""
        ex = np.exp(r2[None, :, None] * self._A[:, None, :])  # (L+1, P, k)
        R = np.matmul(ex * w[None, :, None], self._Bt).transpose(1, 0, 2)
        if wq is None:
            return R, None
        Eq = ex * (wq[None, :, None] + 2.0 * self._A[:, None, :] * w[None, :, None])
        return R, np.matmul(Eq, self._Bt).transpose(1, 0, 2)

    def _prepare(self, env: _Environment, derivative: bool) -> None:
        """Per-pair radial factors and solid harmonics (with derivatives)."""
        if env.R is None or (derivative and env.Rq is None):
            env.R, env.Rq = self._radial_arrays(env.r2, env.w, env.wq if derivative else None)
        if env.S is None or (derivative and env.dS is None):
            env.S, env.dS = self._ylm(env.D, derivative)

    def _contract(self, Rp: np.ndarray, Sp: np.ndarray, out: np.ndarray) -> None:
        """``out[g, n, lm] = sum_k Rp[g, k, l, n] Sp[g, k, lm]`` (padded segments)."""
        for l in range(self.l_max + 1):
            sl = slice(l * l, (l + 1) ** 2)
            np.matmul(Rp[:, :, l].transpose(0, 2, 1), Sp[:, :, sl], out=out[:, :, sl])

    def _coefficients(self, env: _Environment) -> np.ndarray:
        """Expansion coefficients c of shape (N, n_species, n_max, nlm).

        ``c[seg, n, lm] = sum_{k in seg} R[k, l, n] S[k, lm]``: one batched matmul
        per l over the zero-padded segments. Without cached per-pair data the
        pairs are streamed in blocks of whole segments (about ``block`` pairs),
        so that the temporaries stay small.
        """
        block = self._pair_block
        if env.c is not None:
            return env.c
        ns, nm, nlm = len(self.species), self.n_max, self._nlm
        c = np.zeros((env.n_seg, nm, nlm))
        if env.kmax and env.R is not None and env.S is not None:
            self._contract(env.padded("R", env.R), env.padded("S", env.S), c)
        elif env.kmax:
            counts = np.bincount(env.seg, minlength=env.n_seg)
            ends = np.cumsum(counts)
            cuts = np.unique(np.searchsorted(ends, np.arange(block, ends[-1], block), side="right"))
            gb = np.concatenate([[0], cuts, [env.n_seg]])
            pb = np.concatenate([[0], ends])[gb]
            for g0, g1, p0, p1 in zip(gb[:-1], gb[1:], pb[:-1], pb[1:]):
                if p0 == p1:
                    continue
                R, _ = self._radial_arrays(env.r2[p0:p1], env.w[p0:p1], None)
                S, _ = self._ylm(env.D[p0:p1], False)
                kb = int(counts[g0:g1].max())
                Rp = np.zeros((g1 - g0, kb, self.l_max + 1, nm))
                Sp = np.zeros((g1 - g0, kb, nlm))
                idx = (env.seg[p0:p1] - g0, env.slot[p0:p1])
                Rp[idx] = R
                Sp[idx] = S
                self._contract(Rp, Sp, c[g0:g1])
        c = c.reshape(env.n_atoms, ns, nm, nlm)
        c[np.arange(env.n_atoms), env.centre_species, :, 0] += self._self_c0
        env.c = c
        return c

    def _c_by_l(self, c: np.ndarray) -> list[np.ndarray]:
        """Split c (N, S, n, nlm) into per-l blocks (N, S*n, 2l+1)."""
        N = c.shape[0]
        nsn = len(self.species) * self.n_max
        return [c[..., l * l:(l + 1) ** 2].reshape(N, nsn, 2 * l + 1) for l in range(self.l_max + 1)]

    def _power(self, cl: list[np.ndarray]) -> np.ndarray:
        N, nsn = cl[0].shape[:2]
        G = np.stack([x @ x.transpose(0, 2, 1) for x in cl], axis=1)  # (N, L+1, nsn, nsn)
        return G.reshape(N, (self.l_max + 1) * nsn * nsn)[:, self._f_flat] * self._f_prel

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
        if gradients or strain or keep:
            self._prepare(env, derivative=True)
        c = self._coefficients(env)  # streams the pairs when nothing is cached
        cl = self._c_by_l(c)
        res = EngineResult(p=self._power(cl), numbers=env.numbers.copy())
        if gradients:
            res.pair_i, res.pair_j, res.dp = self._dp(env, cl)
        if strain:
            res.dp_strain = self._dp_strain(env, cl)
        if keep:
            res._vjp = partial(self._vjp_env, env)
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
