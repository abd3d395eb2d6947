"""Checks of the :class:`gapkit.GAP` parameters, run before any work in ``fit``.

Every check raises a ``ValueError`` that names the parameter and the value given.
Numbers may be Python or NumPy scalars (``np.float32(0.01)`` is a valid noise);
booleans are not numbers here.
"""

from __future__ import annotations

import numbers

import numpy as np
from ase.data import chemical_symbols

from gapkit.data import check_e0_dict
from gapkit.gp import sparsify, terms

__all__ = ["MAX_DELTA", "check_params", "check_n_sparse"]

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
    for name in ("energy_noise", "force_noise", "virial_noise", "jitter", "zeta"):
        _check_positive(name, getattr(est, name))
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
    _check_integer(name, n_sparse, 1, "'auto', a positive integer (sparse points per "
                   "species) or a dict such as {'C': 500, 'H': 200}")


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
