"""The coordination and strain terms (gapkit.model.coordination_variance): exactly 0 inside
the training ranges, growing monotonically outside, stored with the calibration, old
ranges without them unchanged, one neighbour list per structure."""

import copy
from dataclasses import replace

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from gapkit.model import coordination_variance as cv
from gapkit.model import distance_variance as dv

R_CUT = 4.0


def _cu_frames(n=6, seed=0):
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(0.0, 0.05, a.positions.shape)
        out.append(a)
    return out


def _strained(a, f):
    b = a.copy()
    b.set_cell(a.cell * f, scale_atoms=True)
    return b


@pytest.fixture(scope="module")
def cu_range():
    frames = _cu_frames()
    forces = [np.full((len(a), 3), 0.3) for a in frames]
    return frames, dv.training_range(frames, forces, R_CUT)


def _with_calibration_range(model, comp):
    out = copy.copy(model)
    out.state_ = model.state_.replace(calibration=replace(model.state_.calibration,
                                                          compression=comp))
    return out


def _pairs_only(model):
    """The model with the range of the compression term only (as in files before the
    coordination term)."""
    comp = model.calibration_.compression
    return _with_calibration_range(model, {k: v for k, v in comp.items() if k != "coordination"})


def test_switching_function():
    d = np.array([1.0, 2.0, 2.5, 3.0, 4.0])
    f = cv.switching(d, np.full(5, 2.0), np.full(5, 3.0))
    np.testing.assert_allclose(f, [1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-15)
    assert cv.coordination_range(_cu_frames(1), {}, R_CUT, 1.25, 0.01) == {}


def test_zero_on_every_training_frame(cu_range):
    frames, tr = cu_range
    co = tr["coordination"]
    assert set(co) == {"switch", "species", "density", "cut", "strain"}
    r0 = tr["pairs"]["29-29"][0]
    assert co["switch"]["29-29"] == pytest.approx([r0, min(cv.SWITCH_OUTER * r0, R_CUT)])
    for a in frames:
        assert dv.compression_terms(a, tr, R_CUT) is None


def test_vacancy_adds_energy_only_and_grows_with_missing_neighbours(cu_range):
    frames, tr = cu_range
    energy = []
    for n_missing in range(4):
        a = frames[0].copy()
        del a[[0, 1, 2, 3][:n_missing]]
        t = dv.compression_terms(a, tr, R_CUT)
        energy.append(0.0 if t is None else t.energy)
        if t is not None:
            np.testing.assert_array_equal(t.forces, 0.0)  # energies only
            assert t.energy == pytest.approx(t.energies.sum())
            assert np.all(t.energies >= 0)
    assert energy[0] == 0.0
    assert np.all(np.diff(energy) > 0)


@pytest.mark.parametrize("factors", [(1.0, 0.98, 0.96, 0.94), (1.0, 1.02, 1.04, 1.06)])
def test_uniform_strain_both_sides_is_monotone(cu_range, factors):
    frames, tr = cu_range
    e = []
    for f in factors:
        t = dv.compression_terms(_strained(frames[0], f), tr, R_CUT)
        e.append(0.0 if t is None else t.energy)
    assert e[0] == 0.0 and np.all(np.diff(e) > 0)
    # the strain part alone: a perfect lattice strained by 6 % is outside the range
    # of the mean first-shell distance
    perfect = bulk("Cu", "fcc", a=3.61 * factors[-1], cubic=True).repeat((2, 2, 2))
    i, j, d, _ = dv.neighbour_pairs(perfect, R_CUT)
    no_atoms = dict(tr["coordination"], species={}, density={})
    assert cv.coordination_terms(perfect, no_atoms, tr["force_rms"], i, j, d).sum() > 0


def test_one_neighbour_list_and_no_descriptors(cu_range, monkeypatch):
    frames, tr = cu_range
    calls = []
    real = dv.neighbour_pairs

    def counted(atoms, r):
        calls.append(r)
        return real(atoms, r)

    monkeypatch.setattr(dv, "neighbour_pairs", counted)
    dv.compression_terms(_strained(frames[1], 0.95), tr, R_CUT)
    assert calls == [pytest.approx(R_CUT)]  # the density reaches the cutoff


def test_ranges_without_coordination_keys_are_unchanged(cu_range):
    """A range as stored before the coordination term gives the compression term only."""
    frames, tr = cu_range
    old = {k: v for k, v in tr.items() if k != "coordination"}
    a = frames[2].copy()
    a.positions[1] = a.positions[0] + 0.9 * tr["pairs"]["29-29"][0] * np.array([1.0, 0, 0])
    t_old = dv.compression_terms(a, old, R_CUT)
    t_new = dv.compression_terms(a, tr, R_CUT)
    np.testing.assert_array_equal(t_new.forces, t_old.forces)
    assert t_new.energy >= t_old.energy
    assert dv.compression_terms(_strained(frames[0], 1.06), old, R_CUT) is None
    assert dv.compression_terms(_strained(frames[0], 1.06), tr, R_CUT).energy > 0


def test_model_training_frames_bit_for_bit(calibrated_model, train_frames):
    assert "coordination" in calibrated_model.calibration_.compression
    frames = train_frames[:45:5] + train_frames[-15::5]
    _, on = calibrated_model.predict(frames, return_std=True, force_std="fast")
    _, ref = _pairs_only(calibrated_model).predict(frames, return_std=True, force_std="fast")
    np.testing.assert_array_equal(on.energy, ref.energy)
    for a, b in zip(on.forces, ref.forces):
        np.testing.assert_array_equal(a, b)


def test_broken_bond_raises_energy_std_monotonically(calibrated_model, train_frames):
    base = train_frames[0]
    s = base.get_chemical_symbols()
    c = s.index("C")
    h = [k for k, x in enumerate(s) if x == "H"]
    h = h[int(np.argmin(base.get_distances(c, h)))]
    u = base.positions[h] - base.positions[c]
    r = np.linalg.norm(u)
    frames = []
    for stretch in (1.0, 1.2, 1.3, 1.4, 1.8, 2.4, 3.0):
        a = base.copy()
        a.positions[h] = a.positions[c] + stretch * u
        frames.append(a)
    _, on = calibrated_model.predict(frames, return_std=True, forces=False)
    _, ref = _pairs_only(calibrated_model).predict(frames, return_std=True, forces=False)
    added = on.energy_epistemic ** 2 - ref.energy_epistemic ** 2
    assert added[0] == 0.0 and r < 1.2
    # while the bond is in the first shell the mean C-H distance moves out of its range;
    # beyond it (r_1 = 1.6 r_0) the H's coordination is below its range
    assert np.all(np.diff(added[:4]) > 0)
    assert np.all(added[4:] > 0)


def test_saved_and_loaded_with_the_model(calibrated_model, train_frames, tmp_path,
                                         one_blas_thread):
    from gapkit import load

    a = _strained_molecule(train_frames[3])
    back = load(calibrated_model.save(tmp_path / "m.npz"))
    assert back.calibration_.compression == calibrated_model.calibration_.compression
    _, s0 = calibrated_model.predict([a], return_std=True, force_std="fast")
    _, s1 = back.predict([a], return_std=True, force_std="fast")
    np.testing.assert_array_equal(s1.energy, s0.energy)
    assert s0.energy[0] > _pairs_only(calibrated_model).predict(
        [a], return_std=True, force_std="fast")[1].energy[0]
    # a file without the coordination keys (as written before them) predicts as the
    # compression term alone
    old = _pairs_only(calibrated_model)
    back_old = load(old.save(tmp_path / "old.npz"))
    assert "coordination" not in back_old.calibration_.compression
    _, s2 = back_old.predict([a], return_std=True, force_std="fast")
    _, s3 = old.predict([a], return_std=True, force_std="fast")
    np.testing.assert_array_equal(s2.energy, s3.energy)


def _strained_molecule(atoms: Atoms) -> Atoms:
    b = atoms.copy()
    b.positions = b.positions.mean(0) + 1.15 * (b.positions - b.positions.mean(0))
    return b
