"""The containers the descriptors return and the normalisation ``q = p / |p|``.

:class:`DescriptorSet` (normalised values and sparse derivatives of one structure),
:class:`EngineResult` (an engine's raw features), :class:`EngineBlock` /
:class:`DescriptorBlock` (a block of centres with its vector-Jacobian product) and
the normalisation helpers. Re-exported by :mod:`gapkit.descriptors.base`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .norm_kernels import normalise_rows
from .segments import segment_matrix

__all__ = ["DescriptorBlock", "DescriptorSet", "EngineBlock", "EngineResult", "normalise",
           "normalise_strain", "scatter_matrix"]


@dataclass
class DescriptorSet:
    """Descriptor values and sparse derivatives of one structure.

    Attributes
    ----------
    q : ndarray of shape (n_atoms, n_features)
        Descriptor of every atom (dimensionless; unit length when normalised).
    numbers : ndarray of shape (n_atoms,)
        Atomic number of each centre.
    pair_i, pair_j : ndarray of shape (n_pairs,)
        Centre index and moved-atom index of each derivative block.
    dq : ndarray of shape (n_pairs, 3, n_features) or None
        ``dq[p, a] = d q[pair_i[p]] / d r[pair_j[p], a]`` in 1/Å.
    dq_strain : ndarray of shape (n_atoms, 3, 3, n_features) or None
        ``d q_i / d eta_ab`` (dimensionless), for periodic cells.
    """

    q: np.ndarray
    numbers: np.ndarray
    pair_i: np.ndarray | None = None
    pair_j: np.ndarray | None = None
    dq: np.ndarray | None = None
    dq_strain: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return self.q.shape[0]

    def scatter_matrix(self) -> sp.csr_matrix:
        """Sparse (3 n_atoms, 3 n_pairs) matrix that sums pair rows onto atom rows."""
        return scatter_matrix(self.pair_j, self.n_atoms)

    def contract(self, grad_q: np.ndarray, strain: bool = False):
        """``(dE/dr, dE/deta)`` from ``grad_q = dE/dq_i`` (n_atoms, F) and the stored
        derivatives: shapes (n_atoms, 3) in eV/Å and (3, 3) in eV (``None`` without
        ``strain``)."""
        P = len(self.pair_i)
        contrib = np.einsum("paf,pf->pa", self.dq, grad_q[self.pair_i])  # dE/dr_j per pair
        dE_dr = (self.scatter_matrix() @ contrib.reshape(P * 3)).reshape(-1, 3)
        dE_deta = np.einsum("nabf,nf->ab", self.dq_strain, grad_q) if strain else None
        return dE_dr, dE_deta


@dataclass
class EngineResult:
    """Raw (unnormalised) features of one structure and, optionally, their derivatives.

    What every :class:`Engine` returns; :class:`Descriptor` normalises it into a
    :class:`DescriptorSet`.

    Attributes
    ----------
    p : ndarray of shape (n_atoms, n_features)
        Raw features of every atom.
    numbers : ndarray of shape (n_atoms,)
        Atomic numbers of the centres.
    pair_i, pair_j : ndarray of shape (n_pairs,) or None
        Centre and moved atom of every derivative block (each combination once,
        periodic images of ``j`` folded onto ``j``, self pairs ``(i, i)`` included).
    dp : ndarray of shape (n_pairs, 3, n_features) or None
        ``dp[k, a] = d p[pair_i[k]] / d r[pair_j[k], a]`` (1/Å times the units of ``p``).
    dp_strain : ndarray of shape (n_atoms, 3, 3, n_features) or None
        ``d p_i / d eta_ab`` for the homogeneous deformation ``r -> (1 + eta) r``
        of positions and cell.
    """

    p: np.ndarray
    numbers: np.ndarray
    pair_i: np.ndarray | None = None
    pair_j: np.ndarray | None = None
    dp: np.ndarray | None = None
    dp_strain: np.ndarray | None = None
    #: ``(grad_p, strain) -> (dE/dr, dE/deta)``, set by ``compute(..., keep=True)``
    _vjp: Callable | None = field(default=None, repr=False)

    @property
    def n_atoms(self) -> int:
        return self.p.shape[0]

    def vjp(self, grad_p: np.ndarray, strain: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Vector-Jacobian product with the kept structure (needs ``keep=True``).

        Parameters
        ----------
        grad_p : ndarray of shape (n_atoms, n_features)
            ``dE/dp_i``.
        strain : bool
            Also return ``dE/deta``.

        Returns
        -------
        dE_dr : ndarray of shape (n_atoms, 3)
            ``dE/dr_j`` in eV/Å (forces are ``-dE_dr``).
        dE_deta : ndarray of shape (3, 3) or None
            ``dE/deta_ab`` in eV (the virial is ``-dE_deta``).
        """
        if self._vjp is None:
            raise RuntimeError("EngineResult.vjp needs compute(..., keep=True)")
        return self._vjp(grad_p, strain)


