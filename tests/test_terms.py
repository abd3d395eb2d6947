"""Additive kernels ("2b+SOAP"): several descriptor terms in one model."""

import numpy as np
import pytest
from ase.build import bulk

from gapkit import GAP, SOAP, Term, load

from conftest import (SMALL_SOAP, SOAP_CU, emt_cu_frames, finite_difference_forces,
                      finite_difference_stress)


def two_terms(zeta_short=2.0, **kw):
    """A short-range low-order term plus a longer-range SOAP term."""
    return [Term(SOAP(r_cut=2.5, n_max=3, l_max=2, sigma=0.5), zeta=zeta_short, n_sparse=20, **kw),
            Term(SOAP(**SMALL_SOAP), n_sparse=40)]


@pytest.fixture(scope="module")
def sum_model(train_frames):
    return GAP(two_terms(), random_state=0, calibrate=False).fit(train_frames[:30])


def test_terms_have_their_own_sparse_sets_and_weights(sum_model):
    t0, t1 = sum_model.terms_
    assert t0.zeta == 2.0 and t1.zeta == 4.0
    assert t0.sparse_q.shape[1] != t1.sparse_q.shape[1]
    assert t0.cols.stop == t1.cols.start and t1.cols.stop == len(sum_model.alpha_)
    # normalised descriptors: "auto" weight gives unit prior variance, i.e. w = 1
    assert t0.weight == pytest.approx(1.0) and t1.weight == pytest.approx(1.0)
    assert len(sum_model.sparse_species_) == len(sum_model.alpha_)
    with pytest.raises(AttributeError, match="one-term models"):
        sum_model.sparse_q_


def test_sum_model_forces_are_exact_derivatives(sum_model, test_frames):
    a = test_frames[0]
    e_fn = lambda x: sum_model.predict_structure(x, forces=False)["energy"]
    r = sum_model.predict_structure(a)
    np.testing.assert_allclose(r["forces"], finite_difference_forces(e_fn, a), atol=2e-6)


def test_sum_model_energy_is_sum_of_term_contributions(sum_model, test_frames):
    """Zeroing one term's weights removes exactly its share of the local energies."""
    a = test_frames[1]
    full = sum_model.predict_structure(a, forces=False)["energies"]
    parts = []
    for t in sum_model.terms_:
        m = GAP(two_terms())
        keep = np.isin(np.arange(len(sum_model.alpha_)), np.arange(len(sum_model.alpha_))[t.cols])
        m.state_ = sum_model.state_.replace(alpha=np.where(keep, sum_model.alpha_, 0.0))
        parts.append(m.predict_structure(a, forces=False)["energies"] - sum_model.e0_.atomic(a.numbers))
    np.testing.assert_allclose(parts[0] + parts[1] + sum_model.e0_.atomic(a.numbers), full,
                               rtol=0, atol=1e-10)
    assert np.all(np.abs(parts[0]) > 0) and np.all(np.abs(parts[1]) > 0)


def test_sum_model_variance_of_sum_is_sum_of_covariance(sum_model, test_frames):
    a = test_frames[2]
    _, std = sum_model.predict([a], return_std=True, forces=False)
    cov = sum_model.local_energy_covariance(a)
    assert std.energy_epistemic[0] ** 2 == pytest.approx(cov.sum(), rel=1e-8)
    np.testing.assert_allclose(std.energies_epistemic[0] ** 2, np.diag(cov), rtol=1e-8)


def test_sum_model_save_load_roundtrip(sum_model, test_frames, tmp_path):
    path = sum_model.save(tmp_path / "sum.npz")
    loaded = load(path)
    assert [type(t).__name__ for t in loaded.descriptor] == ["Term", "Term"]
    assert loaded.get_params()["descriptor"][0].zeta == 2.0
    p0, s0 = sum_model.predict(test_frames[:3], return_std=True)
    p1, s1 = loaded.predict(test_frames[:3], return_std=True)
    np.testing.assert_allclose(p1.energy, p0.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(p1.forces_flat, p0.forces_flat, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.concatenate(s1.forces), np.concatenate(s0.forces), rtol=1e-9)


def test_periodic_sum_model_stress_is_strain_derivative():
    rng = np.random.default_rng(1)
    frames = emt_cu_frames(10, rng)
    model = GAP([Term(SOAP(r_cut=2.8, n_max=3, l_max=2), zeta=1, weight=0.5, n_sparse=10),
                 Term(SOAP(**SOAP_CU), n_sparse=16)],
                energy_noise=0.002, virial_noise=0.02, jitter=1e-6, random_state=0).fit(frames)
    assert model.terms_[0].weight == 0.5
    a = bulk("Cu", "fcc", 3.6, cubic=True)
    a.set_cell(a.cell @ (np.eye(3) + [[0.01, 0.02, 0], [0, -0.01, 0.015], [0.01, 0, 0]]).T,
               scale_atoms=True)
    a.rattle(0.05, seed=3)
    e_fn = lambda x: model.predict_structure(x, forces=False, stress=False)["energy"]
    r = model.predict_structure(a)
    np.testing.assert_allclose(r["forces"], finite_difference_forces(e_fn, a), atol=1e-6)
    np.testing.assert_allclose(r["stress"], finite_difference_stress(e_fn, a), atol=5e-8)


def test_bad_terms_raise(train_frames):
    frames = train_frames[:5]
    with pytest.raises(ValueError, match="weight must be"):
        GAP([Term(SOAP(**SMALL_SOAP), weight=-1.0)]).fit(frames)
    with pytest.raises(ValueError, match="zeta must be"):
        GAP([Term(SOAP(**SMALL_SOAP), zeta=0)]).fit(frames)
    with pytest.raises(ValueError, match="same species"):
        GAP([SOAP(species=["H", "C", "O"], **SMALL_SOAP),
             SOAP(species=["H", "C", "O", "N"], **SMALL_SOAP)]).fit(frames)
    with pytest.raises(ValueError, match="empty list"):
        GAP([]).fit(frames)
