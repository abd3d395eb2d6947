"""The descriptor contract, the container every descriptor returns, and its helpers.

A descriptor turns one structure into

* ``q``: one feature vector per atom, shape ``(n_atoms, n_features)``;
* the derivatives of those vectors with respect to atom positions, stored
  *sparsely* as a list of pairs ``(i, j)`` (centre ``i``, moved atom ``j``), with
  ``dq[p] = d q_i / d r_j`` of shape ``(3, n_features)`` for pair ``p``. Only atoms
  inside centre ``i``'s cutoff (and ``i`` itself) have a pair, so memory grows as
  atoms x neighbours x features;
* optionally the strain derivatives ``dq_i / d eta_ab`` of shape
  ``(n_atoms, 3, 3, n_features)`` for periodic cells, where positions and cell map
  as ``r -> (1 + eta) r``; they give the virial.

The contract
------------
A new descriptor subclasses :class:`Descriptor`, takes its parameters (``species``
and ``r_cut`` included) as keyword arguments of ``__init__`` stored unchanged
(sklearn style), and implements ``_build_engine()``, which returns an
:class:`Engine`: ``engine.n_features`` and ``engine.compute(atoms, gradients,
strain, keep) -> EngineResult`` (raw, unnormalised features, sparse derivatives
and, with ``keep``, a vector-Jacobian product). It may override
``_check_params()`` (parameter checks, run by :meth:`Descriptor.validate`),
``interaction_range`` and ``_normalised``. :class:`Descriptor` supplies
``compute``, ``vjp_setup``, ``create``, the normalisation ``q = p / |p|`` and its
derivatives, the engine cache, ``check_species``, ``n_features`` and ``validate``.
"""

from __future__ import annotations

import abc
from functools import partial
from typing import Callable, Iterator

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from sklearn.base import BaseEstimator

from .norm_kernels import normalise_rows, normalised_gradient
from .results import (DescriptorBlock, DescriptorSet, EngineBlock, EngineResult, _accumulate,
                      normalise, normalise_strain, scatter_matrix)

__all__ = ["Descriptor", "DescriptorBlock", "DescriptorSet", "Engine", "EngineBlock",
           "EngineResult", "normalise",
           "normalise_strain", "scatter_matrix", "species_index", "species_numbers"]


class Engine(abc.ABC):
    """The numerical part of a descriptor: raw features of one structure.

    Besides :meth:`compute` an engine has ``n_features`` (int). ``supports_vjp``
    says whether ``compute(..., keep=True)`` sets :meth:`EngineResult.vjp`; when
    it is False, :meth:`Descriptor.vjp_setup` contracts the derivative arrays.
    """

    supports_vjp: bool = True

    @abc.abstractmethod
    def compute(self, atoms: Atoms, gradients: bool = True, strain: bool = False,
                keep: bool = False) -> EngineResult:
        """Raw features (n_atoms, F) and, with ``gradients`` / ``strain``, their sparse
        position / strain derivatives; ``keep`` sets :meth:`EngineResult.vjp`."""

    def block_tasks(self, atoms: Atoms, block_atoms: int, strain: bool = False
                    ) -> list[Callable[[], EngineBlock]]:
        """Independent tasks ``task() -> EngineBlock`` covering the structure in blocks
        of at most ``block_atoms`` centres (they may run in parallel threads). This
        default has one task (the whole structure, :meth:`compute_blocks`)."""
        return [lambda: next(iter(self.compute_blocks(atoms, block_atoms, strain)))]

    def compute_blocks(self, atoms: Atoms, block_atoms: int, strain: bool = False
                       ) -> Iterator[EngineBlock]:
        """:class:`EngineBlock` s of at most ``block_atoms`` centres covering the
        structure. This default yields one block (the whole structure);
        :class:`~gapkit.descriptors.soap_engine.SOAPEngine` yields real blocks with
        memory bounded by the block."""
        if self.supports_vjp:
            res = self.compute(atoms, gradients=False, strain=False, keep=True)

            def vjp(grad_p, strain_, out):
                return _accumulate(res.vjp(grad_p, strain_ or out is not None), out, strain_)
        else:
            res = self.compute(atoms, gradients=True, strain=strain)
            ds = DescriptorSet(q=res.p, numbers=res.numbers, pair_i=res.pair_i,
                               pair_j=res.pair_j, dq=res.dp, dq_strain=res.dp_strain)

            def vjp(grad_p, strain_, out):
                return _accumulate(ds.contract(grad_p, strain_ and strain), out, strain_)
        yield EngineBlock(start=0, stop=res.n_atoms, p=res.p, numbers=res.numbers, _vjp=vjp)


