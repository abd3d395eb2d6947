"""Streaming the training rows into triangular factors: serial, threads, or Dask.

The training set is cut into chunks of structures. For each chunk the descriptors
(with their derivatives), the design rows of energies, forces and virials, and a
:class:`gapkit.gp.RowAccumulator` are built, and only the per-group triangular
factors ``R~_g`` of shape ``(M+1, M+1)`` leave the chunk; descriptor derivatives and
rows are dropped as soon as they are folded in. Factors from different chunks (or
workers) are merged by a QR of the stacked triangles, so

* peak memory is O(M**2 + chunk) per worker, whatever the number of structures;
* the result equals the one-shot QR of all rows up to round-off (the R factor of
  a matrix is unique up to row signs);
* the map (chunks) and the reduce (pairwise merges) parallelise naturally:
  ``n_jobs`` threads on one machine (BLAS capped at one thread each) here, chains of
  bounded tasks on a Dask cluster in :mod:`gapkit.gp.distributed`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import numbers
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import scipy.linalg as sla
from ase import Atoms
from scipy.linalg.lapack import dormqr
from threadpoolctl import threadpool_limits

from gapkit.gp import solver as gp
from gapkit.gp import terms
from gapkit.data import Labels
from gapkit.progress import progress_bar

logger = logging.getLogger(__name__)


class NoiseGroup(NamedTuple):
    """A group of training rows that shares one noise: a label kind, optionally per
    ``config_type``.

    Attributes
    ----------
    kind : {"energy", "forces", "virial"}
    config_type : str or None
        ``None`` when the noise is shared by every ``config_type``.
    """

    kind: str
    config_type: str | None = None

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """Text form for files and logs: ``"forces"`` or ``"forces:<config_type>"``."""
        return self.kind if self.config_type is None else f"{self.kind}:{self.config_type}"

    @classmethod
    def from_label(cls, text: str) -> "NoiseGroup":
        """Inverse of :attr:`label` (used when reading model files)."""
        kind, sep, config_type = str(text).partition(":")
        if kind not in ("energy", "forces", "virial"):
            raise ValueError(f"unknown noise group {text!r} (expected energy, forces or virial)")
        return cls(kind, config_type if sep else None)


@dataclass
class RowSpec:
    """Everything a worker needs to turn structures into training rows.

    Attributes
    ----------
    terms : list of gapkit.terms.FittedTerm
        The kernel terms: fitted descriptors with their sparse sets.
    noise_by_config_type : bool
        Group rows by ``(kind, config_type)`` instead of by kind.
    block_rows : int or None
        Rows buffered per group before a QR update.
    """

    terms: list
    noise_by_config_type: bool = False
    block_rows: int | None = None

    @property
    def n_columns(self) -> int:
        return terms.n_columns(self.terms)

    def group(self, kind: str, config_type: str) -> NoiseGroup:
        return NoiseGroup(kind, config_type if self.noise_by_config_type else None)


def accumulate_chunk(spec: RowSpec, frames: Sequence[Atoms], labels: Sequence[Labels],
                     resid: Sequence[float], offset: int = 0,
                     acc: gp.RowAccumulator | None = None) -> gp.RowAccumulator:
    """Rows of a chunk of structures folded into an accumulator.

    Parameters
    ----------
    spec : RowSpec
    frames, labels : sequences of equal length
    resid : sequence of float
        Training energies minus E0, eV.
    offset : int
        Index of the first frame in the whole training set (for error messages).
    acc : RowAccumulator, optional
        Add to this accumulator (serial streaming); a new one is made (and finalised)
        otherwise.
    """
    own = acc is None
    if own:
        acc = gp.RowAccumulator(spec.n_columns, block_rows=spec.block_rows)
    for k, (atoms, lab, e) in enumerate(zip(frames, labels, resid)):
        use_virial = lab.virial is not None
        use_forces = lab.forces is not None
        dsets = terms.compute(spec.terms, atoms, gradients=use_forces or use_virial,
                              strain=use_virial, index=offset + k)
        rows = terms.design_rows(spec.terms, dsets, forces=use_forces, virial=use_virial)
        n = len(atoms)
        acc.add(spec.group("energy", lab.config_type), rows["energy"], [e], 1.0 / n)
        if use_forces:
            group = spec.group("forces", lab.config_type)
            K, y, null = invariant_force_rows(atoms, rows["forces"], lab.forces.reshape(-1))
            acc.add(group, K, y, 1.0)
            if null is not None:
                acc.add_null(group, *null)
        if use_virial:
            acc.add(spec.group("virial", lab.config_type), rows["virial"], lab.virial.reshape(-1),
                    1.0 / n)
    if own:
        acc.finalize()
    return acc


#: Largest ``|null rows| / |force rows|`` (max norms) taken as round-off: the design is
#: invariant and the null rows are dropped.
NULL_RTOL = 1e-9


def invariant_force_rows(atoms: Atoms, K: np.ndarray, y: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, tuple[float, int] | None]:
    """The force rows of one structure without their null part.

    The energy is invariant under translations (and, without periodic directions,
    rotations), so the ``3 n`` force rows ``K`` (rows ``3 j + a``) are orthogonal to the
    ``r`` (3 to 6) vectors of those motions: in the orthonormal basis of the Householder
    QR ``Q`` of those vectors, ``Q^T [K | y]`` has ``r`` rows ``[0 | t]`` (the net force
    and torque of the targets) and ``3 n - r`` full rows. The factor of the full rows
    plus ``sum t**2`` in the residual (:meth:`gapkit.gp.solver.RowAccumulator.add_null`)
    is that of all ``3 n`` rows (``Q`` is orthogonal): the same fit, with ``r / 3 n``
    fewer rows in the QR (22 % for ethanol), for ``4 r (3 n) M`` flops of
    reflections against the QR's ``2 r M**2``.

    Parameters
    ----------
    atoms : ase.Atoms
    K : ndarray of shape (3 n, M)
        Force design rows (unit weight).
    y : ndarray of shape (3 n,)
        Force targets, eV/Å.

    Returns
    -------
    (K', y', (sum t**2, r)) or (K, y, None)
        Unchanged (``None``) when the reflections would not pay (``6 n >= M``) or the
        rows are not invariant to :data:`NULL_RTOL` (a descriptor without the symmetry).
    """
    n, M = len(atoms), K.shape[1]
    if n < 3 or 6 * n >= M:
        return K, y, None
    motions = [np.tile(np.eye(3), (n, 1))]
    if not np.any(atoms.pbc):
        r = atoms.positions - atoms.positions.mean(axis=0)
        motions.append(np.stack([np.cross(e, r).reshape(-1) for e in np.eye(3)], axis=1))
    (h, tau), Rn, _ = sla.qr(np.hstack(motions), mode="raw", pivoting=True)
    d = np.abs(np.diag(Rn))
    rank = int(np.sum(d > d[0] * 1e-8))
    X = np.empty((3 * n, M + 1), order="F")
    X[:, :M], X[:, M] = K, y
    X, _, info = dormqr("L", "T", h[:, :rank], tau[:rank], X, max(1, 64 * (M + 1)),
                        overwrite_c=1)
    if info != 0 or np.max(np.abs(X[:rank, :M])) > NULL_RTOL * max(np.max(np.abs(K)), 1e-300):
        return K, y, None
    return X[rank:, :M], X[rank:, M], (float(np.sum(X[:rank, M] ** 2)), rank)


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` of consecutive chunks of ``size`` items covering ``range(n)``."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_threads(n_jobs: int | None, n_chunks: int) -> int:
    """Worker threads of a fit: ``n_jobs`` (``None``: every usable core; ``-1``: all
    cores, ``-2`` all but one, as joblib), never more than the chunks.

    Raises
    ------
    ValueError
        For ``n_jobs`` 0 or not an integer.
    """
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral)
                               or n_jobs == 0):
        raise ValueError(f"n_jobs must be a non-zero integer or None (every core), got {n_jobs!r}")
    cores = usable_cores()
    n = cores if n_jobs is None else (int(n_jobs) if n_jobs > 0 else max(1, cores + 1 + n_jobs))
    return max(1, min(n, n_chunks))


def fit_blas_limits(n_jobs: int | None):
    """Context of a whole fit: BLAS capped at one thread when the fit runs on several
    threads (the default; the cores are used by the row stream), so the serial parts
    (CUR eigenpairs, solves, calibration) never run a multi-threaded BLAS against those
    threads or a loaded machine (2 OpenBLAS threads made a 30-frame fit 7x slower in
    CPU time on a loaded 2-core machine); a no-op for ``n_jobs=1``, which keeps the
    process's BLAS threads."""
    if resolve_threads(n_jobs, 2) > 1:
        return threadpool_limits(limits=1)
    return contextlib.nullcontext()


