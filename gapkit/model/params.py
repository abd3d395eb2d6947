"""Checks of the :class:`gapkit.GAP` parameters, and the data-dependent defaults.

Every check raises a ``ValueError`` that names the parameter and the value given.
Numbers may be Python or NumPy scalars (``np.float32(0.01)`` is a valid noise);
booleans are not numbers here.

Data-dependent defaults
-----------------------
``delta="auto"`` (:func:`auto_delta`): the signal scale δ is the prior std of a local
energy. It is the larger of

* the RMS energy per atom after E0 (``sqrt(mean((E - sum E0)**2 / N**2))``: the local
  energies must carry the part of the energy that E0 leaves, e.g. the cohesive energy
  after isolated-atom E0), and
* :data:`DELTA_FORCE_FACTOR` times the *force moment estimate*
  ``delta_F = sqrt((sum F**2 - n_F sigma_F**2) / sum_r k_r^T K_MM^-1 k_r)``: the δ at
  which the prior (projected on the sparse set) gives the force components the
  variance they have in the data. Forces are derivatives of the local energies and do
  not depend on E0, so this term sees the spread of the local energies between
  environments even when E0 absorbs all of the total energies (one molecule, or a
  least-squares E0: the RMS is then meV and δ used to drop to a 1 eV floor). The
  factor 1.5 puts δ just above the moment match, on the flat side of the evidence: at
  the default noises test errors were flat or better above ``delta_F`` and worse
  below it (EMT Cu and Cu-Al cells and xTB ethanol made by the project), while a
  much larger δ under-regularises small fits (8 two-atom ACSF cells: energies built
  from large cancelling terms).

Without force labels the rule is the RMS energy per atom, at least
:data:`MIN_DELTA_NO_FORCES`.

``virial_noise="auto"`` (:func:`auto_virial_noise`): σ_V (eV per sqrt(atom), a virial
component has std ``sigma_V sqrt(N)``, GAP's ``sigma_per_atom`` convention) is
``force_noise * (V/N)**(1/3)``, the median over the periodic training cells. A virial
is ``W = -sum_ij r_ij (x) dE/dr_ij``: force-component errors of σ_F over bond
lengths of the interatomic spacing ``(V/N)**(1/3)`` give a virial error of about
``sigma_F (V/N)**(1/3) sqrt(N)``, so the virial rows get the weight of the force
information they repeat, no more. A tighter σ_V (0.01 eV, QUIP-style) lets six
numbers per cell pull on the whole fit: on mlearn Si forces got 2x worse.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from gapkit.data import check_e0_dict
from gapkit.data.reference import E0_METHODS
from gapkit.gp import lapack, sparsify, terms

__all__ = ["MAX_DELTA", "DELTA_FORCE_FACTOR", "MIN_DELTA_NO_FORCES", "VIRIAL_LENGTH_FACTOR",
           "check_params", "check_n_sparse", "auto_delta", "auto_virial_noise"]

#: ``delta="auto"`` is at least this multiple of the force moment estimate of δ.
DELTA_FORCE_FACTOR = 1.5
#: Smallest ``delta="auto"`` (eV) when there are no force labels.
MIN_DELTA_NO_FORCES = 1.0
#: ``virial_noise="auto"`` is this times ``force_noise * (V/N)**(1/3)``.
VIRIAL_LENGTH_FACTOR = 1.0

#: Largest signal scale ``delta`` accepted (eV): beyond, ``delta**2`` and the kernel
#: matrices lose all precision (typical values are 0.1 to 10 eV).
MAX_DELTA = 1e6


def check_params(est) -> None:
    """Check the parameters of ``est`` (a :class:`gapkit.GAP`).

    Raises
    ------
    ValueError
        Naming the first parameter that cannot be used and its value.
    """
    for name in ("energy_noise", "force_noise", "jitter", "zeta"):
        _check_positive(name, getattr(est, name))
    if not (isinstance(est.virial_noise, str) and est.virial_noise == "auto"):
        _check_positive("virial_noise", est.virial_noise,
                        "'auto' or a positive number (eV per sqrt(atom))")
    if not (isinstance(est.delta, str) and est.delta == "auto"):
        _check_positive("delta", est.delta, "'auto' or a positive number (eV)",
                        upper=MAX_DELTA)
    if est.sparse_method not in sparsify.METHODS:
        raise ValueError(f"sparse_method must be one of {sparsify.METHODS}, got {est.sparse_method!r}")
    check_n_sparse(est.n_sparse)
    _check_integer("chunk_size", est.chunk_size, 1)
    _check_integer("n_restarts", est.n_restarts, 0)
    if est.force_std not in ("fast", "exact"):
        raise ValueError(f"force_std must be 'fast' or 'exact', got {est.force_std!r}")
    vf = est.valid_fraction
    if not (_is_real(vf) and 0 < float(vf) < 1):
        raise ValueError(f"valid_fraction must be a number between 0 and 1 (exclusive), "
                         f"got {vf!r}")
    if isinstance(est.e0, dict):
        check_e0_dict(est.e0)
    elif isinstance(est.e0, (str, os.PathLike)):
        if str(est.e0) not in E0_METHODS and not Path(est.e0).is_file():
            raise ValueError(f"e0 must be one of {E0_METHODS}, a path to an isolated-atoms "
                             f"extxyz file or a dict such as {{'H': -13.6}} (eV); got "
                             f"{est.e0!r} (not a method, and no such file)")
    else:
        raise ValueError(f"e0 must be one of {E0_METHODS}, a path or a dict of symbol to eV, "
                         f"got {est.e0!r}")
    if getattr(est, "virial_key", None) and getattr(est, "stress_key", None):
        raise ValueError(f"give virial_key or stress_key, not both (virial_key="
                         f"{est.virial_key!r}, stress_key={est.stress_key!r})")
    for t, spec in enumerate(terms.as_terms(est.descriptor)):
        if spec.zeta is not None:
            _check_positive(f"term {t}: zeta", spec.zeta)
        if not (isinstance(spec.weight, str) and spec.weight == "auto"):
            _check_positive(f"term {t}: weight", spec.weight, "'auto' or a positive number")
        if spec.sparse_method is not None and spec.sparse_method not in sparsify.METHODS:
            raise ValueError(f"term {t}: sparse_method must be one of {sparsify.METHODS}, "
                             f"got {spec.sparse_method!r}")
        if spec.n_sparse is not None:
            check_n_sparse(spec.n_sparse, f"term {t}: n_sparse")


def check_n_sparse(n_sparse, name: str = "n_sparse") -> None:
    """``ValueError`` unless ``n_sparse`` is ``"auto"``, a positive integer or a dict of
    them keyed by chemical symbol or atomic number."""
    if isinstance(n_sparse, str) and n_sparse == "auto":
        return
    if isinstance(n_sparse, dict):
        if not n_sparse:
            raise ValueError(f"{name} dict is empty: give a count per species, e.g. {{'H': 500}}")
        for key, val in n_sparse.items():
            known = (key in chemical_symbols[1:]) if isinstance(key, str) else (
                isinstance(key, numbers.Integral) and 0 < int(key) < len(chemical_symbols))
            if not known and not (isinstance(key, str) and key.isdigit()):
                raise ValueError(f"{name} dict: unknown chemical symbol or atomic number {key!r}")
            _check_integer(f"{name}[{key!r}]", val, 1, "a positive integer (sparse points of "
                           "that species; every species needs at least one)")
        return
    _check_integer(name, n_sparse, 1, "a positive integer (sparse points per species), "
                   "'auto' or a dict such as {'C': 500, 'H': 200}")


def _is_real(val) -> bool:
    """A real number (Python or NumPy scalar, not bool)."""
    return isinstance(val, numbers.Real) and not isinstance(val, (bool, np.bool_))


def _check_positive(name: str, val, what: str = "a positive number",
                    upper: float = np.inf) -> None:
    """``ValueError`` unless ``val`` is a finite real in (0, upper]."""
    if not (_is_real(val) and np.isfinite(float(val)) and 0 < float(val) <= upper):
        extra = f" no larger than {upper:g}" if np.isfinite(upper) else ""
        raise ValueError(f"{name} must be {what}{extra}, got {val!r}")


def _check_integer(name: str, val, low: int, what: str | None = None) -> None:
    """``ValueError`` unless ``val`` is an integer >= ``low``."""
    integral = isinstance(val, numbers.Integral) or (
        isinstance(val, numbers.Real) and np.isfinite(float(val)) and float(val).is_integer())
    if isinstance(val, (bool, np.bool_)) or not integral or val < low:
        raise ValueError(f"{name} must be {what or f'an integer >= {low}'}, got {val!r}")


def _moment(group, Lchol: np.ndarray, noise: float, threads: int = 1
            ) -> tuple[float, float, int]:
    """(sum of weighted squared targets minus their noise, Nyström prior trace per δ²,
    rows) of one :class:`gapkit.gp.solver.RowGroup`."""
    M = Lchol.shape[0]
    R = group.R
    X = lapack.lower_solve_lower(Lchol, R[:M, :M].T, threads)  # lower triangular: M**3/3
    yy = float(R[:M, M] @ R[:M, M] + R[M, M] ** 2)
    return yy - group.n_rows * noise ** 2, float(np.sum(X * X)), int(group.n_rows)


def auto_delta(groups: dict, Lchol: np.ndarray, energy_resid: np.ndarray,
               n_atoms: np.ndarray, force_noise: float, threads: int = 1
               ) -> tuple[float, dict]:
    """``delta="auto"``: the rule of the module docstring.

    Parameters
    ----------
    groups : dict
        :class:`~gapkit.gp.streaming.NoiseGroup` to the row factors of the fit
        (:func:`gapkit.gp.streaming.accumulate`).
    Lchol : ndarray of shape (M, M)
        Cholesky factor of the unit-scale ``K_MM`` (+ jitter).
    energy_resid : ndarray of shape (n_frames,)
        Training energies minus E0, eV.
    n_atoms : ndarray of shape (n_frames,)
    force_noise : float
        σ_F, eV/Å (subtracted from the force variance).
    threads : int
        Threads of the triangular solve (the same result for any number).

    Returns
    -------
    delta : float
        eV.
    report : dict
        ``energy_rms`` (eV/atom), ``force_moment`` (eV, None without forces) and
        ``rule`` (which term set δ).
    """
    e_rms = float(np.sqrt(np.mean((np.asarray(energy_resid) / np.asarray(n_atoms)) ** 2)))
    num = trace = 0.0
    for g, r in groups.items():
        if g.kind == "forces" and r.R is not None and r.n_rows:
            a, b, _ = _moment(r, Lchol, force_noise, threads)
            num, trace = num + a, trace + b
    if trace <= 0:
        delta = max(e_rms, MIN_DELTA_NO_FORCES)
        return delta, {"energy_rms": e_rms, "force_moment": None,
                       "rule": "energy RMS" if delta == e_rms else "floor (no forces)"}
    d_f = float(np.sqrt(max(num, 0.0) / trace))
    delta = max(e_rms, DELTA_FORCE_FACTOR * d_f)
    if not np.isfinite(delta) or delta <= 0:
        delta = MIN_DELTA_NO_FORCES
    delta = min(delta, MAX_DELTA)
    return delta, {"energy_rms": e_rms, "force_moment": d_f,
                   "rule": "energy RMS" if delta == e_rms else
                   f"{DELTA_FORCE_FACTOR:g} x force moment"}


def auto_virial_noise(force_noise: float, frames: Sequence[Atoms]) -> float:
    """``virial_noise="auto"``: ``VIRIAL_LENGTH_FACTOR * force_noise * (V/N)**(1/3)``
    (eV per sqrt(atom)), the median over the fully periodic ``frames`` (the only ones
    that can carry virials); ``force_noise * 2.5 Å`` when there are none.

    Parameters
    ----------
    force_noise : float
        σ_F, eV/Å.
    frames : sequence of ase.Atoms
        The training structures.

    Returns
    -------
    float
    """
    lengths = [(a.get_volume() / len(a)) ** (1 / 3) for a in frames
               if len(a) and a.get_pbc().all() and a.cell.rank == 3]
    length = float(np.median(lengths)) if lengths else 2.5
    return VIRIAL_LENGTH_FACTOR * float(force_noise) * length
