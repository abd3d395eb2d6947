"""Cost of the uncertainty during MD: E+F against E+F+sigma_E+sigma_F, in one run.

Two cells, each with a default-settings GAP (calibrated by default, so force stds are
the "fast" per-atom ones):

* a periodic box of 64 ethanol molecules (576 atoms), model fitted on rMD17 ethanol
  (``--n-train`` frames; the project's default xTB data when the shared data is absent);
* a 216-atom diamond silicon cell (3x3x3 conventional cells, rattled), model fitted on
  mlearn Si (``--n-train`` frames).

For each cell the calls alternate A B C A B C ... (``--rounds`` >= 5), one BLAS thread:
A = ``GAPCalculator`` energy + forces; B = energy + forces + ``energy_std`` +
``forces_std`` (what an MD run that watches sigma asks for) over the model's variance
basis (``--variance-sparse``, default ``"auto"``: ``M_v = min(M, 1000)`` of the M
sparse points); C = the same over all M (``full=True``: the exact DTC terms); E = B
with exact force stds (``force_std="exact"``, 2 rounds). Printed: median and range of
each, the ratios B/A and C/A (target B/A <= 2), and the one-off cost of the basis
factors (first sigma of a model, ``O(M M_v**2)``).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/uncertainty_cost.py \
        --n-train 200 --rounds 7

``--clock process`` times with ``time.process_time`` (CPU time of this process: for a
shared machine); the default ``wall`` is ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.io import read

import gapkit
from gapkit.model.variance import variance_factors
from harness import SHARED_DATA, save_results

CLOCK = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter

PROPS_A = ["energy", "forces"]
PROPS_B = ["energy", "forces", "energy_std", "forces_std"]


def ethanol_box(molecule: Atoms, n_side: int = 4, spacing: float = 5.5) -> Atoms:
    """``n_side**3`` copies of ``molecule`` on a cubic grid in a periodic box."""
    mol = molecule.copy()
    mol.calc = None
    mol.positions -= mol.positions.mean(axis=0)
    rng = np.random.default_rng(0)
    parts = []
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                m = mol.copy()
                m.rotate(float(rng.uniform(0, 360)), "z", center=(0, 0, 0))
                m.translate(spacing * (np.array([i, j, k]) + 0.5))
                parts.append(m)
    box = parts[0]
    for m in parts[1:]:
        box += m
    box.cell = [n_side * spacing] * 3
    box.pbc = True
    return box


def time_calls(calc, atoms: Atoms, props: list[str]) -> float:
    a = atoms.copy()
    a.positions += 1e-4 * np.random.default_rng(int(1e6 * time.time()) % 2**31).normal(size=a.positions.shape)
    t0 = clock()
    calc.calculate(a, props)
    return clock() - t0


def full_sparse(model):
    """A shallow copy of ``model`` whose std uses all M sparse columns (its calibration
    kept: only the cost is compared)."""
    out = copy.copy(model)
    out.state_ = model.state_.replace(variance_basis=None)
    return out


def measure(model, atoms: Atoms, rounds: int) -> dict:
    vb = model.state_.variance_basis
    t0 = clock()
    variance_factors(model.state_.replace())  # a fresh state: the one-off factors
    t_factors = clock() - t0
    calc_a = gapkit.GAPCalculator(model)
    calc_b = gapkit.GAPCalculator(model)
    calc_c = gapkit.GAPCalculator(full_sparse(model))
    calc_e = gapkit.GAPCalculator(model, force_std="exact")
    for c, p in ((calc_a, PROPS_A), (calc_b, PROPS_B), (calc_c, PROPS_B)):  # warm-up
        time_calls(c, atoms, p)
    ta, tb, tc = [], [], []
    for _ in range(max(5, rounds)):
        ta.append(time_calls(calc_a, atoms, PROPS_A))
        tb.append(time_calls(calc_b, atoms, PROPS_B))
        tc.append(time_calls(calc_c, atoms, PROPS_B))
    te = [time_calls(calc_e, atoms, PROPS_B) for _ in range(2)]
    out = {}
    for key, t in (("ef", ta), ("ef_std_fast", tb), ("ef_std_fast_full", tc),
                   ("ef_std_exact", te)):
        out[key] = {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)}
    for key, t in (("ratio_fast", tb), ("ratio_fast_full", tc)):
        out[key] = statistics.median(b / a for a, b in zip(ta, t))
        out[key + "_range"] = [min(b / a for a, b in zip(ta, t)), max(b / a for a, b in zip(ta, t))]
    out["ratio_exact"] = out["ef_std_exact"]["median_s"] / out["ef"]["median_s"]
    out["n_atoms"] = len(atoms)
    out["n_sparse"] = int(len(model.alpha_))
    out["n_variance_sparse"] = int(len(vb)) if vb is not None else out["n_sparse"]
    out["factors_s"] = t_factors
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variance-sparse", default="auto",
                   help="the models' variance_sparse: auto (default), all or N")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                   help="wall (perf_counter, default) or process (CPU time, shared machines)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    vs = args.variance_sparse if args.variance_sparse in ("auto", "all") else int(args.variance_sparse)
    shared = Path(SHARED_DATA)
    eth = shared / "ethanol_rmd17" / "train.xyz"
    if eth.is_file():
        train = read(eth, f":{args.n_train}")
        e0 = str(shared / "ethanol_rmd17" / "isolated_atoms.xyz")
    else:
        train = gapkit.read_frames(gapkit.data.default_data_dir() / "train.xyz")[:args.n_train]
        e0 = str(gapkit.data.default_data_dir() / "isolated_atoms.xyz")
    results = {}
    model = gapkit.GAP(e0=e0, random_state=0, variance_sparse=vs).fit(train)
    mol = next(a for a in train if a.get_chemical_formula() == "C2H6O")
    results["ethanol_box"] = measure(model, ethanol_box(mol), args.rounds)
    si = shared / "si_mlearn" / "train.xyz"
    if si.is_file():
        si_train = read(si, f":{args.n_train}")
        for a in si_train:  # energies and forces only (the stress units are mlearn's own)
            a.info.pop("mlearn_virial_stress", None)
        si_model = gapkit.GAP(random_state=0, variance_sparse=vs).fit(si_train)
        cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat((3, 3, 3))
        cell.rattle(0.05, seed=0)
        results["si_216"] = measure(si_model, cell, args.rounds)
    for name, r in results.items():
        print(f"{name}: {r['n_atoms']} atoms, M = {r['n_sparse']}, M_v = {r['n_variance_sparse']} "
              f"({args.clock} clock): E+F {r['ef']['median_s']:.3f} s "
              f"[{r['ef']['min_s']:.3f}, {r['ef']['max_s']:.3f}]; +sigma_E+sigma_F (fast, M_v) "
              f"{r['ef_std_fast']['median_s']:.3f} s -> ratio {r['ratio_fast']:.2f} "
              f"[{r['ratio_fast_range'][0]:.2f}, {r['ratio_fast_range'][1]:.2f}] (target <= 2); "
              f"(fast, all M) {r['ef_std_fast_full']['median_s']:.3f} s -> ratio "
              f"{r['ratio_fast_full']:.2f} [{r['ratio_fast_full_range'][0]:.2f}, "
              f"{r['ratio_fast_full_range'][1]:.2f}]; exact force stds {r['ratio_exact']:.1f}x; "
              f"basis factors once {r['factors_s']:.2f} s")
    save_results(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
