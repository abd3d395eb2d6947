"""The calibration of a split model carried to the final model, the small-block form and
the reference of relative flags (issue #11)."""

from dataclasses import replace

import numpy as np
import pytest

from gapkit.model import calibration as cb
from gapkit.model import calibration_transfer as ct
from gapkit.model.prediction import predict_batch
from gapkit.model.state import Calibration, VarianceScale
from gapkit.model.variance import collect_std, posterior_map


@pytest.fixture(scope="module")
def held_out(small_model, train_frames):
    """Raw variance terms (exact forces) and synthetic errors of 40 unseen frames."""
    st = small_model.state_
    frames = train_frames[40:80]
    parts = [cb.validation_parts(st, a, predict_batch(st, [a], True, False, True, offset=k)[0],
                                 a.get_forces()) for k, a in enumerate(frames)]
    rng = np.random.default_rng(3)
    e_err = np.array([np.sqrt(2.0 * p.energy.posterior + p.energy.nystrom) for p in parts])
    e_err = e_err * rng.normal(size=len(parts))
    f_err = [np.sqrt(3.0 * p.forces.posterior + 0.1 * p.forces.nystrom)
             * rng.normal(size=p.forces.posterior.shape) for p in parts]
    return frames, parts, e_err, f_err


def test_anchored_map_counts_the_data_shrink_once(rng):
    """The final model's V_P = ratio x the split model's: the anchored map gives ratio x
    the split model's mapped term, whatever the power (the unanchored one ratio**p)."""
    s = VarianceScale(1.0, 2.0, 0.1, 1.5, 0.3, 2.2, 1e-3)
    cal = Calibration(energy=s, forces={1: s, 8: replace(s, posterior_power=1.0,
                                                          posterior_ref=1.0)},
                      forces_fast={1: s}, source="x")
    out = ct.anchored(cal, 0.8)
    v = rng.uniform(1e-5, 1e-2, 100)
    for new in (out.energy, out.forces[1], out.forces_fast[1]):
        np.testing.assert_allclose(posterior_map(0.8 * v, new), 0.8 * posterior_map(v, s),
                                   rtol=1e-12)
        assert (new.posterior, new.exponent, new.knee) == (s.posterior, s.exponent, s.knee)
    assert not np.allclose(posterior_map(0.8 * v, s), 0.8 * posterior_map(v, s))
    assert out.forces[8] == cal.forces[8]  # a power-1 map has no reference to move
    assert out.source == cal.source
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        ct.anchored(cal, 0.0)


def test_default_split_fit_anchors_the_map(train_frames, monkeypatch):
    """The default fit holds out 20 % (12 of 60 frames): the final model's calibration is
    the split model's with every power map anchored at 48/60 of its reference."""
    from gapkit import GAP, SOAP
    from gapkit.model import training as tr
    from conftest import SMALL_SOAP

    seen = []
    orig = tr.calibrate_on

    def keep(*a, **kw):
        seen.append(orig(*a, **kw))
        return seen[-1]

    monkeypatch.setattr(tr, "calibrate_on", keep)
    frames = train_frames[:45] + train_frames[-15:]
    cal = GAP(SOAP(**SMALL_SOAP), n_sparse=60, e0="lstsq", random_state=0).fit(frames).calibration_
    split = replace(seen[0], compression=cal.compression)
    assert cal.source == "validation split: 12 of 60 frames"
    assert cal == ct.anchored(split, 48 / 60)
    for s, a in zip((cal.energy, *cal.forces.values()),
                    (seen[0].energy, *seen[0].forces.values())):
        factor = 0.8 if a.posterior_power != 1 else 1.0
        assert s.posterior_ref == pytest.approx(a.posterior_ref * factor)


