"""Per-pair neighbour data of a block of SOAP centres (:class:`_Environment`, internal).

Built by :meth:`~gapkit.descriptors.soap_engine.SOAPEngine._environment` from one
neighbour list; :meth:`_Environment.block` gives the environment of a block of
centres as views of the pair arrays, so that blocks can be evaluated one after the
other or in parallel threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Environment:
    """Neighbour data and per-pair expansion terms of a block of centres (internal).

    The centres are atoms ``offset .. offset + n_centres - 1`` of a structure of
    ``n_atoms``; their P neighbour pairs are sorted by *segment* ``seg = (i -
    offset) * n_species + s`` (centre, neighbour species), so the pairs of centre
    ``c`` are ``starts[c]:starts[c + 1]``; ``slot`` is the position of a pair inside
    its segment (for zero-padded ``(n_seg, kmax, ...)`` blocks, strain derivatives).
    """

    n_atoms: int
    numbers: np.ndarray  # (n_centres,)
    centre_species: np.ndarray  # (n_centres,) species index of every centre
    i: np.ndarray  # (P,) centre of every neighbour pair (atom index)
    j: np.ndarray  # (P,) neighbour atom index
    s: np.ndarray  # (P,) species index of the neighbour
    D: np.ndarray  # (P, 3) r_j + shift - r_i
    r2: np.ndarray  # (P,)
    w: np.ndarray  # (P,) cutoff weight
    wq: np.ndarray  # (P,) w'(r) / r
    seg: np.ndarray  # (P,) (i - offset) * n_species + s, non-decreasing
    slot: np.ndarray  # (P,) index of the pair inside its segment
    starts: np.ndarray  # (n_centres + 1,) pair range of every centre
    n_seg: int  # n_centres * n_species
    kmax: int  # largest segment
    offset: int = 0  # first centre
    R: np.ndarray | None = None  # (P, l_max + 1, n_max)
    Rq: np.ndarray | None = None  # (P, l_max + 1, n_max), (dR/dr) / r
    S: np.ndarray | None = None  # (P, nlm)
    dS: np.ndarray | None = None  # (P, 3, nlm), only for the derivative arrays
    c: np.ndarray | None = None  # (n_centres, n_species, n_max, nlm)
    pad: dict = field(default_factory=dict)  # cached padded blocks

    @property
    def n_centres(self) -> int:
        return len(self.numbers)

    def padded(self, name: str, values: np.ndarray) -> np.ndarray:
        """Zero-padded copy ``(n_seg, kmax) + values.shape[1:]`` of a per-pair array."""
        out = self.pad.get(name)
        if out is None:
            out = np.zeros((self.n_seg, self.kmax) + values.shape[1:])
            out[self.seg, self.slot] = values
            self.pad[name] = out
        return out

    def block(self, a0: int, a1: int, n_species: int) -> _Environment:
        """The environment of centres ``a0 .. a1 - 1`` (views of the pair arrays)."""
        p0, p1 = int(self.starts[a0]), int(self.starts[a1])
        sl = slice(p0, p1)
        seg = self.seg[sl] - a0 * n_species
        counts = np.bincount(seg, minlength=(a1 - a0) * n_species) if p1 > p0 else None
        return _Environment(
            n_atoms=self.n_atoms, numbers=self.numbers[a0:a1],
            centre_species=self.centre_species[a0:a1], i=self.i[sl], j=self.j[sl],
            s=self.s[sl], D=self.D[sl], r2=self.r2[sl], w=self.w[sl], wq=self.wq[sl],
            seg=seg, slot=self.slot[sl], starts=self.starts[a0:a1 + 1] - p0,
            n_seg=(a1 - a0) * n_species, kmax=int(counts.max()) if counts is not None else 0,
            offset=self.offset + a0)