#: Smallest matrix order of a dense phase run with BLAS on several threads, from the
#: environment variable ``GAPKIT_DENSE_BLAS_MIN`` (e.g. 1500); unset: never. Off by
#: default: on the loaded 2-core development machine (load average 12) two OpenBLAS
#: threads made the solves of a 1000-frame fit take 5x the CPU and 9x the wall time
#: of one thread (their many small calls wait on a descheduled thread), and a 30-frame
#: fit (M = 260) used 5x the CPU. Whether they help on an idle machine is measured by
#: ``benchmarks/fit_threads.py --configs serial-1blas,threads-2,threads-2-dense2``.
DENSE_ENV = "GAPKIT_DENSE_BLAS_MIN"


def _dense_on_blas(size: int) -> bool:
    """Whether a dense phase of order ``size`` runs on BLAS threads (``size`` at least
    :data:`DENSE_ENV`'s value; unset: never)."""
    least = os.environ.get(DENSE_ENV, "").strip()
    return bool(least) and size >= int(least)


def dense_blas(n_jobs: int | None, size: int):
    """Context of a dense phase of a fit that runs alone (the CUR eigenpairs, the
    solves, the factors of the variance basis) on matrices of order ``size``: BLAS on
    the fit's threads when it runs on several (inside :func:`fit_blas_limits`) and
    ``size`` is at least :data:`DENSE_ENV`'s value; a no-op otherwise (the default)
    and for ``n_jobs=1``. Nothing else may run BLAS meanwhile (the limit is
    process-wide)."""
    threads = resolve_threads(n_jobs, usable_cores())
    if threads > 1 and _dense_on_blas(size):
        return threadpool_limits(limits=threads)
    return contextlib.nullcontext()


