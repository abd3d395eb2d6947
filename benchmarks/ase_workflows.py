"""ASE workflows with a gapkit model, each compared with the reference calculator (EMT Cu).

The data are made here, on the fly: fcc Cu labelled by ASE's EMT (energies, forces and
stresses), so the reference of every comparison is exact and cheap.

Training recipe (``make_training_data``; ``--fast`` shrinks every number):

* ``n_strained`` cells of 2×2×2 conventional fcc Cu (32 atoms), lattice constant drawn
  uniformly within ±3 % of EMT's, a random symmetric strain of up to ±2 % per
  component on top, atoms rattled by 0.03 Å (Gaussian);
* ``n_md`` snapshots of EMT Langevin MD at 300 K and 600 K (32 atoms, 2 fs, friction
  0.02/fs, one every 20 steps after 100 steps of equilibration) at lattice constants
  0.99, 1.00 and 1.01 × EMT's.

Model (``fit_model``): SOAP r_cut 5.5 Å (1 Å cosine taper), n_max 6, l_max 4, σ 0.5 Å,
ζ 4, 300 CUR sparse points, σ_E 1 meV/√atom, σ_F 10 meV/Å, σ_V 10 meV/√atom (EMT labels
are noise-free), least-squares E0 (one species: not rank deficient), no calibration
split (the uncertainty is not used here).

Workflows (each run once with GAP and once with EMT, the same code):

* ``relax``: a strained, rattled 4-atom cell relaxed with
  ``ase.filters.FrechetCellFilter`` and BFGS to fmax 1e-4 eV/Å (lattice constant,
  energy per atom);
* ``equation_of_state``: energies of the cubic cell at 11 lattice constants within ±3 %
  of the relaxed one, ``ase.eos.EquationOfState`` (Birch–Murnaghan): V0, E0, B;
* ``elastic_constants``: C11, C12, C44 from central differences of the stress under
  ±0.5 % strains of the relaxed cubic cell (fcc Cu has one atom per primitive cell, so
  the clamped-ion constants are the relaxed-ion ones); B = (C11 + 2 C12)/3 as a check;
* ``phonons``: ``ase.phonons.Phonons`` on a 4×4×4 supercell of the primitive cell
  (finite displacements of 0.01 Å): frequencies at X, L, W and K, the band structure
  along Γ–X–W–K–Γ–L and the largest difference over it, and the mean frequency from the
  DOS.

Run::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/ase_workflows.py [--json out.json]
    python benchmarks/ase_workflows.py --fast      # the tiny model of the tests

Prints a GAP-against-EMT table (and the settings and timings, CPU seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.optimize import BFGS
from ase.phonons import Phonons

import gapkit

A_EMT = 3.5898  # Å, EMT's fcc Cu lattice constant (relax() finds it to 1e-4 Å)
#: high-symmetry points of the fcc Brillouin zone (ASE's special points)
SPECIAL = ("X", "L", "W", "K")
GPA = units.GPa  # eV/Å³ per GPa


@dataclass(frozen=True)
class Recipe:
    """How many frames of each kind, and the model settings."""

    n_strained: int = 40
    n_md: int = 24
    repeat: int = 2               # conventional cells per axis of the training cells
    r_cut: float = 5.5
    n_max: int = 6
    l_max: int = 4
    n_sparse: int = 300
    phonon_supercell: int = 4


FULL = Recipe()
FAST = Recipe(n_strained=10, n_md=0, repeat=1, r_cut=5.0, n_max=4, l_max=3, n_sparse=40,
              phonon_supercell=3)


def _label(atoms: Atoms) -> Atoms:
    """EMT energy, forces and stress stored as a single-point result (a copy)."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
    return atoms


def make_training_data(recipe: Recipe = FULL, random_state: int = 0) -> list[Atoms]:
    """EMT-labelled strained, rattled and MD cells of fcc Cu (see the module docstring).

    Returns
    -------
    list of ase.Atoms
        ``recipe.n_strained + recipe.n_md`` frames with energy (eV), forces (eV/Å)
        and stress (eV/Å³) in a ``SinglePointCalculator``.
    """
    rng = np.random.default_rng(random_state)
    frames = []
    for _ in range(recipe.n_strained):
        a = A_EMT * rng.uniform(0.97, 1.03)
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(recipe.repeat)
        eps = rng.uniform(-0.02, 0.02, size=(3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.03, size=atoms.positions.shape)
        frames.append(_label(atoms))
    per_run = max(1, recipe.n_md // 6) if recipe.n_md else 0
    for temperature in (300, 600) if recipe.n_md else ():
        for scale in (0.99, 1.00, 1.01):
            atoms = bulk("Cu", "fcc", a=A_EMT * scale, cubic=True).repeat(recipe.repeat)
            atoms.calc = EMT()
            # Maxwell-Boltzmann momenta (eV fs/Å units of ASE), drawn from this rng
            sigma = np.sqrt(atoms.get_masses() * units.kB * temperature)[:, None]
            atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * sigma)
            md = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                          fixcm=False, rng=np.random.default_rng(rng.integers(2**31)))
            md.run(100)
            for _ in range(per_run):
                md.run(20)
                frames.append(_label(atoms))
    return frames


