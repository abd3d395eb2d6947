#!/usr/bin/env python
"""Generate gapkit's small default training / test data with GFN2-xTB labels.

What it does
------------
For two small organic molecules, ethanol (``ase.build.molecule("CH3CH2OH")``,
9 atoms) and methanol (``molecule("CH3OH")``, 6 atoms), so species C, H, O
only, the script

1. runs gas-phase Langevin molecular dynamics driven by the reference method
   itself (T = 500 K, time step 0.5 fs, friction 0.02 fs^-1, centre of mass
   fixed with ``ase.constraints.FixCom``), discards an equilibration period of
   500 steps (250 fs), then keeps one frame every 20 steps (10 fs);
2. adds a few "rattle" frames: MD snapshots (taken from a separate part of
   the same trajectory) with extra random Gaussian displacements
   (standard deviation 0.05 A per Cartesian component), so that the set
   contains some higher-energy, larger-force configurations;
3. labels every frame with the single-point GFN2-xTB energy and forces; a
   frame with any non-finite value or with an atomic force of magnitude
   |F_i| >= 10 eV/A is rejected (rattle frames are redrawn, MD frames are skipped
   and the trajectory continues); with the settings below no MD frame is
   rejected and only 4 rattle draws in total are redrawn;
4. writes extended XYZ files.

The training and test sets come from independent MD trajectories (different
random seeds for the initial velocities, the Langevin noise and the rattles).

Files written (next to this script)
-----------------------------------
``train.xyz``
    140 ethanol MD + 10 ethanol rattle + 45 methanol MD + 5 methanol rattle
    frames (200 frames).
``test.xyz``
    45 ethanol MD + 5 ethanol rattle + 18 methanol MD + 2 methanol rattle
    frames (70 frames).
``isolated_atoms.xyz``
    One single-atom frame per species (H, C, O), ``config_type=isolated_atom``,
    labelled with the GFN2-xTB energy of the free atom (forces are zero).

Every frame has ``pbc="F F F"``, no cell, an ``energy=`` entry in the comment
line, a per-atom ``forces`` array and a ``config_type`` string
(``ethanol_md``, ``ethanol_rattle``, ``methanol_md``, ``methanol_rattle``,
``isolated_atom``).  ``ase.io.read(path, ":")`` gives Atoms whose
``get_potential_energy()`` and ``get_forces()`` return the labels.

Method and units
----------------
Reference: GFN2-xTB as implemented in tblite, through its ASE calculator
``tblite.ase.TBLite(method="GFN2-xTB", verbosity=0)`` with default settings
(electronic temperature 300 K, accuracy 1.0, neutral molecules, closed-shell
spin-restricted).  Units are ASE units: positions in Angstrom, energies in eV,
forces in eV/Angstrom.

Labels are converged to tblite's default SCF accuracy: recomputing a frame
reproduces the energy to ~1e-8 eV and the forces to ~1e-4 eV/A (the SCF
start guess differs), far below any sensible force regularisation of a fit.

Isolated atoms are computed with the ground-state spin multiplicity passed via
``multiplicity=`` (H doublet: 2, C triplet: 3, O triplet: 3), without
``spin_polarization``, i.e. the same spin-restricted GFN2-xTB Hamiltonian as
the molecules.  Setting the multiplicity works (no fallback needed).  Note
that in this restricted treatment the triplet C and O energies are about
0.05 eV *higher* than with the default (no multiplicity; fractional Fermi
occupation of the degenerate p shell), and H is a doublet either way.
Enabling ``spin_polarization=1.0`` would lower the H, C, O energies by about
1.0, 1.2 and 1.5 eV, but that is a different Hamiltonian from the one used
for the molecular frames, so it is not used.  These energies are meant as the
per-species offsets (e0) of a potential fit, not as accurate atomisation
references.

Determinism
-----------
All randomness comes from ``numpy.random.Generator`` objects created from the
fixed seeds below and passed explicitly (to
``thermalize_momenta``, ``Langevin`` and the rattle draws); the
global ``np.random`` state is never used.  The script sets
``OMP_NUM_THREADS=1`` (before tblite is imported): with more threads the
forces differ in the last bits and the chaotic MD then diverges.  Rerunning
with the same library versions (ase 3.29, tblite 0.8.0 were used) reproduces
the files byte for byte; other versions or platforms may give different (but
statistically equivalent) frames.

How to rerun
------------
From the repository root::

    python data/make_default_data.py

It needs ``ase`` and ``tblite`` (``pip install tblite``) and takes well under
a minute on 2 cores.  Existing files are overwritten.
"""

