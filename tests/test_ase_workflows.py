"""The ASE workflows of ``benchmarks/ase_workflows.py`` (docs/guide/ase_workflows.md) run
end to end with a tiny GAP fitted on EMT Cu, and give numbers near EMT's.

EMT is the reference and is run through the same workflow functions; each workflow is
also checked against an independent route (bulk modulus from the EOS against
(C11 + 2 C12)/3 from the stress), so a unit or sign slip common to both calculators
fails too.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

import gapkit

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ase_workflows.py"


@pytest.fixture(scope="module")
def wf():
    spec = importlib.util.spec_from_file_location("ase_workflows", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gap_calc(wf):
    frames = wf.make_training_data(wf.FAST, random_state=0)
    assert len(frames) == wf.FAST.n_strained
    return gapkit.GAPCalculator(wf.fit_model(frames, wf.FAST))


@pytest.fixture(scope="module")
def a_emt(wf):
    return wf.relax(EMT())["a"]


def test_training_data_are_emt_labelled(wf):
    frames = wf.make_training_data(wf.Recipe(n_strained=2, n_md=6, repeat=1), random_state=1)
    assert len(frames) == 8
    for atoms in frames:
        ref = atoms.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(atoms.get_potential_energy(), ref.get_potential_energy(), atol=1e-10)
        np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=1e-10)
    # MD frames are thermalised (not the perfect lattice)
    assert np.abs(frames[-1].get_forces()).max() > 0.05


def test_relax_lattice_constant_within_one_percent(wf, gap_calc, a_emt):
    assert a_emt == pytest.approx(wf.A_EMT, abs=2e-3)
    res = wf.relax(gap_calc)
    assert res["a"] == pytest.approx(a_emt, rel=0.01)
    emt_e = wf.relax(EMT())["energy_per_atom"]
    assert res["energy_per_atom"] == pytest.approx(emt_e, abs=0.01)    # eV/atom


def test_eos_and_elastic_constants_near_emt(wf, gap_calc, a_emt):
    ref_eos, ref_c = wf.equation_of_state(EMT(), a_emt), wf.elastic_constants(EMT(), a_emt)
    # two routes to the bulk modulus agree for the reference (units and signs right)
    assert ref_c["B_elastic"] == pytest.approx(ref_eos["B"], rel=0.03)
    assert 100 < ref_eos["B"] < 170                                       # GPa, EMT Cu ~134
    eos = wf.equation_of_state(gap_calc, a_emt)
    assert eos["a0"] == pytest.approx(ref_eos["a0"], rel=0.01)
    assert eos["B"] == pytest.approx(ref_eos["B"], rel=0.10)
    c = wf.elastic_constants(gap_calc, a_emt)
    for key in ("C11", "C12", "C44"):
        assert c[key] == pytest.approx(ref_c[key], rel=0.15), key
    assert c["C11"] > c["C12"] > 0 and c["C44"] > 0                       # mechanically stable


def test_phonons_near_emt(wf, gap_calc, a_emt):
    ref = wf.phonons(EMT(), a_emt, supercell=3, npoints=20)
    ph = wf.phonons(gap_calc, a_emt, supercell=3, npoints=20)
    band, ref_band = np.asarray(ph["band"]), np.asarray(ref["band"])
    assert band.shape == ref_band.shape == (20, 3)
    assert np.abs(ref_band[0]).max() < 0.05                # acoustic sum rule at Γ (THz)
    assert 6 < max(ref["freq_X"]) < 10                      # EMT Cu, THz
    assert ph["mean_dos"] == pytest.approx(ref["mean_dos"], rel=0.10)
    assert max(ph["freq_X"]) == pytest.approx(max(ref["freq_X"]), rel=0.2)
    assert np.abs(band - ref_band).max() < 0.3 * ref_band.max()