class Descriptor(BaseEstimator, abc.ABC):
    """Base class of gapkit's local descriptors (:class:`~gapkit.descriptors.SOAP`,
    :class:`~gapkit.descriptors.ACSF`, :class:`~gapkit.descriptors.TwoBody`).

    Subclasses store their ``__init__`` keyword parameters (``species`` and
    ``r_cut`` among them) and implement :meth:`_build_engine`; see the module
    docstring. The engine is built (after :meth:`validate`) on first use and again
    whenever a parameter changes; it is a cache, not pickled.

    Attributes
    ----------
    n_features : int
        Length of one descriptor vector.
    interaction_range : float
        Distance in Å beyond which an atom does not affect a centre (default ``r_cut``).
    species_numbers : list of int
        Sorted atomic numbers covered by the descriptor.

    Notes
    -----
    With ``_normalised`` (the default) ``q_i = p_i / |p_i|`` and the derivatives
    include the normalisation, ``dq = (dp - q (q . dp)) / |p|``; otherwise
    ``q_i = p_i``. Derivatives are in 1/Å (positions) and dimensionless (strain);
    with energies in eV, :meth:`vjp_setup` gives ``dE/dr`` in eV/Å and ``dE/deta``
    in eV.
    """

    #: Appended to the zero-norm error message (e.g. how to avoid normalising).
    _zero_norm_hint: str = ""

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _build_engine(self) -> Engine:
        """The numerical engine for the current (validated) parameters."""

    def _check_params(self) -> None:
        """Descriptor-specific parameter checks (``ValueError``); run by :meth:`validate`."""

    @property
    def _normalised(self) -> bool:
        """Whether ``q = p / |p|`` (else ``q = p``)."""
        return True

    @property
    def interaction_range(self) -> float:
        """Distance in Å beyond which an atom does not affect a centre's descriptor
        (``r_cut``)."""
        return float(self.r_cut)

    # ------------------------------------------------------------------ set-up
    @property
    def species_numbers(self) -> list[int]:
        """Sorted atomic numbers covered by the descriptor."""
        return species_numbers(self.species or [])

    def check_species(self, atoms: Atoms, index: int = 0) -> None:
        """Raise ``ValueError`` if ``atoms`` holds a species the descriptor does not cover."""
        unknown = sorted(set(np.unique(atoms.numbers).tolist()) - set(self.species_numbers))
        if unknown:
            raise ValueError(f"frame {index}: species {[chemical_symbols[z] for z in unknown]} are "
                             f"not covered by this model (it knows "
                             f"{[chemical_symbols[z] for z in self.species_numbers]})")

    def validate(self) -> None:
        """Check the parameters; ``ValueError`` with a clear message otherwise."""
        if self.species is None or len(list(self.species)) == 0:
            raise ValueError(f"{type(self).__name__}.species is not set: pass species=[...] or "
                             "fit a GAP, which takes them from the training data")
        species_numbers(self.species)  # unknown symbols raise here
        self._check_params()

    def _validate(self) -> None:
        """Alias of :meth:`validate`, kept for ``gapkit.model.estimator``."""
        self.validate()

    @property
    def _engine(self) -> Engine:
        """The numerical engine, rebuilt (after validation) when a parameter changed."""
        key = tuple(freeze_param(v) for v in self.get_params(deep=False).values())
        cached = self.__dict__.get("_engine_cache")
        if cached is None or cached[0] != key:
            self.validate()
            self._engine_cache = (key, self._build_engine())
            cached = self._engine_cache
        return cached[1]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_engine_cache", None)  # a cache: rebuilt on demand
        return state

    @property
    def n_features(self) -> int:
        """Length of one descriptor vector."""
        return int(self._engine.n_features)

    # ------------------------------------------------------------------ compute
    def compute(self, atoms: Atoms, gradients: bool = True, strain: bool | None = None,
                index: int = 0) -> DescriptorSet:
        """Descriptor of every atom of one structure, with sparse derivatives.

        Parameters
        ----------
        atoms : ase.Atoms
            Finite or periodic structure (``pbc`` may be mixed per axis; positions
            in Å).
        gradients : bool, default True
            Also compute the position derivatives.
        strain : bool, optional
            Also compute the strain derivatives (for the virial and stress).
            Defaults to ``True`` for fully periodic cells when ``gradients`` is set.
        index : int
            Frame index, for error messages.

        Returns
        -------
        DescriptorSet
            ``q`` (n_atoms, n_features); with ``gradients`` ``pair_i, pair_j``
            (n_pairs,) and ``dq`` (n_pairs, 3, n_features) in 1/Å (self pairs
            ``(i, i)`` included, periodic images folded onto their atom); with
            ``strain`` ``dq_strain`` (n_atoms, 3, 3, n_features).

        Raises
        ------
        ValueError
            For invalid parameters, a species the descriptor does not cover, or
            (when normalising) an atom whose raw vector is zero.
        """
        engine = self._engine  # validates the parameters
        self.check_species(atoms, index)
        if strain is None:
            strain = gradients and bool(np.all(atoms.get_pbc()))
        return self._to_descriptor_set(engine.compute(atoms, gradients=gradients, strain=strain),
                                       atoms, index)

    def vjp_setup(self, atoms: Atoms, strain: bool = False, index: int = 0
                  ) -> tuple[DescriptorSet, Callable]:
        """Descriptor values and a vector-Jacobian product for forces and the virial.

        Parameters
        ----------
        atoms : ase.Atoms
            The structure.
        strain : bool, default False
            Whether ``vjp`` also returns ``dE/deta``.
        index : int
            Frame index, for error messages.

        Returns
        -------
        ds : DescriptorSet
            Values only (no derivative arrays).
        vjp : callable
            ``vjp(grad_q)`` with ``grad_q = dE/dq_i`` of shape (n_atoms, F) returns
            ``(dE/dr, dE/deta)``: shapes (n_atoms, 3) in eV/Å and (3, 3) in eV (or
            ``None`` without ``strain``). The per-pair derivatives are contracted
            directly, without forming the derivative array (engines without a VJP
            contract their sparse derivatives instead).
        """
        engine = self._engine  # validates the parameters
        self.check_species(atoms, index)
        if not engine.supports_vjp:
            ds = self.compute(atoms, gradients=True, strain=strain, index=index)
            return ds, lambda grad_q: ds.contract(grad_q, strain)
        res = engine.compute(atoms, gradients=False, strain=False, keep=True)
        if not self._normalised:
            def vjp(grad_q):
                return res.vjp(np.asarray(grad_q, dtype=np.float64), strain)

            return DescriptorSet(q=res.p, numbers=atoms.numbers.copy()), vjp
        q, norms = normalise_rows(res.p)
        self._check_norms(res.p, atoms, index, norms=norms)

        def vjp(grad_q):
            return res.vjp(normalised_gradient(q, norms, grad_q), strain)

        return DescriptorSet(q=q, numbers=atoms.numbers.copy()), vjp

    def vjp_blocks(self, atoms: Atoms, block_atoms: int, strain: bool = False, index: int = 0
                   ) -> Iterator[DescriptorBlock]:
        """Descriptors and vector-Jacobian products in blocks of centres.

        Like :meth:`vjp_setup`, but the centres come in consecutive blocks of at most
        ``block_atoms`` atoms, each with its own VJP; an engine that supports it
        (:class:`~gapkit.descriptors.SOAP`) keeps only one block's per-pair data, so
        that memory is bounded by the block, not the structure.

        Parameters
        ----------
        atoms : ase.Atoms
        block_atoms : int
            Centres per block (>= 1).
        strain : bool
            Whether the VJPs return ``dE/deta``.
        index : int
            Frame index, for error messages.

        Yields
        ------
        DescriptorBlock
        """
        for task in self.vjp_block_tasks(atoms, block_atoms, strain, index):
            yield task()

    def vjp_block_tasks(self, atoms: Atoms, block_atoms: int, strain: bool = False,
                        index: int = 0) -> list[Callable[[], DescriptorBlock]]:
        """The blocks of :meth:`vjp_blocks` as independent tasks ``task() ->
        DescriptorBlock``, which may run in parallel threads (the neighbour list is
        built here, once)."""
        engine = self._engine  # validates the parameters
        self.check_species(atoms, index)
        return [partial(self._descriptor_block, task, atoms, index)
                for task in engine.block_tasks(atoms, block_atoms, strain=strain)]

    def _descriptor_block(self, task: Callable[[], EngineBlock], atoms: Atoms, index: int
                          ) -> DescriptorBlock:
        blk = task()
        if not self._normalised:
            return DescriptorBlock(blk.start, blk.stop, blk.p, blk.numbers,
                                   partial(_raw_vjp, blk))
        q, norms = normalise_rows(blk.p)
        self._check_norms(blk.p, atoms[blk.start:blk.stop], index, offset=blk.start, norms=norms)
        return DescriptorBlock(blk.start, blk.stop, q, blk.numbers,
                               partial(_normalised_vjp, blk, q, norms))

    def create(self, atoms: Atoms) -> np.ndarray:
        """Descriptor only (normalised unless switched off), shape (n_atoms, n_features)."""
        return self.compute(atoms, gradients=False).q

    # ------------------------------------------------------------------ normalisation
    def _to_descriptor_set(self, res: EngineResult, atoms: Atoms, index: int = 0
                           ) -> DescriptorSet:
        """The :class:`DescriptorSet` of a raw engine result (normalised if ``_normalised``)."""
        numbers = atoms.numbers.copy()
        if not self._normalised:
            return DescriptorSet(q=res.p, numbers=numbers, pair_i=res.pair_i, pair_j=res.pair_j,
                                 dq=res.dp, dq_strain=res.dp_strain)
        rows = normalise_rows(res.p)  # the norms once, for the check and for dq
        self._check_norms(res.p, atoms, index, norms=rows[1])
        q, dq = normalise(res.p, res.dp, res.pair_i, rows=rows)
        dq_strain = None if res.dp_strain is None else normalise_strain(res.p, q, res.dp_strain)
        return DescriptorSet(q=q, numbers=numbers, pair_i=res.pair_i, pair_j=res.pair_j, dq=dq,
                             dq_strain=dq_strain)

    def _check_norms(self, p: np.ndarray, atoms: Atoms, index: int, offset: int = 0,
                     norms: np.ndarray | None = None) -> None:
        """``ValueError`` naming the first atom whose raw vector is zero (cannot be
        normalised); ``p`` and ``atoms`` start at atom ``offset``; ``norms`` (the row
        norms of ``p``) if already known."""
        if norms is None:
            norms = np.linalg.norm(p, axis=1)
        bad = np.flatnonzero(~(norms > 0))
        if len(bad):
            k = int(bad[0])
            raise ValueError(
                f"frame {index}: atom {k + offset} ({chemical_symbols[atoms.numbers[k]]}) has no "
                "neighbour "
                f"within r_cut={self.r_cut} Å ({len(bad)} such atom(s)), so its "
                f"{type(self).__name__} vector is zero and cannot be normalised: increase r_cut"
                f"{self._zero_norm_hint}")