@dataclass
class EngineBlock:
    """Raw features of a block of centres and their vector-Jacobian product.

    Attributes
    ----------
    start, stop : int
        The block's centres are atoms ``start .. stop - 1``.
    p : ndarray of shape (stop - start, n_features)
        Raw features of those centres.
    numbers : ndarray of shape (stop - start,)
        Their atomic numbers.
    """

    start: int
    stop: int
    p: np.ndarray
    numbers: np.ndarray
    #: ``(grad_p, strain, out) -> (dE/dr, dE/deta)``
    _vjp: Callable = field(repr=False)

    def vjp(self, grad_p: np.ndarray, strain: bool = False,
            out: tuple[np.ndarray, np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """``dE/dr`` (n_atoms, 3) in eV/Å and ``dE/deta`` (3, 3) in eV (``None``
        without ``strain``) of the block's centres from ``grad_p = dE/dp``
        (stop - start, F); with ``out = (dE_dr, dE_deta)`` they are added to those
        arrays (``dE_deta`` also without ``strain``); with a list ``out`` the
        addition is appended to it as ``fold(dE_dr, dE_deta)``, to run later (in
        block order after parallel blocks), and None is returned."""
        return self._vjp(grad_p, strain, out)


def _accumulate(result, out, strain):
    """Add ``result = (dE_dr, dE_deta)`` into ``out`` (if given); the VJP's return value.
    A list ``out`` gets the addition appended as ``fold(dE_dr, dE_deta)`` (run later)."""
    if out is None:
        return result
    if isinstance(out, list):
        out.append(partial(_add_into, result))
        return None
    np.add(out[0], result[0], out=out[0])
    if result[1] is not None:
        np.add(out[1], result[1], out=out[1])
    return out[0], (out[1] if strain else None)


def _add_into(result, dE_dr: np.ndarray, dE_deta: np.ndarray) -> None:
    np.add(dE_dr, result[0], out=dE_dr)
    if result[1] is not None:
        np.add(dE_deta, result[1], out=dE_deta)


@dataclass
class DescriptorBlock:
    """Descriptor values of a block of centres and their vector-Jacobian product
    (:meth:`Descriptor.vjp_blocks`).

    Attributes
    ----------
    start, stop : int
        Centres ``start .. stop - 1``.
    q : ndarray of shape (stop - start, n_features)
        Their descriptors.
    numbers : ndarray of shape (stop - start,)
        Their atomic numbers.
    """

    start: int
    stop: int
    q: np.ndarray
    numbers: np.ndarray
    _vjp: Callable = field(repr=False)

    def vjp(self, grad_q: np.ndarray, strain: bool = False,
            out: tuple[np.ndarray, np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(dE/dr, dE/deta)`` (n_atoms, 3) eV/Å and (3, 3) eV of the block's centres
        from ``grad_q = dE/dq`` (stop - start, F); added to ``out`` if given."""
        return self._vjp(np.asarray(grad_q, dtype=np.float64), strain, out)


def scatter_matrix(pair_j: np.ndarray, n_atoms: int) -> sp.csr_matrix:
    """Sparse (3 n_atoms, 3 n_pairs) matrix: row ``3 j + a`` sums pair rows ``3 p + a``
    with ``pair_j[p] == j``."""
    rows = (3 * np.asarray(pair_j)[:, None] + np.arange(3)[None, :]).ravel()
    return segment_matrix(rows, 3 * n_atoms)


def normalise(p: np.ndarray, dp: np.ndarray | None, pair_i: np.ndarray | None,
              rows: tuple[np.ndarray, np.ndarray] | None = None):
    """``q = p/|p|`` and ``dq = (dp - q (q . dp)) / |p|`` for each pair's centre.

    Parameters
    ----------
    p : ndarray of shape (n_atoms, F)
        Raw vectors (non-zero).
    dp : ndarray of shape (n_pairs, 3, F) or None
        Their position derivatives (1/Å).
    pair_i : ndarray of shape (n_pairs,) or None
        Centre of every derivative block.
    rows : (q, norms), optional
        ``normalise_rows(p)`` if the caller already has it (one pass over ``p``
        fewer); computed here otherwise.

    Returns
    -------
    q : ndarray of shape (n_atoms, F)
    dq : ndarray of shape (n_pairs, 3, F) or None
    """
    # the same q as the VJP routes of Descriptor
    q, norms = normalise_rows(p) if rows is None else rows
    if dp is None:
        return q, None
    qi = q[pair_i]  # (P, F)
    proj = np.einsum("paf,pf->pa", dp, qi)
    dq = (dp - proj[:, :, None] * qi[:, None, :]) / norms[pair_i][:, None, None]
    return q, dq


def normalise_strain(p: np.ndarray, q: np.ndarray, dps: np.ndarray) -> np.ndarray:
    """Strain derivative of ``q = p/|p|`` (n, 3, 3, F) from that of ``p`` (n, 3, 3, F)."""
    norms = np.linalg.norm(p, axis=1)
    proj = np.einsum("nabf,nf->nab", dps, q)
    return (dps - proj[..., None] * q[:, None, None, :]) / norms[:, None, None, None]