def dense_threads(n_jobs: int | None, size: int) -> int:
    """Threads of gapkit's own split of a dense phase that runs alone (the QR of the
    stacked triangles of the solve, :func:`gapkit.gp.lapack.tpqrt_threads`; the
    column blocks of :func:`gapkit.gp.lapack.lower_solve_lower`), each on one BLAS
    thread: the fit's threads (:func:`resolve_threads` of ``n_jobs`` over the usable
    cores), or 1 when :func:`dense_blas` runs that phase on BLAS threads instead (for
    ``size`` at least :data:`DENSE_ENV`'s value) or for ``n_jobs=1``. The results do not
    depend on it."""
    return 1 if _dense_on_blas(size) else resolve_threads(n_jobs, usable_cores())


class SideTasks:
    """Work of a fit that needs no training rows (``K_MM`` and its factor, the
    variance basis), run on one more thread while the rows stream when the fit runs
    on several threads (BLAS at one thread, as the stream's); at once, in the calling
    thread, for ``n_jobs=1``. Either way the results are the same: each task is
    deterministic. Use as a context manager; :meth:`submit` returns a future."""

    def __init__(self, n_jobs: int | None):
        self._pool = ThreadPoolExecutor(1) if resolve_threads(n_jobs, 2) > 1 else None

    def submit(self, fn, *args) -> Future:
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def __enter__(self) -> "SideTasks":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def limit_fit_blas(fit):
    """Decorator of a fit function ``fit(est, ...)``: runs it inside
    :func:`fit_blas_limits` of ``est.n_jobs``."""
    @functools.wraps(fit)
    def wrapper(est, *args, **kwargs):
        with fit_blas_limits(getattr(est, "n_jobs", None)):
            return fit(est, *args, **kwargs)
    return wrapper


