"""Physical baselines for Δ-learning: fixed-charge electrostatics (and a reference potential).

A baseline is an ASE calculator whose energy, forces and stress are subtracted from the
labels before a GAP is fitted and added back at prediction, so that the Gaussian process
only has to learn the (short-range) residual.

* :class:`CoulombBaseline` -- fixed point charges per species. Fully periodic cells use a
  textbook Ewald sum (numpy, vectorised); finite systems (no periodic direction) use the
  direct pairwise Coulomb sum. Mixed periodicity is not supported.
* :class:`BornMayerCoulomb` -- Born--Mayer pair repulsion plus the same Coulomb term; a
  *reference* potential used only to make synthetic ionic data
  (``data/make_ionic_data.py``).
* :data:`BASELINES`, :func:`baseline_from_dict` -- rebuild a baseline from the JSON-able
  dict of its ``to_dict()`` (for model files).

Units are ASE's: positions in Å, charges in units of the elementary charge e, energies in
eV, forces in eV/Å, stress in eV/Å³ (Voigt order xx, yy, zz, yz, xz, xy; ASE's sign,
``stress = (1/V) dE/dε``, positive under tension). The Coulomb constant is
``k_e = units.Hartree * units.Bohr = 14.399645 eV Å`` (divided by ``epsilon_r``).

Ewald sum (fully periodic cells)
--------------------------------
For charges ``q_i`` at ``r_i`` in a cell of volume ``V`` with splitting parameter ``α``:

* real space: ``E_r = (k_e/2) Σ_i Σ_j Σ'_n q_i q_j erfc(α r_ijn) / r_ijn`` over all
  pairs and periodic images within ``r_cut`` (``ase.neighborlist.neighbor_list``);
* reciprocal space: ``E_k = (2π k_e / V) Σ_{k≠0, |k|<k_cut} exp(-k²/4α²)/k² |S(k)|²``,
  ``S(k) = Σ_j q_j exp(i k·r_j)`` (only half of the k-vectors are stored, ``k`` and
  ``-k`` give the same term);
* self term: ``E_s = -k_e α/√π Σ_i q_i²``;
* neutralising background (only for a net cell charge ``Q = Σ q_i ≠ 0``):
  ``E_b = -k_e π Q² / (2 V α²)``. A non-neutral periodic cell is therefore *accepted*:
  its energy is that of the charges plus a uniform compensating background (the standard
  convention of plane-wave codes), and it is independent of ``α`` like the neutral case.

Per-atom energies: each real-space pair term is split half/half between its two atoms;
the reciprocal term is split with the structure-factor decomposition
``E_k,i = (2π k_e/V) Σ_k g(k) q_i Re[exp(-i k·r_i) S(k)]``; the self term is per atom and
the background term is split as ``-k_e π q_i Q / (2 V α²)``. They sum to the total.

Forces and stress are analytic. The stress is the virial: the real-space pair virial
``(1/2V) Σ_pairs φ'(r) D_a D_b / r`` plus the reciprocal term
``(1/V) E_k(k) [-δ_ab + 2 k_a k_b (1/(4α²) + 1/k²)]`` summed over k, plus ``-E_b δ_ab / V``.

Choice of α, r_cut and k_cut
----------------------------
With ``s = sqrt(-ln(accuracy))``: ``r_cut = s/α`` and ``k_cut = 2 α s``, so that both
the real-space terms at the cutoff (``erfc(α r_cut) ≈ accuracy / (s √π)``) and the
reciprocal Gaussian factor at the cutoff (``exp(-k_cut²/4α²) = accuracy``) are of
relative size ``accuracy`` (Kolafa & Perram, Mol. Simul. 9, 351 (1992)). When ``alpha`` is
not given it balances the real- and reciprocal-space work: the number of neighbour pairs
``∝ N² r_cut³ / V`` against the number of (k-vector, atom) terms ``∝ N V k_cut³``, with a
cost weight ``w`` per pair relative to one (k, atom) term, gives
``α = w^(1/6) √π (N / V²)^(1/6)`` per structure. ``w^(1/6) = 2.5`` (``_ALPHA_WEIGHT``) was
measured for ``ase.neighborlist.neighbor_list`` against the vectorised numpy reciprocal sum
(rock-salt cells of 8--1728 atoms; the plain textbook ``w = 1`` was 2--20x slower). When
only ``r_cut`` is given, ``α = s / r_cut``. The converged energy does not depend on α; a
structure-dependent α only changes it at the level of ``accuracy`` (forces and stress are
exact derivatives at fixed α; use a fixed ``alpha`` and a tight ``accuracy`` for
finite-difference checks).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import atomic_numbers, chemical_symbols
from ase.neighborlist import neighbor_list
from scipy.special import erfc

logger = logging.getLogger(__name__)

#: Coulomb constant e²/(4π ε0) in eV Å.
COULOMB_CONSTANT: float = units.Hartree * units.Bohr

_SQRT_PI = math.sqrt(math.pi)
# (cost of one real-space pair / cost of one (k-vector, atom) term) ** (1/6), measured.
_ALPHA_WEIGHT = 2.5
# Maximum number of complex entries (k-vectors x atoms) held at once in the reciprocal sum,
# and of (atoms x atoms) entries in the direct sum.
_CHUNK_ENTRIES = 2_000_000

__all__ = ["COULOMB_CONSTANT", "CoulombBaseline", "BornMayerCoulomb", "BASELINES",
           "baseline_from_dict"]


def _to_z(species: str | int) -> int:
    """Atomic number of a species given as a chemical symbol or an atomic number."""
    if isinstance(species, (int, np.integer)) and not isinstance(species, bool):
        z = int(species)
        if not 0 < z < len(chemical_symbols):
            raise ValueError(f"invalid atomic number {species!r}")
        return z
    if isinstance(species, str) and species in atomic_numbers:
        return atomic_numbers[species]
    raise ValueError(f"invalid species {species!r}: give a chemical symbol or an atomic number")


def _check_periodicity(atoms: Atoms, who: str) -> bool:
    """Return True for a fully periodic cell, False for a finite system; raise otherwise."""
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    if pbc.all():
        volume = abs(float(np.linalg.det(atoms.cell.array)))
        if not volume > 1e-10:
            raise ValueError(f"{who}: fully periodic structure with a degenerate cell "
                             f"(volume {volume:.3g} Å³)")
        return True
    if not pbc.any():
        return False
    raise ValueError(f"{who}: mixed periodic boundary conditions pbc={pbc.tolist()} are not "
                     "supported; only fully periodic (pbc=True) or fully finite (pbc=False) "
                     "systems")


class _BaselineCalculator(Calculator):
    """Shared ASE plumbing: ``calculate`` fills ``results`` from :meth:`evaluate`."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    nolabel = True

    def evaluate(self, atoms: Atoms) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        periodic = _check_periodicity(self.atoms, type(self).__name__)
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a fully periodic cell")
        r = self.evaluate(self.atoms)
        self.results = {"energy": r["energy"], "free_energy": r["energy"],
                        "energies": r["energies"], "forces": r["forces"]}
        if "stress" in r:
            self.results["stress"] = r["stress"]


