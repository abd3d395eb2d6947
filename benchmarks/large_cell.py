#!/usr/bin/env python
"""Energy, forces and stress of periodic Si cells from 64 to ~100,000 atoms: time per
atom and peak memory (issue #17: flat per atom, memory bounded by the block).

Fits a small GAP on ``--n-train`` evenly spaced cells of mlearn's Si training set
(``train.xyz`` of ``--data``, else ``$GAPKIT_SHARED_DATA[/si_mlearn]``, else
``<repo>/../shared/data/si_mlearn``; SOAP n_max 8, l_max 8, r_cut 5.4 Å,
``--n-sparse`` points), saves it to a temporary file, and evaluates rattled diamond
supercells of ``8 * repeat**3`` atoms for every ``--repeats`` value, each size in a
fresh process (so that its peak RSS is its own), alternating over ``--rounds`` passes.
Each process makes one warm-up call on a 64-atom cell (RSS ``before``), then one
energy + forces + stress call on its cell through :class:`gapkit.GAPCalculator`.
Printed per size: median wall and CPU time per atom (and their range), the peak RSS and
its growth over the warm-up, and the ratio of the time per atom to the smallest
cell's (goal <= 1.2 up to 100,000 atoms; peak RSS of the 100,000-atom cell < 2 GB).
``--threads N`` sets the block threads (``GAPKIT_NUM_THREADS``: cells of more than 512
atoms run their blocks on N worker threads) and the BLAS threads; ``--threads 0``
leaves ``GAPKIT_NUM_THREADS`` unset (the default: one worker per free core). Exits 0
with a message when the data is absent.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/large_cell.py
    python benchmarks/large_cell.py --repeats 2,4,8,16,23 --rounds 3   # up to 97,336 atoms
    python benchmarks/large_cell.py --repeats 2,4,8,16,23 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness as h

SCRIPT = Path(__file__).resolve()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=h.int_list, default=[2, 4, 8, 12],
                    help="supercell repeats of the 8-atom cell (8 r^3 atoms each)")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the sizes")
    ap.add_argument("--threads", type=int, default=1,
                    help="block threads (GAPKIT_NUM_THREADS; 0: unset, the default)")
    ap.add_argument("--n-train", type=int, default=20)
    ap.add_argument("--n-sparse", type=int, default=300)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "REPEAT"), help=argparse.SUPPRESS)
    h.add_data_dir_argument(ap, "si_mlearn", ("train.xyz",), flag="--data")
    return ap


def si_cell(repeat: int):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat((repeat,) * 3)
    atoms.rattle(0.05, seed=0)
    return atoms


def worker(model_path: str, repeat: int) -> None:
    """One size in this process: warm-up on 64 atoms, then one E+F+S call; JSON on stdout."""
    import numpy as np

    import gapkit

    model = gapkit.load(model_path)
    warm = si_cell(2)
    warm.calc = gapkit.GAPCalculator(model)
    warm.calc.calculate(warm, ["energy", "forces", "stress"])
    rss0 = h.maxrss_mib()
    atoms = si_cell(repeat)
    atoms.calc = gapkit.GAPCalculator(model)
    t0, c0 = time.perf_counter(), time.process_time()
    atoms.calc.calculate(atoms, ["energy", "forces", "stress"])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    r = atoms.calc.results
    print(json.dumps({"n_atoms": len(atoms), "wall_s": wall, "cpu_s": cpu,
                      "peak_rss_mib": h.maxrss_mib(), "rss_before_mib": rss0,
                      "energy_per_atom": float(r["energy"]) / len(atoms),
                      "max_force": float(np.abs(r["forces"]).max())}))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return 0
    data_dir = h.find_data_dir(args.data, "si_mlearn", ("train.xyz",), "the mlearn Si folder")
    if data_dir is None:
        return 0
    env, pinned = h.worker_env(max(1, args.threads))
    if args.threads > 0:
        env["GAPKIT_NUM_THREADS"] = str(args.threads)
    else:
        env.pop("GAPKIT_NUM_THREADS", None)
    print(h.host_line(pinned), f"GAPKIT_NUM_THREADS={env.get('GAPKIT_NUM_THREADS', 'unset')}")
    print("command:", " ".join(sys.argv))
    from gapkit import GAP, SOAP

    train, _ = h.load_si(data_dir, args.n_train, 1, virials=True)
    model = GAP(SOAP(r_cut=5.4, n_max=8, l_max=8, sigma=0.5), n_sparse=args.n_sparse,
                random_state=0).fit(train)
    runs: dict[int, list[dict]] = {r: [] for r in args.repeats}
    with h.temp_dir("gk_large_cell_") as tmp:
        path = tmp / "si.gap"
        model.save(path)
        for _ in range(max(1, args.rounds)):
            for r in args.repeats:
                out = subprocess.run([sys.executable, str(SCRIPT), "--worker", str(path), str(r)],
                                     env=env, check=True, capture_output=True, text=True)
                runs[r].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows, base = [], None
    for r, res in runs.items():
        n = res[0]["n_atoms"]
        wall = [x["wall_s"] / n * 1e6 for x in res]
        cpu = [x["cpu_s"] / n * 1e6 for x in res]
        rss = max(x["peak_rss_mib"] for x in res)
        grow = max(x["peak_rss_mib"] - x["rss_before_mib"] for x in res)
        med = statistics.median(wall)
        base = med if base is None else base
        rows.append({"n_atoms": n, "us_per_atom_wall": med, "wall_range": [min(wall), max(wall)],
                     "us_per_atom_cpu": statistics.median(cpu), "peak_rss_mib": rss,
                     "rss_growth_mib": grow, "ratio_to_smallest": med / base})
        print(f"{n:7d} atoms: {med:7.1f} µs/atom wall [{min(wall):.1f}, {max(wall):.1f}], "
              f"{statistics.median(cpu):7.1f} µs/atom CPU, ratio {med / base:.2f} (goal <= 1.2); "
              f"peak RSS {rss:.0f} MiB (+{grow:.0f} over the warm-up)")
    print(f"M = {len(model.alpha_)}; load average {h.loadavg()}")
    h.save_results(args.json, {"rows": rows, "runs": {str(k): v for k, v in runs.items()},
                               "threads": args.threads, "n_sparse": len(model.alpha_)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
