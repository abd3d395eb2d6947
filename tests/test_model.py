"""The GAP estimator: physics of the predictions and the scikit-learn contract."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from gapkit import GAP, SOAP
from gapkit.data import fit_reference_energies

from conftest import DATA, SMALL_SOAP, finite_difference_forces


def energy_of(model):
    return lambda a: model.predict_structure(a, forces=False)["energy"]


def test_forces_are_minus_energy_gradient(small_model, test_frames):
    atoms = test_frames[3]
    pred = small_model.predict_structure(atoms)
    fd = finite_difference_forces(energy_of(small_model), atoms, h=1e-4)
    np.testing.assert_allclose(pred["forces"], fd, atol=1e-5, rtol=1e-4)


def test_energy_invariant_under_rotation_translation_permutation(small_model, test_frames, rng):
    atoms = test_frames[5]
    ref = small_model.predict_structure(atoms)
    moved = atoms.copy()
    R = Rotation.random(random_state=7).as_matrix()
    moved.positions = atoms.positions @ R.T + np.array([3.0, -1.5, 12.0])
    r2 = small_model.predict_structure(moved)
    assert r2["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(r2["forces"], ref["forces"] @ R.T, atol=1e-8)
    # permute the hydrogens among themselves
    h = np.nonzero(atoms.numbers == 1)[0]
    perm = np.arange(len(atoms))
    perm[h] = rng.permutation(h)
    permuted = atoms[perm]
    r3 = small_model.predict_structure(permuted)
    assert r3["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(r3["forces"], ref["forces"][perm], atol=1e-8)


def test_energy_is_extensive(small_model, test_frames):
    a = test_frames[0]
    b = a.copy()
    b.translate([30.0, 0.0, 0.0])
    e1 = small_model.predict_structure(a)["energy"]
    e2 = small_model.predict_structure(a + b)["energy"]
    assert e2 == pytest.approx(2 * e1, abs=1e-9)


def test_tiny_noise_interpolates_training_energies(train_frames):
    frames = train_frames[:8]
    model = GAP(SOAP(**SMALL_SOAP), n_sparse=10_000, energy_noise=1e-6, force_noise=1.0,
                delta=1.0, jitter=1e-10, random_state=0).fit(frames)
    pred = model.predict(frames, forces=False)
    ref = np.array([a.get_potential_energy() for a in frames])
    np.testing.assert_allclose(pred.energy, ref, atol=1e-4)
    # ... whereas a large energy noise does not interpolate
    loose = GAP(SOAP(**SMALL_SOAP), n_sparse=10_000, energy_noise=0.5, force_noise=1.0,
                delta=1.0, random_state=0).fit(frames)
    assert np.abs(loose.predict(frames, forces=False).energy - ref).max() > 1e-3


def test_fit_learns_the_default_data(small_model, test_frames):
    pred = small_model.predict(test_frames[:20])
    ref_f = np.vstack([a.get_forces() for a in test_frames[:20]])
    mae = np.abs(pred.forces_flat - ref_f).mean()
    assert mae < 0.3 * np.abs(ref_f).mean()  # far better than predicting zero forces


def test_sklearn_contract(train_frames):
    soap = SOAP(**SMALL_SOAP)
    model = GAP(soap, n_sparse=20, zeta=2, random_state=1)
    assert model.get_params()["descriptor__n_max"] == 4
    assert not any(k.endswith("_") for k in vars(model))
    cloned = clone(model)
    assert cloned.get_params()["zeta"] == 2 and cloned.descriptor is not soap
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(train_frames[:1])
    assert model.fit(train_frames[:5]) is model
    assert soap.species is None  # the user's descriptor is never mutated by fit
    assert model.descriptor_.species == ["H", "C", "O"]
    model.set_params(descriptor__n_max=3)
    assert model.descriptor.n_max == 3
    assert isinstance(model.score(train_frames[5:8]), float)


def test_sparse_selection_is_reproducible(train_frames):
    kw = dict(descriptor=SOAP(**SMALL_SOAP), n_sparse={"C": 5, "H": 8, "O": 3})
    a = GAP(**kw, random_state=3).fit(train_frames[:6])
    b = GAP(**kw, random_state=3).fit(train_frames[:6])
    np.testing.assert_array_equal(a.sparse_q_, b.sparse_q_)
    assert [int(np.sum(a.sparse_species_ == z)) for z in (1, 6, 8)] == [8, 5, 3]
    for method in ("random", "fps"):
        m = GAP(**kw, sparse_method=method, random_state=0).fit(train_frames[:6])
        assert len(m.alpha_) == 16


def test_reference_energies(train_frames):
    frames = train_frames[:10]
    e = np.array([a.get_potential_energy() for a in frames])
    iso = fit_reference_energies(str(DATA / "isolated_atoms.xyz"), frames, e, [1, 6, 8])
    assert iso.method == "isolated" and iso.values[1] < 0
    ls = fit_reference_energies("lstsq", frames, e, [1, 6, 8])
    resid = e - np.array([ls.energy(a.numbers) for a in frames])
    assert abs(resid.mean()) < 1e-6 * abs(e.mean())
    zero = fit_reference_energies("zero", frames, e, [1, 6, 8])
    assert zero.energy(frames[0].numbers) == 0.0
    with pytest.raises(ValueError, match="E0 must be 'lstsq', 'zero' or a path"):
        fit_reference_energies("bogus", frames, e, [1, 6, 8])
    with pytest.raises(ValueError, match="has no atom of species"):
        fit_reference_energies(str(DATA / "isolated_atoms.xyz"), frames, e, [1, 6, 8, 7])
    # isolated atoms inside the training list
    iso_frames = __import__("ase.io", fromlist=["read"]).read(DATA / "isolated_atoms.xyz", ":")
    m = GAP(SOAP(**SMALL_SOAP), n_sparse=10, e0="isolated").fit(frames[:4] + iso_frames)
    assert m.e0_.values == pytest.approx(iso.values)