def _pair_sums(i: np.ndarray, d: np.ndarray, D: np.ndarray, phi: np.ndarray,
               dphi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-atom energies (eV, half of each pair term), forces (eV/Å) and virial ``dE/dε``
    (eV, not symmetrised) of pair energies ``phi`` (eV) with derivatives ``dphi`` (eV/Å)
    over the full neighbour list ``i, d, D`` of ``neighbor_list("ijdD")`` (Å)."""
    fvec = (dphi / d)[:, None] * D
    energies = 0.5 * np.bincount(i, weights=phi, minlength=n)
    forces = np.stack([np.bincount(i, weights=fvec[:, a], minlength=n) for a in range(3)],
                      axis=1)
    return energies, forces, 0.5 * fvec.T @ D


class CoulombBaseline(_BaselineCalculator):
    """Fixed point-charge Coulomb energy: Ewald sum (periodic) or direct sum (finite).

    Parameters
    ----------
    charges : dict of {str or int: float}
        Charge per species in units of e, keyed by chemical symbol or atomic number,
        e.g. ``{"Na": 1.0, "Cl": -1.0}``. A structure with a species missing here raises
        ``ValueError``.
    accuracy : float, default 1e-8
        Target relative accuracy of the Ewald sum; sets ``s = sqrt(-ln(accuracy))``,
        ``r_cut = s/α``, ``k_cut = 2αs`` (see the module docstring). Must be in (0, 1).
    alpha : float, optional
        Ewald splitting parameter in 1/Å. Default: ``s / r_cut`` when ``r_cut`` is given,
        else ``2.5 √π (N/V²)^(1/6)`` chosen per structure (see the module docstring).
    r_cut : float, optional
        Real-space cutoff in Å. Default ``s / α``.
    epsilon_r : float, default 1.0
        Relative permittivity; all Coulomb terms are divided by it.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.

    Notes
    -----
    ``results`` keys: ``energy``, ``free_energy`` (eV), ``energies`` (n,) eV, ``forces``
    (n, 3) eV/Å, and for fully periodic cells ``stress`` (6,) eV/Å³. Finite systems
    (``pbc`` all False) use the direct sum ``k_e Σ_{i<j} q_i q_j / r_ij`` and have no
    stress; mixed periodicity raises ``ValueError``. A periodic cell with a net charge
    gets the neutralising-background term (no error).

    :meth:`evaluate` returns the same quantities as a dict without ASE's caching, and
    :meth:`ewald_parameters` the ``(alpha, r_cut, k_cut)`` used for a structure.
    """

    def __init__(self, charges: Mapping[str | int, float], *, accuracy: float = 1e-8,
                 alpha: float | None = None, r_cut: float | None = None,
                 epsilon_r: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(charges, Mapping) or not charges:
            raise ValueError("charges must be a non-empty dict {species: charge}")
        zq: dict[int, float] = {}
        for sp, q in charges.items():
            z = _to_z(sp)
            if z in zq:
                raise ValueError(f"species {chemical_symbols[z]} given twice in charges")
            q = float(q)
            if not math.isfinite(q):
                raise ValueError(f"charge of {chemical_symbols[z]} is not finite: {q}")
            zq[z] = q
        if not 0.0 < accuracy < 1.0:
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy}")
        if alpha is not None and not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if r_cut is not None and not r_cut > 0:
            raise ValueError(f"r_cut must be positive, got {r_cut}")
        if not epsilon_r > 0:
            raise ValueError(f"epsilon_r must be positive, got {epsilon_r}")
        self.charges: dict[int, float] = zq
        self.accuracy = float(accuracy)
        self.alpha = None if alpha is None else float(alpha)
        self.r_cut = None if r_cut is None else float(r_cut)
        self.epsilon_r = float(epsilon_r)

    # ------------------------------------------------------------------ helpers
    @property
    def coulomb_constant(self) -> float:
        """``k_e / epsilon_r`` in eV Å."""
        return COULOMB_CONSTANT / self.epsilon_r

    def atomic_charges(self, atoms: Atoms) -> np.ndarray:
        """Charges of the atoms, shape (n,), in e; ``ValueError`` naming unknown species."""
        numbers = atoms.get_atomic_numbers()
        missing = sorted(set(numbers.tolist()) - set(self.charges))
        if missing:
            raise ValueError(f"{type(self).__name__}: no charge given for species "
                             f"{[chemical_symbols[z] for z in missing]} "
                             f"(known: {[chemical_symbols[z] for z in sorted(self.charges)]})")
        table = np.zeros(max(numbers.max(initial=0), max(self.charges)) + 1)
        for z, q in self.charges.items():
            table[z] = q
        return table[numbers]

    def ewald_parameters(self, atoms: Atoms) -> tuple[float, float, float]:
        """``(alpha [1/Å], r_cut [Å], k_cut [1/Å])`` used for a fully periodic structure."""
        s = math.sqrt(-math.log(self.accuracy))
        if self.alpha is not None:
            alpha = self.alpha
        elif self.r_cut is not None:
            alpha = s / self.r_cut
        else:
            volume = abs(float(np.linalg.det(atoms.cell.array)))
            alpha = _ALPHA_WEIGHT * _SQRT_PI * (max(len(atoms), 1) / volume ** 2) ** (1.0 / 6.0)
        r_cut = self.r_cut if self.r_cut is not None else s / alpha
        return alpha, r_cut, 2.0 * alpha * s

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, atoms: Atoms) -> dict[str, Any]:
        """Coulomb energy, per-atom energies, forces (and stress for periodic cells).

        Parameters
        ----------
        atoms : ase.Atoms
            Fully periodic or fully finite structure whose species all have charges.

        Returns
        -------
        dict
            ``energy`` float (eV), ``energies`` (n,) eV, ``forces`` (n, 3) eV/Å, and for
            fully periodic cells ``stress`` (6,) eV/Å³ in Voigt order.
        """
        periodic = _check_periodicity(atoms, type(self).__name__)
        q = self.atomic_charges(atoms)
        if periodic:
            return self._ewald(atoms, q)
        return _direct_coulomb(atoms.get_positions(), q, self.coulomb_constant)

    def _ewald(self, atoms: Atoms, q: np.ndarray) -> dict[str, Any]:
        kc = self.coulomb_constant
        n = len(atoms)
        alpha, r_cut, k_cut = self.ewald_parameters(atoms)
        cell = atoms.cell.array
        volume = abs(float(np.linalg.det(cell)))
        pos = atoms.get_positions()

        energies = np.zeros(n)
        forces = np.zeros((n, 3))
        virial = np.zeros((3, 3))  # dE/dε (eV)

        # real space ------------------------------------------------------------
        i, j, d, D = neighbor_list("ijdD", atoms, r_cut)
        if len(i):
            qq = kc * q[i] * q[j]
            erfc_ad = erfc(alpha * d)
            phi = qq * erfc_ad / d
            dphi = -qq * (erfc_ad / d ** 2
                          + 2.0 * alpha / _SQRT_PI * np.exp(-(alpha * d) ** 2) / d)
            e_pair, f_pair, virial_pair = _pair_sums(i, d, D, phi, dphi, n)
            energies += e_pair
            forces += f_pair
            virial += virial_pair

        # reciprocal space -------------------------------------------------------
        kvec = _half_kvectors(cell, k_cut)
        if len(kvec):
            k2 = np.einsum("ka,ka->k", kvec, kvec)
            # factor 2 for the omitted -k half
            g = 2.0 * (2.0 * math.pi * kc / volume) * np.exp(-k2 / (4 * alpha ** 2)) / k2
            chunk = max(1, _CHUNK_ENTRIES // max(n, 1))
            for s0 in range(0, len(kvec), chunk):
                kv, gk, kk2 = kvec[s0:s0 + chunk], g[s0:s0 + chunk], k2[s0:s0 + chunk]
                phase = pos @ kv.T                                   # (n, nk)
                cos, sin = np.cos(phase), np.sin(phase)
                s_re, s_im = q @ cos, q @ sin                        # (nk,)
                # Re[exp(-ik.r_i) S] = cos_i S_re + sin_i S_im
                re = cos * s_re + sin * s_im                          # (n, nk)
                energies += q * (re @ gk)
                # Im[exp(ik.r_i) conj(S)] = sin_i S_re - cos_i S_im
                im = sin * s_re - cos * s_im
                forces += 2.0 * q[:, None] * ((im * gk) @ kv)
                ek = gk * (s_re ** 2 + s_im ** 2)                     # energy per k (eV)
                fac = 2.0 * (1.0 / (4 * alpha ** 2) + 1.0 / kk2)
                virial += (kv * (ek * fac)[:, None]).T @ kv - np.sum(ek) * np.eye(3)

        # self and background -----------------------------------------------------
        energies -= kc * alpha / _SQRT_PI * q ** 2
        qtot = float(np.sum(q))
        if qtot != 0.0:
            eb = -kc * math.pi * q * qtot / (2.0 * volume * alpha ** 2)
            energies += eb
            virial -= np.sum(eb) * np.eye(3)

        stress = 0.5 * (virial + virial.T) / volume
        return {"energy": float(np.sum(energies)), "energies": energies, "forces": forces,
                "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]].copy()}

    # ------------------------------------------------------------------ serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"class": "CoulombBaseline", "params": {...}}``."""
        return {"class": "CoulombBaseline",
                "params": {"charges": {chemical_symbols[z]: q
                                       for z, q in sorted(self.charges.items())},
                           "accuracy": self.accuracy, "alpha": self.alpha,
                           "r_cut": self.r_cut, "epsilon_r": self.epsilon_r}}

    def __repr__(self) -> str:
        p = self.to_dict()["params"]
        return "CoulombBaseline(" + ", ".join(f"{k}={v!r}" for k, v in p.items()) + ")"


def _half_kvectors(cell: np.ndarray, k_cut: float) -> np.ndarray:
    """Reciprocal vectors with ``0 < |k| < k_cut``, one of each ``±k`` pair.

    Returns an array of shape (nk, 3) in 1/Å.
    """
    recip = 2.0 * math.pi * np.linalg.inv(cell).T        # rows b_i, a_i . b_j = 2π δ_ij
    # |m_i| = |k . a_i| / 2π <= k_cut |a_i| / 2π
    nmax = np.floor(k_cut * np.linalg.norm(cell, axis=1) / (2 * math.pi)).astype(int)
    axes = [np.arange(-m, m + 1) for m in nmax]
    m = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (m[:, 0] > 0) | ((m[:, 0] == 0) & ((m[:, 1] > 0) | ((m[:, 1] == 0) & (m[:, 2] > 0))))
    k = m[half] @ recip
    return k[np.einsum("ka,ka->k", k, k) < k_cut ** 2]


def _direct_coulomb(pos: np.ndarray, q: np.ndarray, kc: float) -> dict[str, Any]:
    """Direct Coulomb sum for a finite system; positions (n, 3) Å, charges (n,) e."""
    n = len(q)
    energies = np.zeros(n)
    forces = np.zeros((n, 3))
    chunk = max(1, _CHUNK_ENTRIES // max(n, 1))
    for s0 in range(0, n, chunk):
        rows = np.arange(s0, min(n, s0 + chunk))
        D = pos[None, :, :] - pos[rows, None, :]             # r_j - r_i, (m, n, 3)
        r = np.sqrt(np.einsum("mna,mna->mn", D, D))
        r[np.arange(len(rows)), rows] = np.inf
        if np.any(r == 0.0):
            raise ValueError("CoulombBaseline: two atoms at the same position")
        qq = kc * q[rows, None] * q[None, :]
        phi = qq / r
        energies[rows] = 0.5 * phi.sum(axis=1)
        # F_i = sum_j phi'(r) D/r with phi' = -phi/r
        forces[rows] = -np.einsum("mn,mna->ma", phi / r ** 2, D)
    return {"energy": float(np.sum(energies)), "energies": energies, "forces": forces}


class BornMayerCoulomb(_BaselineCalculator):
    """Reference ionic potential: Born--Mayer repulsion plus fixed-charge Coulomb.

    ``E = Σ_{i<j} A_ij exp(-r_ij/ρ_ij) f_c(r_ij) + E_Coulomb`` with the cosine switch
    ``f_c = 1`` for ``r < r_cut - switch_width``,
    ``f_c = (1 + cos(π (r - r_on)/switch_width))/2`` up to ``r_cut`` and 0 beyond, so energy
    and forces are continuous. ``E_Coulomb`` is :class:`CoulombBaseline` (Ewald sum for
    periodic cells). Used only to label synthetic data (``data/make_ionic_data.py``).

    Parameters
    ----------
    charges : dict of {str or int: float}
        Charges per species (e), as for :class:`CoulombBaseline`.
    born_mayer : dict of {str: (float, float)}
        Pair parameters ``{"Na-Cl": (A [eV], rho [Å]), ...}``; keys are two chemical symbols
        joined by ``-`` in either order. Pairs not listed have no repulsion.
    r_cut : float, default 6.0
        Cutoff of the Born--Mayer term in Å.
    switch_width : float, default 1.0
        Width of the cosine switch in Å (``0 < switch_width <= r_cut``).
    accuracy, alpha, epsilon_r :
        Passed to :class:`CoulombBaseline` (``epsilon_r`` scales only the Coulomb term).
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.
    """

    def __init__(self, charges: Mapping[str | int, float],
                 born_mayer: Mapping[str, tuple[float, float]], *, r_cut: float = 6.0,
                 switch_width: float = 1.0, accuracy: float = 1e-8, alpha: float | None = None,
                 epsilon_r: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.coulomb = CoulombBaseline(charges, accuracy=accuracy, alpha=alpha,
                                       epsilon_r=epsilon_r)
        if not r_cut > 0 or not 0 < switch_width <= r_cut:
            raise ValueError(f"need r_cut > 0 and 0 < switch_width <= r_cut, got "
                             f"r_cut={r_cut}, switch_width={switch_width}")
        self.r_cut = float(r_cut)
        self.switch_width = float(switch_width)
        self.born_mayer: dict[tuple[int, int], tuple[float, float]] = {}
        for key, (a, rho) in born_mayer.items():
            parts = key.split("-")
            if len(parts) != 2:
                raise ValueError(f"born_mayer key {key!r} must look like 'Na-Cl'")
            z1, z2 = sorted(_to_z(p.strip()) for p in parts)
            if not rho > 0:
                raise ValueError(f"rho of {key} must be positive, got {rho}")
            self.born_mayer[(z1, z2)] = (float(a), float(rho))

    def evaluate(self, atoms: Atoms) -> dict[str, Any]:
        """Energy (eV), ``energies`` (n,) eV, ``forces`` (n, 3) eV/Å, ``stress`` (6,) eV/Å³.

        ``stress`` only for fully periodic cells; same contract as
        :meth:`CoulombBaseline.evaluate`.
        """
        res = self.coulomb.evaluate(atoms)
        periodic = "stress" in res
        n = len(atoms)
        energies, forces = res["energies"].copy(), res["forces"].copy()
        virial = np.zeros((3, 3))
        numbers = atoms.get_atomic_numbers()
        i, j, d, D = neighbor_list("ijdD", atoms, self.r_cut)
        if len(i) and self.born_mayer:
            zi, zj = numbers[i], numbers[j]
            zlo, zhi = np.minimum(zi, zj), np.maximum(zi, zj)
            A, rho = np.zeros(len(i)), np.ones(len(i))
            for (z1, z2), (a, r0) in self.born_mayer.items():
                sel = (zlo == z1) & (zhi == z2)
                A[sel], rho[sel] = a, r0
            r_on = self.r_cut - self.switch_width
            x = np.clip((d - r_on) / self.switch_width, 0.0, 1.0)
            fc = 0.5 * (1.0 + np.cos(math.pi * x))
            dfc = np.where((d > r_on) & (d < self.r_cut),
                           -0.5 * math.pi / self.switch_width * np.sin(math.pi * x), 0.0)
            v = A * np.exp(-d / rho)
            phi = v * fc
            dphi = -v / rho * fc + v * dfc
            e_pair, f_pair, virial = _pair_sums(i, d, D, phi, dphi, n)
            energies += e_pair
            forces += f_pair
        out = {"energy": float(np.sum(energies)), "energies": energies, "forces": forces}
        if periodic:
            volume = abs(float(np.linalg.det(atoms.cell.array)))
            s = 0.5 * (virial + virial.T) / volume
            out["stress"] = res["stress"] + s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"class": "BornMayerCoulomb", "params": {...}}``."""
        c = self.coulomb.to_dict()["params"]
        bm = {f"{chemical_symbols[z1]}-{chemical_symbols[z2]}": [a, rho]
              for (z1, z2), (a, rho) in sorted(self.born_mayer.items())}
        return {"class": "BornMayerCoulomb",
                "params": {"charges": c["charges"], "born_mayer": bm,
                           "r_cut": self.r_cut, "switch_width": self.switch_width,
                           "accuracy": c["accuracy"], "alpha": c["alpha"],
                           "epsilon_r": c["epsilon_r"]}}


#: Registry of baseline classes by name, used by :func:`baseline_from_dict`.
BASELINES: dict[str, type] = {"CoulombBaseline": CoulombBaseline,
                              "BornMayerCoulomb": BornMayerCoulomb}


def baseline_from_dict(d: Mapping[str, Any]) -> Calculator:
    """Rebuild a baseline from ``baseline.to_dict()`` (e.g. read back from JSON).

    Parameters
    ----------
    d : dict
        ``{"class": name, "params": {...}}`` with ``name`` a key of :data:`BASELINES`.

    Returns
    -------
    ase.calculators.calculator.Calculator
        A new, independent baseline instance.
    """
    try:
        name, params = d["class"], d["params"]
    except (KeyError, TypeError):
        raise ValueError(f"not a baseline dict (need 'class' and 'params'): {d!r}") from None
    if name not in BASELINES:
        raise ValueError(f"unknown baseline class {name!r}; known: {sorted(BASELINES)}")
    return BASELINES[name](**dict(params))
