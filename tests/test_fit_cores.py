"""The fit on several cores: GIL-free LAPACK calls, the dense phases with BLAS threads,
the side thread of K_MM and the variance basis (issue #17)."""

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.linalg import lapack as sl

from gapkit.gp import lapack


def _tri(rng, n):
    return np.asfortranarray(np.triu(rng.standard_normal((n, n))) + 5 * np.eye(n))


@pytest.mark.parametrize("m, l", [(70, 0), (40, 40)])
def test_tpqrt_equals_scipy_bit_for_bit(m, l):
    rng = np.random.default_rng(0)
    n = 40
    a = _tri(rng, n)
    b = np.asfortranarray(np.triu(rng.standard_normal((m, n))) if l else rng.standard_normal((m, n)))
    ref = sl.dtpqrt(l, 16, a.copy(order="F"), b.copy(order="F"))[0]
    got = a.copy(order="F")
    assert lapack.tpqrt(got, b.copy(order="F"), l, 16) == 0
    assert np.array_equal(np.triu(got), np.triu(ref))


def test_tpqrt_rejects_c_order():
    a = np.zeros((3, 3))
    with pytest.raises(ValueError, match="Fortran-ordered float64"):
        lapack.tpqrt(a, np.zeros((2, 3), order="F"), 0, 1)


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [True, False])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("k", [None, 1, 7])
def test_trsm_equals_solve_triangular(lower, trans, order, k):
    rng = np.random.default_rng(1)
    n = 30
    a = rng.standard_normal((n, n)) + 6 * np.eye(n)
    a = np.array(np.tril(a) if lower else np.triu(a), order=order)
    b = rng.standard_normal(n if k is None else (n, k))
    ref = sla.solve_triangular(a, b, lower=lower, trans="T" if trans else "N",
                               check_finite=False)
    got = lapack.trsm(a, b, lower=lower, trans=trans)
    assert got.shape == b.shape
    assert np.array_equal(got, ref)


def test_trsm_shape_errors():
    with pytest.raises(ValueError, match="must be square"):
        lapack.trsm(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="do not match"):
        lapack.trsm(np.eye(3), np.zeros(2))
    with pytest.raises(np.linalg.LinAlgError, match="zero at diagonal 1"):
        lapack.trsm(np.diag([1.0, 0.0, 2.0]), np.ones(3))


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_dense_phases_run_blas_on_the_fit_threads_when_asked(monkeypatch):
    from gapkit.gp import streaming

    monkeypatch.setattr(streaming, "usable_cores", lambda: 2)
    monkeypatch.delenv(streaming.DENSE_ENV, raising=False)
    with streaming.fit_blas_limits(None):
        with streaming.dense_blas(None, 10 ** 6):  # default: off
            assert _blas_threads() == {1}
        monkeypatch.setenv(streaming.DENSE_ENV, "1500")
        assert _blas_threads() == {1}
        with streaming.dense_blas(None, 1500):
            assert _blas_threads() == {2}
        with streaming.dense_blas(2, 1499):  # small: idle threads spin
            assert _blas_threads() == {1}
        assert _blas_threads() == {1}
    before = _blas_threads()
    with streaming.dense_blas(1, 10 ** 6):  # serial: the process's BLAS threads, untouched
        assert _blas_threads() == before


def test_side_tasks_run_beside_or_in_turn():
    import threading

    from gapkit.gp import streaming

    main = threading.get_ident()
    with streaming.SideTasks(1) as side:  # serial: at once, in this thread
        assert side.submit(threading.get_ident).result() == main
    with streaming.SideTasks(2) as side:
        fut = side.submit(threading.get_ident)
        assert fut.result() != main
        bad = side.submit(np.linalg.cholesky, -np.eye(2))
        with pytest.raises(np.linalg.LinAlgError):
            bad.result()


