"""The default calibrated fit does its work once: every training frame's design rows
are computed once, the held-out frames' rows are added to the split model (same
sparse set), and the geometries are checked once."""

import collections
import copy
import math
import warnings

import numpy as np
import pytest

from gapkit import GAP, SOAP
from gapkit.gp import solver as gp
from gapkit.gp import sparsify, streaming
from gapkit.model import training
from gapkit.model import sparse_counts as sc

from conftest import SMALL_SOAP


@pytest.fixture
def spied(monkeypatch):
    """Record the frames whose design rows are built, the split model handed to the
    calibration, and every geometry check of the fit."""
    seen = {"rows": collections.Counter(), "split": [], "geometry": collections.Counter()}
    chunk, calibrate, check = (streaming.accumulate_chunk, training.calibrate_on,
                               training.check_geometry)

    def rows(spec, frames, *args, **kw):
        seen["rows"].update(id(a) for a in frames)
        return chunk(spec, frames, *args, **kw)

    def calibration(state, *args, **kw):
        seen["split"].append(state)
        return calibrate(state, *args, **kw)

    def geometry(atoms, *args, **kw):
        seen["geometry"][id(atoms)] += 1
        return check(atoms, *args, **kw)

    monkeypatch.setattr(streaming, "accumulate_chunk", rows)
    monkeypatch.setattr(training, "calibrate_on", calibration)
    monkeypatch.setattr(training, "check_geometry", geometry)
    return seen


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_calibrated_fit_builds_each_frames_rows_once(train_frames, spied, n_jobs):
    """A sparse subset: the held-out rows are added to the split model (its sparse set),
    every frame's design rows are built once and its geometry checked once."""
    frames = train_frames[:20]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GAP(SOAP(**SMALL_SOAP), n_sparse=15, random_state=0, chunk_size=4,
                    n_jobs=n_jobs).fit(frames)
    assert model.calibrate
    assert spied["rows"] == collections.Counter({id(a): 1 for a in frames})
    # the training checks look at every frame once (the fit does not check them again)
    assert all(spied["geometry"][id(a)] == 1 for a in frames)
    (split,) = spied["split"]
    final = model.state_
    for a, b in zip(split.terms, final.terms):  # the split model's sparse set, unchanged
        np.testing.assert_array_equal(a.sparse_q, b.sparse_q)
        np.testing.assert_array_equal(a.sparse_species, b.sparse_species)
    np.testing.assert_array_equal(split.kmm_cholesky, final.kmm_cholesky)
    n_rows = {g.kind: n for g, n in final.n_train.items()}  # ... and every frame's rows
    assert n_rows["energy"] == len(frames)
    assert n_rows["forces"] == 3 * sum(len(a) for a in frames)
    assert final.calibration is not None and final.calibration is not split.calibration


def test_every_environment_fit_refits_with_the_held_out_environments(train_frames, spied):
    """n_sparse="auto" on small data takes every environment: the final model has the
    held-out environments as sparse points too (the sparse set of all frames; the split
    model has its points from the training frames)."""
    frames = train_frames[:20]
    n_env = sc.environment_counts(frames)
    assert max(n_env.values()) <= sc.ALL_UP_TO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GAP(SOAP(**SMALL_SOAP), random_state=0, n_jobs=1).fit(frames)
    (split,) = spied["split"]
    Z_split, Z = split.terms[0].sparse_species, model.state_.terms[0].sparse_species
    for z, n in n_env.items():
        assert np.sum(Z_split == z) < np.sum(Z == z) <= n
        assert np.sum(Z == z) >= 0.9 * n  # all distinct environments of all frames
    assert all(spied["geometry"][id(a)] == 1 for a in frames)
    # the training part's chunks twice (all rows once; the split model's energy rows,
    # without descriptor gradients: tests/test_fit_cores.py), held-out once
    rows = spied["rows"]
    once = [a for a in frames if rows[id(a)] == 1]
    assert len(once) == math.ceil(0.2 * len(frames))
    assert all(rows[id(a)] == 2 for a in frames if rows[id(a)] != 1)
    assert model.state_.calibration.source.startswith("validation split")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_added_rows_equal_a_fit_of_all_rows(train_frames, n_jobs):
    """add_rows on the split model (its rows folded into the split model's factors,
    serial or in threads) = the exact solve with every frame's rows and the split
    model's sparse set, E0 and hyperparameters."""
    frames = train_frames[:16]
    est = GAP(SOAP(**SMALL_SOAP), n_sparse=30, e0="lstsq", random_state=0, calibrate=False,
              n_jobs=n_jobs, chunk_size=2)
    state, groups = training.fit_state(est, frames[:10], False)
    added, merged = training.add_rows(est, state, groups, frames[10:])
    data = training.training_data(frames, est.label_keys, est.use_forces)
    spec = streaming.RowSpec(list(state.terms))
    every = streaming.accumulate(spec, data.frames, data.labels,
                                 training.energy_residuals(data, state.e0), n_jobs=1)
    ref = gp.solve(every, state.kmm_cholesky, state.delta, dict(state.noise))
    np.testing.assert_allclose(added.alpha, ref.alpha, rtol=1e-7, atol=1e-10 * np.abs(ref.alpha).max())
    assert added.log_marginal_likelihood == pytest.approx(ref.log_likelihood, rel=1e-9)
    assert {g: r.n_rows for g, r in merged.items()} == {g: r.n_rows for g, r in every.items()}


