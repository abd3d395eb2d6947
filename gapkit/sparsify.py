"""Choosing the representative ("sparse") environments, per species.

* ``"cur"``: leverage-score CUR column selection (Mahoney & Drineas, PNAS 2009), as
  in QUIP's ``sparse_method=cur_points``: sample without replacement with
  probability proportional to the statistical leverage of each environment in the
  top-k singular subspace of the descriptor matrix.
* ``"random"``: uniform without replacement.
* ``"fps"``: farthest-point sampling in descriptor space (greedy max-min distance).

Randomness comes only from ``random_state``.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

METHODS = ("cur", "random", "fps")


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
    ndarray of int, shape (min(n, n_env),), sorted.
    """
    if method not in METHODS:
        raise ValueError(f"sparse method must be one of {METHODS}, got '{method}'")
    n_env = Q.shape[0]
    if n <= 0:
        raise ValueError(f"the number of sparse points must be positive, got {n}")
    if n >= n_env:
        return np.arange(n_env)
    rng = check_random_state(random_state)
    if method == "random":
        return np.sort(rng.choice(n_env, size=n, replace=False))
    if method == "fps":
        return np.sort(_fps(Q, n, rng))
    return np.sort(_cur(Q, n, rng))


def _cur(Q: np.ndarray, n: int, rng: np.random.RandomState) -> np.ndarray:
    # Leverage scores of the rows in the top-k right/left singular subspace.
    k = max(1, min(n, min(Q.shape) - 1 if min(Q.shape) > 1 else 1))
    U, s, _ = np.linalg.svd(Q - 0.0, full_matrices=False)
    rank = int(np.sum(s > s[0] * 1e-12)) if s.size else 0
    k = max(1, min(k, rank))
    lev = np.sum(U[:, :k] ** 2, axis=1)
    p = lev / lev.sum()
    # Sample without replacement proportional to leverage (Efraimidis-Spirakis keys).
    keys = np.log(rng.uniform(size=len(p))) / np.maximum(p, 1e-300)
    return np.argsort(-keys)[:n]


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
