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
``"random"`` draws indices from the atomic numbers alone, ``"cur"`` accumulates the
(F, F) Gram matrix of each species in a first pass, takes its top eigenvectors and
computes every environment's leverage score in a second pass; only the chosen
environments' descriptors are kept. Memory is O(F**2 + M F + n_env) instead of
O(n_env F). Species whose descriptors fit in ``memory_budget`` are kept and scored
from the smaller of their two Gram matrices (partial eigendecomposition, no SVD
workspace); Gram updates are in-place BLAS ``syrk`` calls on batches of rows. ``"fps"`` needs all pairwise distances and keeps the descriptors.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.linalg.blas import dsyrk
from sklearn.utils import check_random_state

from gapkit.data import duplicate_frames
from gapkit.progress import progress_bar

METHODS = ("cur", "random", "fps")
#: Rows per streamed Gram update (one BLAS syrk) and per leverage-score batch.
FOLD_ROWS = 512
#: Environments whose descriptors agree to this many decimals are the same.
_DECIMALS = 10


def distinct_rows(Q: np.ndarray) -> np.ndarray:
    """Sorted indices of the first occurrence of every distinct row of ``Q`` (rows equal
    to 1e-10 in every component count as one)."""
    if len(Q) == 0:
        return np.zeros(0, dtype=int)
    _, first = np.unique(np.round(Q, _DECIMALS) + 0.0, axis=0, return_index=True)
    return np.sort(first)


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
    w, V = sla.eigh(gram, lower=False, overwrite_a=True, check_finite=False,
                    subset_by_index=[F - k_max, F - 1])
    w, V = w[::-1], V[:, ::-1]
    rank = int(np.sum(w > max(w[0], 0.0) * 1e-12)) if w.size else 0
    k = max(1, min(k_max, rank))
    return V[:, :k] / np.sqrt(w[:k])[None, :]


def _leverage(Q: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return np.sum((Q @ basis) ** 2, axis=1)


def _sample_by_leverage(lev: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``n`` indices without replacement with probability proportional to ``lev``
    (Efraimidis-Spirakis keys)."""
    p = lev / lev.sum()
    keys = np.log(rng.uniform(size=len(p))) / np.maximum(p, 1e-300)
    return np.argsort(-keys)[:n]


def select_from_frames(descriptor, frames, counts: dict, method: str = "cur", random_state=None,
                       progress: bool | None = False, memory_budget: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
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
        Bytes of descriptors per species kept in memory for CUR; larger species are
        streamed through their (F, F) Gram matrix. The default, ``8 F**2`` (the size of
        that Gram matrix), keeps memory O(F**2) per species whatever the data size.

    Returns
    -------
    Q : ndarray of shape (M, F)
        Descriptors of the chosen environments, grouped by species in ascending
        atomic number.
    Z : ndarray of shape (M,)
    """
    if method not in METHODS:
        raise ValueError(f"sparse method must be one of {METHODS}, got '{method}'")
    rng = check_random_state(random_state)
    repeated = {later for _, later in duplicate_frames(frames)}
    if repeated:  # choose among the environments of distinct frames only
        frames = [a for k, a in enumerate(frames) if k not in repeated]
    species = sorted(counts)
    owner = np.concatenate([np.full(len(a), k) for k, a in enumerate(frames)])
    atom = np.concatenate([np.arange(len(a)) for a in frames])
    numbers = np.concatenate([a.numbers for a in frames])

    def descriptors(desc_frames):
        for k in progress_bar(desc_frames, desc="sparse points", unit="frame", progress=progress):
            yield k, descriptor.compute(frames[k], gradients=False, index=int(k)).q

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
        # Per species, keep the descriptors while they fit in `memory_budget` bytes and
        # take leverage scores from their Gram matrix; beyond that, switch to a streamed
        # (F, F) Gram matrix and a second pass for the scores. Rows are batched so
        # every update is one large matrix product.
        F = descriptor.n_features
        if memory_budget is None:
            memory_budget = 8 * F * F
        stored: dict[int, list] = {int(z): [] for z in species}
        nrows: dict[int, int] = {int(z): 0 for z in species}
        grams: dict[int, np.ndarray] = {}
        pos: dict[int, np.ndarray] = {int(z): np.nonzero(numbers == z)[0] for z in species}

        def fold(z):
            # in-place rank-k updates of the upper triangle, FOLD_ROWS rows at a time:
            # no (F, F) temporaries and no copy of everything buffered so far
            if z not in grams:
                grams[z] = np.zeros((F, F), order="F")
            parts, stored[z] = stored[z], []
            parts.reverse()
            while parts:
                batch, n = [], 0
                while parts and n < FOLD_ROWS:
                    batch.append(parts.pop())
                    n += len(batch[-1])
                grams[z] = dsyrk(1.0, np.vstack(batch).T, beta=1.0, c=grams[z], trans=0,
                                 lower=0, overwrite_c=1)

        for k, q in descriptors(range(len(frames))):
            zs = frames[k].numbers
            for z in np.unique(zs):
                z = int(z)
                stored[z].append(q[zs == z])
                nrows[z] += int(np.sum(zs == z))
                if z in grams or nrows[z] * F * 8 > memory_budget:
                    if sum(len(b) for b in stored[z]) >= FOLD_ROWS or z not in grams:
                        fold(z)
        streamed = [z for z in species if int(z) in grams]
        bases = {}
        for z in streamed:  # reduce each Gram matrix to its basis before anything else
            z = int(z)
            if stored[z]:
                fold(z)
            bases[z] = _leverage_basis(grams.pop(z), counts[z], len(pos[z]))
        for z in species:
            z = int(z)
            if z in bases:
                continue
            idx = pos[z]
            Qz = np.vstack(stored[z])
            stored[z] = []
            chosen[z] = idx if counts[z] >= len(idx) else np.sort(idx[_cur(Qz, counts[z], rng)])
        if streamed:
            rows = {int(z): [] for z in streamed}
            scores = {int(z): [] for z in streamed}

            def score(z):
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
                if rows[z]:
                    score(z)
                # rows were scored in frame order, i.e. in the order of pos[z]
                idx = pos[z]
                lev = np.concatenate(scores[z])
                chosen[z] = idx if counts[z] >= len(idx) else np.sort(
                    idx[_sample_by_leverage(lev, counts[z], rng)])
    # descriptors of the chosen environments only
    wanted = np.concatenate([chosen[z] for z in species])
    need = np.unique(owner[wanted])
    rows: dict[int, np.ndarray] = {}
    for k, q in descriptors(need):
        for i in wanted[owner[wanted] == k]:
            rows[int(i)] = q[atom[i]]
    Q = np.vstack([rows[int(i)] for i in wanted])
    Z = numbers[wanted].astype(np.int64)
    keep = np.concatenate([np.flatnonzero(Z == z)[distinct_rows(Q[Z == z])] for z in species])
    return Q[np.sort(keep)], Z[np.sort(keep)]


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
