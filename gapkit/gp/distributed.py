"""Training rows streamed on a Dask cluster: chains of bounded tasks, tree-merged.

The training frames are cut into chunks of ``chunk_size`` structures and the chunks
into one contiguous share per worker thread ("chain"), each folded into one
:class:`~gapkit.gp.solver.RowAccumulator` chunk after chunk, so a worker holds

    O(M**2) factors and row buffers + one chunk of structures, descriptors and rows

whatever the number of structures. With a frame source a chain is **one task** that
loads, folds and drops its chunks in turn (:func:`_run_chain`): a running task is
never stolen by Dask's work stealing, so the accumulator never moves between workers
(a worker never holds two), and a lost worker's chain is rerun by Dask on another.
Without a source the chunks travel in the tasks, so a chain is a sequence of
``client.submit`` tasks, each depending on the one before: task ``k`` receives the
chain's accumulator and one chunk, folds the chunk's rows in (in place) and returns
the accumulator; only the ready task of a chain is on a worker at a time (work
stealing may move a waiting task, and the accumulator with it). The chains' factors are then merged by a binary
tree of tasks on the workers (O(M**3) each) and the root comes back to the client.
The tree has a fixed shape, so the model is the same on every run and equals the
serial fit to round-off.

What a chunk task carries depends on where the frames came from:

* from a :class:`gapkit.data.sources.FrameSource` (e.g. ``GAP().fit(FileFrames(path),
  client=client)``): the chunk's source indices, the 20-byte digest and the energy of
  each structure and its E0-subtracted energy; the worker loads the structures itself
  (``labels_of`` makes their labels exactly as the client did) and checks them
  against the digests and energies. Nothing of the training set is in the graph.
* otherwise the chunk's ``Atoms`` and labels travel in its task: workers still hold
  one chunk at a time, but the graph (on the scheduler) holds every structure.

:data:`live_chunks` counts the chunks being processed in this process (a test hook
and a measurement for the benchmark: its peak is at most the worker's threads).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from ase import Atoms

from gapkit.data import Labels
from gapkit.data.sources import FrameSource, frame_digest, source_of
from gapkit.gp import solver as gp
from gapkit.gp.streaming import RowSpec, accumulate_chunk, chunk_bounds
from gapkit.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = ["accumulate", "plan_chunks", "live_chunks", "ChunkRef", "ChunkData"]


class _LiveCounter:
    """Thread-safe count of chunks being processed, with its peak and the most
    structures one chunk held."""

    def __init__(self):
        self._lock = threading.Lock()
        self.live = self.peak = self.max_frames = self.done = 0

    def enter(self, n_frames: int) -> None:
        with self._lock:
            self.live += 1
            self.peak = max(self.peak, self.live)
            self.max_frames = max(self.max_frames, int(n_frames))

    def leave(self) -> None:
        with self._lock:
            self.live -= 1
            self.done += 1

    def reset(self) -> None:
        with self._lock:
            self.live = self.peak = self.max_frames = self.done = 0

    def stats(self) -> dict:
        """``{"live", "peak", "max_frames", "done"}`` of this process."""
        with self._lock:
            return {"live": self.live, "peak": self.peak, "max_frames": self.max_frames,
                    "done": self.done}


#: Chunks being processed in this process (see :class:`_LiveCounter`).
live_chunks = _LiveCounter()


@dataclass(frozen=True)
class ChunkRef:
    """A chunk named by its source indices (what a task carries with a source).

    Attributes
    ----------
    offset : int
        Index of the chunk's first structure in the training set (for messages).
    indices : ndarray of int64, shape (n,)
        Source indices of its structures.
    digests : tuple of bytes
        :func:`gapkit.data.sources.frame_digest` of each structure on the client.
    energies : ndarray, shape (n,)
        The client's energy labels (baseline subtracted), eV.
    resid : ndarray, shape (n,)
        Energies minus E0, eV.
    """

    offset: int
    indices: np.ndarray
    digests: tuple
    energies: np.ndarray
    resid: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class ChunkData:
    """A chunk carried in its task: structures, labels and E0-subtracted energies."""

    offset: int
    frames: list
    labels: list
    resid: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def plan_chunks(frames: Sequence[Atoms], labels: Sequence[Labels], resid: np.ndarray,
                chunk_size: int, indices: np.ndarray | None = None) -> list:
    """The chunk payloads of a Dask fit: :class:`ChunkRef` given the frames' source
    ``indices``, :class:`ChunkData` otherwise."""
    resid = np.asarray(resid, dtype=np.float64)
    out = []
    for lo, hi in chunk_bounds(len(frames), int(chunk_size)):
        if indices is None:
            out.append(ChunkData(lo, list(frames[lo:hi]), list(labels[lo:hi]), resid[lo:hi].copy()))
        else:
            out.append(ChunkRef(lo, np.asarray(indices[lo:hi], dtype=np.int64).copy(),
                                tuple(frame_digest(a) for a in frames[lo:hi]),
                                np.array([lab.energy for lab in labels[lo:hi]]), resid[lo:hi].copy()))
    return out


@dataclass
class _Chain:
    """What travels from task to task of one chain: its accumulator and a private
    copy of the row spec (each chain builds its own descriptor engines)."""

    spec: RowSpec
    acc: gp.RowAccumulator


    def __sizeof__(self) -> int:
        """Bytes of the factors and row buffers (what ``dask.sizeof`` reports to the
        worker's memory manager and the scheduler's transfer costs)."""
        arrays = [a for g in self.acc.groups.values() for a in (g.R, g._buf) if a is not None]
        return object.__sizeof__(self) + sum(a.nbytes for a in arrays)


def _start_chain(spec: RowSpec) -> _Chain:
    own = [dataclasses.replace(t, descriptor=copy.deepcopy(t.descriptor)) for t in spec.terms]
    spec = dataclasses.replace(spec, terms=own)
    return _Chain(spec, gp.RowAccumulator(spec.n_columns, block_rows=spec.block_rows))


def _load_chunk(chunk: ChunkRef, source: FrameSource, labels_of: Callable):
    """Structures and labels of ``chunk`` loaded on this worker, checked against the
    client's digests and energies."""
    frames = source.load(chunk.indices)
    for j, (atoms, digest) in enumerate(zip(frames, chunk.digests)):
        if frame_digest(atoms) != digest:
            raise ValueError(f"training frame {chunk.offset + j} (source index "
                             f"{chunk.indices[j]}) loaded on a worker differs from the client's "
                             f"(species, positions, cell or pbc): the source must give the same "
                             f"structures on every process")
    data = labels_of(frames)
    energies = np.array([lab.energy for lab in data.labels])
    bad = ~np.isclose(energies, chunk.energies, rtol=1e-12, atol=1e-12)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"training frame {chunk.offset + j} (source index {chunk.indices[j]}): "
                         f"energy {energies[j]!r} eV on a worker, {chunk.energies[j]!r} eV on "
                         f"the client: the source must give the same labels on every process")
    return data.frames, data.labels


