"""Prediction from a :class:`~gapkit.model.state.FittedState`: energies, forces, stress.

Local energies ``eps_i = delta**2 sum_m alpha_m (q_i . q_m)**zeta`` (summed over
kernel terms); forces ``F_j = -dE/dr_j`` and the virial ``-dE/deta`` contract
``d eps_i / d q_i`` with the descriptor derivatives through a vector-Jacobian product,
so no force rows are formed unless an uncertainty needs the derivative arrays.
The kernel work of many structures is one matrix product per species and term.

Structures with more than ``block_atoms`` atoms (:data:`PREDICT_BLOCK_ATOMS`) are
evaluated in blocks of centres: descriptors, kernel and VJP of one block at a time
(:meth:`gapkit.descriptors.base.Descriptor.vjp_blocks`), forces and virial
accumulated, so that time per atom is flat and memory is bounded by the block (plus
O(n_atoms) for the neighbour list, the descriptors and the forces). The blocks are
of equal size, about ``block_atoms`` centres each (:func:`block_count`: fewer than
1.5 x ``block_atoms``, and no small remainder block), and at least one per free
worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterator, Sequence

import numpy as np
from ase import Atoms

from gapkit.data import matrix_to_voigt
from gapkit.descriptors import DescriptorSet
from gapkit.descriptors.threads import block_threads, engine_threads
from gapkit.gp import terms
from gapkit.model.delta import baseline_labels
from gapkit.model.state import FittedState
from gapkit.utils import ordered_map

#: Atoms per batch at prediction: the kernel rows of a batch are one matrix product.
PREDICT_BATCH_ATOMS = 512
#: Centres per block of a larger structure (forces / stress without derivative arrays).
PREDICT_BLOCK_ATOMS = 512


@dataclass
class Prediction:
    """Predicted properties of a list of structures.

    Attributes
    ----------
    energy : ndarray of shape (n_frames,)
        Total energies, eV.
    energies : list of ndarray of shape (n_atoms_k,)
        Per-atom energies (E0 included), eV.
    forces : list of ndarray of shape (n_atoms_k, 3) or None
        Forces, eV/Å.
    stress : ndarray of shape (n_frames, 6) or None
        Stress in ASE's Voigt order (xx, yy, zz, yz, xz, xy), eV/Å³; NaN rows for
        frames that are not fully periodic.
    """

    energy: np.ndarray
    energies: list
    forces: list | None = None
    stress: np.ndarray | None = None

    @property
    def forces_flat(self) -> np.ndarray:
        """All force components stacked, shape (sum n_atoms, 3)."""
        return np.vstack(self.forces)


@dataclass
class StructurePrediction:
    """Prediction for one structure (:meth:`gapkit.GAP.predict_structure`).

    Attributes
    ----------
    energy : float
        Total energy, eV.
    energies : ndarray of shape (n_atoms,)
        Per-atom energies (E0 included), eV.
    forces : ndarray of shape (n_atoms, 3) or None
        Forces, eV/Å.
    stress : ndarray of shape (6,) or None
        Voigt stress, eV/Å³ (fully periodic cells, when asked for).
    descriptors : tuple of DescriptorSet
        The descriptor sets of the structure, one per kernel term (with derivative
        arrays when ``keep_gradients=True``); :meth:`gapkit.GAP.std_structure` takes them.
    """

    energy: float
    energies: np.ndarray
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    descriptors: tuple = ()

    def __getitem__(self, key: str):
        """Mapping-style access to the properties (``r["energy"]``)."""
        if key not in ("energy", "energies", "forces", "stress"):
            raise KeyError(key)
        return getattr(self, key)


def _descriptor_sets(state: FittedState, atoms: Atoms, forces: bool, strain: bool,
                     keep_gradients: bool, index: int) -> tuple[list, list]:
    dsets, vjps = [], []
    for t in state.terms:
        desc, vjp = t.descriptor, None
        if keep_gradients:
            ds = desc.compute(atoms, gradients=True, strain=strain, index=index)
        elif forces or strain:
            ds, vjp = desc.vjp_setup(atoms, strain=strain, index=index)
        else:
            ds = desc.compute(atoms, gradients=False, index=index)
        dsets.append(ds)
        vjps.append(vjp)
    return dsets, vjps


def _baseline_and_finish(out: StructurePrediction, atoms: Atoms, base, forces: bool, st: bool,
                         dE_dr, dE_deta) -> None:
    """Forces and stress of ``out`` from ``dE/dr`` and ``dE/deta`` (and the baseline's)."""
    if forces:
        out.forces = -dE_dr + (base["forces"] if base is not None else 0.0)
    if st:
        sigma = 0.5 * (dE_deta + dE_deta.T) / atoms.get_volume()
        if base is not None:
            sigma = sigma - base["virial"] / atoms.get_volume()
        out.stress = matrix_to_voigt(sigma)


def block_count(n_atoms: int, block_atoms: int) -> int:
    """Number of equal blocks for ``n_atoms`` centres (``n_atoms > block_atoms``).

    ``round(n_atoms / block_atoms)`` (at least 1), so that every block holds fewer
    than ``1.5 * block_atoms`` centres and there is no small remainder block (a
    576-atom cell is one block, not 512 + 64); raised to the number of free worker
    threads (:func:`~gapkit.descriptors.threads.block_threads`), at most
    ``ceil(n_atoms / block_atoms)``, so that free cores share the centres equally.
    """
    most = -(-n_atoms // block_atoms)
    return max(1, round(n_atoms / block_atoms), block_threads(most))


def predict_blocked(state: FittedState, atoms: Atoms, forces: bool, st: bool,
                    baseline=None, index: int = 0,
                    block_atoms: int = PREDICT_BLOCK_ATOMS) -> StructurePrediction:
    """Energy, forces and stress of one structure, evaluated in blocks of centres.

    Every kernel term is local (``eps_i`` depends on ``q_i`` only), so each block of
    ``block_atoms`` centres gets its descriptors, kernel rows and vector-Jacobian
    product in turn; ``dE/dr`` (n_atoms, 3) and ``dE/deta`` accumulate. Equal to
    :func:`predict_batch` up to round-off.

    Parameters
    ----------
    state : FittedState
    atoms : ase.Atoms
        A checked structure.
    forces, st : bool
        Forces; stress (fully periodic cells only).
    baseline : ase Calculator, optional
    index : int
        Frame index, for error messages.
    block_atoms : int
        Centres per block (>= 1), used as given (:func:`predict_batch` passes the
        equal block size of :func:`block_count`).

    Returns
    -------
    StructurePrediction
        ``descriptors`` holds the descriptor values (no derivative arrays).
    """
    n = len(atoms)
    d2 = state.delta ** 2
    eps = np.zeros(n)
    dE_dr, dE_deta = np.zeros((n, 3)), np.zeros((3, 3))
    dsets = []
    for t in state.terms:
        tasks = t.descriptor.vjp_block_tasks(atoms, block_atoms, strain=st, index=index)
        job = partial(_block_job, t=t, alpha=state.alpha, d2=d2, st=st)
        q = None
        for blk, e, folds in _run_blocks(job, tasks):
            sl = slice(blk.start, blk.stop)
            if len(tasks) == 1:
                q = blk.q  # the one block's rows: no copy
            else:
                if q is None:
                    q = np.empty((n, blk.q.shape[1]))
                q[sl] = blk.q
            eps[sl] += e
            for fold in folds:  # in block order: the same sums for any number of threads
                fold(dE_dr, dE_deta)
        dsets.append(DescriptorSet(q=q, numbers=atoms.numbers.copy()))
    out, base = _energies(state, atoms, eps, dsets, baseline, forces, st)
    _baseline_and_finish(out, atoms, base, forces, st, dE_dr, dE_deta)
    return out


def _block_job(task, t, alpha: np.ndarray, d2: float, st: bool):
    """One block of :func:`predict_blocked`: descriptors, kernel rows and VJP; the
    VJP's fold onto ``(dE/dr, dE/deta)`` is returned, to run in block order."""
    blk = task()
    e, g = terms.local_energies_and_gradients(
        [t], [DescriptorSet(q=blk.q, numbers=blk.numbers)], alpha, gradients=True)
    folds: list = []
    blk.vjp(_scaled(g[0], d2), st, out=folds)
    return blk, _scaled(e, d2), folds


def _scaled(x: np.ndarray, d2: float) -> np.ndarray:
    """``d2 * x`` in place (``x`` is a fresh array of the kernel stage; no pass over
    it at all for ``delta = 1``)."""
    if d2 != 1.0:
        x *= d2
    return x


def _run_blocks(job, tasks: list) -> Iterator:
    """``job(task)`` for every task, in order: serially, or on ``block_threads``
    worker threads (each with one engine and BLAS thread; at most one block per
    worker and one finished block in flight, so memory stays bounded by the blocks)."""
    workers = block_threads(len(tasks))
    if workers <= 1:
        for task in tasks:
            yield job(task)
        return

    def run(task):
        with engine_threads(1):
            return job(task)

    with engine_threads(1):  # BLAS capped once, here
        yield from ordered_map(run, tasks, workers, ahead=workers)


def _energies(state: FittedState, atoms: Atoms, eps: np.ndarray, dsets, baseline,
              forces: bool, st: bool) -> tuple[StructurePrediction, dict | None]:
    """The prediction's energies from the GP's local energies ``eps`` (eV, delta**2
    included): E0 and the baseline added; and the baseline's labels (or None)."""
    e_atoms = eps + state.e0.atomic(atoms.numbers)
    base = None
    if baseline is not None:
        base = baseline_labels(baseline, atoms, forces=forces, virial=st, energies=True)
        e_atoms = e_atoms + base["energies"]
    return StructurePrediction(energy=float(e_atoms.sum()), energies=e_atoms,
                               descriptors=tuple(dsets)), base


def predict_batch(state: FittedState, frames: Sequence[Atoms], forces: bool,
                  stress: bool | None, keep_gradients: bool, baseline=None,
                  offset: int = 0, block_atoms: int = PREDICT_BLOCK_ATOMS
                  ) -> list[StructurePrediction]:
    """Energy, per-atom energies, forces and stress of several structures.

    Parameters
    ----------
    state : FittedState
    frames : list of ase.Atoms
        Checked structures (geometry and species).
    forces : bool
    stress : bool or None
        ``None``: for fully periodic cells.
    keep_gradients : bool
        Build the descriptor derivative arrays (for force uncertainties) instead of
        the cheaper vector-Jacobian product.
    baseline : ase Calculator, optional
        Delta-learning baseline added to every prediction.
    offset : int
        Index of the first frame, for error messages.
    block_atoms : int
        Structures with more atoms whose forces or stress are asked for (without
        ``keep_gradients``) are evaluated in equal blocks of about this many centres
        (:func:`block_count`, :func:`predict_blocked`).

    Returns
    -------
    list of StructurePrediction
    """
    items, blocked = [], {}
    for k, atoms in enumerate(frames):
        periodic = bool(np.all(atoms.get_pbc()))
        st = periodic if stress is None else (stress and periodic)
        if len(atoms) > block_atoms and (forces or st) and not keep_gradients:
            size = -(-len(atoms) // block_count(len(atoms), block_atoms))
            blocked[k] = predict_blocked(state, atoms, forces, st, baseline, offset + k, size)
            continue
        with engine_threads():  # one BLAS cap for the engine calls of this frame
            dsets, vjps = _descriptor_sets(state, atoms, forces, st, keep_gradients, offset + k)
        items.append((atoms, st, dsets, vjps))
    if not items:
        return [blocked[k] for k in range(len(frames))]
    small = _predict_items(state, items, forces, baseline)
    return [blocked[k] if k in blocked else small.pop(0) for k in range(len(frames))]


def _predict_items(state: FittedState, items: list, forces: bool, baseline
                   ) -> list[StructurePrediction]:
    """Predictions of ``(atoms, stress, descriptor sets, vjps)`` items: one kernel product."""
    stacked = [DescriptorSet(q=np.vstack([it[2][t].q for it in items]),
                             numbers=np.concatenate([it[2][t].numbers for it in items]))
               for t in range(len(state.terms))]
    d2 = state.delta ** 2
    need_g = forces or any(it[1] for it in items)
    eps_all, g_all = terms.local_energies_and_gradients(state.terms, stacked, state.alpha,
                                                        gradients=need_g)
    eps_all = _scaled(eps_all, d2)
    outs, start = [], 0
    for atoms, st, dsets, vjps in items:
        n = len(atoms)
        sl = slice(start, start + n)
        start += n
        out, base = _energies(state, atoms, eps_all[sl], dsets, baseline, forces, st)
        outs.append(out)
        if not (forces or st):
            continue
        dE_dr, dE_deta = 0.0, 0.0
        with engine_threads():
            for ds, vjp, g in zip(dsets, vjps, g_all):
                g = g[sl] if d2 == 1.0 else d2 * g[sl]  # d eps_i / d q_i of this term
                r_t, eta_t = vjp(g) if vjp is not None else ds.contract(g, st)
                dE_dr = dE_dr + r_t
                if st:
                    dE_deta = dE_deta + eta_t
        _baseline_and_finish(out, atoms, base, forces, st, dE_dr, dE_deta)
    return outs


def batches(frames: Sequence[Atoms], max_atoms: int) -> list[list[int]]:
    """Consecutive frame indices grouped so that each group has about ``max_atoms``
    atoms (at least one frame per group)."""
    out, cur, n = [], [], 0
    for k, atoms in enumerate(frames):
        cur.append(k)
        n += len(atoms)
        if n >= max_atoms:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out
