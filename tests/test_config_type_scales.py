"""Per-config_type multipliers of the calibrated variance (issue #11, item 2)."""

from dataclasses import replace

import numpy as np
import pytest

from gapkit.model import calibration as cb
from gapkit.model import config_type_scales as cts
from gapkit.model.prediction import predict_batch
from gapkit.model.state import Calibration, ConfigTypeScale
from gapkit.model.variance import collect_std


def test_map_factor_recovers_a_variance_ratio(rng):
    z2 = (3.0 * rng.normal(size=4000)) ** 2
    assert cts.map_factor(z2) == pytest.approx(9.0, rel=0.06)
    assert cts.map_factor((0.1 * rng.normal(size=4000)) ** 2) == pytest.approx(0.01, rel=0.06)
    assert cts.map_factor(np.array([])) == 1.0
    # one item says little: the prior about 1 pulls the factor in
    assert 1.0 < cts.map_factor(np.array([100.0])) < 100.0


def test_config_type_scale_rejects_bad_factors():
    with pytest.raises(ValueError, match="energy must be a positive finite number"):
        ConfigTypeScale(energy=-1.0)
    with pytest.raises(ValueError, match="forces must be a positive finite number"):
        ConfigTypeScale(forces=float("nan"))


@pytest.fixture(scope="module")
def two_types(small_model, train_frames):
    """40 unseen frames in two types, "calm" with errors at the raw DTC std and "wild"
    with 3x those errors, calibrated by the default form."""
    st = small_model.state_
    orig = train_frames[40:80]
    parts = [cb.validation_parts(st, a, predict_batch(st, [a], True, False, True, offset=k)[0],
                                 a.get_forces()) for k, a in enumerate(orig)]
    frames = [a.copy() for a in orig]
    raw = collect_std(st, parts, frames, forces=True)
    rng = np.random.default_rng(7)
    mult = np.array([3.0 if k % 2 else 1.0 for k in range(len(frames))])
    for k, a in enumerate(frames):
        a.info["config_type"] = "wild" if k % 2 else "calm"
    e_err = mult * raw.energy * rng.normal(size=len(frames))
    f_err = [m * s * rng.normal(size=s.shape) for m, s in zip(mult, raw.forces)]
    cal = cb.fit_calibration(st, frames, parts, e_err, f_err, "two types")
    return st.replace(calibration=cal), frames, parts, e_err, f_err


def test_each_type_gets_its_own_multipliers(two_types):
    st, frames, parts, e_err, f_err = two_types
    ct = st.calibration.config_types
    assert set(ct) == {"calm", "wild"} and ct["wild"].n_frames == 20
    # forces: thousands of components fix the ratio of the two types' variances (9)
    assert ct["wild"].forces / ct["calm"].forces == pytest.approx(9.0, rel=0.15)
    assert ct["wild"].energy > 2.0 * ct["calm"].energy
    std = collect_std(st, parts, frames, forces=True)
    for t in ("calm", "wild"):
        idx = [k for k, a in enumerate(frames) if a.info["config_type"] == t]
        zf = np.concatenate([(f_err[k] / std.forces[k]).ravel() for k in idx])
        assert np.mean(zf ** 2) == pytest.approx(1.0, abs=0.15)


def test_structures_without_a_known_type_keep_the_pooled_std(two_types):
    st, frames, parts, _, _ = two_types
    pooled = st.replace(calibration=replace(st.calibration, config_types={}))
    plain = [a.copy() for a in frames[:4]]
    for a, t in zip(plain, (None, "other", "calm", "wild")):
        a.info.pop("config_type", None)
        if t is not None:
            a.info["config_type"] = t
    got = collect_std(st, parts[:4], plain, forces=True)
    ref = collect_std(pooled, parts[:4], plain, forces=True)
    np.testing.assert_array_equal(got.energy[:2], ref.energy[:2])
    np.testing.assert_array_equal(got.forces[1], ref.forces[1])
    ct = st.calibration.config_types
    assert got.energy[3] == pytest.approx(ref.energy[3] * np.sqrt(ct["wild"].energy), rel=1e-12)
    np.testing.assert_allclose(got.forces[2], ref.forces[2] * np.sqrt(ct["calm"].forces),
                               rtol=1e-12)
    np.testing.assert_allclose(got.energies_aleatoric[3],
                               ref.energies_aleatoric[3] * np.sqrt(ct["wild"].energy), rtol=1e-12)


def test_one_type_gives_none_and_small_types_keep_the_pooled_scales(small_model, two_types):
    st, frames, parts, e_err, f_err = two_types
    one = [a.copy() for a in frames]
    for a in one:
        a.info["config_type"] = "all"
    assert cts.fit_config_type_scales(small_model.state_.replace(calibration=st.calibration),
                                      one, parts, e_err, f_err) == {}
    few = [a.copy() for a in frames]
    for k, a in enumerate(few):
        a.info["config_type"] = "rare" if k < cts.MIN_FRAMES - 1 else "common"
    assert list(cts.fit_config_type_scales(st, few, parts, e_err, f_err)) == ["common"]
    untyped = [a.copy() for a in frames]
    for k, a in enumerate(untyped):
        if k < 5:
            a.info.pop("config_type")
        else:
            a.info["config_type"] = "main"
    assert list(cts.fit_config_type_scales(st, untyped, parts, e_err, f_err)) == ["main"]
    off = cb.fit_calibration(small_model.state_, frames, parts, e_err, f_err, "x",
                             config_type_key=None)
    assert off.config_types == {}


def test_recalibrate_fits_types_and_they_survive_save_and_load(small_model, train_frames,
                                                              test_frames, tmp_path):
    import copy

    from gapkit import load

    frames = []
    for k, a in enumerate(train_frames[40:80]):
        b = a.copy()
        b.calc = a.calc  # the labels
        b.info["config_type"] = "even" if k % 2 == 0 else "odd"
        frames.append(b)
    model = copy.deepcopy(small_model).recalibrate(frames)
    cal = model.calibration_
    assert set(cal.config_types) == {"even", "odd"}
    path = model.save(tmp_path / "m.npz")
    back = load(path)
    assert back.calibration_ == cal
    from gapkit.cli.info import format_info, model_info

    info = model_info(path)
    assert info["calibration"]["config_types"]["odd"]["n_frames"] == 20
    assert "config_type=odd: std x" in format_info(info)
    from gapkit.cli.info import config_type_lines

    assert config_type_lines({"x": {"energy": 4.0, "forces": 0.25, "n_frames": 30}}) == [
        "config_type=x: std x 2 (energy), x 0.5 (forces), from 30 validation frames"]
    assert Calibration.from_dict(cal.as_dict()) == cal
    test = [a.copy() for a in test_frames[:3]]
    for a in test:
        a.info["config_type"] = "odd"
    _, s0 = model.predict(test, return_std=True)
    _, s1 = back.predict(test, return_std=True)
    np.testing.assert_allclose(s1.energy, s0.energy, rtol=1e-10)
    for a in test:
        a.info.pop("config_type")
    _, s2 = model.predict(test, return_std=True)
    np.testing.assert_allclose(s0.energy, s2.energy * np.sqrt(cal.config_types["odd"].energy),
                               rtol=1e-10)