def test_kernel_mm_by_species_blocks_equals_masked_product():
    from gapkit.gp import kernels

    rng = np.random.default_rng(3)
    Q = rng.random((60, 12))
    z = rng.permutation(np.repeat([1, 6, 8], [30, 20, 10]))  # not contiguous
    ref = kernels.dot_kernel(Q, Q, 3) * kernels.species_mask(z, z)
    np.testing.assert_allclose(kernels.kernel_mm(Q, z, 3), ref, rtol=1e-13, atol=0)
    np.testing.assert_allclose(kernels.kernel_mm(Q, z, 3, scale=0.25), 0.25 * ref, rtol=1e-13,
                               atol=0)


@pytest.fixture(scope="module")
def two_term_fits(train_frames):
    """The calibrated 2-body + SOAP fit on one thread and on two (held-out rows added)."""
    from gapkit import GAP, SOAP, Term
    from gapkit.descriptors import TwoBody

    from conftest import SMALL_SOAP

    def fit(n_jobs):
        desc = [Term(TwoBody(r_cut=4.0), zeta=1, n_sparse=15), Term(SOAP(**SMALL_SOAP), zeta=4)]
        return GAP(desc, n_sparse=40, random_state=0, chunk_size=4, variance_sparse=30,
                   n_jobs=n_jobs).fit(train_frames[:30])

    return fit(1), fit(2)


