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
* Neighbours: :func:`~gapkit.descriptors.neighbours.neighbour_pairs` (``vesin``
  cell lists, shared with the geometry check); pairs are sorted by centre, then
  neighbour species.
* Solid harmonics: ``sphericart.SolidHarmonics`` (same normalisation and signs as
  :func:`real_solid_harmonics`; gradients only for the derivative arrays: the VJP
  forms them from the harmonics of degree ``l - 1``); radial basis, the
  expansion ``c = sum_k R_k S_k`` and the per-pair VJP: the compiled loops of
  :mod:`~gapkit.descriptors.soap_kernels` (no per-pair padding); power spectrum and
  ``dE/dc``: one batched matrix product per ``l``. Every call runs inside
  :func:`~gapkit.descriptors.threads.engine_threads` (BLAS on one thread).
* :meth:`SOAPEngine.compute_blocks` evaluates the centres in blocks of a fixed
  number of atoms with a vector-Jacobian product per block, so that the memory of a
  prediction is bounded by the block, not the cell.
* ``dp`` (derivative arrays) is assembled in blocks of pairs, with ``c_i x
  dc_i/dr_j`` computed per centre; the strain derivative zero-pads the segments.
* Modules: :mod:`~gapkit.descriptors.soap_basis` (radial basis, solid
  harmonics), this module (environment, expansion, power spectrum, API),
  :mod:`~gapkit.descriptors.soap_derivatives` (position / strain derivatives, VJP)
  and :mod:`~gapkit.descriptors.soap_kernels` (compiled loops).
* Differences to DScribe at the 1e-11 level come from its hard-coded constants
  (e.g. ``pi sqrt(3) / 2`` for l = 1); DScribe's analytical derivatives also skip
  terms whose coefficients are below 1e-8 in magnitude. Only unit weights
  (``weighting=None``) and ``compression="off"`` are reproduced.
