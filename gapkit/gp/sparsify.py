"""Choosing the representative ("sparse") environments, per species.

* ``"cur"``: leverage-score CUR column selection (Mahoney & Drineas, PNAS 2009), as
  in QUIP's ``sparse_method=cur_points``: sample without replacement with
  probability proportional to the statistical leverage of each environment in the
  top-k singular subspace of the descriptor matrix.
* ``"random"``: uniform without replacement.
* ``"fps"``: farthest-point sampling in descriptor space (greedy max-min distance).

Randomness comes only from ``random_state``.

A sparse set never holds the same environment twice: :func:`select` picks among the
distinct rows only; :func:`select_from_frames` leaves out the environments of frames
that repeat an earlier frame (:func:`gapkit.data.duplicate_frames`) before choosing,
and drops any chosen environment equal (to 1e-10 in every component) to another of
the same species afterwards (the equivalent atoms of a symmetric cell), so a species
may get fewer points than asked for.

:func:`select_from_frames` does the same per species while streaming over the
structures, so that the descriptors of all environments are never held at once:
``"random"`` draws indices from the atomic numbers alone; ``"cur"`` folds each
species' environments into a :class:`GramSketch` in a first pass (the exact (F, F)
Gram matrix by in-place BLAS ``syrk`` when ``k`` is not small against F, otherwise a
randomized single-pass Nyström sketch of width ``2 k + 10``), takes its top-k
eigenpairs and scores every environment in a second pass; only the chosen
environments' descriptors are kept (a third pass). Memory is at most O(F**2 + M F +
n_env floats) per species (O(F k) for a sketched one), whatever the number of
structures. Species with no more
environments than wanted take them all without scoring; a species whose
descriptors fit in ``memory_budget`` (default: the size of its Gram matrix) is kept
and scored exactly in memory. ``"fps"`` needs
all pairwise distances and keeps the descriptors.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import scipy.linalg as sla
from scipy.linalg.blas import dsyrk
from sklearn.utils import check_random_state

from gapkit.data import duplicate_frames
from gapkit.gp import streaming
from gapkit.progress import progress_bar
from gapkit.utils import ordered_map

METHODS = ("cur", "random", "fps")
#: Rows per streamed Gram update (one BLAS syrk) and per leverage-score batch.
FOLD_ROWS = 512
#: Extra columns of a randomized Gram sketch beyond 2 k.
SKETCH_OVERSAMPLE = 10
#: Environments whose descriptors agree to this many decimals are the same.
_DECIMALS = 10


def distinct_rows(Q: np.ndarray) -> np.ndarray:
    """Sorted indices of the first occurrence of every distinct row of ``Q`` (rows equal
    to 1e-10 in every component count as one)."""
    if len(Q) == 0:
        return np.zeros(0, dtype=int)
    # hashes of the rounded rows' bytes (``np.unique(axis=0)`` sorts a structured
    # dtype with one field per feature: seconds for a few thousand rows of F = 2000)
    R = np.ascontiguousarray(np.round(Q, _DECIMALS) + 0.0)
    buckets: dict[int, list[int]] = {}
    first = []
    for i in range(len(R)):
        same = buckets.setdefault(hash(R[i].tobytes()), [])
        if not any(np.array_equal(R[j], R[i]) for j in same):
            same.append(i)
            first.append(i)
    return np.array(first, dtype=int)


def select(Q: np.ndarray, n: int, method: str = "cur", random_state=None) -> np.ndarray:
    """Indices of ``n`` representative rows of ``Q``.

    Parameters
    ----------
    Q : ndarray of shape (n_env, n_features)
        Descriptors of one species.
    n : int
        How many to select; all are returned when ``n >= n_env``.
    method : {"cur", "random", "fps"}
    random_state : int, RandomState or None

    Returns
    -------
    ndarray of int, shape (min(n, n_distinct),), sorted.
        Indices of distinct rows only (the first of equal rows).
    """
    if method not in METHODS:
        raise ValueError(f"sparse method must be one of {METHODS}, got '{method}'")
    if n <= 0:
        raise ValueError(f"the number of sparse points must be positive, got {n}")
    if Q.shape[1]:
        keep = distinct_rows(Q)
        if len(keep) < len(Q):
            return keep[_select(Q[keep], n, method, random_state)]
    return _select(Q, n, method, random_state)


def _select(Q: np.ndarray, n: int, method: str, random_state) -> np.ndarray:
    n_env = Q.shape[0]
    if n >= n_env:
        return np.arange(n_env)
    rng = check_random_state(random_state)
    if method == "random":
        return np.sort(rng.choice(n_env, size=n, replace=False))
    if method == "fps":
        return np.sort(_fps(Q, n, rng))
    return np.sort(_cur(Q, n, rng))


def _cur(Q: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """Leverage-score sampling of ``n`` rows of ``Q`` (n_env, F).

    The leverage of row i is ``sum_{j<k} U_ij**2`` for the top-k left singular vectors
    U of Q. They come from the top eigenvectors of the smaller Gram matrix, ``Q Q^T``
    (n_env <= F) or ``Q^T Q`` (otherwise), so the extra memory is min(n_env, F)**2
    floats instead of an SVD's workspace.
    """
    n_env, F = Q.shape
    if n_env <= F:
        k_max = max(1, min(n, n_env - 1))
        w, U = sla.eigh(Q @ Q.T, overwrite_a=True, check_finite=False,
                        subset_by_index=[n_env - k_max, n_env - 1])
        w, U = w[::-1], U[:, ::-1]
        k = max(1, min(k_max, int(np.sum(w > max(w[0], 0.0) * 1e-12))))
        lev = np.sum(U[:, :k] ** 2, axis=1)
    else:
        lev = _leverage(Q, _leverage_basis(np.asfortranarray(Q.T @ Q), n, n_env))
    return _sample_by_leverage(lev, n, rng)


def _leverage_basis(gram: np.ndarray, n: int, n_env: int) -> np.ndarray:
    """``V_k / s_k`` from the Gram matrix ``Q^T Q`` (upper triangle used; overwritten):
    leverage = ||q V_k / s_k||**2.

    k is the number of requested points, capped by the numerical rank (and by
    ``n_env - 1``). Only the top eigenpairs are computed.
    """
    F = gram.shape[0]
    k_max = max(1, min(n, F, max(n_env - 1, 1)))
    if 8 * k_max > F:  # divide and conquer on everything: 1.8x faster than a subset
        w, V = sla.eigh(gram, lower=False, overwrite_a=True, check_finite=False, driver="evd")
        w, V = w[F - k_max:], V[:, F - k_max:]
    else:
        w, V = sla.eigh(gram, lower=False, overwrite_a=True, check_finite=False,
                        subset_by_index=[F - k_max, F - 1])
    w, V = w[::-1], V[:, ::-1]
    return _scaled_basis(w, V, k_max)


def _scaled_basis(w: np.ndarray, V: np.ndarray, k_max: int) -> np.ndarray:
    """``V_k / sqrt(w_k)`` for eigenpairs in descending order, k capped by the
    numerical rank (eigenvalues above 1e-12 of the largest)."""
    rank = int(np.sum(w > max(w[0], 0.0) * 1e-12)) if w.size else 0
    k = max(1, min(k_max, rank))
    return V[:, :k] / np.sqrt(w[:k])[None, :]


class GramSketch:
    """Streamed summary of the Gram matrix ``G = Q^T Q`` of one species, (F, F), for
    its top-k eigenpairs: memory O(F min(F, k)) whatever the number of rows.

    * ``width >= F / 2`` (few features or many points): the exact upper triangle of
      ``G`` by in-place BLAS ``syrk`` updates;
    * otherwise a randomized sketch ``Y = G Omega`` (``Omega``: (F, width) with
      orthonormal columns, ``width = 2 k + 10``) and the single-pass Nyström
      approximation of Tropp, Yurtsever, Udell & Cevher (SIAM J. Matrix Anal. Appl.
      38, 1454, 2017, Alg. 3), whose error is within a small factor of the best
      rank-k approximation's.

    Parameters
    ----------
    n_features : int
    k : int
        Eigenpairs wanted (the requested sparse points).
    random_state : int or RandomState
        Draws ``Omega`` (sketch only).
    sketch : bool
        ``False`` always keeps the exact Gram matrix.
    """

    def __init__(self, n_features: int, k: int, random_state=None, sketch: bool = True):
        F = int(n_features)
        self.width = min(F, 2 * int(k) + SKETCH_OVERSAMPLE)
        self.n_rows = 0
        if not sketch or 2 * self.width >= F:
            self.omega, self.data = None, np.zeros((F, F), order="F")
        else:
            g = check_random_state(random_state).standard_normal((F, self.width))
            self.omega = np.linalg.qr(g)[0]
            self.data = np.zeros((F, self.width))

    @property
    def exact(self) -> bool:
        """Whether the exact Gram matrix is kept."""
        return self.omega is None

    def add(self, Q: np.ndarray) -> None:
        """Fold rows ``Q`` (r, F) in."""
        self.n_rows += len(Q)
        if self.exact:
            self.data = dsyrk(1.0, Q.T, beta=1.0, c=self.data, trans=0, lower=0, overwrite_c=1)
        else:
            self.data += Q.T @ (Q @ self.omega)

    def leverage_basis(self, k: int, n_env: int) -> np.ndarray:
        """``V_k / s_k`` (F, k'): leverage of a row ``q`` is ``||q V_k / s_k||**2``.
        The summary is consumed."""
        if self.exact:
            return _leverage_basis(self.data, k, n_env)
        Y, omega = self.data, self.omega
        self.data = None
        nu = np.sqrt(Y.shape[0]) * np.finfo(float).eps * np.linalg.norm(Y, 2)
        Y += nu * omega  # shift for stability (Tropp et al., Alg. 3)
        B = omega.T @ Y
        C = sla.cholesky(0.5 * (B + B.T), lower=False, check_finite=False)
        E = sla.solve_triangular(C, Y.T, trans="T", lower=False, check_finite=False).T
        U, sv, _ = sla.svd(E, full_matrices=False, overwrite_a=True, check_finite=False)
        w = np.maximum(sv ** 2 - nu, 0.0)
        return _scaled_basis(w, U, max(1, min(k, len(w), max(n_env - 1, 1))))


def _cur_from_frames(descriptors, frames, counts, species, numbers, rng, n_features: int,
                     memory_budget, sketch, threads: int = 1) -> dict[int, np.ndarray]:
    """Chosen environment indices per species by leverage-score CUR, streaming.

    Species whose descriptors fit in ``memory_budget`` bytes are kept and scored
    exactly from their smaller Gram matrix; the others are folded into a :class:`GramSketch` in a first pass over the frames, and every
    environment is scored in a second pass. Rows are batched (``FOLD_ROWS``) so that
    every update is one large matrix product. Species with no more environments than
    wanted take them all and are not scored. The eigenpairs run between the passes,
    alone, with BLAS on ``threads`` threads.
    """
    F = int(n_features)
    pos = {int(z): np.nonzero(numbers == z)[0] for z in species}
    chosen = {z: pos[z] for z in pos if counts[z] >= len(pos[z])}
    scored = [z for z in pos if z not in chosen]
    if not scored:
        return chosen
    # default: keep a species in memory while its descriptors take no more than its
    # (F, F) Gram matrix would (its exact scores then cost min(n_env, F)**3, not F**3)
    budget = 8 * F * F if memory_budget is None else int(memory_budget)
    # one draw for all sketches, at the first one made (the exact path leaves the
    # random stream as it was; nothing else draws during this pass)
    seed = []
    stored = {z: [] for z in scored}
    buffered = {z: 0 for z in scored}
    sketches: dict[int, GramSketch] = {}

    def fold(z):
        if stored[z]:
            sketches[z].add(np.vstack(stored[z]))
        stored[z], buffered[z] = [], 0

    for k, q in descriptors(range(len(frames))):
        zs = frames[k].numbers
        for z in scored:
            rows = q[zs == z]
            if not len(rows):
                continue
            stored[z].append(rows)
            buffered[z] += len(rows)
            if z not in sketches and buffered[z] * F * 8 > budget:
                if sketch and not seed and 2 * min(F, 2 * counts[z] + SKETCH_OVERSAMPLE) < F:
                    seed.append(rng.randint(2 ** 31 - 1 - max(scored)))
                sketches[z] = GramSketch(F, counts[z], (seed or [0])[0] + z, sketch)
            if z in sketches and buffered[z] >= FOLD_ROWS:
                fold(z)
    bases = {}
    with streaming.dense_blas(threads, max(min(F, len(pos[z])) for z in scored)):
        for z in sketches:  # reduce each summary to its basis before anything else
            fold(z)
            bases[z] = sketches[z].leverage_basis(counts[z], len(pos[z]))
        sketches.clear()
        for z in scored:  # kept in memory: exact scores
            if z not in bases:
                Qz = np.vstack(stored.pop(z))
                chosen[z] = np.sort(pos[z][_cur(Qz, counts[z], rng)])
    if bases:
        rows = {z: [] for z in bases}
        scores = {z: [] for z in bases}

        def score(z):
            if rows[z]:
                scores[z].append(_leverage(np.vstack(rows[z]), bases[z]))
            rows[z] = []

        for k, q in descriptors(range(len(frames))):
            zs = frames[k].numbers
            for z in bases:
                if np.any(zs == z):
                    rows[z].append(q[zs == z])
                    if sum(len(b) for b in rows[z]) >= FOLD_ROWS:
                        score(z)
        for z in bases:
            score(z)
            # rows were scored in frame order, i.e. in the order of pos[z]
            lev = np.concatenate(scores[z])
            chosen[z] = np.sort(pos[z][_sample_by_leverage(lev, counts[z], rng)])
    return chosen


def _leverage(Q: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return np.sum((Q @ basis) ** 2, axis=1)


def _sample_by_leverage(lev: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``n`` indices without replacement with probability proportional to ``lev``
    (Efraimidis-Spirakis keys)."""
    p = lev / lev.sum()
    keys = np.log(rng.uniform(size=len(p))) / np.maximum(p, 1e-300)
    return np.argsort(-keys)[:n]


def frame_descriptors(descriptor, frames, which, threads: int = 1, progress: bool | None = False,
                      desc: str = "sparse points"):
    """``(k, q_k)`` for the frames ``which``, in that order: the descriptors (no
    gradients) of ``frames[k]``.

    With ``threads > 1`` they are computed by a pool of threads, each with its own copy
    of ``descriptor`` (engines and scratch buffers are per thread; the engines release
    the GIL), at most ``2 threads + 2`` frames ahead of the consumer, so the consumer's
    work (Gram updates, scores) overlaps the descriptors and memory stays bounded.
    The results are those of the serial loop.
    """
    which = [int(k) for k in which]
    bar = progress_bar(total=len(which), desc=desc, unit="frame", progress=progress)
    if threads <= 1 or len(which) < 2:
        for k in which:
            yield k, descriptor.compute(frames[k], gradients=False, index=k).q
            bar.update(1)
        bar.close()
        return
    local = threading.local()

    def compute(k):
        own = getattr(local, "descriptor", None)
        if own is None:
            own = local.descriptor = copy.deepcopy(descriptor)
        return k, own.compute(frames[k], gradients=False, index=k).q

    try:
        for kq in ordered_map(compute, which, threads):
            yield kq
            bar.update(1)
    finally:
        bar.close()


def select_from_frames(descriptor, frames, counts: dict, method: str = "cur", random_state=None,
                       progress: bool | None = False, memory_budget: int | None = None,
                       sketch: bool = True, threads: int = 1, owners: bool = False) -> tuple:
    """Sparse environments per species, streaming over ``frames``.

    Parameters
    ----------
    descriptor : SOAP
        Fitted descriptor (``compute(atoms, gradients=False)``).
    frames : sequence of ase.Atoms
    counts : dict
        Atomic number to the number of sparse points wanted (capped at the number of
        environments of that species).
    method : {"cur", "random", "fps"}
    random_state : int, RandomState or None
    progress : bool, optional
        Show a bar over the frames whose descriptors are computed (None: in a terminal
        or Jupyter; see :func:`gapkit.progress.progress_bar`).
    memory_budget : int, optional
        Bytes of descriptors per species kept in memory and scored exactly for CUR;
        larger species are streamed through a :class:`GramSketch`. The default,
        ``8 F**2`` (the size of the exact Gram matrix), keeps memory O(F**2) per
        species whatever the number of structures (0 streams every species).
    sketch : bool, default True
        Let :class:`GramSketch` use its randomized sketch when ``2 (2 k + 10) < F``;
        ``False`` always streams the exact (F, F) Gram matrix.
    threads : int, default 1
        Threads computing the descriptors (:func:`frame_descriptors`) and BLAS threads
        of the CUR eigenpairs; the choice is the same for any number up to round-off.
    owners : bool, default False
        Also return the index in ``frames`` of each chosen environment's frame.

    Returns
    -------
    Q : ndarray of shape (M, F)
        Descriptors of the chosen environments, grouped by species in ascending
        atomic number.
    Z : ndarray of shape (M,)
    frame : ndarray of int, shape (M,)
        Only with ``owners``.
    """
    if method not in METHODS:
        raise ValueError(f"sparse method must be one of {METHODS}, got '{method}'")
    rng = check_random_state(random_state)
    repeated = {later for _, later in duplicate_frames(frames)}
    kept = np.array([k for k in range(len(frames)) if k not in repeated], dtype=np.int64)
    if repeated:  # choose among the environments of distinct frames only
        frames = [frames[k] for k in kept]
    species = sorted(counts)
    owner = np.concatenate([np.full(len(a), k) for k, a in enumerate(frames)])
    atom = np.concatenate([np.arange(len(a)) for a in frames])
    numbers = np.concatenate([a.numbers for a in frames])

    def descriptors(desc_frames):
        return frame_descriptors(descriptor, frames, desc_frames, threads, progress)

    chosen: dict[int, np.ndarray] = {}
    if method == "fps":
        allq = {k: q for k, q in descriptors(range(len(frames)))}
        for z in species:
            idx = np.nonzero(numbers == z)[0]
            Qz = np.vstack([allq[owner[i]][atom[i]] for i in idx])
            chosen[z] = idx[select(Qz, counts[z], "fps", rng)]
    elif method == "random":
        for z in species:
            idx = np.nonzero(numbers == z)[0]
            chosen[z] = idx[select(np.empty((len(idx), 0)), counts[z], "random", rng)]
    else:
        chosen = _cur_from_frames(descriptors, frames, counts, species, numbers, rng,
                                  descriptor.n_features, memory_budget, sketch, threads)
    # descriptors of the chosen environments only
    wanted = np.concatenate([chosen[z] for z in species])
    need = np.unique(owner[wanted])
    rows: dict[int, np.ndarray] = {}
    for k, q in descriptors(need):
        here = wanted[owner[wanted] == k]
        # copies of the chosen rows only (a view would keep the frame's whole array
        # alive: memory growing with the number of frames that hold a sparse point)
        for i, row in zip(here, q[atom[here]]):
            rows[int(i)] = row
    Q = np.vstack([rows[int(i)] for i in wanted])
    Z = numbers[wanted].astype(np.int64)
    keep = np.concatenate([np.flatnonzero(Z == z)[distinct_rows(Q[Z == z])] for z in species])
    keep = np.sort(keep)
    if owners:
        return Q[keep], Z[keep], kept[owner[wanted][keep]]
    return Q[keep], Z[keep]


def _fps(Q: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    first = int(rng.randint(Q.shape[0]))
    chosen = [first]
    sq = np.einsum("ij,ij->i", Q, Q)
    d = sq + sq[first] - 2 * Q @ Q[first]
    for _ in range(n - 1):
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, sq + sq[nxt] - 2 * Q @ Q[nxt])
    return np.array(chosen)
