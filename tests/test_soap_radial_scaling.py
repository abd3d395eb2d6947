"""SOAP radial scaling ``u(r) = 2 / (1 + (r / r0)**m)`` of the neighbour density:
the weight itself, exact position and strain derivatives, ``m = 0`` equal to no
scaling, forces of a fitted model equal to ``-dE/dx``, the model file, bad values."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from conftest import si_primitive_skewed
from gapkit import GAP, SOAP, load
from gapkit.descriptors.soap_engine import SOAPEngine
from test_soap_engine import CHO, dense_dp, ethanol, fd_positions, fd_strain


def test_weight_is_the_cutoff_times_the_scaling():
    r = np.linspace(0.5, 4.5, 41)
    plain = SOAPEngine(CHO, 4.0, 3, 2, 0.5, cutoff="cosine", cutoff_width=1.0)
    scaled = SOAPEngine(CHO, 4.0, 3, 2, 0.5, cutoff="cosine", cutoff_width=1.0,
                        radial_scaling=3.0, radial_scaling_r0=1.5)
    f, fq = plain._cutoff_fn(r)
    g, gq = scaled._cutoff_fn(r)
    u = 2.0 / (1.0 + (r / 1.5) ** 3)
    np.testing.assert_allclose(g, f * u, rtol=1e-14, atol=1e-300)
    # (f u)'/r against central differences of f u
    h = 1e-6
    num = (scaled._cutoff_fn(r + h)[0] - scaled._cutoff_fn(r - h)[0]) / (2 * h) / r
    inside = (np.abs(r - 3.0) > 1e-3) & (r < 4.0 - 1e-3)  # away from the kinks at r_cut - w, r_cut
    np.testing.assert_allclose(gq[inside], num[inside], rtol=1e-6, atol=1e-9)
    assert scaled._cutoff_fn(np.array([1.5]))[0][0] == pytest.approx(1.0)  # u(r0) = 1


@pytest.mark.parametrize("cutoff", ["cosine", "dscribe"])
def test_position_derivatives_match_finite_differences(cutoff):
    at = ethanol(2, amp=0.1)
    eng = SOAPEngine(CHO, 3.5, 4, 3, 0.5, cutoff=cutoff, cutoff_width=1.0,
                     radial_scaling=2.0, radial_scaling_r0=1.2)
    res = eng.compute(at, gradients=True)
    fd = fd_positions(eng, at)
    assert np.abs(dense_dp(res, len(at)) - fd).max() < 1e-7 * np.abs(fd).max()


def test_periodic_position_and_strain_derivatives():
    at = si_primitive_skewed(5)
    eng = SOAPEngine([14], 4.0, 4, 3, 0.5, cutoff="cosine", radial_scaling=4.0,
                     radial_scaling_r0=2.5)
    res = eng.compute(at, gradients=True, strain=True)
    fd = fd_positions(eng, at)
    assert np.abs(dense_dp(res, len(at)) - fd).max() < 1e-7 * np.abs(fd).max()
    fs = fd_strain(eng, at)
    assert np.abs(res.dp_strain - fs).max() < 1e-7 * np.abs(fs).max()


def test_zero_exponent_is_no_scaling_and_a_positive_one_changes_the_features():
    at = ethanol(4)
    ref = SOAP(species=CHO, r_cut=4.0, n_max=4, l_max=3).compute(at)
    off = SOAP(species=CHO, r_cut=4.0, n_max=4, l_max=3, radial_scaling=0.0,
               radial_scaling_r0=2.0).compute(at)
    np.testing.assert_array_equal(off.q, ref.q)
    # the formula itself at a vanishing exponent: u -> 1, u' -> 0
    tiny = SOAP(species=CHO, r_cut=4.0, n_max=4, l_max=3, radial_scaling=1e-10).compute(at)
    assert np.abs(tiny.q - ref.q).max() < 1e-9
    on = SOAP(species=CHO, r_cut=4.0, n_max=4, l_max=3, radial_scaling=3.0).compute(at)
    assert np.abs(on.q - ref.q).max() > 1e-2


def test_fitted_forces_are_minus_the_energy_gradient_and_survive_the_file(tmp_path):
    from ase.calculators.emt import EMT
    rng = np.random.default_rng(0)
    frames = []
    for k in range(6):
        a = bulk("Cu", "fcc", 3.6, cubic=True)
        a.rattle(0.08, rng=rng)
        a.calc = EMT()
        a.get_potential_energy()
        frames.append(a)
    soap = SOAP(r_cut=4.0, n_max=4, l_max=3, radial_scaling=2.0, radial_scaling_r0=2.5)
    model = GAP(soap, n_sparse=40, calibrate=False, random_state=0).fit(frames)
    test = bulk("Cu", "fcc", 3.6, cubic=True)
    test.rattle(0.05, rng=np.random.default_rng(9))
    p = model.predict_structure(test)
    h = 1e-3  # the energy's round-off (sum over atoms, E0) limits smaller steps
    for j, a in ((0, 0), (2, 1), (3, 2)):
        tp, tm = test.copy(), test.copy()
        tp.positions[j, a] += h
        tm.positions[j, a] -= h
        dE = (model.predict_structure(tp, forces=False).energy
              - model.predict_structure(tm, forces=False).energy) / (2 * h)
        assert p.forces[j, a] == pytest.approx(-dE, rel=1e-5, abs=1e-7)
    path = model.save(tmp_path / "m.npz")
    again = load(path)
    kept = again.descriptor
    assert (kept.radial_scaling, kept.radial_scaling_r0) == (2.0, 2.5)
    p2 = again.predict_structure(test)
    assert p2.energy == pytest.approx(p.energy, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(p2.forces, p.forces, rtol=1e-8, atol=1e-10)
    # a model without the scaling predicts differently: the file kept it
    plain = GAP(SOAP(r_cut=4.0, n_max=4, l_max=3), n_sparse=40, calibrate=False,
                random_state=0).fit(frames)
    assert abs(plain.predict_structure(test).energy - p.energy) > 1e-6


@pytest.mark.parametrize("kw,match", [
    ({"radial_scaling": -1.0}, "radial_scaling must be >= 0"),
    ({"radial_scaling": float("nan")}, "radial_scaling must be >= 0"),
    ({"radial_scaling": 2.0, "radial_scaling_r0": 0.0}, "radial_scaling_r0 must be > 0"),
    ({"radial_scaling": 2.0, "backend": "dscribe", "cutoff": "dscribe"}, "needs backend='engine'"),
])
def test_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        SOAP(species=CHO, **kw).compute(ethanol(0))
