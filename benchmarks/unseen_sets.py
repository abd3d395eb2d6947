"""Data sets made here that no earlier default choice was measured on (issue #14).

Two sets, labelled by ASE's EMT and by GFN2-xTB (tblite), cached as extxyz in the
``cache`` folder and read by ``resolve_grid.py --set emt_nial|xtb_acetaldehyde``:

* ``emt_nial``: fcc Ni-Al random alloys (108-atom cubic 3x3x3 cells), Langevin MD with
  EMT. Training: 10 frames at 700 K from each of four compositions (x_Al = 0.1, 0.2,
  0.3, 0.4; 40 frames), so that least-squares E0 is determined; tests: 5 frames per
  composition at 700 K and at 1200 K (other seeds; 20 frames each).
* ``xtb_acetaldehyde``: CH3CHO, Langevin MD with GFN2-xTB, 300 training frames at
  600 K; tests 100 frames at 600 K and 100 at 1000 K (other seeds); E0 of the xTB
  free atoms of the default data.

Neither composition nor temperature was used to choose the radial scaling or any
other default.

Example::

    OMP_NUM_THREADS=1 python benchmarks/resolve_grid.py --set emt_nial --variant default \\
        --e-mult 1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SETS = ("emt_nial", "xtb_acetaldehyde")
#: Al fractions of the Ni-Al cells.
X_AL = (0.1, 0.2, 0.3, 0.4)


def nial_md(temperature: float, n_per_x: int, seed: int) -> list:
    """``n_per_x`` EMT MD frames of a random fcc Ni-Al cell per Al fraction of
    :data:`X_AL` (108 atoms; lattice constant interpolated between Ni and Al)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from uncertainty_calibration import sample_md

    out = []
    for k, x in enumerate(X_AL):
        rng = np.random.default_rng(seed * 100 + k)
        atoms = bulk("Ni", "fcc", a=3.52 + 0.53 * x, cubic=True).repeat((3, 3, 3))
        atoms.numbers[rng.permutation(len(atoms))[: int(round(x * len(atoms)))]] = 13
        atoms.calc = EMT()
        out += sample_md(atoms, temperature, n_per_x, seed * 100 + k,
                         f"NiAl_x{x:g}_{temperature:.0f}K", 20, 500, 2.0, friction=0.01)
    return out


def data_set(name: str, cache: Path):
    """(train, {test name: frames}, e0) of one set of :data:`SETS`."""
    from sparse_gain import xtb_molecule_md
    from uncertainty_calibration import cached_frames, xtb_e0

    if name == "emt_nial":
        tr, _ = cached_frames(cache, "nial_700K_train", lambda: nial_md(700, 10, 1))
        t7, _ = cached_frames(cache, "nial_700K_test", lambda: nial_md(700, 5, 2))
        t12, _ = cached_frames(cache, "nial_1200K_test", lambda: nial_md(1200, 5, 3))
        return tr, {"700K": t7, "1200K": t12}, "lstsq"
    if name == "xtb_acetaldehyde":
        tr, _ = cached_frames(cache, "xtb_ach_600K_train",
                              lambda: xtb_molecule_md("CH3CHO", 600, 300, 21))
        t6, _ = cached_frames(cache, "xtb_ach_600K_test",
                              lambda: xtb_molecule_md("CH3CHO", 600, 100, 22))
        t10, _ = cached_frames(cache, "xtb_ach_1000K_test",
                               lambda: xtb_molecule_md("CH3CHO", 1000, 100, 23))
        return tr, {"600K": t6, "1000K": t10}, xtb_e0()
    raise ValueError(f"unknown set {name!r}; choose from {SETS}")
