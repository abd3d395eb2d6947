"""Normalised SOAP power spectra (DScribe's GTO SOAP) with exact sparse derivatives.

``q_i = p_i / |p_i|`` where ``p_i`` is DScribe's GTO power spectrum of atom ``i``
(same features, same order). Two backends (engines) compute it:

``engine`` (default)
    :class:`~gapkit.descriptors.soap_engine.SOAPEngine`, a vectorised numpy
    implementation of DScribe's GTO SOAP (tested equal to DScribe to ~1e-11) with
    exact analytic position and strain derivatives for finite, periodic and mixed
    cells, an optional smooth cutoff, and a vector-Jacobian product that gives
    forces and the virial without forming the derivative array.
``dscribe``
    :class:`~gapkit.descriptors.soap_dscribe.DScribeSOAPEngine`, DScribe itself
    (hard cutoff only; per-centre clusters for periodic cells and large systems).
    Kept as the reference.


The cutoff
    ``cutoff="cosine"`` (default) multiplies each neighbour's Gaussian density by
    ``f(r) = 1`` below ``r_cut - cutoff_width``, ``(1 + cos(pi (r - r_cut + w)/w))/2``
    in the transition shell and 0 beyond ``r_cut`` (as QUIP's
    ``cutoff_transition_width``): the descriptor and forces are continuous, so NVE
    molecular dynamics conserves energy. ``cutoff="dscribe"`` reproduces DScribe's
    features exactly, including its hard cutoff at ``r_cut`` plus the Gaussian
    padding, where the descriptor jumps (by ~1e-3 for r_cut=5, sigma=0.5) as an atom
    crosses it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import Descriptor, Engine
from .soap_basis import GTO_THRESHOLD
from .soap_dscribe import DScribeSOAPEngine
from .soap_engine import SOAPEngine


class SOAP(Descriptor):
    """Normalised SOAP power spectrum (DScribe GTO basis) with sparse derivatives.

    Parameters
    ----------
    species : sequence of str or int, optional
        Chemical species the descriptor covers. ``None`` lets :class:`gapkit.GAP`
        take them from the training data.
    r_cut : float, default 5.0
        Radial cutoff in Å (DScribe's ``r_cut``; atoms up to ``r_cut`` plus the
        Gaussian padding still contribute).
    n_max : int, default 8
        Number of radial basis functions.
    l_max : int, default 6
        Maximum angular momentum.
    sigma : float, default 0.5
        Width of the atomic Gaussians in Å.
    cutoff : {"cosine", "dscribe"}, default "cosine"
        Smooth cosine taper of the neighbour densities (energy-conserving), or
        DScribe's exact features with its hard cutoff.
    cutoff_width : float, default 1.0
        Width of the cosine taper in Å (``r_cut - cutoff_width`` to ``r_cut``).
    backend : {"engine", "dscribe"}, default "engine"
        gapkit's numpy SOAP engine, or DScribe itself (needs ``cutoff="dscribe"``).
    radial_scaling : float, default 0.0
        Exponent ``m`` of a radial scaling of the neighbour density (engine only):
        each neighbour's Gaussian is multiplied by ``u(r) = 2 / (1 + (r / r0)**m)``
        (DScribe's ``"pow"`` weighting with ``c = d = 1``, times 2, so that
        ``u(r0) = 1``), the centre's own Gaussian is not. Larger ``m`` weighs near
        neighbours more. ``0`` (the default) is no scaling.
    radial_scaling_r0 : float, default 1.0
        ``r0`` of the radial scaling, in Å.
    cluster_threshold : int, default 48
        ``backend="dscribe"`` only: finite systems with more atoms than this (and
        every periodic system) use the per-centre cluster route.

    Attributes
    ----------
    n_features : int
        Length of one descriptor vector.
    interaction_range : float
        Distance in Å beyond which an atom does not affect a centre.

    Notes
    -----
    The feature layout is DScribe's (``get_number_of_features()`` features, see
    ``dscribe.descriptors.SOAP``). The descriptor is configured once and may be
    called many times; the engine (or DScribe object) is built lazily and not part
    of the parameters. :meth:`compute` and :meth:`vjp_setup` are
    :class:`~gapkit.descriptors.base.Descriptor`'s.
    """

    def __init__(self, species: Sequence[str | int] | None = None, *, r_cut: float = 5.0,
                 n_max: int = 8, l_max: int = 6, sigma: float = 0.5,
                 cutoff: str = "cosine", cutoff_width: float = 1.0, backend: str = "engine",
                 cluster_threshold: int = 48, radial_scaling: float = 0.0,
                 radial_scaling_r0: float = 1.0):
        self.species = species
        self.r_cut = r_cut
        self.n_max = n_max
        self.l_max = l_max
        self.sigma = sigma
        self.cutoff = cutoff
        self.cutoff_width = cutoff_width
        self.backend = backend
        self.cluster_threshold = cluster_threshold
        self.radial_scaling = radial_scaling
        self.radial_scaling_r0 = radial_scaling_r0

    def _check_params(self) -> None:
        if not (np.isfinite(self.r_cut) and self.r_cut > 1.0):
            raise ValueError(f"r_cut must be > 1 Å, got {self.r_cut}")
        if int(self.n_max) < 1 or int(self.l_max) < 0:
            raise ValueError(f"need n_max >= 1 and l_max >= 0, got {self.n_max}, {self.l_max}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 Å, got {self.sigma}")
        if self.cutoff not in ("cosine", "dscribe"):
            raise ValueError(f"cutoff must be 'cosine' or 'dscribe', got {self.cutoff!r}")
        if self.backend not in ("engine", "dscribe"):
            raise ValueError(f"backend must be 'engine' or 'dscribe', got {self.backend!r}")
        if self.backend == "dscribe" and self.cutoff != "dscribe":
            raise ValueError("backend='dscribe' has only DScribe's hard cutoff: use "
                             "cutoff='dscribe', or backend='engine' for a smooth cutoff")
        if self.cutoff == "cosine" and not (0 < self.cutoff_width < self.r_cut):
            raise ValueError(f"cutoff_width must be in (0, r_cut), got {self.cutoff_width}")
        if not (np.isfinite(self.radial_scaling) and self.radial_scaling >= 0):
            raise ValueError(f"radial_scaling must be >= 0, got {self.radial_scaling}")
        if not (np.isfinite(self.radial_scaling_r0) and self.radial_scaling_r0 > 0):
            raise ValueError(f"radial_scaling_r0 must be > 0 Å, got {self.radial_scaling_r0}")
        if self.backend == "dscribe" and self.radial_scaling:
            raise ValueError("radial_scaling needs backend='engine'")

    @property
    def interaction_range(self) -> float:
        """Distance in Å beyond which an atom does not affect a centre's descriptor:
        ``r_cut`` for the cosine cutoff, ``r_cut`` plus DScribe's Gaussian padding
        otherwise."""
        if self.cutoff == "cosine":
            return float(self.r_cut)
        return float(self.r_cut + self.sigma * np.sqrt(-2.0 * np.log(GTO_THRESHOLD)))

    def _build_engine(self) -> Engine:
        args = (self.species_numbers, float(self.r_cut), int(self.n_max), int(self.l_max),
                float(self.sigma))
        if self.backend == "dscribe":
            return DScribeSOAPEngine(*args, interaction_range=self.interaction_range,
                                     cluster_threshold=self.cluster_threshold)
        return SOAPEngine(*args, cutoff=self.cutoff, cutoff_width=float(self.cutoff_width),
                          radial_scaling=float(self.radial_scaling),
                          radial_scaling_r0=float(self.radial_scaling_r0))
