#!/usr/bin/env python
"""E+F CPU time of two gapkit checkouts on the 576-atom ethanol box, alternating call by call.

Fits the models of ``engine_speed.py`` once with the *new* code (plain SOAP and the
default model: SOAP + default radial scaling + 2-body; ``--n-train`` frames,
``--n-sparse`` CUR points per species), pickles them, then starts one worker process
per checkout (``PYTHONPATH`` set to it; one BLAS thread each) and asks them for one
E+F call each in turn (A B A B) for ``--rounds`` rounds after three warm-up calls.
Printed: median and [min, max] of the CPU time (``time.process_time``) and the median
wall time of each checkout. The baseline is any older tree of the package, e.g.

    git archive <commit> gapkit | tar -x -C /tmp/gapkit_before
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/engine_ab.py \\
        --baseline /tmp/gapkit_before --rounds 21

Models pickled by the new code must unpickle with the baseline (true while the model
classes keep their attributes).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
from pathlib import Path

import harness as h

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORKER = r"""
import sys, time, pickle
sys.path.insert(0, sys.argv[2])
import numpy as np
from ase.io import read
import engine_speed as es
model = pickle.load(open(sys.argv[1], "rb"))
box = es.ethanol_box(read(sys.argv[3], "0"))
call = es.gapkit_call(model)
rng = np.random.default_rng(0)
for _ in range(3):
    call(es.moved(box, rng))
for _ in sys.stdin:
    a = es.moved(box, rng)
    c0, t0 = time.process_time(), time.perf_counter()
    call(a)
    print(time.process_time() - c0, time.perf_counter() - t0, flush=True)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True,
                   help="folder holding the baseline's gapkit package")
    p.add_argument("--rounds", type=int, default=21, help="alternating rounds (>= 5)")
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-sparse", type=int, default=300)
    p.add_argument("--models", nargs="+", default=["plain", "default"],
                   choices=["plain", "default"])
    h.add_data_dir_argument(p, "ethanol_rmd17", h.ETHANOL_FILES, flag="--ethanol-dir")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    pinned = h.set_thread_env(1)
    from ase.io import read

    import engine_speed as es

    print(h.host_line(pinned))
    print("command:", " ".join(sys.argv))
    eth = h.find_data_dir(args.ethanol_dir, "ethanol_rmd17", h.ETHANOL_FILES,
                          "the rMD17 ethanol folder")
    if eth is None:
        return 0
    train = read(str(eth / "train.xyz"), f":{args.n_train}")
    e0 = str(eth / "isolated_atoms.xyz")
    fit = {"plain": es.fit_gapkit, "default": es.fit_gapkit_default}
    with h.temp_dir("gk_engine_ab_") as tmp:
        for name in args.models:
            path = Path(tmp) / f"{name}.pkl"
            with open(path, "wb") as fh:
                pickle.dump(fit[name](train, es.ETH_SOAP, args.n_sparse, e0, 0), fh)
            procs = {}
            for label, tree in (("baseline", args.baseline.resolve()), ("new", ROOT)):
                env = dict(os.environ, PYTHONPATH=str(tree))
                procs[label] = subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(path), str(HERE), str(eth / "train.xyz")],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                    cwd=tmp)
            times = {k: [] for k in procs}
            for _ in range(max(5, args.rounds)):
                for label, pr in procs.items():
                    pr.stdin.write("go\n")
                    pr.stdin.flush()
                    times[label].append(tuple(map(float, pr.stdout.readline().split())))
            for label, pr in procs.items():
                pr.stdin.close()
                pr.wait()
                cpu = [1e3 * t[0] for t in times[label]]
                wall = [1e3 * t[1] for t in times[label]]
                print(f"{name:7s} {label:8s}: CPU {statistics.median(cpu):.1f} ms "
                      f"[{min(cpu):.1f}, {max(cpu):.1f}], wall {statistics.median(wall):.1f} ms")
    print(f"load average {h.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