def test_two_cores_fit_equals_serial_fit(two_term_fits):
    serial, threads = two_term_fits
    a, b = serial.state_, threads.state_
    assert len(a.alpha) == len(b.alpha) > 60
    for t, u in zip(a.terms, b.terms):
        np.testing.assert_array_equal(t.sparse_q, u.sparse_q)
    np.testing.assert_array_equal(a.variance_basis.columns, b.variance_basis.columns)
    scale = np.abs(a.alpha).max()
    np.testing.assert_allclose(b.alpha, a.alpha, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(b.kmm_cholesky, a.kmm_cholesky, rtol=0, atol=1e-12)
    assert b.delta == pytest.approx(a.delta, rel=1e-10)
    assert b.log_marginal_likelihood == pytest.approx(a.log_marginal_likelihood, rel=1e-10)
    # the calibration scales come from an L-BFGS fit whose stopping point moves with the
    # round-off of its inputs (1.2e-4 between n_jobs=1 and 2 before the threaded dense
    # phases too)
    ca, cb = a.calibration.energy.as_dict(), b.calibration.energy.as_dict()
    assert cb == pytest.approx(ca, rel=1e-3)


def test_lower_solve_lower_equals_a_full_solve(monkeypatch):
    rng = np.random.default_rng(4)
    n = 50
    a = np.tril(rng.standard_normal((n, n))) + 8 * np.eye(n)
    r = np.triu(rng.standard_normal((n, n)))
    monkeypatch.setattr(lapack, "TRI_BLOCK", 16)  # several blocks, a short last one
    got = lapack.lower_solve_lower(a, r.T)
    ref = sla.solve_triangular(a, r.T, lower=True, check_finite=False)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    assert np.all(np.triu(got, 1) == 0)
    with pytest.raises(ValueError, match="square and of one shape"):
        lapack.lower_solve_lower(a, r[:4])
    with pytest.raises(np.linalg.LinAlgError, match="zero at diagonal 20"):
        a[20, 20] = 0.0
        lapack.lower_solve_lower(a, r.T)


@pytest.mark.parametrize("n, nb, threads", [(300, 64, 2), (257, 16, 3), (130, 32, 2)])
@pytest.mark.parametrize("triangular", [True, False])
def test_tpqrt_threads_equals_tpqrt_to_round_off(n, nb, threads, triangular, one_blas_thread):
    rng = np.random.default_rng(5)
    a = _tri(rng, n)
    b = np.asfortranarray(np.triu(rng.standard_normal((n, n))) if triangular
                          else rng.standard_normal((n + 37, n)))
    l = n if triangular else 0
    ref, got = a.copy(order="F"), a.copy(order="F")
    assert lapack.tpqrt(ref, b.copy(order="F"), l, nb) == 0
    assert lapack.tpqrt_threads(got, b.copy(order="F"), l, nb, threads) == 0
    # bit for bit on some CPUs only: a split column range may take another BLAS kernel
    # path (seen ~1e-15 of the largest entry apart on an AMD EPYC, OpenBLAS 0.3.31)
    np.testing.assert_allclose(np.triu(got), np.triu(ref), rtol=0,
                               atol=1e-13 * np.abs(ref).max())
    # and it is the R factor of the stacked matrix (rows' signs aside)
    r = np.linalg.qr(np.vstack([a, b]), mode="r")
    np.testing.assert_allclose(np.abs(np.triu(got)), np.abs(r), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match=r"expected \(5, 5\)"):
        lapack.tpqrt_threads(np.zeros((4, 4), order="F"), np.zeros((2, 5), order="F"), 0, 2)


def test_tpqrt_threads_agrees_to_round_off_with_several_blas_threads():
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(6)
    n = 300
    a, b = _tri(rng, n), np.asfortranarray(rng.standard_normal((n + 37, n)))
    ref, got = a.copy(order="F"), a.copy(order="F")
    with threadpool_limits(limits=2, user_api="blas"):
        assert lapack.tpqrt(ref, b.copy(order="F"), 0, 64) == 0
        assert lapack.tpqrt_threads(got, b.copy(order="F"), 0, 64, 2) == 0
    scale = np.abs(np.triu(ref)).max()
    np.testing.assert_allclose(np.triu(got), np.triu(ref), rtol=0, atol=1e-12 * scale)


def test_solve_on_threads_equals_serial_solve(one_blas_thread):
    from gapkit.gp import solver

    rng = np.random.default_rng(6)
    M = 300
    X = rng.standard_normal((2 * M, M))
    Lchol = np.linalg.cholesky(X.T @ X / (2 * M) + np.eye(M))
    groups = {}
    for name, rows in (("energy", 400), ("forces", 900)):
        acc = solver.RowAccumulator(M)
        acc.add(name, rng.standard_normal((rows, M)), rng.standard_normal(rows), 0.5)
        groups.update(acc.finalize())
    sig = {"energy": 0.01, "forces": 0.1}
    one = solver.solve(groups, Lchol, 0.7, sig)
    two = solver.solve(groups, Lchol, 0.7, sig, threads=2)
    # to round-off (bit for bit on some CPUs: see test_tpqrt_threads_equals_tpqrt_to_round_off)
    np.testing.assert_allclose(two.alpha, one.alpha, rtol=0, atol=1e-11 * np.abs(one.alpha).max())
    np.testing.assert_allclose(two.R, one.R, rtol=0, atol=1e-12 * np.abs(one.R).max())
    assert two.log_likelihood == pytest.approx(one.log_likelihood, rel=1e-12)


def test_lower_solve_lower_on_threads_equals_one_thread(monkeypatch):
    rng = np.random.default_rng(7)
    n = 70
    a = np.tril(rng.standard_normal((n, n))) + 8 * np.eye(n)
    r = np.triu(rng.standard_normal((n, n)))
    monkeypatch.setattr(lapack, "TRI_BLOCK", 16)
    one = lapack.lower_solve_lower(a, r.T)
    assert np.array_equal(lapack.lower_solve_lower(a, r.T, threads=3), one)
    a[50, 50] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match="zero at diagonal 50"):
        lapack.lower_solve_lower(a, r.T, threads=2)


def test_dense_threads_follow_n_jobs_and_give_way_to_blas_threads(monkeypatch):
    from gapkit.gp import streaming

    monkeypatch.setattr(streaming, "usable_cores", lambda: 2)
    monkeypatch.delenv(streaming.DENSE_ENV, raising=False)
    assert streaming.dense_threads(None, 5000) == 2
    assert streaming.dense_threads(1, 5000) == 1
    monkeypatch.setenv(streaming.DENSE_ENV, "1500")  # BLAS threads run it instead
    assert streaming.dense_threads(None, 5000) == 1
    assert streaming.dense_threads(None, 1000) == 2


