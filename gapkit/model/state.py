"""The fitted state of a GAP: one typed, immutable object.

:meth:`gapkit.GAP.fit` produces a :class:`FittedState`, the model file
(:mod:`gapkit.model.model_file`) stores and restores exactly it, and prediction and
variance (:mod:`gapkit.model.prediction`, :mod:`gapkit.model.variance`) read it.

Notation (unit-scale kernels ``k~``, signal scale ``delta`` in eV):

* local energy ``eps_i = delta**2 sum_m alpha_m k~(q_i, q_m)`` over the stacked sparse
  sets of all terms;
* ``kmm_cholesky`` is the lower Cholesky factor ``L`` of ``K~_MM + jitter I``;
* ``posterior_factor`` is the upper ``R_P`` with
  ``R_P^T R_P = K~_MM + delta**2 K~_MN Lambda^-1 K~_NM`` (so the weight posterior is
  ``Sigma = (R_P^T R_P)^-1``), see :mod:`gapkit.gp.solver`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from gapkit.data import ReferenceEnergies
from gapkit.gp.streaming import NoiseGroup

__all__ = ["NoiseGroup", "GroupValues", "VarianceScale", "ConfigTypeScale", "Calibration",
           "VarianceBasis", "FittedState", "ALL_SPECIES", "noise_level"]


class GroupValues(Mapping):
    """Read-only mapping from :class:`NoiseGroup` to a number (noises, row counts).

    Keys are :class:`NoiseGroup` objects; for convenience a key may also be given as
    its text label (``noise["forces"]``, ``noise["energy:bulk"]``).
    """

    def __init__(self, values: Mapping | None = None):
        self._d = {(k if isinstance(k, NoiseGroup) else NoiseGroup.from_label(k)): v
                   for k, v in dict(values or {}).items()}

    def __getitem__(self, key):
        if not isinstance(key, NoiseGroup):
            try:
                key = NoiseGroup.from_label(key)
            except ValueError:
                raise KeyError(key) from None
        return self._d[key]

    def __iter__(self) -> Iterator[NoiseGroup]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k.label!r}: {v!r}" for k, v in self._d.items()) + "}"

    def labelled(self) -> dict:
        """Plain ``{label: value}`` dict (for JSON)."""
        return {k.label: v for k, v in self._d.items()}


def noise_level(noise: Mapping, kind: str, default: float = 0.0) -> float:
    """Noise of one label kind from ``GAP.noise_``.

    Parameters
    ----------
    noise : mapping of NoiseGroup (or label) to float
    kind : {"energy", "forces", "virial"}
    default : float
        Returned when no group of that kind exists.

    Returns
    -------
    float
        The root-mean-square over the groups of that kind (one per ``config_type``
        when noise is learned per group), in the kind's units (eV per sqrt(atom) for
        energies and virials, eV/Å for forces).
    """
    vals = [v for k, v in noise.items()
            if (k if isinstance(k, NoiseGroup) else NoiseGroup.from_label(k)).kind == kind]
    return float(np.sqrt(np.mean(np.square(vals)))) if vals else default


@dataclass(frozen=True)
class VarianceScale:
    """How the three variance terms of one property are scaled.

    ``var = nystrom * V_N * min(1, rho / knee)**exponent
    + posterior * V_P * (V_P / posterior_ref)**(posterior_power - 1)
    + aleatoric * sigma_noise**2`` where ``V_N`` is the Nyström residual
    ``delta**2 (k~** - k~^T K~_MM^-1 k~)``, ``rho = V_N / (delta**2 k~**)`` in [0, 1]
    the fraction of the prior variance the sparse set does not explain, ``V_P`` the
    weight-posterior term ``delta**4 k~^T Sigma k~`` and ``sigma_noise`` the learned
    noise. With ``exponent > 0`` the Nyström term shrinks where the model knows the
    region (``rho`` well below ``knee``) and is the raw term beyond ``knee``, i.e.
    away from the data. ``posterior_power`` (a monotone power map of the posterior
    term about ``posterior_ref``, same units as ``V_P``) lets that term spread as the
    errors do. Beyond ``posterior_max`` (the largest ``V_P`` of the calibration data)
    the factor ``(V_P / posterior_ref)**(posterior_power - 1)`` keeps its value there:
    where no validation data fixed the power, the term grows as the raw ``V_P``
    (files without the key: no cap, as before session 8). The defaults (1, 1, 1, 0,
    1, 1, 1, inf) are the raw DTC variance; files written before the power map existed
    have no power keys and load with power 1.
    """

    nystrom: float = 1.0
    posterior: float = 1.0
    aleatoric: float = 1.0
    exponent: float = 0.0
    knee: float = 1.0
    posterior_power: float = 1.0
    posterior_ref: float = 1.0
    posterior_max: float = float("inf")

    def as_dict(self) -> dict:
        out = {"nystrom": self.nystrom, "posterior": self.posterior,
               "aleatoric": self.aleatoric, "exponent": self.exponent, "knee": self.knee}
        if self.posterior_power != 1.0:  # files without the map stay readable by older gapkit
            out.update(posterior_power=self.posterior_power, posterior_ref=self.posterior_ref)
            if np.isfinite(self.posterior_max):
                out["posterior_max"] = self.posterior_max
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "VarianceScale":
        return cls(**{k: float(v) for k, v in d.items()})


#: Key of the scale that applies to every species (``Calibration.forces``).
ALL_SPECIES = 0


@dataclass(frozen=True)
class ConfigTypeScale:
    """Variance multipliers of the structures of one ``config_type``.

    Both multiply every term (epistemic and aleatoric) of the calibrated variance, so
    ``std -> std * sqrt(factor)``; 1 is the pooled calibration.

    Attributes
    ----------
    energy : float
        Of the total- and local-energy variances.
    forces : float
        Of the force-component variances (every species).
    n_frames : int
        Validation structures of this ``config_type`` they were fitted on.
    """

    energy: float = 1.0
    forces: float = 1.0
    n_frames: int = 0

    def __post_init__(self):
        for name in ("energy", "forces"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"ConfigTypeScale: {name} must be a positive finite number, "
                                 f"got {v!r}")

    def as_dict(self) -> dict:
        return {"energy": self.energy, "forces": self.forces, "n_frames": self.n_frames}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ConfigTypeScale":
        return cls(float(d["energy"]), float(d["forces"]), int(d.get("n_frames", 0)))


@dataclass(frozen=True)
class Calibration:
    """How the predictive std of a model was calibrated.

    Attributes
    ----------
    energy : VarianceScale
        Scales of total and local energy variances.
    forces : dict of int to VarianceScale
        Scales of the exact force-component variances (kernel Hessian), by atomic
        number; key ``0`` applies to species without their own entry.
    forces_fast : dict of int to VarianceScale
        Scales of the fast per-atom force variance (a smooth neighbourhood sum of the
        local-energy variances, see :mod:`gapkit.model.variance`); empty when the
        model was not calibrated, in which case force stds are exact.
    reference : dict
        Typical calibrated epistemic stds of the most uncertain atom of a calibration
        frame (root-mean-square over the frames of the frame's largest value):
        ``"energy_per_atom"`` (eV, local energies), ``"forces"`` (eV/Å, largest
        exact component) and ``"forces_fast"`` (the same with fast force stds).
        Relative flag thresholds (``3x``) are multiples of these.
    source : str or None
        What the scales were fitted on (e.g. ``"validation split: 20 of 200 frames"``);
        ``None`` means the raw DTC variance (not calibrated).
    fast_force_ratio : dict of int to list
        Per species, the 5th, 50th and 95th percentiles of fast over exact epistemic
        force std on the calibration atoms (the approximation error of the fast std).
    compression : dict
        The training range of the compression term of
        :mod:`gapkit.model.distance_variance` (per species pair the shortest training
        distance and the bond's spread, per species the RMS training force); pairs
        closer than in training add to the std. Empty: no such term.
    config_types : dict of str to ConfigTypeScale
        Multipliers of the variances of structures whose ``atoms.info[config_type_key]``
        is one of these (fitted on the validation structures of that type, see
        :mod:`gapkit.model.config_type_scales`); a structure of another type, or
        without one, keeps the pooled scales. Empty: the pooled scales for all.
    config_type_key : str
        The ``atoms.info`` key of the ``config_type``.
    """

    energy: VarianceScale = field(default_factory=VarianceScale)
    forces: dict = field(default_factory=dict)
    forces_fast: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    source: str | None = None
    fast_force_ratio: dict = field(default_factory=dict)
    compression: dict = field(default_factory=dict)
    config_types: dict = field(default_factory=dict)
    config_type_key: str = "config_type"

    @property
    def calibrated(self) -> bool:
        return self.source is not None

    @property
    def has_fast_forces(self) -> bool:
        return bool(self.forces_fast)

    def force_scale(self, z: int, fast: bool = False) -> VarianceScale:
        """The force :class:`VarianceScale` of species ``z`` (exact or fast mode)."""
        table = self.forces_fast if fast else self.forces
        return table.get(int(z), table.get(ALL_SPECIES, VarianceScale()))

    def config_type_scale(self, atoms) -> ConfigTypeScale | None:
        """The multipliers of one structure (``None``: the pooled scales)."""
        if not self.config_types:
            return None
        ct = atoms.info.get(self.config_type_key)
        return None if ct is None else self.config_types.get(str(ct))

    def as_dict(self) -> dict:
        return {"energy": self.energy.as_dict(),
                "forces": {str(z): s.as_dict() for z, s in self.forces.items()},
                "forces_fast": {str(z): s.as_dict() for z, s in self.forces_fast.items()},
                "reference": dict(self.reference), "source": self.source,
                "fast_force_ratio": {str(z): list(r) for z, r in self.fast_force_ratio.items()},
                "compression": dict(self.compression),
                "config_types": {k: v.as_dict() for k, v in self.config_types.items()},
                "config_type_key": self.config_type_key}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Calibration":
        def table(x):
            return {int(z): VarianceScale.from_dict(s) for z, s in (x or {}).items()}

        return cls(energy=VarianceScale.from_dict(d["energy"]), forces=table(d.get("forces")),
                   forces_fast=table(d.get("forces_fast")),
                   reference={k: float(v) for k, v in (d.get("reference") or {}).items()},
                   source=d.get("source"),
                   fast_force_ratio={int(z): [float(x) for x in r]
                                     for z, r in (d.get("fast_force_ratio") or {}).items()},
                   compression=dict(d.get("compression") or {}),
                   config_types={str(k): ConfigTypeScale.from_dict(v)
                                 for k, v in (d.get("config_types") or {}).items()},
                   config_type_key=str(d.get("config_type_key") or "config_type"))


@dataclass(frozen=True, eq=False)
class VarianceBasis:
    """The columns of the stacked sparse set that the predictive variance uses.

    The std is the DTC variance of the sub-model whose sparse set is these columns of
    the fitted one (same data, same hyperparameters; see :mod:`gapkit.gp.subset`), so
    it costs ``O(N M_v)`` kernel entries and ``O(N M_v**2)`` triangular solves instead
    of ``O(N M**2)``. The energies and forces always use all ``M`` columns.

    Attributes
    ----------
    columns : ndarray of shape (M_v,), int64
        Increasing, distinct indices into the stacked sparse set, ``0 <= c < M``.
    """

    columns: np.ndarray

    def __post_init__(self):
        cols = np.asarray(self.columns)
        if cols.ndim != 1 or cols.size == 0 or cols.dtype.kind not in "iu":
            raise ValueError(f"VarianceBasis: columns must be a non-empty 1-D integer array, "
                             f"got shape {cols.shape} and dtype {cols.dtype}")
        cols = cols.astype(np.int64)
        if cols[0] < 0 or np.any(np.diff(cols) <= 0):
            raise ValueError("VarianceBasis: columns must be non-negative, increasing and "
                             "distinct")
        cols.setflags(write=False)
        object.__setattr__(self, "columns", cols)

    def __len__(self) -> int:
        return len(self.columns)

    def __eq__(self, other) -> bool:
        return isinstance(other, VarianceBasis) and np.array_equal(self.columns, other.columns)

    __hash__ = None


@dataclass(frozen=True)
class FittedState:
    """Everything prediction and uncertainty need, as fitted.

    Attributes
    ----------
    terms : tuple of FittedTerm
        Kernel terms: fitted descriptor, exponent, weight, sparse set (columns
        ``terms[t].cols`` of the stacked set).
    species : tuple of int
        Atomic numbers the model knows.
    e0 : ReferenceEnergies
        Per-species reference energies, eV.
    alpha : ndarray of shape (M,)
        Unit-scale weights of the stacked sparse set.
    kmm_cholesky : ndarray of shape (M, M)
        Lower Cholesky factor of ``K~_MM + jitter I``.
    posterior_factor : ndarray of shape (M, M)
        Upper ``R_P`` of the weight posterior.
    delta : float
        Signal scale, eV.
    noise : GroupValues
        Noise per row group (eV per sqrt(atom) for energies/virials, eV/Å for forces):
        the aleatoric uncertainty.
    n_train : GroupValues
        Training rows per group.
    calibration : Calibration
    log_marginal_likelihood : float or None
    extra : dict
        Free-form JSON-able entries stored with the model (e.g. active-learning info).
    variance_basis : VarianceBasis or None
        The sparse columns of the predictive variance; ``None``: all ``M`` (the exact
        DTC variance of the model).
    """

    terms: tuple
    species: tuple
    e0: ReferenceEnergies
    alpha: np.ndarray
    kmm_cholesky: np.ndarray
    posterior_factor: np.ndarray
    delta: float
    noise: GroupValues
    n_train: GroupValues
    calibration: Calibration = field(default_factory=Calibration)
    log_marginal_likelihood: float | None = None
    extra: dict = field(default_factory=dict)
    variance_basis: VarianceBasis | None = None
    # derived arrays (e.g. the factors of the variance basis): not compared or saved;
    # ``replace`` carries them over only when the fields they derive from are unchanged
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        M = len(self.alpha)
        vb = self.variance_basis
        if vb is not None and (not isinstance(vb, VarianceBasis) or vb.columns[-1] >= M):
            raise ValueError(f"FittedState: variance_basis must be a VarianceBasis with columns "
                             f"below M = {M}, got {vb!r}")
        if sum(len(t.sparse_species) for t in self.terms) != M:
            raise ValueError("FittedState: the terms' sparse sets do not add up to len(alpha)")
        for name in ("kmm_cholesky", "posterior_factor"):
            if getattr(self, name).shape != (M, M):
                raise ValueError(f"FittedState: {name} has shape {getattr(self, name).shape}, "
                                 f"expected {(M, M)}")

    @property
    def descriptor(self):
        """Fitted descriptor of the first term (all terms share its species)."""
        return self.terms[0].descriptor

    def noise_level(self, kind: str) -> float:
        """Learned noise of one kind, see :func:`noise_level`."""
        return noise_level(self.noise, kind)

    def cached(self, key: str, make):
        """``make()``, computed once per state and kept (derived data of the fields in
        ``_CACHE_SOURCES`` only: the cache is not compared or saved)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def with_private_descriptors(self) -> "FittedState":
        """A copy whose terms hold their own deep copies of the descriptors (an engine
        is not shared between threads), with this state's cached derived data: they
        come from the sparse sets and factors, not from the descriptor objects."""
        own = tuple(replace(t, descriptor=copy.deepcopy(t.descriptor))
                    for t in self.terms)
        new = replace(self, terms=own)
        new._cache.update(self._cache)
        return new

    def replace(self, **changes) -> "FittedState":
        """A copy with some fields changed (the state itself is immutable); the cached
        derived data carry over unless a field they derive from changes."""
        new = replace(self, **changes)
        if not set(changes) & _CACHE_SOURCES:
            new._cache.update(self._cache)
        return new


#: The fields that the cache of a :class:`FittedState` is derived from.
_CACHE_SOURCES = frozenset({"terms", "kmm_cholesky", "posterior_factor", "variance_basis"})
