"""Frame sources: training structures that a cluster worker can load by index.

A :class:`FrameSource` is a list of labelled structures that is cheap to send: it
pickles as a recipe (a file path with byte offsets, or a function and its arguments),
never as the structures. Iterating it on the client loads every structure once and
keeps them (the fit's checks, E0 and sparse selection need them there); a Dask fit of
those frames (:mod:`gapkit.gp.distributed`) then sends each task only the indices of
its chunk, and the worker loads the chunk itself with :meth:`FrameSource.load`::

    source = FileFrames("train.xyz")                 # or GeneratedFrames(make, n, seed=0)
    model = GAP().fit(source, client=client)

:func:`source_of` finds the source a list of frames was taken from (by identity of the
``Atoms`` objects; no marker is written into them).
"""

from __future__ import annotations

import io
import os
import weakref
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from ase import Atoms

from gapkit.data.reading import _check_xyz_headers, _frame_key

__all__ = ["FrameSource", "FileFrames", "GeneratedFrames", "frame_digest", "source_of"]

#: Sources that hold frames on this process (searched by :func:`source_of`).
_LIVE_SOURCES: "weakref.WeakSet[FrameSource]" = weakref.WeakSet()


def frame_digest(atoms: Atoms) -> bytes:
    """20-byte digest of species, positions (to 1e-8 Å), cell and pbc: what a worker
    compares to make sure it loaded the structure the client fitted."""
    return _frame_key(atoms)


class FrameSource:
    """Base class: ``len(source)`` labelled structures, loadable by index anywhere.

    Subclasses implement :meth:`__len__` and :meth:`load`; structure ``k`` must be the
    same on every process (same positions, cell and labels).
    """

    _frames: list | None = None
    _pos: dict | None = None

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, indices: Sequence[int]) -> list[Atoms]:
        """Fresh copies of the structures ``indices`` (not the ones kept by iteration).

        Parameters
        ----------
        indices : sequence of int
            In ``[0, len(self))``.

        Returns
        -------
        list of ase.Atoms
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"frame indices {idx.min()}..{idx.max()} outside a source of "
                             f"{len(self)} frames")
        return idx

    def frames(self) -> list[Atoms]:
        """All structures, loaded once on this process and kept (the same objects on
        every call)."""
        if self._frames is None:
            self.attach(self.load(range(len(self))))
        return self._frames

    def attach(self, frames: Sequence[Atoms]) -> None:
        """Adopt ``frames`` as this source's structures on this process (made elsewhere,
        e.g. gathered from a cluster) instead of loading them. Workers check every
        structure they load against the digest of the client's one, so frames that
        differ from what :meth:`load` gives fail the fit with a clear error.

        Raises
        ------
        ValueError
            If the number of frames differs from ``len(self)``.
        """
        frames = list(frames)
        if len(frames) != len(self):
            raise ValueError(f"{len(frames)} frames given to a source of {len(self)}")
        self._frames = frames
        self._pos = {id(a): k for k, a in enumerate(frames)}
        _LIVE_SOURCES.add(self)

    def index_of(self, frames: Sequence[Atoms]) -> np.ndarray | None:
        """Source indices of ``frames`` (objects kept by this source), or ``None`` if any
        of them is not one."""
        if self._pos is None:
            return None
        out = np.empty(len(frames), dtype=np.int64)
        for j, a in enumerate(frames):
            k = self._pos.get(id(a))
            if k is None or self._frames[k] is not a:
                return None
            out[j] = k
        return out

    def __iter__(self):
        return iter(self.frames())

    def __getitem__(self, k):
        return self.frames()[k]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_frames", None)  # the recipe travels, never the structures
        state.pop("_pos", None)
        return state


def source_of(frames: Sequence[Atoms]) -> tuple[FrameSource, np.ndarray] | None:
    """The source ``frames`` were all taken from and their indices in it, or ``None``."""
    if not len(frames):
        return None
    for src in list(_LIVE_SOURCES):
        idx = src.index_of(frames)
        if idx is not None:
            return src, idx
    return None


class FileFrames(FrameSource):
    """The frames of one extxyz file, read by byte offset (a worker reads only its
    chunk's lines; the file must be readable at the same path on every worker).

    Parameters
    ----------
    path : path-like
        An extxyz file, as :func:`gapkit.data.read_frames` reads it (each frame gets
        ``info["_source"] = "<name>:<k>"``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it holds no frames or a header claims more atoms than lines follow.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"No such structure file: '{self.path}'")
        _check_xyz_headers(self.path)
        self.offsets = self._scan()
        if len(self.offsets) < 2:
            raise ValueError(f"'{self.path}' contains no structures")

    def _scan(self) -> np.ndarray:
        """Byte offset of every frame header, and of the end of the file."""
        offsets, pos = [], 0
        with open(self.path, "rb") as fh:
            while True:
                line = fh.readline()
                if not line:
                    break
                if line.strip():
                    offsets.append(pos)
                    try:
                        n = int(line)
                    except ValueError:
                        raise ValueError(f"'{self.path}': frame {len(offsets) - 1} does not start "
                                         f"with an atom count (got {line[:40]!r}): not extxyz") from None
                    for _ in range(n + 1):
                        fh.readline()
                pos = fh.tell()
        offsets.append(pos)
        return np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def load(self, indices: Sequence[int]) -> list[Atoms]:
        from ase.io import read

        out = []
        with open(self.path, "rb") as fh:
            for k in self._check_indices(indices):
                fh.seek(self.offsets[k])
                text = fh.read(int(self.offsets[k + 1] - self.offsets[k])).decode()
                atoms = read(io.StringIO(text), format="extxyz", index=0)
                atoms.info.setdefault("_source", f"{self.path.name}:{k}")
                out.append(atoms)
        return out


class GeneratedFrames(FrameSource):
    """Structures made by a function of their index (e.g. from a seed), on whichever
    process needs them.

    Parameters
    ----------
    make : callable
        ``make(k, **kwargs) -> ase.Atoms``, labelled (a calculator with energy, forces,
        stress, or info/arrays keys); deterministic in ``k`` and ``kwargs``. It must be
        importable (or picklable by value) on the workers.
    n : int
        Number of structures.
    **kwargs
        Passed to ``make``.
    """

    def __init__(self, make: Callable[..., Atoms], n: int, **kwargs):
        if not callable(make):
            raise TypeError(f"make must be callable, got {type(make).__name__}")
        if int(n) < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.make, self.n, self.kwargs = make, int(n), kwargs

    def __len__(self) -> int:
        return self.n

    def load(self, indices: Sequence[int]) -> list[Atoms]:
        return [self.make(int(k), **self.kwargs) for k in self._check_indices(indices)]