def test_column_factor_is_the_factor_of_the_chosen_columns():
    from gapkit.gp import solver

    rng = np.random.default_rng(8)
    M, cols = 12, np.array([0, 3, 4, 9, 11])
    K, y, w = rng.standard_normal((40, M)), rng.standard_normal(40), rng.uniform(0.5, 2, 40)
    acc = solver.RowAccumulator(M, block_rows=16)
    acc.add("g", K, y, w)
    full = acc.finalize()["g"]
    scale = rng.uniform(0.5, 2.0, len(cols))
    got = solver.column_factor(full, cols, scale)
    ref = solver.RowAccumulator(len(cols))
    ref.add("g", K[:, cols] * scale, y, w)
    ref = ref.finalize()["g"]
    np.testing.assert_allclose(np.abs(got.R), np.abs(ref.R), rtol=0, atol=1e-12)
    assert np.all(np.tril(got.R, -1) == 0) and got.R.flags.f_contiguous
    assert (got.n_rows, got.log_inv_w) == (ref.n_rows, ref.log_inv_w)
    assert full.R.shape == (M + 1, M + 1)  # not changed


@pytest.fixture(scope="module")
def every_environment_fit(train_frames):
    """The calibrated every-environment fit (n_sparse="auto" on 24 frames), the
    frames whose descriptor gradients it computed, and the split model."""
    import collections
    import warnings

    from gapkit import GAP, SOAP
    from gapkit.gp import terms
    from gapkit.model import training

    from conftest import SMALL_SOAP

    frames = train_frames[:24]
    seen, split = collections.Counter(), []
    compute, calibrate = terms.compute, training.calibrate_on

    def spy(ts, atoms, gradients=True, **kw):
        if gradients:
            seen[id(atoms)] += 1
        return compute(ts, atoms, gradients=gradients, **kw)

    def keep(state, *a, **k):
        split.append(state)
        return calibrate(state, *a, **k)

    terms.compute, training.calibrate_on = spy, keep
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GAP(SOAP(**SMALL_SOAP), random_state=0, chunk_size=4, n_jobs=2).fit(frames)
    finally:
        terms.compute, training.calibrate_on = compute, calibrate
    return model, frames, seen, split[0]


def test_every_environment_fit_computes_each_frames_gradients_once(every_environment_fit):
    model, frames, seen, split = every_environment_fit
    assert seen == {id(a): 1 for a in frames}
    final = model.state_
    Z, Zs = final.terms[0].sparse_species, split.terms[0].sparse_species
    assert len(Zs) < len(Z)  # the held-out environments are sparse points of the final model
    assert {g.kind: n for g, n in final.n_train.items()}["energy"] == len(frames)
    assert model.state_.calibration.source.startswith("validation split")


def test_every_environment_fit_equals_fits_from_scratch(every_environment_fit):
    """The final model = a fit on all frames with its hyperparameters; the split model
    = a fit of the training frames on its sparse points."""
    import warnings

    from gapkit.gp import solver as gp
    from gapkit.model import training

    model, frames, _, split = every_environment_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, _ = training.fit_state(model, frames, False)  # delta="auto" on all frames
    st = model.state_
    for a, b in zip(st.terms, ref.terms):
        np.testing.assert_array_equal(a.sparse_q, b.sparse_q)
    assert st.delta == pytest.approx(ref.delta, rel=1e-12)
    assert dict(st.noise) == dict(ref.noise)
    np.testing.assert_allclose(st.alpha, ref.alpha, rtol=0, atol=1e-7 * np.abs(ref.alpha).max())
    assert st.log_marginal_likelihood == pytest.approx(ref.log_marginal_likelihood, rel=1e-9)
    # the split model from its own rows: the training frames on its sparse set, with
    # its E0 and hyperparameters
    from gapkit.gp import streaming

    val_ids = _held_out_ids(model, frames)
    data = training.training_data([a for a in frames if id(a) not in val_ids],
                                  model.label_keys, True)
    assert {g.kind: n for g, n in split.n_train.items()}["energy"] == len(data.frames)
    rows = streaming.accumulate(streaming.RowSpec(list(split.terms)), data.frames, data.labels,
                                training.energy_residuals(data, split.e0), n_jobs=1)
    sol = gp.solve(rows, split.kmm_cholesky, split.delta, dict(split.noise))
    np.testing.assert_allclose(split.alpha, sol.alpha, rtol=0,
                               atol=1e-7 * np.abs(sol.alpha).max())
    # ... whose points are the final model's points that lie in the training frames
    assert len(split.alpha) < len(st.alpha)


