"""Tests of gapkit.physics.baselines: Ewald / direct Coulomb baseline and the Born-Mayer reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read

from gapkit.physics.baselines import (BASELINES, COULOMB_CONSTANT, BornMayerCoulomb,
                                      CoulombBaseline, baseline_from_dict)

from conftest import finite_difference_forces

K = COULOMB_CONSTANT
NACL = {"Na": 1.0, "Cl": -1.0}
# Madelung constants (per ion pair, referred to the nearest-neighbour distance)
M_NACL = 1.747564594633
M_CSCL = 1.762674773070
BM_PARAMS = {"Na-Cl": (1220.0, 0.317)}
DATA = Path(__file__).resolve().parent.parent / "data"


def energy(calc, atoms: Atoms) -> float:
    return calc.evaluate(atoms)["energy"]


def fd_forces(calc, atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    return finite_difference_forces(lambda a: energy(calc, a), atoms, h=h)


def fd_stress(calc, atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    """(1/V) dE/dε_ab by central differences; Voigt order (xx, yy, zz, yz, xz, xy)."""
    cell = atoms.cell.array.copy()
    vol = atoms.get_volume()
    out = []
    for a, b in [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]:
        es = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] = sign * h
            s = atoms.copy()
            s.set_cell(cell @ (np.eye(3) + eps).T, scale_atoms=True)
            es.append(energy(calc, s))
        out.append((es[0] - es[1]) / (2 * h * vol))
    return np.array(out)


def rattled_nacl8(seed: int = 0, amp: float = 0.1) -> Atoms:
    at = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    at.rattle(amp, seed=seed)
    return at


def triclinic_nacl(seed: int = 1) -> Atoms:
    at = rattled_nacl8(seed)
    rng = np.random.default_rng(seed)
    at.set_cell(at.cell.array @ (np.eye(3) + 0.08 * rng.standard_normal((3, 3))).T,
                scale_atoms=True)
    return at


# ---------------------------------------------------------------- Madelung constants
@pytest.mark.parametrize("structure", ["NaCl", "CsCl"])
def test_madelung_constants(structure):
    if structure == "NaCl":
        a = 5.64
        atoms, r_nn, m_ref = bulk("NaCl", "rocksalt", a=a), a / 2, M_NACL
    else:
        a = 4.12
        atoms, r_nn, m_ref = bulk("CsCl", "cesiumchloride", a=a), a * np.sqrt(3) / 2, M_CSCL
    charges = {"Na": 1, "Cl": -1, "Cs": 1}
    n_pairs = len(atoms) / 2
    e_default = energy(CoulombBaseline(charges), atoms)
    m = -e_default / n_pairs * r_nn / K
    assert m == pytest.approx(m_ref, rel=1e-6)
    # independent of the splitting parameter
    e1 = energy(CoulombBaseline(charges, accuracy=1e-12, alpha=0.4), atoms)
    e2 = energy(CoulombBaseline(charges, accuracy=1e-12, alpha=1.2), atoms)
    assert e1 == pytest.approx(e2, rel=1e-8)
    assert -e1 / n_pairs * r_nn / K == pytest.approx(m_ref, rel=1e-9)
    # the supercell gives 8x the energy; per-atom energies are -M k / (2 r_nn) for |q| = 1
    big = atoms.repeat(2)
    assert energy(CoulombBaseline(charges), big) == pytest.approx(8 * e_default, rel=1e-7)
    np.testing.assert_allclose(CoulombBaseline(charges, accuracy=1e-12).evaluate(atoms)
                               ["energies"], -m_ref * K / (2 * r_nn), rtol=1e-9)


def test_charge_scaling_and_epsilon():
    atoms = bulk("NaCl", "rocksalt", a=5.64)
    e1 = energy(CoulombBaseline(NACL), atoms)
    assert energy(CoulombBaseline({"Na": 2, "Cl": -2}), atoms) == pytest.approx(4 * e1, rel=1e-7)
    assert energy(CoulombBaseline(NACL, epsilon_r=4.0), atoms) == pytest.approx(e1 / 4, rel=1e-7)
    assert energy(CoulombBaseline({11: 1, 17: -1}), atoms) == pytest.approx(e1, rel=1e-12)


# ---------------------------------------------------------------- forces and stress
def test_ewald_forces_fd():
    atoms = rattled_nacl8()
    calc = CoulombBaseline(NACL, accuracy=1e-12, alpha=1.0)
    f = calc.evaluate(atoms)["forces"]
    assert np.abs(f).max() > 0.1  # not trivially zero
    np.testing.assert_allclose(f, fd_forces(calc, atoms), atol=1e-6)
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-9)


@pytest.mark.parametrize("kind", ["cubic8", "triclinic8", "primitive2"])
def test_ewald_stress_fd(kind):
    if kind == "cubic8":
        atoms = rattled_nacl8(2)
    elif kind == "triclinic8":
        atoms = triclinic_nacl(3)
    else:
        atoms = bulk("NaCl", "rocksalt", a=5.5)
        atoms.rattle(0.05, seed=4)
    calc = CoulombBaseline(NACL, accuracy=1e-12, alpha=0.9)
    s = calc.evaluate(atoms)["stress"]
    np.testing.assert_allclose(s, fd_stress(calc, atoms), atol=1e-7)
    if kind == "triclinic8":
        np.testing.assert_allclose(calc.evaluate(atoms)["forces"], fd_forces(calc, atoms),
                                   atol=1e-6)


def test_ewald_default_parameters_consistent():
    """Default (structure-dependent) alpha: stress and forces agree with a fixed alpha."""
    atoms = triclinic_nacl(5)
    r_def = CoulombBaseline(NACL).evaluate(atoms)
    r_fix = CoulombBaseline(NACL, accuracy=1e-12, alpha=0.7).evaluate(atoms)
    assert r_def["energy"] == pytest.approx(r_fix["energy"], rel=1e-8)
    np.testing.assert_allclose(r_def["forces"], r_fix["forces"], atol=1e-6)
    np.testing.assert_allclose(r_def["stress"], r_fix["stress"], atol=1e-7)
    r_rc = CoulombBaseline(NACL, r_cut=6.0).evaluate(atoms)
    assert r_rc["energy"] == pytest.approx(r_fix["energy"], rel=1e-8)


def test_non_neutral_cell_background():
    """A net cell charge gets the neutralising background: alpha independent, FD stress."""
    atoms = rattled_nacl8(6)
    atoms.symbols[0] = "K"
    charges = {"Na": 1.0, "Cl": -1.0, "K": 2.0}
    c1 = CoulombBaseline(charges, accuracy=1e-12, alpha=0.5)
    c2 = CoulombBaseline(charges, accuracy=1e-12, alpha=1.1)
    r1, r2 = c1.evaluate(atoms), c2.evaluate(atoms)
    assert r1["energy"] == pytest.approx(r2["energy"], rel=1e-9)
    np.testing.assert_allclose(r1["forces"], r2["forces"], atol=1e-7)
    np.testing.assert_allclose(r1["stress"], r2["stress"], atol=1e-9)
    np.testing.assert_allclose(r1["stress"], fd_stress(c1, atoms), atol=1e-7)


def test_per_atom_translation_supercell():
    atoms = triclinic_nacl(7)
    calc = CoulombBaseline(NACL)
    r = calc.evaluate(atoms)
    assert r["energies"].shape == (8,)
    assert r["energies"].sum() == pytest.approx(r["energy"], rel=1e-12)
    moved = atoms.copy()
    moved.translate([0.37, -1.3, 2.9])
    r_m = calc.evaluate(moved)
    assert r_m["energy"] == pytest.approx(r["energy"], rel=1e-8)
    np.testing.assert_allclose(r_m["energies"], r["energies"], atol=1e-6)
    moved.wrap()
    assert energy(calc, moved) == pytest.approx(r["energy"], rel=1e-8)
    big = atoms.repeat((2, 2, 2))
    r_b = calc.evaluate(big)
    assert r_b["energy"] == pytest.approx(8 * r["energy"], rel=1e-8)
    np.testing.assert_allclose(r_b["energies"], np.tile(r["energies"], 8), atol=1e-6)
    np.testing.assert_allclose(r_b["forces"], np.tile(r["forces"], (8, 1)), atol=1e-6)
    np.testing.assert_allclose(r_b["stress"], r["stress"], atol=1e-8)


def test_ase_calculator_interface():
    atoms = rattled_nacl8(8)
    calc = CoulombBaseline(NACL)
    atoms.calc = calc
    r = calc.evaluate(atoms)
    assert atoms.get_potential_energy() == pytest.approx(r["energy"])
    np.testing.assert_allclose(atoms.get_forces(), r["forces"])
    np.testing.assert_allclose(atoms.get_stress(), r["stress"])
    np.testing.assert_allclose(atoms.get_potential_energies(), r["energies"])
    np.testing.assert_allclose(atoms.get_stress(voigt=False)[[0, 1, 2, 1, 0, 0],
                                                             [0, 1, 2, 2, 2, 1]], r["stress"])
    assert calc.results["free_energy"] == calc.results["energy"]


# ---------------------------------------------------------------- finite systems
def test_finite_dimer_and_fd():
    dimer = Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 50.0]])
    calc = CoulombBaseline(NACL)
    r = calc.evaluate(dimer)
    assert r["energy"] == pytest.approx(-K / 50.0, rel=1e-13)
    np.testing.assert_allclose(r["energies"], -K / 100.0)
    np.testing.assert_allclose(r["forces"][0], [0, 0, K / 50.0 ** 2], rtol=1e-12)
    assert "stress" not in r

    cluster = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    cluster.pbc = False
    cluster.rattle(0.1, seed=9)
    r = calc.evaluate(cluster)
    assert r["energies"].sum() == pytest.approx(r["energy"], rel=1e-12)
    np.testing.assert_allclose(r["forces"], fd_forces(calc, cluster), atol=1e-6)
    cluster.calc = calc
    with pytest.raises(PropertyNotImplementedError):
        cluster.get_stress()


# ---------------------------------------------------------------- errors
def test_errors():
    calc = CoulombBaseline(NACL)
    with pytest.raises(ValueError, match=r"no charge given for species \['K'\]"):
        calc.evaluate(Atoms("NaClK", positions=[[0, 0, 0], [0, 0, 3], [0, 3, 0]]))
    mixed = bulk("NaCl", "rocksalt", a=5.64)
    mixed.pbc = [True, True, False]
    with pytest.raises(ValueError, match="mixed periodic"):
        calc.evaluate(mixed)
    mixed.calc = calc
    with pytest.raises(ValueError, match="mixed periodic"):
        mixed.get_potential_energy()
    with pytest.raises(ValueError, match="mixed periodic"):
        BornMayerCoulomb(NACL, BM_PARAMS).evaluate(mixed)
    with pytest.raises(ValueError):
        CoulombBaseline({"Xx": 1.0})
    with pytest.raises(ValueError):
        CoulombBaseline(NACL, accuracy=2.0)
    with pytest.raises(ValueError, match="same position"):
        calc.evaluate(Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 0]]))


# ---------------------------------------------------------------- Born-Mayer reference
def test_born_mayer_fd():
    calc = BornMayerCoulomb(NACL, BM_PARAMS, accuracy=1e-12, alpha=0.9, r_cut=5.0)
    atoms = triclinic_nacl(10)
    atoms.rattle(0.05, seed=11)
    r = calc.evaluate(atoms)
    np.testing.assert_allclose(r["forces"], fd_forces(calc, atoms), atol=1e-6)
    np.testing.assert_allclose(r["stress"], fd_stress(calc, atoms), atol=1e-7)
    assert r["energies"].sum() == pytest.approx(r["energy"], rel=1e-12)
    # the switch region is exercised: pairs across 4-5 Å exist
    cluster = rattled_nacl8(12, amp=0.2)
    cluster.pbc = False
    np.testing.assert_allclose(calc.evaluate(cluster)["forces"], fd_forces(calc, cluster),
                               atol=1e-6)


def test_born_mayer_equilibrium():
    """Rock salt with A=1220 eV, rho=0.317 Å: zero pressure at a = 5.642275 Å."""
    calc = BornMayerCoulomb(NACL, BM_PARAMS)
    s = calc.evaluate(bulk("NaCl", "rocksalt", a=5.642275))["stress"]
    np.testing.assert_allclose(s, 0.0, atol=1e-7)
    assert calc.evaluate(bulk("NaCl", "rocksalt", a=5.5))["stress"][0] < 0  # compressed
    assert calc.evaluate(bulk("NaCl", "rocksalt", a=5.8))["stress"][0] > 0  # stretched


# ---------------------------------------------------------------- serialisation
def test_to_dict_roundtrip():
    atoms = triclinic_nacl(13)
    for b in (CoulombBaseline({11: 1.0, "Cl": -1.0}, accuracy=1e-10, epsilon_r=2.0),
              CoulombBaseline(NACL, alpha=0.8, r_cut=6.0),
              BornMayerCoulomb(NACL, BM_PARAMS, r_cut=5.5)):
        d = json.loads(json.dumps(b.to_dict()))
        assert d["class"] in BASELINES
        b2 = baseline_from_dict(d)
        assert type(b2) is type(b)
        assert b2.to_dict() == b.to_dict()
        r, r2 = b.evaluate(atoms), b2.evaluate(atoms)
        assert r2["energy"] == r["energy"]
        np.testing.assert_array_equal(r2["forces"], r["forces"])
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_from_dict({"class": "Nope", "params": {}})


# ---------------------------------------------------------------- synthetic data set
def test_ionic_data_labels():
    path = DATA / "ionic_train.xyz"  # tracked in git (data/make_ionic_data.py): never skip
    assert path.is_file(), f"{path} is missing: regenerate it with data/make_ionic_data.py"
    frames = read(path, ":3")
    assert len(frames) == 3
    calc = BornMayerCoulomb(NACL, BM_PARAMS)
    for at in frames:
        r = calc.evaluate(at)
        assert at.get_potential_energy() == pytest.approx(r["energy"], abs=1e-6)
        np.testing.assert_allclose(at.get_forces(), r["forces"], atol=1e-6)
        np.testing.assert_allclose(at.get_stress(), r["stress"], atol=1e-7)