"""

from __future__ import annotations

import math
import threading
from functools import partial
from typing import Callable, Iterator, Sequence

import numpy as np
import sphericart
from ase import Atoms

from . import soap_kernels as kern
from .base import Engine, EngineBlock, EngineResult, species_index, species_numbers
from .memory import keep_freed_memory
from .neighbours import neighbour_pairs
from .soap_basis import _SolidHarmonicsEvaluator  # noqa: F401  (re-exported for tests)
from .soap_basis import (GTO_THRESHOLD, _lm_tables, feature_tables, gto_basis,
                         real_solid_harmonics, solid_harmonic_coefficients,
                         solid_harmonic_gradient_table)
from .soap_derivatives import _PowerSpectrumDerivatives
from .soap_environment import _Environment
from .threads import engine_threads

__all__ = [
    "SOAPEngine",
    "EngineResult",
    "gto_basis",
    "real_solid_harmonics",
    "solid_harmonic_coefficients",
]


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
    radial_scaling : float
        Exponent ``m`` of the radial scaling ``u(r) = 2 / (1 + (r / r0)**m)`` that
        multiplies each neighbour's Gaussian (not the centre's own), on top of the
        cutoff weight; ``u(r0) = 1`` and ``m = 0`` (the default) is no scaling.
    radial_scaling_r0 : float
        ``r0`` in Å.
    """

    #: Centres per block when streaming the coefficients (p only, nothing cached).
    _centre_block: int = 256
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
        radial_scaling: float = 0.0,
        radial_scaling_r0: float = 1.0,
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
        if not (math.isfinite(radial_scaling) and radial_scaling >= 0):
            raise ValueError("radial_scaling must be >= 0")
        if not (math.isfinite(radial_scaling_r0) and radial_scaling_r0 > 0):
            raise ValueError("radial_scaling_r0 must be > 0 Å")
        keep_freed_memory()  # temporaries reused between calls, not re-mapped (glibc)
        self.r_cut = float(r_cut)
        self.n_max = int(n_max)
        self.l_max = int(l_max)
        self.sigma = float(sigma)
        self.cutoff = cutoff
        self.cutoff_width = float(cutoff_width)
        self.radial_scaling = float(radial_scaling)
        self.radial_scaling_r0 = float(radial_scaling_r0)
        self.padding = self.sigma * math.sqrt(-2.0 * math.log(GTO_THRESHOLD))

        # Radial integrals in closed form (see module docstring).
        self.alphas, self.betas = gto_basis(self.r_cut, self.n_max, self.l_max)
        eta = 1.0 / (2.0 * self.sigma**2)
        q = 1.0 / (1.0 + self.alphas / eta)  # (L+1, n)
        self._A = -self.alphas * q  # (L+1, k)
        ls = np.arange(self.l_max + 1)[:, None]
        fac = math.pi**1.5 * eta**-1.5 * q ** (ls + 1.5)  # (L+1, k)
        self._B = self.betas * fac[:, None, :]  # (L+1, n, k)
        self._gidx, self._gcoef = solid_harmonic_gradient_table(self.l_max)
        # The centre's own Gaussian at the origin: only l = 0, S_00 = 1/sqrt(4 pi).
        self._self_c0 = self._B[0].sum(axis=1) / math.sqrt(4 * math.pi)  # (n,)

        l_of, _, _, _ = _lm_tables(self.l_max)
        self._l_of = np.ascontiguousarray(l_of, dtype=np.int64)
        self._sph_local = threading.local()
        self._nlm = (self.l_max + 1) ** 2
        self._prel = math.pi * np.sqrt(8.0 / (2.0 * np.arange(self.l_max + 1) + 1.0))

        # Feature layout (DScribe's, see feature_tables).
        t = feature_tables(len(self.species), self.n_max, self.l_max)
        self._f_sA, self._f_sB, self._f_l = t["sA"], t["sB"], t["l"]
        self._f_nA, self._f_nB, self._f_flat = t["nA"], t["nB"], t["flat"]
        self._f_prel = self._prel[self._f_l]
        self._block, self._triu = t["blocks"], t["triu"]

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
            + (f", radial_scaling={self.radial_scaling}, radial_scaling_r0="
               f"{self.radial_scaling_r0}" if self.radial_scaling else "")
            + ")"
        )

    # ------------------------------------------------------------ internals
    def _cutoff_fn(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``f(r) u(r)`` and ``(f u)'(r) / r`` of the neighbours (cutoff
        ``f`` times the radial scaling ``u``)."""
        f, fq = self._taper(r)
        m = self.radial_scaling
        if m == 0.0:
            return f, fq
        x = (r / self.radial_scaling_r0) ** m
        u = 2.0 / (1.0 + x)
        # u'(r) / r = -2 m x / (r^2 (1 + x)^2); neighbours are never at r = 0
        uq = -2.0 * m * x / (r * r * (1.0 + x) ** 2)
        return f * u, fq * u + f * uq

    def _taper(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cutoff weights ``f(r)`` and ``f'(r) / r``."""
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

    @property
    def _sph(self) -> sphericart.SolidHarmonics:
        """This thread's harmonics calculator (not shared: it keeps work buffers)."""
        sph = getattr(self._sph_local, "sph", None)
        if sph is None:
            sph = self._sph_local.sph = sphericart.SolidHarmonics(self.l_max)
        return sph

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_sph_local", None)  # compiled calculators: rebuilt on unpickling
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._sph_local = threading.local()

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
        if len(seg) and np.any(seg[1:] < seg[:-1]):  # sorted by (i, j): order the species
            order = np.argsort(seg, kind="stable")
            i, j, s, d, D, seg = i[order], j[order], s[order], d[order], D[order], seg[order]
        counts = np.bincount(seg, minlength=n * ns)
        ends = np.cumsum(counts)
        slot = np.arange(len(seg)) - (ends - counts)[seg]
        w, wq = self._cutoff_fn(d)
        starts = np.zeros(n + 1, dtype=np.int64)
        starts[1:] = ends.reshape(n, ns)[:, -1] if n else 0
        return _Environment(
            n_atoms=n, numbers=numbers, centre_species=cs, i=i, j=j, s=s,
            D=np.ascontiguousarray(D), r2=d * d, w=w, wq=wq, seg=seg, slot=slot,
            starts=starts, n_seg=n * ns, kmax=int(counts.max()) if len(counts) else 0,
        )

    def _radial_arrays(
        self, env: _Environment, derivative: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Radial factors ``R`` and ``(dR/dr)/r`` (if ``derivative``), shape (P, l_max+1, n_max)."""
        P = len(env.r2)
        R = np.empty((P, self.l_max + 1, self.n_max))
        Rq = np.empty_like(R) if derivative else np.empty((0, 0, 0))
        E = np.multiply.outer(env.r2, self._A)  # (P, L+1, K)
        np.exp(E, out=E)
        kern.radial_basis(env.starts, E, env.w, env.wq, self._A, self._B, R, Rq, derivative)
        return R, (Rq if derivative else None)

    def _harmonics(self, D: np.ndarray, derivative: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Solid harmonics (P, nlm) and, with ``derivative``, gradients (P, 3, nlm)."""
        if len(D) == 0:
            return np.zeros((0, self._nlm)), (np.zeros((0, 3, self._nlm)) if derivative else None)
        D = np.ascontiguousarray(D, dtype=np.float64)
        if derivative:
            return self._sph.compute_with_gradients(D)
        return self._sph.compute(D), None

    def _prepare(self, env: _Environment, derivative: bool, harmonic_gradients: bool = False
                 ) -> None:
        """Per-pair radial factors (with derivatives) and solid harmonics (with
        gradients only for the derivative arrays: the VJP forms them on the fly)."""
        if env.R is None or (derivative and env.Rq is None):
            env.R, env.Rq = self._radial_arrays(env, derivative)
        if env.S is None or (harmonic_gradients and env.dS is None):
            env.S, env.dS = self._harmonics(env.D, harmonic_gradients)

    def _coefficients(self, env: _Environment) -> np.ndarray:
        """Expansion coefficients c of shape (n_centres, n_species, nlm, n_max).

        ``c[i, s, lm, n] = sum_{k in (i, s)} R[k, l, n] S[k, lm]`` (compiled loop
        over the pairs). Without cached per-pair data the centres are streamed in
        blocks of :attr:`_centre_block`, so that the temporaries stay small.
        """
        if env.c is not None:
            return env.c
        ns, nm, nlm = len(self.species), self.n_max, self._nlm
        c = np.zeros((env.n_centres, ns, nlm, nm))
        if env.R is not None and env.S is not None:
            kern.expand(env.starts, env.s, env.R, env.S, c)
        else:
            for a0 in range(0, env.n_centres, self._centre_block):
                a1 = min(a0 + self._centre_block, env.n_centres)
                sub = env if (a0, a1) == (0, env.n_centres) else env.block(a0, a1, ns)
                R, _ = self._radial_arrays(sub, False)
                S, _ = self._harmonics(sub.D, False)
                kern.expand(sub.starts, sub.s, R, S, c[a0:a1])
        c[np.arange(env.n_centres), env.centre_species, 0, :] += self._self_c0
        env.c = c
        return c

    def _c_by_l(self, c: np.ndarray) -> list[np.ndarray]:
        """Split c (N, S, nlm, n) into per-l blocks (N, S*n, 2l+1)."""
        N = c.shape[0]
        nsn = len(self.species) * self.n_max
        return [c[:, :, l * l:(l + 1) ** 2].transpose(0, 1, 3, 2).reshape(N, nsn, 2 * l + 1)
                for l in range(self.l_max + 1)]

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
        with engine_threads():
            env = self._environment(atoms)
            if gradients or strain or keep:
                self._prepare(env, derivative=True, harmonic_gradients=gradients or strain)
            c = self._coefficients(env)  # streams the pairs when nothing is cached
            res = EngineResult(p=self._power(c), numbers=env.numbers.copy())
            cl = self._c_by_l(c) if (gradients or strain) else None
            if gradients:
                res.pair_i, res.pair_j, res.dp = self._dp(env, cl)
            if strain:
                res.dp_strain = self._dp_strain(env, cl)
        if keep:
            res._vjp = partial(self._vjp_env, env)
        return res

    def block_tasks(self, atoms: Atoms, block_atoms: int, strain: bool = False
                    ) -> list[Callable[[], EngineBlock]]:
        """Independent tasks, one per block of ``block_atoms`` centres, each returning
        an :class:`EngineBlock` (raw features and a vector-Jacobian product).

        The neighbour list is built here, once; each task computes its block's radial
        factors, harmonics, coefficients and power spectra, kept by the block only
        (memory bounded by ``block_atoms``). Tasks may run in parallel threads (the
        compiled loops release the GIL; each thread gets its own harmonics calculator).

        Parameters
        ----------
        atoms : ase.Atoms
        block_atoms : int
            Centres per block (>= 1).
        strain : bool
            Whether the blocks' VJPs are asked for ``dE/deta`` (unused here: the
            virial comes with every VJP at almost no cost).

        Returns
        -------
        list of callable
            ``task() -> EngineBlock`` with ``start, stop`` (centres ``start .. stop -
            1``), ``p`` (stop - start, F) and ``vjp(grad_p, strain, out)`` accumulating
            ``dE/dr`` (n_atoms, 3) and ``dE/deta`` (3, 3) of the block's centres.
        """
        if block_atoms < 1:
            raise ValueError(f"block_atoms must be >= 1, got {block_atoms}")
        with engine_threads():
            env = self._environment(atoms)
        return [partial(self._centre_block_task, env, a0, min(a0 + block_atoms, env.n_atoms))
                for a0 in range(0, env.n_atoms, block_atoms)]

    def _centre_block_task(self, env: _Environment, a0: int, a1: int) -> EngineBlock:
        with engine_threads():
            sub = env.block(a0, a1, len(self.species)) if (a0, a1) != (0, env.n_atoms) else env
            self._prepare(sub, derivative=True)
            p = self._power(self._coefficients(sub))
        return EngineBlock(start=a0, stop=a1, p=p, numbers=sub.numbers.copy(),
                           _vjp=partial(self._vjp_env, sub))

    def compute_blocks(self, atoms: Atoms, block_atoms: int, strain: bool = False
                       ) -> Iterator[EngineBlock]:
        """The blocks of :meth:`block_tasks`, computed one after the other (only one
        block's per-pair data alive at a time)."""
        for task in self.block_tasks(atoms, block_atoms, strain):
            yield task()

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
        with engine_threads():
            env = self._environment(atoms)
        return self._vjp_env(env, grad_p, strain)
