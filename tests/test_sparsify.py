"""Sparse-point selection: CUR leverage scores, streamed against in-memory, counts, seeds."""

import numpy as np
import pytest

from gapkit import SOAP
from gapkit.gp.sparsify import _leverage, _leverage_basis, select, select_from_frames

from conftest import SMALL_SOAP


def test_gram_leverage_equals_svd_leverage():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(300, 40)) @ np.diag(np.linspace(3, 0.1, 40))
    k = 12
    U, _, _ = np.linalg.svd(Q, full_matrices=False)
    lev_svd = np.sum(U[:, :k] ** 2, axis=1)
    gram = np.asfortranarray(np.triu(Q.T @ Q))  # only the upper triangle is read
    lev_gram = _leverage(Q, _leverage_basis(gram, k, len(Q)))
    np.testing.assert_allclose(lev_gram, lev_svd, rtol=1e-8, atol=1e-12)
    assert lev_gram.sum() == pytest.approx(k)


@pytest.fixture(scope="module")
def desc():
    return SOAP(species=["H", "C", "O"], **SMALL_SOAP)


def test_streamed_cur_selects_the_same_points_as_in_memory(train_frames, desc, monkeypatch):
    import gapkit.gp.sparsify

    monkeypatch.setattr(gapkit.gp.sparsify, "FOLD_ROWS", 7)  # many small Gram updates
    frames = train_frames[:20]
    counts = {1: 15, 6: 8, 8: 5}
    Qa, Za = select_from_frames(desc, frames, counts, "cur", 3, memory_budget=10 ** 12)
    Qb, Zb = select_from_frames(desc, frames, counts, "cur", 3, memory_budget=0)
    np.testing.assert_array_equal(Za, Zb)
    np.testing.assert_allclose(Qa, Qb, atol=1e-14)
    assert [int(np.sum(Za == z)) for z in (1, 6, 8)] == [15, 8, 5]
    assert np.all(np.diff(Za) >= 0)  # grouped by species in ascending Z


@pytest.mark.parametrize("method", ["cur", "random", "fps"])
def test_selection_is_seeded_and_rows_are_real_environments(train_frames, desc, method):
    frames = train_frames[:10]
    counts = {1: 6, 6: 4, 8: 2}
    Q1, Z1 = select_from_frames(desc, frames, counts, method, 7)
    Q2, Z2 = select_from_frames(desc, frames, counts, method, 7)
    np.testing.assert_array_equal(Q1, Q2)
    everything = np.vstack([desc.compute(a, gradients=False).q for a in frames])
    numbers = np.concatenate([a.numbers for a in frames])
    for q, z in zip(Q1, Z1):  # every chosen row is one of the environments, of its species
        d = np.abs(everything - q).max(axis=1)
        assert d.min() < 1e-14 and numbers[np.argmin(d)] == z
    assert len({tuple(np.round(q, 12)) for q in Q1}) == len(Q1)  # no duplicates


def test_select_caps_and_rejects_bad_counts():
    Q = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_array_equal(select(Q, 10, "cur", 0), np.arange(5))
    with pytest.raises(ValueError, match="positive"):
        select(Q, 0, "cur", 0)
    with pytest.raises(ValueError, match="sparse method"):
        select(Q, 2, "kmeans", 0)