def _add_chunk(chain: _Chain, chunk, source: FrameSource | None = None,
               labels_of: Callable | None = None) -> _Chain:
    """One task of a chain: the chunk's rows folded into the chain's accumulator (in
    place; the structures, descriptors and rows are dropped before it returns)."""
    live_chunks.enter(len(chunk))
    try:
        if isinstance(chunk, ChunkRef):
            frames, labels = _load_chunk(chunk, source, labels_of)
        else:
            frames, labels = chunk.frames, chunk.labels
        accumulate_chunk(chain.spec, frames, labels, chunk.resid, chunk.offset, acc=chain.acc)
        del frames, labels
    finally:
        live_chunks.leave()
    return chain


def _run_chain(spec: RowSpec, chunks: Sequence[ChunkRef], source: FrameSource,
               labels_of: Callable) -> _Chain:
    """A whole chain in one task: its chunks loaded from ``source``, folded in turn
    into a new accumulator and dropped (one chunk in memory at a time)."""
    chain = _start_chain(spec)
    for chunk in chunks:
        _add_chunk(chain, chunk, source, labels_of)
    return chain


def _merge(a: _Chain, b: _Chain) -> _Chain:
    a.acc.merge(b.acc)
    return a


def _finish(chain: _Chain) -> gp.RowAccumulator:
    """The root's accumulator, finalised (sent as an object: Dask would turn the
    :class:`NoiseGroup` keys of a plain dict into tuples)."""
    chain.acc.finalize()
    return chain.acc


