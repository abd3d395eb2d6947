#!/usr/bin/env python
"""Fit wall time on one core against two: serial, serial with 2 BLAS threads, and
``GAP(n_jobs=2)`` (threads over chunks, BLAS capped at one thread each).

rMD17 ethanol, the first ``--n-frames`` (1000) frames of ``train.xyz``, the earlier
default model (``--n-sparse`` 1000 CUR points per species, calibrated fit; pass
``--n-sparse auto`` for the current default). The configurations run alternately,
each fit a fresh process (A B C A B C ..., ``--rounds`` >= 5, rotating the order every
round so that a drift of the load hits all alike):

* ``serial-1blas``: ``n_jobs=1``, ``OMP/OPENBLAS_NUM_THREADS=1``;
* ``serial-2blas``: ``n_jobs=1``, 2 BLAS threads;
* ``threads-2``: ``n_jobs=2`` (the default on a 2-core machine is ``n_jobs=None``:
  every usable core), BLAS threads 2 outside the row stream.

Printed per configuration: median, min and max of the wall time and the CPU time of
the fit (``time.process_time`` of the worker, all its threads), and the median speed-up
against ``serial-1blas`` with its range over rounds. Goal (issue 17): >= 1.6x from the
second core on an idle machine. The fit's own phases are logged at INFO with
``--verbose``.

Example::

    python benchmarks/fit_threads.py --rounds 5 --json /tmp/fit_threads.json
    python benchmarks/fit_threads.py --n-frames 100 --n-sparse 200 --rounds 5   # quick
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

SCRIPT = Path(__file__).resolve()
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ethanol_rmd17"
CONFIGS = {"serial-1blas": (1, 1), "serial-2blas": (1, 2), "threads-2": (2, 2)}
GOAL = 1.6


def one(args) -> dict:
    from ase.io import read

    from gapkit import GAP

    frames = read(str(args.data / "train.xyz"), f":{args.n_frames}")
    n_sparse = args.n_sparse if args.n_sparse == "auto" else int(args.n_sparse)
    t0, c0 = time.perf_counter(), time.process_time()
    model = GAP(n_sparse=n_sparse, random_state=args.seed, n_jobs=args.one_jobs).fit(frames)
    import numpy as np

    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "M": int(len(model.sparse_species_)), "alpha_norm": float(np.linalg.norm(model.alpha_))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-frames", type=int, default=1000)
    p.add_argument("--n-sparse", default="1000", help="per species, or 'auto'")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    p.add_argument("--data", type=Path, default=Path(os.environ.get(
        "GAPKIT_SHARED_DATA", DATA.parent)) / "ethanol_rmd17")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one-jobs", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one_jobs is not None:
        print(json.dumps(one(args)))
        return 0
    names = args.configs.split(",")
    times = {k: [] for k in names}
    print(f"# fit threads: rMD17 ethanol, {args.n_frames} frames, n_sparse {args.n_sparse}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(max(5, args.rounds)):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            jobs, blas = CONFIGS[name]
            env = dict(os.environ)
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(blas)
            cmd = [sys.executable, str(SCRIPT), "--one-jobs", str(jobs), "--n-frames",
                   str(args.n_frames), "--n-sparse", str(args.n_sparse), "--data", str(args.data),
                   "--seed", str(args.seed)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:])
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["load"] = os.getloadavg()[0]
            times[name].append(row)
            print(f"round {r}  {name:13s} wall {row['wall_s']:7.1f} s  cpu {row['cpu_s']:7.1f} s  "
                  f"M {row['M']}  load {row['load']:.2f}", flush=True)
    base = names[0]
    summary = {}
    for name in names:
        wall = [t["wall_s"] for t in times[name]]
        ratio = [b["wall_s"] / t["wall_s"] for b, t in zip(times[base], times[name])]
        summary[name] = {"wall_median_s": statistics.median(wall), "wall_min_s": min(wall),
                         "wall_max_s": max(wall),
                         "cpu_median_s": statistics.median(t["cpu_s"] for t in times[name]),
                         f"speedup_vs_{base}_median": statistics.median(ratio),
                         "speedup_range": (min(ratio), max(ratio))}
        s = summary[name]
        print(f"{name:13s} wall median {s['wall_median_s']:7.1f} s [{s['wall_min_s']:.1f}, "
              f"{s['wall_max_s']:.1f}]  cpu {s['cpu_median_s']:7.1f} s  speed-up vs {base} "
              f"{s[f'speedup_vs_{base}_median']:.2f}x [{s['speedup_range'][0]:.2f}, "
              f"{s['speedup_range'][1]:.2f}]")
    if "threads-2" in summary:
        got = summary["threads-2"][f"speedup_vs_{base}_median"]
        print(f"second core: {got:.2f}x (goal >= {GOAL}: {'met' if got >= GOAL else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps({"runs": times, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
