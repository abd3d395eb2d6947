"""Calibration of energies and forces with scales of their own, on synthetic draws.

The errors are drawn from N(0, var) with a known variance built from a real model's
raw variance terms, where energies and forces need different maps of the Nyström term:
the calibration must recover both (ZMS ~ 1 on independent draws for each), which one
exponent shared by energies and forces cannot.
"""

import numpy as np
import pytest

from gapkit.model.calibration import _Block, fit_calibration, fit_exponent_and_scales, validation_parts
from gapkit.model.prediction import predict_batch
from gapkit.model.state import VarianceScale
from gapkit.model.variance import Term3, collect_std


@pytest.fixture(scope="module")
def parts_of_held_out(small_model, train_frames):
    """Raw variance terms (exact forces) of 100 frames the small model was not fitted on."""
    st = small_model.state_
    frames = train_frames[30:130]
    parts = []
    for k, a in enumerate(frames):
        p = predict_batch(st, [a], True, False, True, offset=k)[0]
        parts.append(validation_parts(st, a, p, a.get_forces()))
    return frames, parts


def _true_variances(parts, delta, knee_e):
    """Energy: Nyström term mapped by ``min(1, rho/knee)**3`` plus 0.3 V_P; forces: the
    raw Nyström term times 1 plus 2 V_P, (no aleatoric part)."""
    ve = np.array([p.energy.nystrom * min(1.0, p.energy.rho(delta) / knee_e) ** 3
                   + 0.3 * p.energy.posterior for p in parts])
    vf = [p.forces.nystrom + 2.0 * p.forces.posterior for p in parts]
    return ve, vf


def test_energy_and_force_blocks_get_their_own_exponents(small_model, parts_of_held_out):
    frames, parts = parts_of_held_out
    d = small_model.state_.delta
    cal_f, cal_p = frames[:50], parts[:50]
    knee_e = max(float(p.energy.rho(d)) for p in cal_p)
    rng = np.random.default_rng(7)
    ve, vf = _true_variances(parts, d, knee_e)
    e_err = np.sqrt(ve[:50]) * rng.normal(size=50)
    f_err = [np.sqrt(v) * rng.normal(size=v.shape) for v in vf[:50]]
    # min_items=0: every block fits its own form (50 energies are a small block)
    cal = fit_calibration(small_model.state_, cal_f, cal_p, e_err, f_err, "synthetic",
                          min_items=0)
    assert cal.energy.exponent > 1.0 and all(s.exponent < 1.0 for s in cal.forces.values())
    st = small_model.state_.replace(calibration=cal)
    std = collect_std(st, parts[50:], frames[50:], forces=True)
    # z-scores of 40 independent draws on the 50 other frames, pooled
    ze, zf = [], []
    for _ in range(40):
        ze.append(np.sqrt(ve[50:]) * rng.normal(size=50) / std.energy)
        zf.extend((np.sqrt(v) * rng.normal(size=v.shape) / s).ravel()
                  for v, s in zip(vf[50:], std.forces))
    zms_e, zms_f = np.mean(np.concatenate(ze) ** 2), np.mean(np.concatenate(zf) ** 2)
    assert 0.75 < zms_e < 1.33
    assert 0.85 < zms_f < 1.18


def test_shared_exponent_cannot_serve_both_blocks(rng):
    """Two blocks with exponents 3 and 0.5: one group recovers neither, two recover both."""
    blocks, true = {}, {"e": 3.0, "f": 0.5}
    for name, b in true.items():
        n = 20000
        rho = rng.uniform(1e-3, 1.0, n)
        t = Term3(nystrom=rho, posterior=0.01 * np.ones(n), prior=np.ones(n))
        e = np.sqrt(rho * rho ** b + 0.01) * rng.normal(size=n)
        blocks[name] = _Block(e, t, np.zeros(n), 1.0)
    beta, _ = fit_exponent_and_scales(blocks, groups={"e": "e", "f": "f"})
    assert beta["e"] == pytest.approx(3.0, abs=0.3) and beta["f"] == pytest.approx(0.5, abs=0.1)
    shared, _ = fit_exponent_and_scales(blocks)
    assert 0.7 < shared[0] < 2.8


def test_fit_calibration_needs_validation_frames(small_model):
    with pytest.raises(ValueError, match="at least one validation structure"):
        fit_calibration(small_model.state_, [], [], np.zeros(0), [], "nothing")


def test_old_calibration_files_keep_the_old_map():
    """A stored scale without the keys added later loads with the behaviour of then."""
    old = {"nystrom": 1.0, "posterior": 0.5, "aleatoric": 0.1, "exponent": 2.0, "knee": 0.3}
    s = VarianceScale.from_dict(old)
    assert s == VarianceScale(1.0, 0.5, 0.1, 2.0, 0.3)
    assert VarianceScale.from_dict(s.as_dict()) == s
    with pytest.raises(TypeError, match="unexpected keyword"):
        VarianceScale.from_dict({**old, "banana": 1.0})



def test_unknown_exponent_form_is_refused(small_model, parts_of_held_out):
    frames, parts = parts_of_held_out
    err = [np.zeros((len(a), 3)) for a in frames[:3]]
    with pytest.raises(ValueError, match="exponents must be 'block' or 'shared'"):
        fit_calibration(small_model.state_, frames[:3], parts[:3], np.zeros(3), err, "x",
                        exponents="species")
