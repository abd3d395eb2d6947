"""The prediction's kernel stage and block layout: the lean paths (species rows in
place, in-place scaling, one block instead of a small remainder block) give the
results of the plain formulas."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from conftest import SOAP_CU, emt_cu_frames
from gapkit import GAP, SOAP
from gapkit.descriptors import DescriptorSet, threads
from gapkit.gp import kernels
from gapkit.model import prediction
from gapkit.model.prediction import block_count, predict_batch


def reference_energies_and_gradients(q, numbers, Qm, zm, zeta, w):
    """``eps_i = sum_m w_m (q_i . q_m)**zeta`` over same-species sparse points and
    ``d eps_i / d q_i``, from the dense masked matrices."""
    same = numbers[:, None] == zm[None, :]
    dots = np.clip(q @ Qm.T, 0.0, None)
    eps = np.where(same, dots ** zeta, 0.0) @ w
    grad = np.where(same, zeta * dots ** (zeta - 1), 0.0) * w[None, :] @ Qm
    return eps, grad


@pytest.mark.parametrize("zeta", [1.0, 2.0, 4.0, 2.5])
@pytest.mark.parametrize("layout", ["interleaved", "contiguous", "missing species"])
def test_local_energies_and_gradients_match_the_dense_formula(zeta, layout):
    rng = np.random.default_rng(3)
    n, F = 40, 12
    numbers = {"interleaved": np.tile([1, 6, 8, 1], n // 4),
               "contiguous": np.repeat([1, 6, 8, 1], n // 4),  # H rows split in two runs
               "missing species": np.repeat([1, 6, 7, 8], n // 4)}[layout]
    q = np.abs(rng.normal(size=(n, F)))
    q /= np.linalg.norm(q, axis=1)[:, None]
    zm = np.repeat([1, 6, 8], [5, 3, 4])
    Qm = np.abs(rng.normal(size=(len(zm), F)))
    Qm /= np.linalg.norm(Qm, axis=1)[:, None]
    w = rng.normal(size=len(zm))
    ds = DescriptorSet(q=q, numbers=numbers)
    eps, grad = kernels.local_energies_and_gradients(ds, Qm, zm, zeta, w)
    eps_ref, grad_ref = reference_energies_and_gradients(q, numbers, Qm, zm, zeta, w)
    np.testing.assert_allclose(eps, eps_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-13, atol=1e-14)
    if layout == "missing species":  # no sparse points of N: zero energy and gradient
        assert np.all(grad[numbers == 7] == 0.0) and np.all(eps[numbers == 7] == 0.0)
    e_only, none = kernels.local_energies_and_gradients(ds, Qm, zm, zeta, w, gradients=False)
    assert none is None
    np.testing.assert_allclose(e_only, eps_ref, rtol=1e-13, atol=1e-14)


def test_species_rows_are_a_slice_only_for_one_run():
    z = np.array([8, 1, 1, 1, 6])
    assert kernels._species_rows(z, 1) == slice(1, 4)
    np.testing.assert_array_equal(kernels._species_rows(np.array([1, 6, 1]), 1), [0, 2])
    assert kernels._n_rows(kernels._species_rows(z, 7)) == 0


def test_block_count_has_no_small_remainder_block(monkeypatch):
    threads.set_engine_threads(1)
    try:
        assert block_count(576, 512) == 1  # not 512 + 64
        assert block_count(700, 512) == 1
        assert block_count(800, 512) == 2
        assert block_count(4096, 512) == 8
        assert block_count(10, 3) == 3
    finally:
        threads.set_engine_threads(None)
    threads.set_engine_threads(2)  # two workers share a 576-atom cell equally
    try:
        assert block_count(576, 512) == min(2, threads.numba.config.NUMBA_NUM_THREADS)
        assert block_count(4096, 512) == 8
        assert block_count(700, 512) == block_count(576, 512)  # at most ceil(n / 512)
    finally:
        threads.set_engine_threads(None)


@pytest.fixture(scope="module")
def cu_model():
    frames = emt_cu_frames(5, np.random.default_rng(0))
    return GAP(SOAP(**SOAP_CU), n_sparse=10, jitter=1e-6, delta=0.7, random_state=0,
               calibrate=False).fit(frames)


def test_one_equal_block_equals_the_whole_cell(cu_model, monkeypatch):
    """36 atoms with blocks of 30: one block of 36 (block_count), whose descriptors are
    the block's own rows; equal to the unblocked prediction; delta != 1 scales in place."""
    rng = np.random.default_rng(1)
    cell = bulk("Cu", "fcc", 3.6, cubic=True).repeat((3, 3, 1))
    cell.positions += 0.05 * rng.normal(size=cell.positions.shape)
    assert cu_model.state_.delta != 1.0
    state = cu_model.state_
    sizes = []
    blocked = prediction.predict_blocked

    def spy(state_, atoms, forces, st, baseline=None, index=0, block_atoms=0):
        sizes.append(block_atoms)
        return blocked(state_, atoms, forces, st, baseline, index, block_atoms)

    monkeypatch.setattr(prediction, "predict_blocked", spy)
    threads.set_engine_threads(1)
    try:
        got = predict_batch(state, [cell], True, True, False, block_atoms=30)[0]
    finally:
        threads.set_engine_threads(None)
    whole = predict_batch(state, [cell], True, True, False, block_atoms=10_000)[0]
    assert sizes == [36]
    np.testing.assert_allclose(got.energies, whole.energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.forces, whole.forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.stress, whole.stress, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.descriptors[0].q, whole.descriptors[0].q, atol=1e-12)
    assert np.abs(got.forces).max() > 1e-3
