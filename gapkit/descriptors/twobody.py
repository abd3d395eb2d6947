"""A pure 2-body (distance) descriptor: radial Gaussians per neighbour species.

For "2b + SOAP" models: with the dot-product kernel at ``zeta = 1`` and no
normalisation the GAP energy is a sum of pair potentials. Computed by the
symmetry-function engine of :mod:`gapkit.descriptors.symmetry_functions` (as G2
functions without G1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .symmetry_functions import SymmetryFunctionDescriptor, SymmetryFunctionEngine

__all__ = ["TwoBody"]


class TwoBody(SymmetryFunctionDescriptor):
    """Pure 2-body (distance) descriptor: radial Gaussians per neighbour species.

    For centre ``i`` and neighbour species ``s``, feature ``k`` is

        ``q_i[s, k] = sum_{j of species s} exp(-(r_ij - mu_k)^2 / (2 sigma^2)) fc(r_ij)``

    with ``mu_k`` evenly spaced from ``r_min`` to ``r_cut`` and the cosine cutoff
    ``fc(r) = 0.5 (cos(pi r / r_cut) + 1)``; layout ``[s, k]`` (species sorted by
    atomic number), ``n_species * n_gaussians`` features. This is a set of
    DScribe-style G2 functions (``eta = 1 / (2 sigma^2)``, ``Rs = mu_k``) without
    G1, computed by the same engine as :class:`ACSF`.

    With the dot-product kernel at ``zeta = 1`` and ``normalize=False`` the local
    energy ``eps_i = sum_m alpha_m q_i . q_m`` is linear in ``q_i``, so the GAP
    energy is exactly a sum of pair potentials,
    ``E = sum_i sum_{j != i} phi_{Z_i Z_j}(r_ij)`` with
    ``phi_{Z s}(r) = fc(r) sum_k w_{Z s k} exp(-(r - mu_k)^2 / (2 sigma^2))``,
    which makes it the 2-body part of a "2b + SOAP" model.

    Parameters
    ----------
    species : sequence of str or int, optional
        Chemical species the descriptor covers. ``None`` lets :class:`gapkit.GAP`
        take them from the training data.
    r_cut : float, default 5.0
        Cutoff radius in Å.
    r_min : float, default 0.5
        First Gaussian centre in Å (``0 <= r_min < r_cut``).
    n_gaussians : int, default 16
        Number of Gaussians.
    sigma : float, optional
        Gaussian width in Å; default the grid spacing
        ``(r_cut - r_min) / (n_gaussians - 1)``.
    normalize : bool, default False
        Divide each atom's vector by its norm (then the energy is no longer a sum
        of pair terms).
    """

    def __init__(self, species: Sequence[str | int] | None = None, *, r_cut: float = 5.0,
                 r_min: float = 0.5, n_gaussians: int = 16, sigma: float | None = None,
                 normalize: bool = False):
        self.species = species
        self.r_cut = r_cut
        self.r_min = r_min
        self.n_gaussians = n_gaussians
        self.sigma = sigma
        self.normalize = normalize

    @property
    def centres(self) -> np.ndarray:
        """Gaussian centres ``mu_k`` in Å, shape (n_gaussians,)."""
        return np.linspace(float(self.r_min), float(self.r_cut), int(self.n_gaussians))

    @property
    def width(self) -> float:
        """Gaussian width ``sigma`` in Å (the grid spacing unless given)."""
        if self.sigma is not None:
            return float(self.sigma)
        return (float(self.r_cut) - float(self.r_min)) / (int(self.n_gaussians) - 1)

    def _check_params(self) -> None:
        super()._check_params()
        n = self.n_gaussians
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_gaussians must be a positive integer, got {n!r}")
        if not (np.isfinite(self.r_min) and 0 <= self.r_min < self.r_cut):
            raise ValueError(f"r_min must be in [0, r_cut) Å, got r_min={self.r_min}, "
                             f"r_cut={self.r_cut}")
        if self.sigma is None:
            if n < 2:
                raise ValueError("sigma is needed with n_gaussians=1 (the default is the grid "
                                 "spacing)")
        elif not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive width in Å, got {self.sigma}")

    def _build_engine(self) -> SymmetryFunctionEngine:
        eta = 1.0 / (2.0 * self.width**2)
        g2 = np.column_stack([np.full(int(self.n_gaussians), eta), self.centres])
        return SymmetryFunctionEngine(self.species_numbers, float(self.r_cut), g2=g2,
                                      g3=np.zeros(0), g4=np.zeros((0, 3)), g5=np.zeros((0, 3)),
                                      include_g1=False)
