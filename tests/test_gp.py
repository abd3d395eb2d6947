"""The sparse GP solver: streaming QR, evidence and its gradient, predictive variance."""

import numpy as np
import pytest
import scipy.linalg as sla

from gapkit.gp import evidence
from gapkit.gp import solver as gp


@pytest.fixture
def problem(rng):
    M, n_e, n_f = 12, 30, 90
    X = rng.normal(size=(M, 5))
    Kmm = (X @ X.T) / 5 + 0.1 * np.eye(M)
    rows = {"energy": rng.normal(size=(n_e, M)), "forces": rng.normal(size=(n_f, M))}
    y = {k: v @ rng.normal(size=M) + 0.05 * rng.normal(size=len(v)) for k, v in rows.items()}
    w = {"energy": 1.0 / rng.integers(3, 9, size=n_e), "forces": np.ones(n_f)}
    return Kmm, rows, y, w


def accumulate(rows, y, w, M, block_rows):
    acc = gp.RowAccumulator(M, block_rows=block_rows)
    for k in rows:
        for start in range(0, len(rows[k]), 7):  # chunks of 7 rows
            sl = slice(start, start + 7)
            acc.add(k, rows[k][sl], y[k][sl], w[k][sl])
    return acc.finalize()


def dense_solution(Kmm, rows, y, w, delta, sigmas, jitter):
    """Textbook one-shot solve: QR of [Lambda^-1/2 K_NM ; L^T] with the full matrices."""
    M = Kmm.shape[0]
    L = np.linalg.cholesky(delta ** 2 * (Kmm + jitter * np.eye(M)))
    A = [delta ** 2 * rows[k] * (np.sqrt(w[k]) / sigmas[k])[:, None] for k in rows]
    b = [y[k] * np.sqrt(w[k]) / sigmas[k] for k in rows]
    A = np.vstack(A + [L.T])
    b = np.concatenate(b + [np.zeros(M)])
    Q, R = np.linalg.qr(A)
    return sla.solve_triangular(R, Q.T @ b), R


def test_streaming_equals_one_shot(problem):
    Kmm, rows, y, w = problem
    M = Kmm.shape[0]
    sig = {"energy": 0.03, "forces": 0.2}
    L = gp.cholesky_kmm(Kmm, 1e-8)
    ref_alpha, ref_R = dense_solution(Kmm, rows, y, w, 0.7, sig, 1e-8)
    for block in (5, 40, 10_000):
        sol = gp.solve(accumulate(rows, y, w, M, block), L, 0.7, sig)
        np.testing.assert_allclose(sol.alpha, ref_alpha, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sol.R.T @ sol.R, ref_R.T @ ref_R, rtol=1e-8)


def test_log_likelihood_matches_dense_gaussian(problem):
    Kmm, rows, y, w = problem
    M = Kmm.shape[0]
    sig = {"energy": 0.05, "forces": 0.3}
    delta = 1.3
    groups = accumulate(rows, y, w, M, 30)
    ll = evidence.log_marginal_likelihood(groups, gp.cholesky_kmm(Kmm, 1e-8), delta, sig)
    Knm = np.vstack([delta ** 2 * rows[k] for k in rows])
    Kj = delta ** 2 * (Kmm + 1e-8 * np.eye(M))
    cov = Knm @ np.linalg.solve(Kj, Knm.T) + np.diag(np.concatenate(
        [sig[k] ** 2 / w[k] for k in rows]))
    from scipy.stats import multivariate_normal

    ref = multivariate_normal(mean=np.zeros(len(cov)), cov=cov).logpdf(
        np.concatenate([y[k] for k in rows]))
    assert ll == pytest.approx(ref, rel=1e-8)


def test_log_likelihood_gradient_matches_finite_differences(problem):
    Kmm, rows, y, w = problem
    M = Kmm.shape[0]
    groups = accumulate(rows, y, w, M, 30)
    L = gp.cholesky_kmm(Kmm, 1e-8)
    theta = np.log([0.8, 0.04, 0.25])

    def f(t):
        return evidence.log_marginal_likelihood(groups, L, np.exp(t[0]),
                                          {"energy": np.exp(t[1]), "forces": np.exp(t[2])})

    _, grad = evidence.log_marginal_likelihood(groups, L, 0.8, {"energy": 0.04, "forces": 0.25},
                                         eval_gradient=True)
    h = 1e-6
    fd = [(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_optimisation_recovers_the_noise(rng):
    # data drawn from the model itself: the learned noise should be close to the truth
    M, N = 15, 600
    X = rng.normal(size=(M, 8))
    Kmm = X @ X.T / 8 + 1e-3 * np.eye(M)
    Knm = rng.normal(size=(N, 8)) @ X.T / 8
    u = np.linalg.cholesky(Kmm) @ rng.normal(size=M)
    f = Knm @ np.linalg.solve(Kmm, u)
    y = f + 0.1 * rng.normal(size=N)
    acc = gp.RowAccumulator(M)
    acc.add("forces", Knm, y, np.ones(N))
    groups = acc.finalize()
    delta, sig, _ = evidence.optimize_hyperparameters(groups, gp.cholesky_kmm(Kmm, 1e-8), 3.0,
                                                {"forces": 1.0}, n_restarts=1, random_state=0)
    assert sig["forces"] == pytest.approx(0.1, rel=0.15)


def test_predictive_variance_and_clipping(problem):
    Kmm, rows, y, w = problem
    M = Kmm.shape[0]
    L = gp.cholesky_kmm(Kmm, 1e-8)
    sol = gp.solve(accumulate(rows, y, w, M, 30), L, 1.0, {"energy": 0.01, "forces": 0.01})
    # a functional equal to a sparse point: no Nystrom residual, variance bounded by the prior
    var = gp.predictive_variance(Kmm[:3], np.diag(Kmm)[:3], L, sol.R, 1.0)
    assert np.all(var >= 0) and np.all(var <= np.diag(Kmm)[:3] + 1e-8)
    with pytest.warns(RuntimeWarning, match="negative predictive variance"):
        out = gp.clip_variance(np.array([1.0, -1e-12]))
    assert out[1] == 0.0


def test_singular_kmm_raises_with_a_fix():
    K = np.ones((4, 4))
    with pytest.raises(gp.FactorisationError, match="Increase `jitter`"):
        gp.cholesky_kmm(K, -1e-3)


def test_triangular_merge_equals_dense_qr_and_leaves_inputs(rng):
    n = 40
    A, B = np.triu(rng.normal(size=(n, n))), np.triu(rng.normal(size=(n, n)))
    A0, B0 = A.copy(), B.copy()
    tri = gp.tri_update(A, B, triangular=True)
    dense = gp.tri_update(A, B)
    ref = np.linalg.qr(np.vstack([A, B]), mode="r")
    for R in (tri, dense):
        np.testing.assert_allclose(R.T @ R, ref.T @ ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(np.tril(R, -1), 0.0)  # the lower part stays zero
    np.testing.assert_array_equal(A, A0)  # overwrite=False: inputs untouched
    np.testing.assert_array_equal(B, B0)
    start = gp.tri_update(None, B0[:7])  # from nothing: the R factor of B alone
    r7 = np.linalg.qr(B0[:7], mode="r")
    np.testing.assert_allclose(start[:7].T @ start[:7], r7.T @ r7, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(start[7:], 0.0)


def test_accumulator_rejects_rows_of_the_wrong_width():
    acc = gp.RowAccumulator(5)
    with pytest.raises(ValueError, match="expected 5"):
        acc.add("forces", np.ones((3, 4)), np.ones(3), 1.0)