def fit_model(frames: list[Atoms], recipe: Recipe = FULL) -> gapkit.GAP:
    """The GAP of the recipe fitted on ``frames`` (energies, forces and virials)."""
    soap = gapkit.SOAP(r_cut=recipe.r_cut, n_max=recipe.n_max, l_max=recipe.l_max, sigma=0.5)
    return gapkit.GAP(soap, n_sparse=recipe.n_sparse, energy_noise=0.001, force_noise=0.01,
                      virial_noise=0.01, e0="lstsq", calibrate=False,
                      random_state=0).fit(frames)


# ----------------------------------------------------------------------------------
# the workflows: each takes a calculator factory, so that GAP and EMT run the same code
# ----------------------------------------------------------------------------------
def relax(calc, a_start: float = 3.70, fmax: float = 1e-4, random_state: int = 0) -> dict:
    """Relax cell and positions of a strained, rattled cubic 4-atom cell.

    Returns
    -------
    dict
        ``a`` (Å, the cube root of the relaxed volume per 4 atoms), ``energy_per_atom``
        (eV), ``steps``.
    """
    atoms = bulk("Cu", "fcc", a=a_start, cubic=True)
    atoms.rattle(0.02, seed=random_state)
    atoms.calc = calc
    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    opt.run(fmax=fmax, steps=500)
    return {"a": float(atoms.get_volume() ** (1 / 3)),
            "energy_per_atom": float(atoms.get_potential_energy() / len(atoms)),
            "steps": int(opt.nsteps)}


def equation_of_state(calc, a0: float, span: float = 0.03, n: int = 11) -> dict:
    """Birch–Murnaghan fit of E(V) for the cubic cell, lattice constants a0·(1 ± span).

    Returns
    -------
    dict
        ``v0`` (Å³ per atom), ``e0`` (eV per atom), ``B`` (GPa), ``a0`` (Å).
    """
    volumes, energies = [], []
    for a in a0 * np.linspace(1 - span, 1 + span, n):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, b = eos.fit()
    return {"v0": float(v0), "e0": float(e0), "B": float(b / GPA),
            "a0": float((4 * v0) ** (1 / 3))}


