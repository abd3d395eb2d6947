"""ASE calculator: results contract, MD, relaxation, uncertainties and flags."""

import numpy as np
import pytest
from ase import units
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.calculators.calculator import PropertyNotImplementedError

from gapkit import FlagThreshold, GAPCalculator, UncertaintyExceeded


def test_results_contract(small_model, test_frames):
    atoms = test_frames[0].copy()
    calc = GAPCalculator(small_model)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert f.shape == (len(atoms), 3)
    assert atoms.get_potential_energies().sum() == pytest.approx(e, abs=1e-9)
    assert calc.results["free_energy"] == e
    ref = small_model.predict(atoms)
    assert e == pytest.approx(ref.energy[0], abs=1e-12)
    n = calc.n_calls
    atoms.get_forces()  # cached: no new calculation
    assert calc.n_calls == n
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()
    assert calc.get_property("energy_std", atoms) > 0
    assert "forces_std" not in calc.results  # only what is asked for: no force stds
    assert calc.get_property("forces_std", atoms).shape == (len(atoms), 3)
    assert np.all(calc.results["forces_std"] >= calc.results["forces_std_epistemic"])


def test_get_properties_accepts_every_result_key(small_model, test_frames, calibrated_model):
    """ASE's get_properties (used by i-PI's ASE driver) rejects keys it does not know."""
    from gapkit.calculator import EXTRA_RESULTS

    for model in (small_model, calibrated_model):
        atoms = test_frames[0].copy()
        atoms.calc = GAPCalculator(model, flag_threshold=FlagThreshold(relative=3.0))
        props = atoms.get_properties(["energy", "forces", *EXTRA_RESULTS])
        for name in EXTRA_RESULTS:
            assert np.all(np.isfinite(props[name])), name
        assert props["energies_std"].shape == (len(atoms),)
        assert props["forces_std"].shape == (len(atoms), 3)


def test_energy_std_alone_skips_force_stds_and_matches_predict(calibrated_model, test_frames):
    atoms = test_frames[3].copy()
    atoms.calc = GAPCalculator(calibrated_model)
    s_e = atoms.calc.get_property("energy_std", atoms)
    assert "forces_std" not in atoms.calc.results
    _, std = calibrated_model.predict([atoms], return_std=True, force_std="fast")
    assert s_e == pytest.approx(std.energy[0], rel=1e-10)
    np.testing.assert_allclose(atoms.calc.get_property("forces_std", atoms), std.forces[0],
                               rtol=1e-10)


def test_calculator_checks_geometry_as_predict_does(small_model, test_frames):
    atoms = test_frames[0].copy()
    atoms.positions[1] = atoms.positions[0]
    atoms.calc = GAPCalculator(small_model)
    with pytest.raises(ValueError, match="frame 0"):
        atoms.get_potential_energy()
    bad = test_frames[0].copy()
    bad.positions[2, 1] = np.nan
    bad.calc = GAPCalculator(small_model)
    with pytest.raises(ValueError, match="frame 0"):
        bad.get_forces()


def test_nve_md_conserves_energy(small_model, test_frames):
    atoms = test_frames[0].copy()
    atoms.calc = GAPCalculator(small_model)
    m = atoms.get_masses()[:, None]
    atoms.set_momenta(np.sqrt(m * units.kB * 300) * np.random.default_rng(0).normal(size=(len(atoms), 3)))
    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    etot = []
    dyn.attach(lambda: etot.append(atoms.get_total_energy()), interval=5)
    dyn.run(200)
    etot = np.array(etot)
    assert atoms.get_kinetic_energy() > 0.05  # it really moved
    assert np.ptp(etot) < 5e-3  # eV, for a 9-atom molecule over 50 fs


def test_bfgs_relaxation_lowers_energy(small_model, test_frames):
    atoms = test_frames[4].copy()
    atoms.calc = GAPCalculator(small_model)
    e0 = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < 0.05 + 1e-9


def test_flag_stops_md_when_leaving_the_data(small_model, test_frames):
    atoms = test_frames[0].copy()
    atoms.positions *= 1.25  # stretched: far from the training data
    calc = GAPCalculator(small_model, flag_threshold=FlagThreshold(relative=3.0), on_flag="raise")
    atoms.calc = calc
    with pytest.raises(UncertaintyExceeded, match="uncertainty threshold passed") as info:
        atoms.get_potential_energy()
    assert info.value.entry["flagged"]
    ok = test_frames[1].copy()
    rec = GAPCalculator(small_model, flag_threshold=FlagThreshold(relative=3.0))
    ok.calc = rec
    ok.get_potential_energy()
    assert rec.flag_log and rec.results["flagged_atoms"].shape == (len(ok),)
    with pytest.raises(ValueError, match="on_flag must be"):
        GAPCalculator(small_model, on_flag="explode")
