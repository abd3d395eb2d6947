"""The compression term (gapkit.model.distance_variance): zero inside the training range,
growing as a bond is compressed below it, stored with the calibration."""

import copy
from dataclasses import replace

import numpy as np
import pytest
from ase import Atoms

from gapkit.model import distance_variance as dv


def _without_term(model):
    """A shallow copy of the estimator without the compression term."""
    off = copy.copy(model)
    st = model.state_
    off.state_ = st.replace(calibration=replace(st.calibration, compression={}))
    return off


def _ch_bond(atoms):
    s = atoms.get_chemical_symbols()
    c = s.index("C")
    h = [i for i, x in enumerate(s) if x == "H"]
    return c, h[int(np.argmin(atoms.get_distances(c, h)))]


def _h2(r):
    return Atoms("H2", positions=[[0, 0, 0], [r, 0, 0]])


def test_training_range_and_terms_of_a_dimer():
    frames = [_h2(0.70), _h2(0.74), _h2(0.78), Atoms("H")]
    forces = [np.full((2, 3), 0.5), np.full((2, 3), 0.5), None, np.zeros((1, 3))]
    assert "coordination" in dv.training_range(frames, forces, r_cut=3.0)
    tr = dv.training_range(frames, forces, r_cut=3.0, coordination=False)  # pairs only
    r0, w = tr["pairs"]["1-1"]
    assert r0 == pytest.approx(0.70)
    assert w == pytest.approx(np.std([0.70, 0.74, 0.78]))
    assert tr["force_rms"] == {"1": pytest.approx(0.5)}  # single atoms are left out
    assert dv.compression_terms(_h2(0.70), tr, 3.0) is None  # at the floor: no term
    assert dv.compression_terms(_h2(0.75), tr, 3.0) is None  # inside the range
    F = tr["force_rms"]["1"]
    t = dv.compression_terms(_h2(0.70 - w), tr, 3.0)  # one width below the floor
    np.testing.assert_allclose(t.forces, [F ** 2] * 2)
    np.testing.assert_allclose(t.energies, [0.5 * F * w] * 2)
    assert t.energy == pytest.approx(F * w)
    # a pair the training data never had within the cutoff adds nothing; nor does a
    # range without forces
    assert dv.compression_terms(Atoms("O2", positions=[[0, 0, 0], [0.5, 0, 0]]), tr, 3.0) is None
    assert dv.training_range(frames[:2], [None, None], 3.0) == {}


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="r_cut must be positive"):
        dv.training_range([_h2(0.7)], [None], 0.0)
    with pytest.raises(ValueError, match="forces has 1 entries for 2 frames"):
        dv.training_range([_h2(0.7), _h2(0.8)], [None], 3.0)


def test_term_is_zero_on_training_structures(calibrated_model, train_frames):
    pairs = calibrated_model.calibration_.compression["pairs"]
    assert {"1-1", "1-6", "1-8", "6-6", "6-8"} <= set(pairs)
    frames = train_frames[:45:5] + train_frames[-15::5]  # frames the model was fitted on
    _, on = calibrated_model.predict(frames, return_std=True, force_std="fast")
    _, ref = _without_term(calibrated_model).predict(frames, return_std=True, force_std="fast")
    np.testing.assert_array_equal(on.energy, ref.energy)
    for a, b in zip(on.forces, ref.forces):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("force_std", ["fast", "exact"])
def test_std_grows_monotonically_as_a_bond_is_compressed(calibrated_model, train_frames,
                                                         force_std):
    r0, w = calibrated_model.calibration_.compression["pairs"]["1-6"]
    base = train_frames[0]
    c, h = _ch_bond(base)
    u = base.positions[h] - base.positions[c]
    u /= np.linalg.norm(u)
    frames = []
    deficits = np.array([0.0, 0.5, 1.0, 2.0, 3.0]) * w  # below the C-H floor
    for d in deficits:
        a = base.copy()
        a.positions[h] = a.positions[c] + (r0 - d) * u
        frames.append(a)
    _, std = calibrated_model.predict(frames, return_std=True, force_std=force_std)
    _, ref = _without_term(calibrated_model).predict(frames, return_std=True, force_std=force_std)
    added_e = std.energy_epistemic ** 2 - ref.energy_epistemic ** 2
    added_f = np.array([(s[h] ** 2 - r[h] ** 2).mean() for s, r in zip(std.forces, ref.forces)])
    assert added_e[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(added_e) > 0) and np.all(np.diff(added_f) > 0)
    # the H's force variance gains (F_H d / w)**2 from the C-H pair (and, compressed
    # further, from other pairs of the H that come below their floors)
    F_H = calibrated_model.calibration_.compression["force_rms"]["1"]
    expected = (F_H * deficits / w) ** 2
    np.testing.assert_allclose(added_f[:4], expected[:4], rtol=1e-6, atol=1e-12)
    assert np.all(added_f >= expected * (1 - 1e-9))


def test_range_survives_save_load_and_recalibration(calibrated_model, train_frames, tmp_path):
    from gapkit import load

    a = train_frames[1].copy()
    c, h = _ch_bond(a)
    a.positions[h] = a.positions[c] + 0.8 * (a.positions[h] - a.positions[c])
    back = load(calibrated_model.save(tmp_path / "m.npz"))
    assert back.calibration_.compression == calibrated_model.calibration_.compression
    _, s0 = calibrated_model.predict([a], return_std=True, force_std="fast")
    _, s1 = back.predict([a], return_std=True, force_std="fast")
    np.testing.assert_allclose(s1.energy, s0.energy, rtol=1e-10)
    assert s0.energy[0] > _without_term(calibrated_model).predict(
        [a], return_std=True, force_std="fast")[1].energy[0]
    back.recalibrate(train_frames[50:55])
    assert back.calibration_.compression == calibrated_model.calibration_.compression