def elastic_constants(calc, a0: float, strain: float = 0.005) -> dict:
    """C11, C12, C44 (GPa) from central differences of the stress of the cubic cell.

    ASE's stress is (1/V) ∂E/∂ε in Voigt order (xx, yy, zz, yz, xz, xy), so
    C11 = ∂σ_xx/∂ε_xx, C12 = ∂σ_yy/∂ε_xx and C44 = ∂σ_yz/∂γ_yz with the engineering
    shear strain γ_yz = 2 ε_yz.
    """
    def stress(eps: np.ndarray) -> np.ndarray:
        atoms = bulk("Cu", "fcc", a=a0, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        atoms.calc = calc
        return atoms.get_stress(voigt=True)

    exx = np.zeros((3, 3))
    exx[0, 0] = strain
    d_axial = (stress(exx) - stress(-exx)) / (2 * strain)
    eyz = np.zeros((3, 3))
    eyz[1, 2] = eyz[2, 1] = strain / 2          # gamma_yz = strain
    d_shear = (stress(eyz) - stress(-eyz)) / (2 * strain)
    c11, c12, c44 = d_axial[0] / GPA, d_axial[1] / GPA, d_shear[3] / GPA
    return {"C11": float(c11), "C12": float(c12), "C44": float(c44),
            "B_elastic": float((c11 + 2 * c12) / 3)}


def phonons(calc, a0: float, supercell: int = 4, delta: float = 0.01,
            npoints: int = 60) -> dict:
    """Phonons of fcc Cu by finite displacements (``ase.phonons.Phonons``).

    Returns
    -------
    dict
        ``freq_<point>``: the three frequencies (THz, ascending) at each of X, L, W,
        K; ``band``: the frequencies along Γ–X–W–K–Γ–L, shape (npoints, 3), THz;
        ``mean_dos``: the DOS-weighted mean frequency (THz).
    """
    prim = bulk("Cu", "fcc", a=a0)
    with tempfile.TemporaryDirectory() as tmp:
        ph = Phonons(prim, calc, supercell=(supercell,) * 3, delta=delta,
                     name=str(Path(tmp) / "phonon"))
        ph.run()
        ph.read(acoustic=True)
        path = prim.cell.bandpath("GXWKGL", npoints=npoints)
        to_thz = 1.0 / (units._hplanck / units._e * 1e12)   # eV -> THz
        band = np.sort(ph.band_structure(path.kpts), axis=1) * to_thz
        special = path.special_points
        out = {f"freq_{p}": sorted(float(x) * to_thz
                                   for x in ph.band_structure([special[p]])[0])
               for p in SPECIAL}
        dos = ph.get_dos(kpts=(12, 12, 12)).sample_grid(npts=400, width=1e-3)
        e, w = dos.get_energies(), dos.get_weights()
        out["mean_dos"] = float(np.sum(e * w) / np.sum(w) * to_thz)
        out["band"] = band.tolist()
    return out


def run_all(calc, a_start: float = 3.70, supercell: int = 4) -> dict:
    """Every workflow with one calculator; the EOS, elastic constants and phonons at the
    lattice constant that ``relax`` finds with the same calculator."""
    out = {"relax": relax(calc, a_start=a_start)}
    a0 = out["relax"]["a"]
    out["eos"] = equation_of_state(calc, a0)
    out["elastic"] = elastic_constants(calc, a0)
    out["phonons"] = phonons(calc, a0, supercell=supercell)
    return out


def rows(gap: dict, emt: dict) -> list[tuple[str, float, float]]:
    """(quantity, GAP, EMT) for the table."""
    r = [("lattice constant a (Å), FrechetCellFilter", gap["relax"]["a"], emt["relax"]["a"]),
         ("energy per atom at a (eV)", gap["relax"]["energy_per_atom"],
          emt["relax"]["energy_per_atom"]),
         ("EOS a0 (Å)", gap["eos"]["a0"], emt["eos"]["a0"]),
         ("EOS bulk modulus B (GPa)", gap["eos"]["B"], emt["eos"]["B"]),
         ("C11 (GPa)", gap["elastic"]["C11"], emt["elastic"]["C11"]),
         ("C12 (GPa)", gap["elastic"]["C12"], emt["elastic"]["C12"]),
         ("C44 (GPa)", gap["elastic"]["C44"], emt["elastic"]["C44"]),
         ("(C11 + 2 C12)/3 (GPa)", gap["elastic"]["B_elastic"], emt["elastic"]["B_elastic"])]
    for p in SPECIAL:
        g, e = gap["phonons"][f"freq_{p}"], emt["phonons"][f"freq_{p}"]
        r.append((f"phonon {p}: lowest / highest (THz)", (g[0], g[2]), (e[0], e[2])))
    r.append(("phonon DOS mean frequency (THz)", gap["phonons"]["mean_dos"],
              emt["phonons"]["mean_dos"]))
    band_g, band_e = np.asarray(gap["phonons"]["band"]), np.asarray(emt["phonons"]["band"])
    r.append(("phonon bands Γ–X–W–K–Γ–L: largest difference (THz)", float(np.abs(band_g - band_e).max()),
              0.0))
    return r


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return " / ".join(f"{x:.3f}" for x in v)
    return f"{v:.4f}" if abs(v) < 20 else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fast", action="store_true", help="the tiny recipe of the tests")
    p.add_argument("--json", type=Path, help="write all results here")
    args = p.parse_args(argv)
    recipe = FAST if args.fast else FULL
    print(f"recipe: {recipe}")
    t0 = time.process_time()
    frames = make_training_data(recipe)
    t1 = time.process_time()
    model = fit_model(frames, recipe)
    t2 = time.process_time()
    print(f"{len(frames)} EMT frames ({sum(len(f) for f in frames)} atoms) in {t1 - t0:.1f} s CPU; "
          f"fit {t2 - t1:.1f} s CPU")
    gap = run_all(gapkit.GAPCalculator(model), supercell=recipe.phonon_supercell)
    t3 = time.process_time()
    emt = run_all(EMT(), supercell=recipe.phonon_supercell)
    t4 = time.process_time()
    print(f"workflows: GAP {t3 - t2:.1f} s CPU, EMT {t4 - t3:.1f} s CPU\n")
    print("| quantity | gapkit GAP | EMT (reference) |")
    print("| --- | ---: | ---: |")
    for name, g, e in rows(gap, emt):
        print(f"| {name} | {_fmt(g)} | {_fmt(e)} |")
    if args.json:
        args.json.write_text(json.dumps({"recipe": recipe.__dict__, "gap": gap, "emt": emt}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