def _tick(chain: _Chain) -> None:
    """A no-op on a chain's state (the progress bar counts these)."""


def accumulate(client, spec: RowSpec, frames: Sequence[Atoms], labels: Sequence[Labels],
               resid: np.ndarray, labels_of: Callable | None = None, chunk_size: int = 32,
               n_chains: int | None = None, progress: bool | None = False,
               start: dict[str, gp.RowGroup] | None = None) -> dict[str, gp.RowGroup]:
    """Per-group triangular factors of all training rows, streamed on a Dask cluster.

    Parameters
    ----------
    client : dask.distributed.Client
    spec : RowSpec
    frames, labels, resid
        Training structures, their labels and E0-subtracted energies (eV), as on the
        client.
    labels_of : callable, optional
        ``labels_of(frames) -> obj`` with ``obj.frames`` and ``obj.labels``: how the
        client made ``labels`` from raw structures (picklable). Needed for frames
        taken from a :class:`~gapkit.data.sources.FrameSource`, which are then loaded
        on the workers; without it (or for other frames) the chunks travel in the tasks.
    chunk_size : int
        Structures per task.
    n_chains : int, optional
        Chains of tasks; default: the cluster's worker threads.
    progress : bool or None
        Progress bar over the chunks.
    start : dict of RowGroup, optional
        Factors of earlier rows to merge the result into (consumed).

    Returns
    -------
    dict of RowGroup
    """
    info = client.scheduler_info().get("workers", {})
    workers = sorted(info)
    threads = sum(int(w.get("nthreads", 1)) for w in info.values()) or 1
    found = source_of(frames) if labels_of is not None else None
    source, indices = found if found is not None else (None, None)
    chunks = plan_chunks(frames, labels, resid, chunk_size, indices)
    n_chains = max(1, min(int(n_chains or threads), len(chunks)))
    logger.info("Dask fit: %d chunks of <= %d structures in %d chains (%s)", len(chunks),
                chunk_size, n_chains, "loaded on the workers from " + type(source).__name__
                if source is not None else "structures sent in the tasks")
    spec_f = client.scatter(spec, broadcast=True)
    extra = ()
    if source is not None:
        extra = tuple(client.scatter([source, labels_of], broadcast=True))
    ticks, tails = [], []  # ticks: (future, chunks it stands for)
    for c, share in enumerate(np.array_split(np.arange(len(chunks)), n_chains)):
        where = dict(workers=[workers[c % len(workers)]], allow_other_workers=True) if workers else {}
        if source is not None:  # one task per chain: never stolen half-way
            state = client.submit(_run_chain, spec_f, [chunks[k] for k in share], *extra,
                                  pure=False, **where)
            if progress is not False:
                ticks.append((client.submit(_tick, state, pure=False), len(share)))
        else:
            state = client.submit(_start_chain, spec_f, pure=False, **where)
            for k in share:
                state = client.submit(_add_chunk, state, chunks[k], pure=False)
                if progress is not False:
                    ticks.append((client.submit(_tick, state, pure=False), 1))
        tails.append(state)
        del state  # only the tail is held: finished accumulators are released
    while len(tails) > 1:  # fixed-shape binary tree: deterministic merge order
        tails = [client.submit(_merge, tails[i], tails[i + 1], pure=False)
                 if i + 1 < len(tails) else tails[i] for i in range(0, len(tails), 2)]
    root = client.submit(_finish, tails[0], pure=False)
    del tails
    if ticks:
        from dask.distributed import as_completed

        bar = progress_bar(total=len(chunks), desc="fit chunks", unit="chunk", progress=progress)
        weight = {fut.key: n for fut, n in ticks}
        for fut in as_completed([fut for fut, _ in ticks], loop=client.loop):
            fut.result()  # raises a task's error here
            bar.update(weight[fut.key])
        bar.close()
        del ticks
    total = gp.RowAccumulator(spec.n_columns, block_rows=spec.block_rows)
    total.groups = dict(start) if start else {}
    total.merge(root.result())
    return total.finalize()