def test_checked_skips_only_the_geometry_check(train_frames):
    frames = copy.deepcopy(train_frames[:3])  # labels (calculators) included
    frames[1].positions[1] = frames[1].positions[0]
    keys = GAP().label_keys
    with pytest.raises(ValueError, match="frame 1: atoms overlap"):
        training.training_data(frames, keys, True)
    data = training.training_data(frames, keys, True, checked=True)
    assert len(data.labels) == 3


@pytest.mark.parametrize("memory_budget", [None, 0])
def test_threaded_sparse_selection_equals_serial(train_frames, memory_budget):
    """The descriptors of the CUR passes computed by threads give the same choice."""
    frames = train_frames[:12]
    desc = SOAP(species=["H", "C", "O"], **SMALL_SOAP)
    counts = {1: 20, 6: 6, 8: 3}
    ref = sparsify.select_from_frames(desc, frames, counts, "cur", 0, memory_budget=memory_budget)
    got = sparsify.select_from_frames(desc, frames, counts, "cur", 0, memory_budget=memory_budget,
                                      threads=2)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[0], ref[0])
    ks = [5, 0, 3]
    pairs = list(sparsify.frame_descriptors(desc, frames, ks, threads=2))
    assert [k for k, _ in pairs] == ks
    for k, q in pairs:
        np.testing.assert_array_equal(q, desc.compute(frames[k]).q)


def test_threaded_calibration_equals_serial(train_frames, one_blas_thread):
    """The validation frames predicted by threads give the same calibration."""
    frames = train_frames[:12]
    est = GAP(SOAP(**SMALL_SOAP), n_sparse=30, e0="lstsq", random_state=0, calibrate=False,
              n_jobs=1)
    state, _ = training.fit_state(est, frames[:8], False)
    val = train_frames[20:27]
    one = training.calibrate_on(state, val, est.label_keys, None, "v", threads=1)
    two = training.calibrate_on(state, val, est.label_keys, None, "v", threads=2)
    assert one.as_dict() == two.as_dict() and one.as_dict()["source"] == "v"


def test_ordered_map_keeps_order_and_bounds_what_is_in_flight():
    import threading
    import time

    from gapkit.utils import ordered_map

    lock, state = threading.Lock(), {"live": 0, "most": 0}

    def slow(k):
        with lock:
            state["live"] += 1
            state["most"] = max(state["most"], state["live"])
        time.sleep(0.002 * (k % 3))
        with lock:
            state["live"] -= 1
        return k * k

    assert list(ordered_map(slow, range(20), threads=1)) == [k * k for k in range(20)]
    got = []
    for r in ordered_map(slow, range(20), threads=4, ahead=2):
        got.append(r)
    # four threads, but never more than ``ahead`` calls beyond the awaited one
    assert state["most"] <= 3
    assert got == [k * k for k in range(20)]