def _held_out_ids(model, frames):
    from gapkit.model import training

    _, val = training.split_validation(frames, model.valid_fraction, model.random_state)
    return {id(a) for a in val}


def _staircase(seed, M, m):
    rng = np.random.default_rng(seed)
    cols = np.sort(rng.choice(M, m, replace=False))
    return np.asfortranarray(np.triu(rng.standard_normal((M, M)))[:, cols]), cols


@pytest.mark.parametrize("threads", [1, 3])
def test_staircase_qr_equals_the_dense_qr_up_to_row_signs(threads):
    import scipy.linalg as sla

    x, cols = _staircase(11, 400, 330)
    ref = sla.qr(x, mode="r")[0][:330]
    assert lapack.staircase_qr(x, cols + 1, nb=16, threads=threads) == 0
    got = np.triu(x[:330])
    np.testing.assert_allclose(np.abs(got), np.abs(ref), rtol=0, atol=1e-12 * np.abs(ref).max())


def test_threaded_staircase_qr_equals_the_serial_one_on_large_matrices():
    # threads that shared one panel's reflectors raced on its diagonal (LAPACK dorm2r
    # sets each entry to 1 while it applies it): R's diagonal came back 1.0 in most
    # 1200 x 1000 factorisations on 2 cores, and in CI at 400 x 330
    for seed in range(4):
        x, cols = _staircase(seed, 1200, 1000)
        y = x.copy(order="F")
        assert lapack.staircase_qr(x, cols + 1, nb=16, threads=1) == 0
        assert lapack.staircase_qr(y, cols + 1, nb=16, threads=3) == 0
        np.testing.assert_allclose(np.triu(y[:1000]), np.triu(x[:1000]), rtol=0,
                                   atol=1e-12 * np.abs(x).max(), err_msg=f"seed {seed}")


def test_staircase_qr_rejects_what_is_not_a_staircase():
    x = np.asfortranarray(np.triu(np.ones((5, 3))))
    with pytest.raises(ValueError, match="staircase"):
        lapack.staircase_qr(x, np.array([1, 3, 2]))
    with pytest.raises(ValueError, match="staircase"):
        lapack.staircase_qr(x, np.array([1, 1, 3]))
    with pytest.raises(ValueError, match="one entry per column"):
        lapack.staircase_qr(x, np.array([1, 2]))


def test_solve_uses_the_trapezoid_of_a_factor_with_fewer_rows_than_columns():
    from gapkit.gp import solver

    rng = np.random.default_rng(12)
    M = 30
    A = rng.standard_normal((M + 5, M + 5))
    Lchol = np.linalg.cholesky(A @ A.T / M + np.eye(M + 5))[:M, :M]
    few, many = solver.RowAccumulator(M), solver.RowAccumulator(M)
    few.add("e", rng.standard_normal((7, M)), rng.standard_normal(7), 0.5)
    many.add("f", rng.standard_normal((90, M)), rng.standard_normal(90), 1.0)
    groups = {**few.finalize(), **many.finalize()}
    sigmas = {"e": 0.3, "f": 0.1}
    got = solver.solve(groups, Lchol, 1.7, sigmas)
    # the stacked system written out in full: every row of every factor
    rows = [np.hstack([1.7 * Lchol.T, np.zeros((M, 1))])]
    for name, g in groups.items():
        b = g.R.copy()
        b[:, :M] *= 1.7 ** 2 / sigmas[name]
        b[:, M] /= sigmas[name]
        rows.append(b)
    Rf = np.linalg.qr(np.vstack(rows), mode="r")
    alpha = np.linalg.solve(Rf[:M, :M], Rf[:M, M])
    np.testing.assert_allclose(got.alpha, alpha, rtol=1e-10, atol=1e-12 * np.abs(alpha).max())
    assert abs(got.rho - abs(Rf[M, M])) < 1e-10 * abs(Rf[M, M])
