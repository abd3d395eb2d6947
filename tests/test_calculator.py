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
    assert calc.results["forces_std"].shape == (len(atoms), 3)
    assert np.all(calc.results["forces_std"] >= calc.results["forces_std_epistemic"])


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