def _raw_vjp(blk: EngineBlock, grad_q, strain, out):
    return blk.vjp(grad_q, strain, out)


def _normalised_vjp(blk: EngineBlock, q: np.ndarray, norms: np.ndarray, grad_q, strain, out):
    """VJP through ``q = p / |p|``: ``dE/dp = (g - q (q . g)) / |p|``."""
    return blk.vjp(normalised_gradient(q, norms, grad_q), strain, out)


def species_numbers(species) -> list[int]:
    """Sorted unique atomic numbers from chemical symbols and/or atomic numbers.

    Raises
    ------
    ValueError
        For an unknown chemical symbol.
    """
    out = []
    for s in species:
        if isinstance(s, str):
            if s not in atomic_numbers:
                raise ValueError(f"Unknown chemical symbol {s!r} in species")
            out.append(atomic_numbers[s])
        else:
            out.append(int(s))
    return sorted(set(out))


def species_index(numbers: np.ndarray, species: list[int]) -> np.ndarray:
    """Index of every atomic number in the sorted list ``species``, int64 of shape (n,).

    Raises
    ------
    ValueError
        For an atomic number that is not in ``species``.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    table = np.asarray(species, dtype=np.int64)
    idx = np.searchsorted(table, numbers)
    ok = idx < len(table)
    ok[ok] = table[idx[ok]] == numbers[ok]
    if not ok.all():
        bad = sorted(set(numbers[~ok].tolist()))
        raise ValueError(f"Atomic numbers {bad} are not in the engine species {list(species)}")
    return idx


def freeze_param(value):
    """Hashable snapshot of a parameter value (for the engine cache key)."""
    if value is None or isinstance(value, (str, bool, int, float, np.number)):
        return (type(value).__name__, value)
    try:
        arr = np.asarray(value)
        if arr.dtype != object:
            return (arr.dtype.str, arr.shape, arr.tobytes())
    except (TypeError, ValueError):
        pass
    return repr(value)
