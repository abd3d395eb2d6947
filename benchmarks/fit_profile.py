#!/usr/bin/env python
"""CPU time of a fit phase by phase: the Amdahl table of the fit (issue #17).

Each phase of :func:`gapkit.model.fit_once.fit_calibrated_state` is wrapped and timed
with CPU clocks, not the wall clock (which means little on a loaded machine):

* ``cpu``: ``time.process_time`` over the phase (all threads of the process);
* ``main``: ``time.thread_time`` of the calling (main) thread over the phase;
* ``others = cpu - main``: what ran on worker threads (the row stream's pool, the
  descriptor threads of the CUR passes and of the calibration, BLAS threads);
* phases that ran on another thread (``K_MM`` and the variance basis on the fit's
  side thread, ``n_jobs > 1``) are listed under ``other threads`` with that
  thread's own CPU time (they overlap the row stream).

A phase is *serial* when ``others`` is close to zero with ``n_jobs > 1``: its CPU time
is then the serial term of Amdahl's law. With ``--n-jobs 1`` (one BLAS thread) the
table is the serial profile; with ``--n-jobs 2`` it shows which phases the fit runs
on both cores. Nested phases (``K_MM`` inside ``fit``) are indented; a parent's time
includes its children's.

rMD17 ethanol, the first ``--n-frames`` frames of ``train.xyz``. ``--n-sparse`` 1000
(the earlier default) or ``auto`` (the default model); ``--default-fit`` uses the
estimator's defaults except ``e0`` from the isolated atoms, as
``benchmarks/fit_threads.py --default-fit``.

Examples::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/fit_profile.py --n-frames 400 --n-jobs 1
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/fit_profile.py --n-frames 400 --n-jobs 2
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/fit_profile.py --default-fit --n-frames 1000 --n-jobs 2
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ethanol_rmd17"

#: (module, attribute, label): the phases timed. Order is that of the fit.
PHASES = [
    ("gapkit.model.training", "check_training_set", "check training set"),
    ("gapkit.model.training", "fit_with_valid_rows", "fit (split or all frames)"),
    ("gapkit.model.fit_once", "fit_split_and_all", "split and final fit (rows once)"),
    ("gapkit.model.training", "training_data", "labels"),
    ("gapkit.model.training", "reference_energies", "E0"),
    ("gapkit.model.training", "select_sparse", "sparse selection (CUR)"),
    ("gapkit.gp.sparsify", "_leverage_basis", "CUR eigenpairs (eigh)"),
    ("gapkit.gp.sparsify", "_cur", "CUR in memory (eigh of Q Q^T)"),
    ("gapkit.model.training", "kmm_factor", "K_MM and its Cholesky factor"),
    ("gapkit.gp.terms", "kernel_mm", "K_MM"),
    ("gapkit.gp.solver", "cholesky_kmm", "Cholesky of K_MM"),
    ("gapkit.model.training", "variance_basis", "variance basis (greedy columns)"),
    ("gapkit.model.training", "accumulate_rows", "row stream (descriptors, rows, QR)"),
    ("gapkit.gp.solver", "column_factor", "split factors (QR of columns)"),
    ("gapkit.gp.solver", "merge_groups", "merge factors"),
    ("gapkit.model.training", "auto_delta", "delta auto"),
    ("gapkit.gp.solver", "solve", "solve (stacked QR + triangular solve)"),
    ("gapkit.model.training", "variance_factors", "variance basis factors"),
    ("gapkit.model.training", "calibrate_on", "calibration"),
    ("gapkit.model.fit_once", "_with_range", "compression range"),
    ("gapkit.model.fit_once", "takes_every_environment", "every-environment check"),
    ("gapkit.model.training", "add_rows", "add rows"),
]


class Recorder:
    """Nested CPU timers keyed by phase label (the same label summed over calls)."""

    def __init__(self):
        self.rows: dict[tuple, dict] = {}
        self.stack: list[str] = []

    @contextlib.contextmanager
    def phase(self, label):
        path = tuple(self.stack) + (label,)
        self.stack.append(label)
        c0, m0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
        try:
            yield
        finally:
            self.stack.pop()
            r = self.rows.setdefault(path, {"calls": 0, "cpu": 0.0, "main": 0.0, "wall": 0.0})
            r["calls"] += 1
            r["cpu"] += time.process_time() - c0
            r["main"] += time.thread_time() - m0
            r["wall"] += time.perf_counter() - w0


    def side(self, label, fn, *a, **k):
        """A phase on another thread: its own CPU clock (``time.thread_time``)."""
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            r = self.rows.setdefault(("other threads", label),
                                     {"calls": 0, "cpu": 0.0, "main": 0.0, "wall": 0.0})
            r["calls"] += 1
            r["cpu"] += time.thread_time() - c0
            r["wall"] += time.perf_counter() - w0


def install(rec: Recorder) -> None:
    """Wrap every phase function, in its module and wherever it was imported by name."""
    import importlib
    import threading

    main = threading.main_thread()
    mods = {m: importlib.import_module(m) for m, _, _ in PHASES}
    users = [importlib.import_module(m) for m in ("gapkit.model.training",
                                                  "gapkit.model.fit_once", "gapkit.gp.solver",
                                                  "gapkit.gp.sparsify", "gapkit.model.params",
                                                  "gapkit.gp.streaming")]
    for modname, attr, label in PHASES:
        fn = getattr(mods[modname], attr)

        def wrapped(*a, __fn=fn, __label=label, **k):
            if threading.current_thread() is not main:  # a side or worker thread
                return rec.side(__label, __fn, *a, **k)
            with rec.phase(__label):
                return __fn(*a, **k)

        functools.update_wrapper(wrapped, fn)
        setattr(mods[modname], attr, wrapped)
        for mod in users:  # names imported with ``from ... import``
            if getattr(mod, attr, None) is fn:
                setattr(mod, attr, wrapped)


def run(args) -> dict:
    import numpy as np
    from ase.io import read

    from gapkit import GAP

    rec = Recorder()
    install(rec)
    frames = read(str(args.data / "train.xyz"), f":{args.n_frames}")
    e0 = {a.get_chemical_symbols()[0]: float(a.get_potential_energy())
          for a in read(str(args.data / "isolated_atoms.xyz"), ":") if len(a) == 1}
    jobs = None if args.n_jobs == 0 else args.n_jobs
    if args.default_fit:
        model = GAP(e0=e0, n_jobs=jobs, random_state=args.seed)  # seeded: comparable weights
    else:
        n_sparse = args.n_sparse if args.n_sparse == "auto" else int(args.n_sparse)
        model = GAP(n_sparse=n_sparse, e0=e0, random_state=args.seed, n_jobs=jobs)
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    with rec.phase("GAP.fit"):
        model.fit(frames)
    total = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
             "main": time.thread_time() - m0}
    side = [r for p, r in rec.rows.items() if p[0] == "other threads"]
    if side:  # a parent row for the phases of other threads (their own CPU clocks)
        rec.rows[("other threads",)] = {"calls": sum(r["calls"] for r in side), "main": 0.0,
                                        "cpu": sum(r["cpu"] for r in side), "wall": 0.0}
    rows = [{"phase": "/".join(p), **r} for p, r in rec.rows.items()]
    return {"n_frames": args.n_frames, "n_jobs": args.n_jobs, "M": int(len(model.alpha_)),
            "total": total, "rows": rows,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "alpha_norm": float(np.linalg.norm(model.alpha_)),
            "alpha": model.alpha_,
            "blas_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "load": os.getloadavg()[0]}


def print_table(out: dict) -> None:
    tot = out["total"]
    print(f"# rMD17 ethanol {out['n_frames']} frames, n_jobs={out['n_jobs']}, M = {out['M']}, "
          f"peak RSS {out['peak_rss_mb']:.0f} MB, load {out['load']:.2f}")
    print(f"# total: cpu {tot['cpu']:.1f} s, main thread {tot['main']:.1f} s, "
          f"wall {tot['wall']:.1f} s (wall is not a measurement on a loaded machine)")
    print(f"{'phase':58s} {'calls':>5s} {'cpu s':>8s} {'main s':>8s} {'others s':>8s} "
          f"{'% cpu':>6s}")
    order = sorted(out["rows"], key=lambda r: r["phase"].count("/"))
    # print in tree order: each row after its parent
    tree = {}
    for r in order:
        tree.setdefault(r["phase"].rsplit("/", 1)[0] if "/" in r["phase"] else None, []).append(r)

    def show(parent, depth):
        for r in tree.get(parent, []):
            name = "  " * depth + r["phase"].rsplit("/", 1)[-1]
            print(f"{name:58s} {r['calls']:5d} {r['cpu']:8.2f} {r['main']:8.2f} "
                  f"{r['cpu'] - r['main']:8.2f} {100 * r['cpu'] / tot['cpu']:6.1f}")
            show(r["phase"], depth + 1)

    show(None, 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-frames", type=int, default=400)
    p.add_argument("--n-sparse", default="1000", help="per species, or 'auto'")
    p.add_argument("--n-jobs", type=int, default=1, help="0: None (every core)")
    p.add_argument("--default-fit", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=Path(os.environ.get(
        "GAPKIT_SHARED_DATA", DATA.parent)) / "ethanol_rmd17")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--save-alpha", type=Path, default=None,
                   help="write the fitted weights (.npy) to compare two versions")
    args = p.parse_args(argv)
    out = run(args)
    alpha = out.pop("alpha")
    if args.save_alpha:
        import numpy as np
        np.save(args.save_alpha, alpha)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