from __future__ import annotations

import os

# Single-threaded tblite: the threaded reductions change the last bits of the
# forces, which chaotic MD amplifies into different trajectories.  Forced (not
# just defaulted) so that the files are reproducible whatever the caller's
# environment; it costs nothing for these tiny molecules.  Must be set before
# tblite is imported.
os.environ["OMP_NUM_THREADS"] = "1"

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.constraints import FixCom  # noqa: E402
from ase.io import write  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import Stationary, ZeroRotation  # noqa: E402

try:  # ase >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ase: same sampling under its previous name
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, *, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)

from tblite.ase import TBLite  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent

METHOD = "GFN2-xTB"

# MD settings
TEMPERATURE_K = 500.0
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.02
N_EQUIL_STEPS = 500  # 250 fs discarded
STRIDE = 20  # keep one frame every 10 fs

# Rattle frames: extra Gaussian displacement (A) on top of an MD snapshot.
RATTLE_STDEV = 0.05

# Frame rejection threshold (eV/A) on the largest per-atom force norm |F_i|.
MAX_ABS_FORCE = 10.0

# (ase.build name, short label, n_md, n_rattle, seed) for each set.
TRAIN_SPEC = [
    ("CH3CH2OH", "ethanol", 140, 10, 20240101),
    ("CH3OH", "methanol", 45, 5, 20240102),
]
TEST_SPEC = [
    ("CH3CH2OH", "ethanol", 45, 5, 20249901),
    ("CH3OH", "methanol", 18, 2, 20249902),
]

# Ground-state spin multiplicities of the free atoms.
ISOLATED_MULTIPLICITY = {"H": 2, "C": 3, "O": 3}


def make_calculator(**kwargs) -> TBLite:
    """Return a fresh GFN2-xTB calculator (quiet)."""
    return TBLite(method=METHOD, verbosity=0, **kwargs)


def label(atoms: Atoms, calc: TBLite, config_type: str) -> Atoms | None:
    """Return a clean, labelled copy of ``atoms`` or None if the labels are bad.

    The copy carries only species and positions (no momenta, constraints or
    cell), ``pbc=False``, a ``SinglePointCalculator`` holding the GFN2-xTB
    energy and forces, and ``info["config_type"]``.
    """
    frame = Atoms(
        numbers=atoms.get_atomic_numbers(),
        positions=atoms.get_positions(),
        pbc=False,
    )
    frame.calc = calc
    energy = float(frame.get_potential_energy())
    forces = np.array(frame.get_forces(), dtype=float)
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        return None
    if np.max(np.linalg.norm(forces, axis=1)) >= MAX_ABS_FORCE:
        return None
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    frame.info["config_type"] = config_type
    return frame


