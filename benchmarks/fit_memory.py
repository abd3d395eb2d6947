#!/usr/bin/env python
"""Peak memory of a gapkit fit against the number of training structures N.

Training data are made on the fly (nothing is committed): 32-atom fcc Cu/Al cells
(2x2x2 conventional Cu cell, a = 3.61 Å, 0-25 % of the atoms swapped to Al, a random
symmetric strain of up to ``--strain`` (2 %) and a Gaussian rattle of ``--rattle``
(0.08 Å)), labelled with ASE's EMT (energies, forces, virials). Each N is fitted in
its own subprocess (this script re-invoked with ``--one N``), so ``ru_maxrss`` of that
process is the fit's peak RSS (interpreter, imports and the N training frames
included; the RSS before the fit is printed too, and the RSS of the N labelled frames
alone, which the caller holds: about 6.5 kB per 32-atom ``Atoms`` with its
``SinglePointCalculator``, 24 MiB at N = 4000). The sparse set has a fixed size
(``--n-sparse`` per species, far below the environments there are at every N), so
what grows with N is only what the fit streams.

Goal (issue 17): peak RSS at the largest N within 1.10x of the smallest.

Example (about 10 min of CPU on one core; OMP/OPENBLAS threads set to ``--threads``)::

    python benchmarks/fit_memory.py --sizes 250,1000,4000 --json /tmp/fit_memory.json
    python benchmarks/fit_memory.py --sizes 50,200 --n-sparse 100   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
GOAL_FLAT = 1.10
SOAP_SETTINGS = dict(r_cut=4.5, n_max=6, l_max=4, sigma=0.5, cutoff_width=1.0)


def emt_cells(n: int, seed: int = 0, strain: float = 0.02, rattle: float = 0.08,
              start: int = 0) -> list:
    """``n`` labelled 32-atom Cu/Al cells (structure ``start + k`` is the same for any
    ``n``): EMT energy, forces and stress as a SinglePointCalculator."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    calc = EMT()
    out = []
    for k in range(start, start + n):
        rng = np.random.default_rng([seed, k])
        atoms = base.copy()
        n_al = int(rng.integers(0, len(atoms) // 4 + 1))
        atoms.numbers[rng.choice(len(atoms), n_al, replace=False)] = 13
        eps = rng.uniform(-strain, strain, size=(3, 3))
        atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        atoms.calc = calc
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        out.append(atoms)
    return out


def build_model(n_sparse: int, seed: int, **kw):
    from gapkit import GAP, SOAP

    return GAP(SOAP(species=["Al", "Cu"], **SOAP_SETTINGS), n_sparse=n_sparse, delta=1.0,
               energy_noise=0.002, force_noise=0.05, virial_noise=0.05, e0="lstsq",
               random_state=seed, **kw)


def current_rss_mib() -> float:
    """``VmRSS`` of this process, MiB."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def one(args) -> dict:
    import resource

    emt_cells(1, args.seed)  # its imports, so that the frames' RSS is measured alone
    rss_imports = current_rss_mib()
    frames = emt_cells(args.one, args.seed)
    frames_mib = current_rss_mib() - rss_imports
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    model = build_model(args.n_sparse, args.seed, calibrate=not args.no_calibrate,
                        n_jobs=args.n_jobs).fit(frames)
    return {"N": args.one, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_fit_mib": rss0, "frames_mib": frames_mib, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "M": int(len(model.sparse_species_)),
            "n_env": 32 * args.one}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="250,1000,4000", help="comma-separated N")
    p.add_argument("--n-sparse", type=int, default=500, help="sparse points per species")
    p.add_argument("--n-jobs", type=int, default=1, help="GAP(n_jobs=...) (default 1: serial)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of each fit")
    p.add_argument("--no-calibrate", action="store_true", help="GAP(calibrate=False)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args)))
        return 0
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    rows = []
    print(f"# fit peak RSS vs N: EMT Cu/Al 32-atom cells, SOAP {SOAP_SETTINGS}, "
          f"n_sparse {args.n_sparse}/species, n_jobs {args.n_jobs}, {args.threads} BLAS thread(s)")
    for n in [int(x) for x in args.sizes.split(",")]:
        cmd = [sys.executable, str(SCRIPT), "--one", str(n), "--n-sparse", str(args.n_sparse),
               "--n-jobs", str(args.n_jobs), "--seed", str(args.seed)]
        if args.no_calibrate:
            cmd.append("--no-calibrate")
        load0 = os.getloadavg()[0]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:])
            return 1
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["load"] = (load0, os.getloadavg()[0])
        rows.append(row)
        print(f"N={n:6d}  n_env={row['n_env']:7d}  M={row['M']:5d}  peak RSS "
              f"{row['peak_rss_mib']:7.1f} MiB (before fit {row['rss_before_fit_mib']:6.1f}, "
              f"the frames {row['frames_mib']:5.1f})  "
              f"cpu {row['cpu_s']:7.1f} s  wall {row['wall_s']:7.1f} s  load "
              f"{row['load'][0]:.1f}->{row['load'][1]:.1f}", flush=True)
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak RSS ratio N={rows[-1]['N']} / N={rows[0]['N']}: {ratio:.3f} "
          f"(goal <= {GOAL_FLAT}: {'met' if ratio <= GOAL_FLAT else 'NOT met'})")
    fit = [r["peak_rss_mib"] - r["rss_before_fit_mib"] for r in (rows[0], rows[-1])]
    print(f"the fit's own share (peak minus the RSS before the fit, which holds the N "
          f"frames): {fit[0]:.1f} -> {fit[1]:.1f} MiB, ratio {fit[1] / fit[0]:.3f}")
    bare = [r["peak_rss_mib"] - r["frames_mib"] for r in (rows[0], rows[-1])]
    print(f"peak RSS without the frames' own RSS (the caller's data, {rows[0]['frames_mib']:.1f} "
          f"-> {rows[-1]['frames_mib']:.1f} MiB): {bare[0]:.1f} -> {bare[1]:.1f} MiB, ratio "
          f"{bare[1] / bare[0]:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio": ratio,
                                         "fit_share_ratio": fit[1] / fit[0],
                                         "without_frames_ratio": bare[1] / bare[0],
                                         "settings": vars(args)},
                                        default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