def test_small_blocks_keep_power_one_and_borrow_the_exponent(small_model, held_out):
    frames, parts, e_err, f_err = held_out
    st = small_model.state_
    cal = cb.fit_calibration(st, frames, parts, e_err, f_err, "x", min_items=len(frames) + 1)
    assert cal.energy.posterior_power == 1.0
    n = {z: 3 * sum(int(np.sum(a.numbers == z)) for a in frames) for z in cal.forces}
    mean = np.average([cal.forces[z].exponent for z in n], weights=[n[z] for z in n])
    assert cal.energy.exponent == pytest.approx(mean, rel=1e-9)
    own = cb.fit_calibration(st, frames, parts, e_err, f_err, "x", min_items=len(frames) + 1,
                             small_exponent=False)
    assert own.energy.posterior_power == 1.0 and own.forces == cal.forces
    # a threshold below every block's size changes nothing
    assert cb.fit_calibration(st, frames, parts, e_err, f_err, "x", min_items=2) == \
        cb.fit_calibration(st, frames, parts, e_err, f_err, "x", min_items=0)


def test_flag_reference_is_a_per_atom_quantile(small_model, held_out):
    """The unit of ``3x``: the REFERENCE_QUANTILE quantile over the validation atoms of an
    atom's largest calibrated epistemic force-component std (and local-energy std); it
    does not grow when the same atoms come in larger frames."""
    frames, parts, e_err, f_err = held_out
    st = small_model.state_
    cal = cb.fit_calibration(st, frames, parts, e_err, f_err, "x")
    std = collect_std(st.replace(calibration=cal), parts, frames, forces=True)
    per_atom = np.concatenate([np.max(f, axis=1) for f in std.forces_epistemic])
    assert cal.reference["quantile"] == cb.REFERENCE_QUANTILE
    assert cal.reference["forces"] == pytest.approx(np.quantile(per_atom, cb.REFERENCE_QUANTILE))
    assert cal.reference["energy_per_atom"] == pytest.approx(
        np.quantile(np.concatenate(std.energies_epistemic), cb.REFERENCE_QUANTILE))
    # the old unit (RMS over frames of each frame's largest std) is above it here
    rms_max = np.sqrt(np.mean([np.max(f) ** 2 for f in std.forces_epistemic]))
    assert cal.reference["forces"] != pytest.approx(rms_max)


def test_old_reference_loads_and_flags_the_same(calibrated_model, test_frames, tmp_path):
    """A file written before the quantile reference (no "quantile" key: RMS of the
    frames' largest stds) keeps its stored reference, hence the same flags."""
    from gapkit import load
    from gapkit.uncertainty.flags import FlagThreshold

    old_ref = {"energy_per_atom": 0.02, "forces": 0.031, "forces_fast": 0.027}
    m = load(calibrated_model.save(tmp_path / "a.npz"))
    m.state_ = m.state_.replace(calibration=replace(m.calibration_, reference=old_ref))
    back = load(m.save(tmp_path / "old.npz"))
    assert back.calibration_.reference == old_ref
    assert back.flag_reference("exact") == {"energy_per_atom": 0.02, "forces": 0.031}
    _, s0 = m.predict(test_frames[:4], return_std=True, force_std="exact")
    _, s1 = back.predict(test_frames[:4], return_std=True, force_std="exact")
    np.testing.assert_allclose(s1.energy, s0.energy, rtol=1e-10)
    thr = FlagThreshold(relative=3.0)
    np.testing.assert_array_equal(
        thr.structure_scores(s1, test_frames[:4], back.flag_reference("exact")),
        thr.structure_scores(s0, test_frames[:4], m.flag_reference("exact")))


