"""Reading structures: extxyz (or any ASE format) files, frame lists, the default data.

Before ASE parses an ``.xyz``/``.extxyz`` file, its frame headers are scanned: a
header that claims more atoms than lines follow (a truncated file, or a corrupt
count such as 10**10 atoms in a three-line file) fails at once, naming the frame,
instead of making the reader allocate or wait for data that is not there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms

__all__ = ["read_frames", "as_frame_list", "default_data_dir", "duplicate_frames",
           "equivalent_groups", "EQUIVALENT_ENERGY_TOL"]

#: Energies per atom closer than this (eV/atom) make frames of one composition and
#: periodicity "equivalent" (:func:`equivalent_groups`).
EQUIVALENT_ENERGY_TOL = 1e-7

_XYZ_SUFFIXES = (".xyz", ".extxyz")


def _check_xyz_headers(path: Path) -> None:
    """Raise ``ValueError`` if a frame header of an xyz file claims more atom lines than
    the file has (read line by line: bounded by the file's size)."""
    with open(path, "rb") as fh:
        lines = fh.read().splitlines()
    pos, frame = 0, 0
    while pos < len(lines):
        head = lines[pos].strip()
        if not head:  # blank lines between frames
            pos += 1
            continue
        try:
            n = int(head)
        except ValueError:
            return  # not a plain atom count: let ASE report what it finds
        left = len(lines) - pos - 2
        if n < 0 or n > left:
            raise ValueError(f"'{path}': frame {frame} claims {n} atoms but only {max(left, 0)} "
                             "lines follow. Is the file truncated, or its atom count corrupt?")
        pos += n + 2
        frame += 1


def read_frames(paths: str | os.PathLike | Sequence[str | os.PathLike],
                index: str = ":") -> list[Atoms]:
    """Read structures from one or more extxyz (or any ASE-readable) files.

    Parameters
    ----------
    paths : path or sequence of paths
        Files to read; their frames are concatenated in order.
    index : str
        ASE index string applied to every file.

    Returns
    -------
    list of ase.Atoms
        Each with ``info["_source"] = "file:k"``.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    IsADirectoryError
        If a path is a folder.
    ValueError
        If a file cannot be parsed (for example it is truncated, or a header claims
        more atoms than the file holds) or holds no frames.
    """
    from ase.io import read

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames: list[Atoms] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"'{path}' is a directory, not a structure file: give the "
                                    "extxyz files in it (e.g. DIR/*.xyz)")
        if not path.is_file():
            raise FileNotFoundError(f"No such structure file: '{path}'")
        if path.suffix.lower() in _XYZ_SUFFIXES:
            _check_xyz_headers(path)
        try:
            got = read(str(path), index=index)
        except Exception as exc:  # ASE raises many types for malformed files
            raise ValueError(f"Could not read structures from '{path}': {exc}. "
                             "Is the file truncated or not in extxyz format?") from exc
        got = [got] if isinstance(got, Atoms) else list(got)
        if not got:
            raise ValueError(f"'{path}' contains no structures")
        for k, atoms in enumerate(got):
            atoms.info.setdefault("_source", f"{path.name}:{k}")
        frames.extend(got)
    return frames


def as_frame_list(frames: Atoms | Iterable[Atoms]) -> list[Atoms]:
    """Accept a single :class:`ase.Atoms` or an iterable of them (or a path); reject the rest."""
    if isinstance(frames, Atoms):
        return [frames]
    if isinstance(frames, (str, os.PathLike)):
        return read_frames(frames)
    try:
        out = list(frames)
    except TypeError:
        raise TypeError(f"Expected ase.Atoms or a list of ase.Atoms, got {type(frames).__name__}") from None
    for k, atoms in enumerate(out):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"frame {k}: expected ase.Atoms, got {type(atoms).__name__}")
    if not out:
        raise ValueError("The dataset is empty: no structures were given")
    return out


def _frame_key(atoms: Atoms) -> bytes:
    """Digest of species, positions (to 1e-8 Å), cell and pbc."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update((np.round(atoms.get_positions(), 8) + 0.0).tobytes())
    h.update((np.round(np.asarray(atoms.get_cell()), 8) + 0.0).tobytes())
    h.update(np.asarray(atoms.get_pbc(), dtype=bool).tobytes())
    return h.digest()


def duplicate_frames(frames: Sequence[Atoms]) -> list[tuple[int, int]]:
    """Pairs ``(first, later)`` of frames with the same species, positions, cell and pbc.

    Parameters
    ----------
    frames : sequence of ase.Atoms

    Returns
    -------
    list of (int, int)
        For every repeated frame ``later``, the index ``first`` of its first occurrence
        (positions compared to 1e-8 Å); empty when all frames differ.
    """
    seen: dict[bytes, int] = {}
    out = []
    for k, atoms in enumerate(frames):
        key = _frame_key(atoms)
        if key in seen:
            out.append((seen[key], k))
        else:
            seen[key] = k
    return out


def equivalent_groups(frames: Sequence[Atoms], energies: Sequence) -> np.ndarray:
    """A group index per frame: frames with the same composition and periodicity whose
    reference energies per atom agree within :data:`EQUIVALENT_ENERGY_TOL` are one group.

    Such frames are symmetry-equivalent copies (mlearn Si's strained cells come in
    threes, strained along x, y and z, with energies equal to 1e-8 eV) or repeats; a
    validation split that puts one copy on each side measures a memorised error.

    Parameters
    ----------
    frames : sequence of ase.Atoms
    energies : sequence of float or None
        Reference energies, eV (``None`` or NaN: the frame is a group of its own).

    Returns
    -------
    ndarray of int, shape (n_frames,)
        Group indices ``0 .. n_groups - 1``, numbered in order of first appearance.
    """
    buckets: dict[bytes, list[tuple[float, int]]] = {}
    for k, (atoms, e) in enumerate(zip(frames, energies)):
        if e is not None and np.isfinite(e) and len(atoms):
            key = (np.sort(atoms.numbers).astype(np.int64).tobytes()
                   + np.asarray(atoms.pbc, dtype=np.int8).tobytes())
            buckets.setdefault(key, []).append((float(e) / len(atoms), k))
    head = np.arange(len(frames))  # each frame's group, named by one of its frames
    for items in buckets.values():
        items.sort()
        for (e_prev, k_prev), (e, k) in zip(items, items[1:]):
            if e - e_prev <= EQUIVALENT_ENERGY_TOL:
                head[k] = head[k_prev]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(int(h), len(ids)) for h in head], dtype=np.int64)


def default_data_dir() -> Path:
    """The folder with the project's default data (``train.xyz``, ``test.xyz``,
    ``isolated_atoms.xyz``).

    Looked for in ``$GAPKIT_DATA``, then inside the installed package
    (``gapkit/_data``, what a wheel ships) and then in the source checkout's
    ``data/`` (editable installs).

    Raises
    ------
    FileNotFoundError
        If none of them has ``train.xyz``.
    """
    env = os.environ.get("GAPKIT_DATA")
    here = Path(__file__).resolve().parent  # gapkit/data
    candidates = [Path(env)] if env else []
    candidates += [here.parent / "_data", here.parent.parent / "data"]
    for c in candidates:
        if (c / "train.xyz").is_file():
            return c
    raise FileNotFoundError("Default data not found (looked in "
                            f"{[str(c) for c in candidates]}); set GAPKIT_DATA to a folder "
                            "with train.xyz, or pass training files explicitly")