def _own_spec(spec: RowSpec) -> RowSpec:
    """``spec`` with private copies of the descriptors (each thread builds its own
    engine and scratch buffers; the sparse sets are shared, read only)."""
    own = [dataclasses.replace(t, descriptor=copy.deepcopy(t.descriptor)) for t in spec.terms]
    return dataclasses.replace(spec, terms=own)


def accumulate(spec: RowSpec, frames: Sequence[Atoms], labels: Sequence[Labels],
               resid: np.ndarray, chunk_size: int = 32, n_jobs: int | None = None,
               progress: bool | None = False,
               start: dict[str, gp.RowGroup] | None = None) -> dict[str, gp.RowGroup]:
    """Per-group triangular factors of all training rows.

    Parameters
    ----------
    spec : RowSpec
    frames, labels, resid
        Training structures, their labels and E0-subtracted energies (eV).
    chunk_size : int
        Structures per chunk.
    n_jobs : int, optional
        Threads on this machine, each streaming a contiguous share of the chunks into
        its own accumulator with BLAS capped at one thread (the descriptor engines,
        design rows and QR updates release the GIL); the factors are then merged.
        ``None`` (default): every usable core; ``1``: serial, with the process's BLAS
        threads; ``-1``: all cores. The split depends only on ``n_jobs`` and the data,
        so a fit is reproducible for a given ``n_jobs`` (and equal to the serial one
        to round-off).
    progress : bool or None
        Show a progress bar over the chunks (``None``: decide from the terminal; see
        :func:`gapkit.progress.progress_bar`).
    start : dict of :class:`gapkit.gp.RowGroup`, optional
        Factors of earlier rows (same columns) to continue from: the rows of
        ``frames`` are folded into them, so no merge of a separate factor is needed.
        They are consumed (updated in place).

    Returns
    -------
    dict of :class:`gapkit.gp.RowGroup`
        With ``start``: the factors of its rows and those of ``frames``.
    """
    n = len(frames)
    bounds = chunk_bounds(n, int(chunk_size))
    total = gp.RowAccumulator(spec.n_columns, block_rows=spec.block_rows)
    seed = dict(start) if start else {}

    def args(lo, hi):
        return spec, list(frames[lo:hi]), list(labels[lo:hi]), list(resid[lo:hi]), lo

    threads = resolve_threads(n_jobs, len(bounds))
    bar = progress_bar(total=len(bounds), desc="fit chunks", unit="chunk", progress=progress)
    if threads == 1:
        # serial: stream chunk after chunk into one accumulator
        total.groups = seed
        for lo, hi in bounds:
            accumulate_chunk(*args(lo, hi), acc=total)
            bar.update(1)
        bar.close()
        return total.finalize()

    # threads: contiguous shares of the chunks (deterministic), one accumulator each
    shares = np.array_split(np.arange(len(bounds)), threads)
    lock = threading.Lock()

    def work(share):
        own = _own_spec(spec)
        acc = gp.RowAccumulator(spec.n_columns, block_rows=spec.block_rows)
        if share is shares[0]:  # the first share continues from ``start`` (merged for free)
            acc.groups = seed
        for c in share:
            lo, hi = bounds[c]
            accumulate_chunk(own, *args(lo, hi)[1:], acc=acc)
            with lock:
                bar.update(1)
        acc.finalize()
        return acc

    with threadpool_limits(limits=1), ThreadPoolExecutor(threads) as pool:
        accs = list(pool.map(work, shares))
        # each group's factors merged in share order, the groups on the pool's threads
        names = list(dict.fromkeys(name for acc in accs for name in acc.groups))
        merged = pool.map(lambda name: _merge_group([a.groups[name] for a in accs
                                                      if name in a.groups]), names)
        total.groups = dict(zip(names, merged))
    bar.close()
    return total.finalize()


def _merge_group(parts: list) -> gp.RowGroup:
    """One :class:`gapkit.gp.RowGroup` of the rows of ``parts`` (consumed), merged in
    order by QRs of the stacked triangles."""
    out = parts[0]
    for g in parts[1:]:
        out.absorb(g)
    return out