def test_power_map_is_capped_beyond_the_calibration_data(rng):
    """Beyond ``posterior_max`` the power map's factor stays at its value there: the term
    grows as the raw V_P (continuous, monotone), and inside nothing changes."""
    s = VarianceScale(1.0, 2.0, 0.1, 1.5, 0.3, 2.5, 1e-3, 4e-3)
    free = replace(s, posterior_max=float("inf"))
    v_in = rng.uniform(0.0, 4e-3, 200)
    np.testing.assert_array_equal(posterior_map(v_in, s), posterior_map(v_in, free))
    v_out = np.array([4e-3, 8e-3, 4e-2, 4.0])
    factor = (4e-3 / 1e-3) ** 1.5
    np.testing.assert_allclose(posterior_map(v_out, s), factor * v_out, rtol=1e-12)
    assert np.all(np.diff(posterior_map(np.linspace(0, 1e-1, 500), s)) > 0)
    assert posterior_map(np.array([4.0]), free)[0] > 100 * posterior_map(np.array([4.0]), s)[0]
    # stored with the map, anchored with the reference; older dicts load uncapped
    assert VarianceScale.from_dict(s.as_dict()) == s
    assert "posterior_max" not in replace(s, posterior_power=1.0).as_dict()
    old = {k: v for k, v in s.as_dict().items() if k != "posterior_max"}
    assert VarianceScale.from_dict(old).posterior_max == float("inf")
    a = ct.anchored(Calibration(energy=s, forces={}, forces_fast={}, source="x"), 0.8).energy
    assert a.posterior_max == pytest.approx(0.8 * 4e-3)


def test_fitted_map_cap_is_the_largest_validation_posterior(small_model, held_out):
    frames, parts, e_err, f_err = held_out
    cal = cb.fit_calibration(small_model.state_, frames, parts, e_err, f_err, "held out",
                             min_items=1)
    v_e = np.array([p.energy.posterior for p in parts]).ravel()
    for s, v in [(cal.energy, v_e)] + [
            (cal.forces[z], np.concatenate([p.forces.posterior[n == z].ravel()
                                            for p, n in zip(parts, [a.numbers for a in frames])]))
            for z in cal.forces]:
        if s.posterior_power != 1.0:
            assert s.posterior_max == pytest.approx(np.max(v[v > 0]), rel=1e-12)
        else:
            assert s.posterior_max == float("inf")


def test_force_std_floor_is_a_tenth_of_the_typical_error(small_model, held_out, monkeypatch):
    """Where the validation errors leave no aleatoric part (the scale fitted to its
    bound, 1e-8, as on the mlearn Si data), the calibrated aleatoric force std keeps
    ``FORCE_FLOOR_FRACTION`` of the block's RMS validation error: a component fixed by
    symmetry (epistemic std ~0) must not claim 1e-5 eV/Å."""
    frames, parts, e_err, f_err = held_out
    st = small_model.state_
    sF2 = st.noise_level("forces") ** 2
    fit_blocks = cb._fit_blocks

    def noise_free(*args, **kw):  # the fit of a noise-free validation set
        beta, scales = fit_blocks(*args, **kw)
        return beta, {k: replace(v, aleatoric=1e-8) for k, v in scales.items()}

    monkeypatch.setattr(cb, "_fit_blocks", noise_free)
    cal = cb.fit_calibration(st, frames, parts, e_err, f_err, "x")
    z = np.concatenate([a.numbers for a in frames])
    e = np.concatenate(f_err)
    assert cal.energy.aleatoric == 1e-8  # energies keep their fit
    for s in np.unique(z):
        want = cb.FORCE_FLOOR_FRACTION * np.sqrt(np.mean(e[z == s] ** 2))
        assert np.sqrt(cal.forces[int(s)].aleatoric * sF2) == pytest.approx(want, rel=1e-9)
        assert cal.forces_fast[int(s)].aleatoric == cal.forces[int(s)].aleatoric
    std = collect_std(st.replace(calibration=cal), parts, frames, True)
    floor = {s: cb.FORCE_FLOOR_FRACTION * np.sqrt(np.mean(e[z == s] ** 2)) for s in np.unique(z)}
    assert np.all(np.concatenate(std.forces) >= np.array([floor[s] for s in z])[:, None]
                  * (1 - 1e-9))