def sample_molecule(
    name: str, tag: str, n_md: int, n_rattle: int, rng: np.random.Generator
) -> tuple[list[Atoms], list[Atoms], int, int]:
    """Run one Langevin trajectory.

    Returns ``(md_frames, rattle_frames, n_rejected_md, n_rejected_rattle)``.

    The first ``n_md`` accepted snapshots (every ``STRIDE`` steps after the
    equilibration) become MD frames; the following ``n_rattle`` snapshots are
    rattled by ``RATTLE_STDEV`` and become rattle frames.
    """
    atoms = molecule(name)
    atoms.pbc = False
    atoms.set_constraint(FixCom())
    atoms.calc = make_calculator()

    thermalize_momenta(atoms, TEMPERATURE_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)

    dyn = Langevin(
        atoms,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=TEMPERATURE_K,
        friction=FRICTION_PER_FS / units.fs,
        fixcm=False,  # centre of mass handled by the FixCom constraint
        rng=rng,
    )
    dyn.run(N_EQUIL_STEPS)

    label_calc = make_calculator()
    md_frames: list[Atoms] = []
    rattle_frames: list[Atoms] = []
    n_rejected_md = 0
    n_rejected_rattle = 0
    max_snapshots = 10 * (n_md + n_rattle)  # safety net against endless loops
    for _ in range(max_snapshots):
        if len(md_frames) == n_md and len(rattle_frames) == n_rattle:
            break
        dyn.run(STRIDE)
        if len(md_frames) < n_md:
            frame = label(atoms, label_calc, f"{tag}_md")
            if frame is None:
                n_rejected_md += 1
            else:
                md_frames.append(frame)
            continue
        # Rattle frame: redraw the displacement until the frame is acceptable.
        for _attempt in range(20):
            displaced = atoms.copy()
            displaced.set_constraint()
            displaced.positions += rng.normal(
                scale=RATTLE_STDEV, size=displaced.positions.shape
            )
            frame = label(displaced, label_calc, f"{tag}_rattle")
            if frame is not None:
                rattle_frames.append(frame)
                break
            n_rejected_rattle += 1
    else:
        raise RuntimeError(f"could not collect enough acceptable frames for {tag}")
    return md_frames, rattle_frames, n_rejected_md, n_rejected_rattle


def build_set(spec: list[tuple[str, str, int, int, int]], set_name: str) -> list[Atoms]:
    """Sample all molecules of one set (train or test) and report them."""
    frames: list[Atoms] = []
    for name, tag, n_md, n_rattle, seed in spec:
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        md, rattle, rej_md, rej_rattle = sample_molecule(name, tag, n_md, n_rattle, rng)
        energies = np.array([f.get_potential_energy() for f in md + rattle])
        fmax = max(np.linalg.norm(f.get_forces(), axis=1).max() for f in md + rattle)
        print(
            f"[{set_name}] {tag}: {len(md)} md + {len(rattle)} rattle frames "
            f"(seed {seed}; rejected {rej_md} md, {rej_rattle} rattle; "
            f"{time.perf_counter() - t0:.1f} s); "
            f"E in [{energies.min():.4f}, {energies.max():.4f}] eV, "
            f"max |F_i| {fmax:.3f} eV/A"
        )
        frames.extend(md)
        frames.extend(rattle)
    return frames


def isolated_atoms() -> list[Atoms]:
    """One labelled single-atom frame per species at its ground-state multiplicity."""
    frames = []
    for symbol, mult in ISOLATED_MULTIPLICITY.items():
        atom = Atoms(symbol, positions=[[0.0, 0.0, 0.0]], pbc=False)
        frame = label(atom, make_calculator(multiplicity=mult), "isolated_atom")
        if frame is None:
            raise RuntimeError(f"bad GFN2-xTB result for isolated {symbol}")
        print(
            f"[isolated] {symbol} (multiplicity {mult}): "
            f"E = {frame.get_potential_energy():.6f} eV"
        )
        frames.append(frame)
    return frames


def write_frames(path: Path, frames: list[Atoms]) -> None:
    write(path, frames, format="extxyz")
    print(f"wrote {path} ({len(frames)} frames, {path.stat().st_size} bytes)")


def main() -> None:
    t_start = time.perf_counter()
    print(f"GFN2-xTB reference via tblite; output directory {OUT_DIR}")
    write_frames(OUT_DIR / "train.xyz", build_set(TRAIN_SPEC, "train"))
    write_frames(OUT_DIR / "test.xyz", build_set(TEST_SPEC, "test"))
    write_frames(OUT_DIR / "isolated_atoms.xyz", isolated_atoms())
    print(f"done in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
