"""Blocked evaluation (centres in blocks, one VJP per block), engine threads and the
shared neighbour list: results equal the unblocked ones to round-off."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from conftest import SOAP_CU, emt_cu_frames
from gapkit import ACSF, GAP, SOAP
from gapkit.data import geometry
from gapkit.data.geometry import check_geometry
from gapkit.descriptors import threads
from gapkit.descriptors.neighbours import neighbour_pairs
from gapkit.descriptors.soap_engine import SOAPEngine
from gapkit.model.prediction import predict_batch


@pytest.fixture(scope="module")
def cu_frames():
    return emt_cu_frames(6, np.random.default_rng(0))


@pytest.fixture(scope="module")
def cu_model(cu_frames):
    # few sparse points and some jitter: weights ~1e2, so round-off stays far below 1e-10
    return GAP(SOAP(**SOAP_CU), n_sparse=10, jitter=1e-6, random_state=0,
               calibrate=False).fit(cu_frames)


def cu_cell(repeat=(2, 2, 2), seed=1):
    rng = np.random.default_rng(seed)
    a = bulk("Cu", "fcc", 3.6, cubic=True).repeat(repeat)
    a.set_cell(a.cell @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))).T, scale_atoms=True)
    a.positions += 0.05 * rng.normal(size=a.positions.shape)
    return a


def assert_same(p, q, tol=1e-10):
    assert p.energy == pytest.approx(q.energy, rel=tol, abs=tol)
    np.testing.assert_allclose(p.energies, q.energies, rtol=0, atol=tol)
    np.testing.assert_allclose(p.forces, q.forces, rtol=0, atol=tol)
    if q.stress is None:
        assert p.stress is None
    else:
        np.testing.assert_allclose(p.stress, q.stress, rtol=0, atol=tol)


@pytest.mark.parametrize("block", [1, 5, 13])
def test_blocked_prediction_equals_unblocked(cu_model, block):
    cell = cu_cell()
    state = cu_model.state_
    whole = predict_batch(state, [cell], True, True, False, block_atoms=10_000)[0]
    blocked = predict_batch(state, [cell], True, True, False, block_atoms=block)[0]
    assert blocked.stress is not None and np.abs(blocked.forces).max() > 1e-3
    assert_same(blocked, whole)
    np.testing.assert_allclose(blocked.descriptors[0].q, whole.descriptors[0].q, atol=1e-12)


def test_block_threads_give_the_same_forces(cu_model, monkeypatch):
    """Blocks on two worker threads: the same energies, forces and stress (block order
    sums), and the workers really ran in parallel threads."""
    import threading

    from gapkit.model import prediction

    cell = cu_cell()
    state = cu_model.state_
    one = predict_batch(state, [cell], True, True, False, block_atoms=5)[0]
    seen, job = set(), prediction._block_job

    def spy(task, **kw):
        seen.add(threading.get_ident())
        return job(task, **kw)

    monkeypatch.setattr(prediction, "_block_job", spy)
    threads.set_engine_threads(2)
    try:
        assert threads.block_threads(7) == min(2, threads.numba.config.NUMBA_NUM_THREADS)
        two = predict_batch(state, [cell], True, True, False, block_atoms=5)[0]
    finally:
        threads.set_engine_threads(None)
    parallel = threads.numba.config.NUMBA_NUM_THREADS >= 2  # one core: serial, in this thread
    assert (threading.get_ident() not in seen) == parallel and len(seen) >= 1
    assert_same(two, one, tol=1e-12)


def test_default_block_threads_are_the_free_cores(monkeypatch):
    """Nothing set: one worker per free core (1 on a busy machine); a setting wins."""
    import os

    assert 1 <= threads.free_cores() <= len(os.sched_getaffinity(0))
    cores = threads.numba.config.NUMBA_NUM_THREADS
    monkeypatch.delenv("GAPKIT_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    assert threads.block_threads(7) == 1
    monkeypatch.setattr(threads, "free_cores", lambda: 64)
    assert threads.block_threads(7) == min(7, cores) and threads.block_threads(1) == 1
    assert threads.get_engine_threads() == 1  # the compiled loops stay on one thread
    monkeypatch.setenv("GAPKIT_NUM_THREADS", "1")
    assert threads.block_threads(7) == 1
    with threads.engine_threads(1):
        monkeypatch.delenv("GAPKIT_NUM_THREADS")
        assert threads.block_threads(7) == 1  # never inside an engine call


def test_mixed_batch_keeps_frame_order(cu_model, cu_frames):
    """Large frames are blocked, small ones batched; results come back in frame order."""
    frames = [cu_frames[0], cu_cell(seed=2), cu_frames[1], cu_cell((1, 1, 2), seed=3)]
    state = cu_model.state_
    ref = [predict_batch(state, [a], True, None, False, block_atoms=10_000)[0] for a in frames]
    got = predict_batch(state, frames, True, None, False, block_atoms=8)
    assert [len(r.energies) for r in got] == [len(a) for a in frames]
    for p, q in zip(got, ref):
        assert_same(p, q)


def test_blocked_molecule_with_several_species(small_model, test_frames):
    mol = test_frames[0]
    state = small_model.state_
    whole = predict_batch(state, [mol], True, None, False, block_atoms=10_000)[0]
    blocked = predict_batch(state, [mol], True, None, False, block_atoms=2)[0]
    assert len(set(mol.numbers)) > 1 and blocked.stress is None
    assert_same(blocked, whole)


def test_acsf_model_falls_back_to_one_block(cu_frames):
    m = GAP(ACSF(r_cut=3.5), n_sparse=15, random_state=0, calibrate=False).fit(cu_frames)
    cell = cu_cell()
    whole = predict_batch(m.state_, [cell], True, True, False, block_atoms=10_000)[0]
    blocked = predict_batch(m.state_, [cell], True, True, False, block_atoms=3)[0]
    assert_same(blocked, whole)


def test_engine_blocks_equal_whole_structure():
    at = cu_cell()
    at.numbers[::3] = 29
    at.numbers[1::3] = 47
    eng = SOAPEngine([29, 47], 3.5, 4, 3, 0.5, cutoff="cosine")
    res = eng.compute(at, gradients=False, keep=True)
    g = np.random.default_rng(0).normal(size=res.p.shape)
    r_ref, eta_ref = res.vjp(g, strain=True)
    out = (np.zeros((len(at), 3)), np.zeros((3, 3)))
    starts = []
    for blk in eng.compute_blocks(at, 7):
        starts.append(blk.start)
        np.testing.assert_allclose(blk.p, res.p[blk.start:blk.stop], rtol=1e-12, atol=1e-14)
        blk.vjp(g[blk.start:blk.stop], True, out=out)
    assert starts == list(range(0, len(at), 7))
    np.testing.assert_allclose(out[0], r_ref, atol=1e-11)
    np.testing.assert_allclose(out[1], eta_ref, atol=1e-11)


def test_bad_block_size_and_thread_counts(cu_model, monkeypatch):
    with pytest.raises(ValueError, match="block_atoms must be >= 1"):
        next(cu_model.descriptor_.vjp_blocks(cu_cell(), 0))
    with pytest.raises(ValueError, match="engine threads must be >= 1"):
        threads.set_engine_threads(0)
    monkeypatch.setenv("GAPKIT_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="GAPKIT_NUM_THREADS must be a positive integer"):
        threads.get_engine_threads()
    monkeypatch.setenv("GAPKIT_NUM_THREADS", "3")
    assert threads.get_engine_threads() == 3
    monkeypatch.delenv("GAPKIT_NUM_THREADS")
    assert threads.get_engine_threads() == 1


def test_engine_threads_cap_blas_and_restore():
    from threadpoolctl import threadpool_info

    before = {d["filepath"]: d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}
    with threads.engine_threads(1) as n:
        assert n == 1
        inside = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
        assert all(k == 1 for k in inside)
        with threads.engine_threads(1):  # nested: cheap, still capped
            pass
    after = {d["filepath"]: d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}
    assert after == before


def test_geometry_check_list_is_reused_by_the_descriptors(monkeypatch):
    at = cu_cell()
    calls = []
    search = geometry._search
    monkeypatch.setattr(geometry, "_search", lambda a, r: calls.append(r) or search(a, r))
    geometry.clear_neighbour_cache()
    check_geometry(at, neighbour_cutoff=3.5)
    i, j, d, D = neighbour_pairs(at, 3.5)
    i2, _, d2, _ = neighbour_pairs(at, 2.0)  # shorter: filtered from the kept list
    assert calls == [3.5]
    assert not i.flags.writeable and np.all(d < 3.5) and np.all(d2 < 2.0)
    np.testing.assert_array_equal(i2, i[d < 2.0])
    moved = at.copy()
    moved.positions[0, 0] += 1e-9  # another structure: searched again
    neighbour_pairs(moved, 3.5)
    assert calls == [3.5, 3.5]
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        geometry.neighbour_list(at, 0.0)


def test_compiled_power_spectrum_and_its_gradient_match_gram_matrices():
    """The compiled power spectrum and dE/dc equal whole-Gram-matrix numpy products."""
    at = cu_cell((2, 2, 2))
    at.numbers[::2] = 47
    eng = SOAPEngine([29, 47], 3.5, 4, 3, 0.5, cutoff="cosine")
    env = eng._environment(at)
    eng._prepare(env, derivative=True)
    c = eng._coefficients(env)
    N, nsn, L = len(at), 2 * eng.n_max, eng.l_max
    G = np.stack([x @ x.transpose(0, 2, 1) for x in eng._c_by_l(c)], axis=1)
    p_ref = G.reshape(N, -1)[:, eng._f_flat] * eng._f_prel
    np.testing.assert_allclose(eng._power(c), p_ref, rtol=1e-13, atol=1e-14 * abs(p_ref).max())
    g = np.random.default_rng(1).normal(size=(N, eng.n_features))
    W = np.zeros((N, (L + 1) * nsn * nsn))
    W[:, eng._f_flat] = g * eng._f_prel
    W = W.reshape(N, L + 1, nsn, nsn)
    W = W + W.transpose(0, 1, 3, 2)
    gc_ref = np.empty_like(c)
    for l, x in enumerate(eng._c_by_l(c)):
        gl = np.matmul(W[:, l], x).reshape(N, 2, eng.n_max, 2 * l + 1)
        gc_ref[:, :, l * l:(l + 1) ** 2] = gl.transpose(0, 1, 3, 2)
    np.testing.assert_allclose(eng._grad_c(c, g), gc_ref, rtol=0, atol=1e-13 * abs(gc_ref).max())


def test_repeated_engine_calls_reuse_freed_memory():
    """With glibc's thresholds raised, a repeated call re-maps (page-faults) almost nothing."""
    import resource

    from gapkit.descriptors.memory import keep_freed_memory

    eng = SOAPEngine([14], 5.4, 8, 8, 0.5, cutoff="cosine")
    at = bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 2, 2))
    at.rattle(0.05, seed=0)
    assert keep_freed_memory() is True  # Linux with glibc, GAPKIT_KEEP_FREED_MEMORY unset
    g = np.random.default_rng(0).normal(size=(len(at), eng.n_features))
    for _ in range(2):
        eng.compute(at, gradients=False, keep=True).vjp(g, strain=True)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    eng.compute(at, gradients=False, keep=True).vjp(g, strain=True)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    assert faults < 100  # ~1800 pages of temporaries without the settings


def test_freed_memory_setting_can_be_switched_off(monkeypatch):
    from gapkit.descriptors import memory

    monkeypatch.setenv("GAPKIT_KEEP_FREED_MEMORY", "0")
    assert memory._apply() is False
