"""Streaming fit: chunking, parallel workers and Dask give the one-shot answer."""

import numpy as np
import pytest

from gapkit import GAP, SOAP

from conftest import SMALL_SOAP


def fit(frames, **kw):
    return GAP(SOAP(**SMALL_SOAP), n_sparse=40, random_state=0, **kw).fit(frames)


@pytest.fixture(scope="module")
def frames(train_frames):
    return train_frames[:24]


@pytest.fixture(scope="module")
def reference(frames):
    return fit(frames, chunk_size=1000)


def test_chunk_size_does_not_change_the_model(frames, reference):
    for chunk in (1, 5):
        m = fit(frames, chunk_size=chunk)
        np.testing.assert_allclose(m.alpha_, reference.alpha_, rtol=1e-8, atol=1e-8 * np.abs(reference.alpha_).max())
        assert m.log_marginal_likelihood_ == pytest.approx(reference.log_marginal_likelihood_, rel=1e-9)


@pytest.mark.parametrize("n_jobs", [2, 3, -1, None])
def test_thread_workers_equal_serial(frames, reference, test_frames, n_jobs):
    m = fit(frames, chunk_size=4, n_jobs=n_jobs)
    np.testing.assert_allclose(m.alpha_, reference.alpha_, rtol=1e-8, atol=1e-8 * np.abs(reference.alpha_).max())
    e0 = reference.predict(test_frames[:3]).energy
    np.testing.assert_allclose(m.predict(test_frames[:3]).energy, e0, rtol=0, atol=1e-8)
    again = fit(frames, chunk_size=4, n_jobs=n_jobs)  # same split, same round-off
    np.testing.assert_array_equal(again.alpha_, m.alpha_)


def test_thread_count_is_resolved_and_checked():
    from gapkit.gp.streaming import resolve_threads, usable_cores

    assert resolve_threads(None, 100) == usable_cores()
    assert resolve_threads(8, 3) == 3  # never more threads than chunks
    assert resolve_threads(-1, 100) == usable_cores()
    assert resolve_threads(1, 100) == 1
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n_jobs must be a non-zero integer"):
            resolve_threads(bad, 10)


def test_dask_equals_serial(frames, reference, test_frames):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        m = GAP(SOAP(**SMALL_SOAP), n_sparse=40, random_state=0, chunk_size=4).fit(frames, client=client)
    np.testing.assert_allclose(m.alpha_, reference.alpha_, rtol=1e-8, atol=1e-8 * np.abs(reference.alpha_).max())
    e0 = reference.predict(test_frames[:3]).energy
    np.testing.assert_allclose(m.predict(test_frames[:3]).energy, e0, rtol=0, atol=1e-8)


def _peak(fn):
    import tracemalloc

    tracemalloc.start()
    fn()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def test_accumulator_memory_is_flat_in_the_number_of_rows(rng):
    """O(M**2 + block) memory: 4x the rows, about the same peak."""
    from gapkit.gp.solver import RowAccumulator

    M = 60
    chunk = rng.normal(size=(100, M))
    y = rng.normal(size=100)

    def stream(n_chunks):
        acc = RowAccumulator(M, block_rows=300)
        for _ in range(n_chunks):
            acc.add("forces", chunk, y, 1.0)
        acc.finalize()

    small, large = _peak(lambda: stream(20)), _peak(lambda: stream(80))
    assert large < 1.2 * small, (small, large)
    assert large < 3 * (M + 1) ** 2 * 8 + 400 * (M + 1) * 8 * 3


def test_fit_memory_grows_far_slower_than_the_data(train_frames):
    """A chunked fit of 3x the structures peaks well below 3x the memory."""
    def fit(n):
        return lambda: GAP(SOAP(**SMALL_SOAP), n_sparse=30, chunk_size=4,
                           random_state=0).fit(train_frames[:n])

    fit(4)()  # warm-up: imports and DScribe set-up are not part of the comparison
    small, large = _peak(fit(24)), _peak(fit(72))
    assert large < 1.6 * small, (small, large)


def test_threaded_fits_cap_blas_for_the_whole_fit():
    from threadpoolctl import threadpool_info

    from gapkit.gp.streaming import fit_blas_limits

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    with fit_blas_limits(2):
        assert blas_threads() == {1}
    with fit_blas_limits(1):
        assert blas_threads() == before
    assert blas_threads() == before


def _motions(atoms):
    n = len(atoms)
    r = atoms.positions - atoms.positions.mean(axis=0)
    rot = np.stack([np.cross(e, r).reshape(-1) for e in np.eye(3)], axis=1)
    return np.hstack([np.tile(np.eye(3), (n, 1)), rot])


@pytest.mark.parametrize("pbc", [False, True])
def test_force_rows_without_their_null_part_give_the_same_factor(pbc):
    from ase import Atoms

    from gapkit.gp import solver, streaming

    rng = np.random.default_rng(5)
    n, M = 7, 60
    atoms = Atoms("C2H5", positions=rng.uniform(0, 4, (n, 3)), cell=[6, 6, 6], pbc=pbc)
    N = _motions(atoms)[:, :3] if pbc else _motions(atoms)
    P = np.eye(3 * n) - N @ np.linalg.pinv(N)  # rows orthogonal to the motions
    K, y = P @ rng.standard_normal((3 * n, M)), rng.standard_normal(3 * n)
    K2, y2, null = streaming.invariant_force_rows(atoms, K, y)
    assert null[1] == (3 if pbc else 6) and K2.shape == (3 * n - null[1], M)
    full, part = solver.RowAccumulator(M), solver.RowAccumulator(M)
    full.add("f", K, y, 1.0)
    part.add("f", K2, y2, 1.0)
    part.add_null("f", *null)
    a, b = full.finalize()["f"], part.finalize()["f"]
    np.testing.assert_allclose(b.R.T @ b.R, a.R.T @ a.R, rtol=0, atol=1e-12 * np.abs(a.R).max() ** 2)
    assert b.n_rows == a.n_rows == 3 * n and b.log_inv_w == a.log_inv_w == 0.0


def test_force_rows_that_are_not_invariant_are_kept():
    from ase import Atoms

    from gapkit.gp import streaming

    rng = np.random.default_rng(6)
    atoms = Atoms("C2H5", positions=rng.uniform(0, 4, (7, 3)))
    K, y = rng.standard_normal((21, 60)), rng.standard_normal(21)
    K2, y2, null = streaming.invariant_force_rows(atoms, K, y)
    assert null is None and K2 is K and y2 is y


def test_add_null_alone_sets_the_residual():
    from gapkit.gp import solver

    acc = solver.RowAccumulator(4)
    acc.add_null("f", 9.0, 3)
    g = acc.finalize()["f"]
    assert g.n_rows == 3 and g.R[4, 4] == 3.0 and np.count_nonzero(g.R) == 1
