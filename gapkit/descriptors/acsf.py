"""Behler-Parrinello atom-centred symmetry functions (:class:`ACSF`).

Feature for feature identical to ``dscribe.descriptors.ACSF`` (same definitions,
same layout; tested equal to ~1e-14), optionally normalised to unit length. As in
DScribe, the species of the centre is not encoded (the GAP kernel only compares
centres of the same species). The definitions of G1-G5, the feature layout and
the derivatives are in :mod:`gapkit.descriptors.symmetry_functions`, whose engine
computes them; :class:`~gapkit.descriptors.TwoBody` (a pure 2-body descriptor) runs
on the same engine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .symmetry_functions import SymmetryFunctionDescriptor, SymmetryFunctionEngine
from .twobody import TwoBody

__all__ = ["ACSF", "TwoBody", "default_g2_params", "default_g4_params"]


def default_g2_params(r_cut: float = 5.0, n: int = 8) -> np.ndarray:
    """Default radial G2 parameters: ``Rs = 0`` and ``n`` widths spanning the cutoff.

    ``eta_k = 1 / w_k^2`` with the 1/e radii ``w_k`` geometrically spaced from
    ``r_cut`` down to 0.8 Å (for ``r_cut = 5``: ``eta`` from 0.04 to 1.56 1/Å²).

    Parameters
    ----------
    r_cut : float
        Cutoff in Å.
    n : int
        Number of G2 functions.

    Returns
    -------
    ndarray of shape (n, 2)
        Columns ``(eta [1/Å²], Rs [Å])``.
    """
    w = np.geomspace(float(r_cut), min(0.8, float(r_cut)), n)
    return np.column_stack([1.0 / w**2, np.zeros(n)])


def default_g4_params(r_cut: float = 5.0) -> np.ndarray:
    """Default angular G4 parameters: 12 functions.

    ``eta in {1, 4} / r_cut^2`` (1/Å²) x ``zeta in {1, 2, 4}`` x ``lambda in {-1, +1}``,
    ordered eta, then zeta, then lambda.

    Parameters
    ----------
    r_cut : float
        Cutoff in Å.

    Returns
    -------
    ndarray of shape (12, 3)
        Columns ``(eta [1/Å²], zeta, lambda)``.
    """
    rows = [(c / float(r_cut) ** 2, z, lam) for c in (1.0, 4.0) for z in (1.0, 2.0, 4.0)
            for lam in (-1.0, 1.0)]
    return np.array(rows, dtype=np.float64)


def _param_array(value, name: str, ncol: int | None, what: str) -> np.ndarray:
    """Parameters as a float64 array of shape (n, ncol) (or (n,) for ``ncol=None``)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers {what}, got {value!r}") from None
    if arr.size == 0:
        return np.zeros((0, ncol) if ncol else (0,))
    if ncol is None:
        if arr.ndim != 1:
            raise ValueError(f"{name} must be a 1-d array {what}, got shape {arr.shape}")
    elif arr.ndim != 2 or arr.shape[1] != ncol:
        raise ValueError(f"{name} must be an array of shape (n, {ncol}) {what}, "
                         f"got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


class ACSF(SymmetryFunctionDescriptor):
    """Atom-centred symmetry functions (Behler-Parrinello), identical to DScribe's ACSF.

    ``q_i = G_i / |G_i|`` (or ``G_i`` with ``normalize=False``) where ``G_i`` is
    ``dscribe.descriptors.ACSF(r_cut, g2_params, g3_params, g4_params, g5_params,
    species, periodic=True)`` of atom ``i``: same features, same order (see
    :mod:`gapkit.descriptors.symmetry_functions` for the definitions and the
    layout). Derivatives with respect to positions and strain are exact (analytic).

    Parameters
    ----------
    species : sequence of str or int, optional
        Chemical species the descriptor covers. ``None`` lets :class:`gapkit.GAP`
        take them from the training data.
    r_cut : float, default 5.0
        Cutoff radius in Å of the cosine cutoff ``0.5 (cos(pi r / r_cut) + 1)``.
    g2_params : array-like of shape (n, 2), optional
        ``(eta [1/Å²], Rs [Å])`` of the radial G2 functions. ``None``:
        :func:`default_g2_params` (8 functions, ``Rs = 0``, 1/e radii from ``r_cut``
        down to 0.8 Å); ``[]``: no G2.
    g3_params : array-like of shape (n,), optional
        ``kappa`` (1/Å) of the G3 functions ``cos(kappa r) fc(r)``. ``None`` or
        ``[]``: no G3.
    g4_params : array-like of shape (n, 3), optional
        ``(eta [1/Å²], zeta, lambda)`` of the angular G4 functions (with the
        ``r_jk`` terms). ``None``: :func:`default_g4_params` (12 functions,
        ``eta in {1, 4} / r_cut^2``, ``zeta in {1, 2, 4}``, ``lambda = +-1``);
        ``[]``: no G4.
    g5_params : array-like of shape (n, 3), optional
        ``(eta [1/Å²], zeta, lambda)`` of the angular G5 functions (no ``r_jk``
        terms). ``None`` or ``[]``: no G5.
    normalize : bool, default True
        Divide each atom's vector by its norm (the derivatives include the
        normalisation). An atom without neighbours then raises ``ValueError``
        (its vector is zero); with ``normalize=False`` it gets a zero vector.

    Notes
    -----
    ``n_features = n_species (1 + n_g2 + n_g3) + n_species (n_species + 1) / 2
    (n_g4 + n_g5)``; 99 for three species with the defaults. ``eta >= 0``,
    ``zeta >= 1`` (so that the derivatives stay finite at ``cos t = -+1``) and
    ``-1 <= lambda <= 1`` are required.
    """

    def __init__(self, species: Sequence[str | int] | None = None, *, r_cut: float = 5.0,
                 g2_params=None, g3_params=None, g4_params=None, g5_params=None,
                 normalize: bool = True):
        self.species = species
        self.r_cut = r_cut
        self.g2_params = g2_params
        self.g3_params = g3_params
        self.g4_params = g4_params
        self.g5_params = g5_params
        self.normalize = normalize

    def _resolved_params(self) -> dict:
        g2 = default_g2_params(float(self.r_cut)) if self.g2_params is None else _param_array(
            self.g2_params, "g2_params", 2, "of (eta, Rs)")
        g3 = np.zeros(0) if self.g3_params is None else _param_array(
            self.g3_params, "g3_params", None, "of kappa values")
        g4 = default_g4_params(float(self.r_cut)) if self.g4_params is None else _param_array(
            self.g4_params, "g4_params", 3, "of (eta, zeta, lambda)")
        g5 = np.zeros((0, 3)) if self.g5_params is None else _param_array(
            self.g5_params, "g5_params", 3, "of (eta, zeta, lambda)")
        return {"g2": g2, "g3": g3, "g4": g4, "g5": g5}

    def _check_params(self) -> None:
        super()._check_params()
        prm = self._resolved_params()
        if np.any(prm["g2"][:, 0] < 0):
            raise ValueError(f"g2_params: eta (first column) must be >= 0 1/Å², "
                             f"got {prm['g2'][:, 0]}")
        for name in ("g4", "g5"):
            a = prm[name]
            if np.any(a[:, 0] < 0):
                raise ValueError(f"{name}_params: eta (first column) must be >= 0 1/Å², "
                                 f"got {a[:, 0]}")
            if np.any(a[:, 1] < 1):
                raise ValueError(f"{name}_params: zeta (second column) must be >= 1, got {a[:, 1]}")
            if np.any(np.abs(a[:, 2]) > 1):
                raise ValueError(f"{name}_params: lambda (third column) must be in [-1, 1] "
                                 f"(usually +-1), got {a[:, 2]}")

    def _build_engine(self) -> SymmetryFunctionEngine:
        return SymmetryFunctionEngine(self.species_numbers, float(self.r_cut),
                                      **self._resolved_params(), include_g1=True)
