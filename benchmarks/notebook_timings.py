"""How long each notebook in ``notebooks/`` takes: wall and CPU time of a full run.

Every notebook is executed with nbclient in a fresh ``python3`` kernel, in full mode
(``GAPKIT_NOTEBOOK_FAST=0``, the settings a reader gets; ``--fast`` runs the test suite's
small settings instead), from ``notebooks/`` (the notebooks find the packaged data and
``../shared/data`` from there), with one BLAS/OpenMP thread unless ``--threads`` says
otherwise. The notebooks are run round-robin (01 02 03 ... 01 02 03 ...) for
``--rounds`` rounds so that a change of machine load spreads over all of them.

Per run it prints the wall time, the CPU time of the kernel and everything it started
(``RUSAGE_CHILDREN``, counted once the kernel has exited) and the 1-minute load average
before and after; at the end, per notebook, the median and the range over the rounds.
Nothing is written into the notebooks (the executed copies are discarded).

Run (quiet machine; about 2 × the sum of the notebooks' times per round)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/notebook_timings.py --rounds 3
    python benchmarks/notebook_timings.py --only 01_quickstart 04_physics --rounds 1
    python benchmarks/notebook_timings.py --fast                        # the tests' settings
    python benchmarks/notebook_timings.py --json timings.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import harness as h

NB_DIR = h.REPO / "notebooks"


def run_notebook(path: Path, fast: bool, timeout: int) -> dict:
    """Execute one notebook in a fresh kernel; wall and CPU seconds, and any error."""
    import nbclient
    import nbformat

    os.environ["GAPKIT_NOTEBOOK_FAST"] = "1" if fast else "0"
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = h.loadavg()
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()          # starts the kernel, runs every cell, shuts it down
    except Exception as exc:      # noqa: BLE001 - reported, the other notebooks still run
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"notebook": path.stem, "wall_s": wall, "cpu_s": cpu, "load_before": load0,
            "load_after": h.loadavg(), "error": error}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="runs of every notebook")
    p.add_argument("--only", nargs="+", metavar="NAME", help="notebook stems to run")
    p.add_argument("--fast", action="store_true", help="GAPKIT_NOTEBOOK_FAST=1 (the tests' settings)")
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (0: leave as is)")
    p.add_argument("--timeout", type=int, default=1800, help="per cell, s")
    p.add_argument("--json", type=Path, help="write every run and the summary here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    threads = h.set_thread_env(args.threads)
    paths = sorted(NB_DIR.glob("*.ipynb"))
    if args.only:
        missing = set(args.only) - {q.stem for q in paths}
        if missing:
            p.error(f"no such notebook(s) in {NB_DIR}: {sorted(missing)}")
        paths = [q for q in paths if q.stem in args.only]
    print(h.host_line(threads))
    print(f"mode: {'fast (GAPKIT_NOTEBOOK_FAST=1)' if args.fast else 'full'}; "
          f"{args.rounds} round(s) over {[q.stem for q in paths]}")
    print(f"{'round':>5}  {'notebook':<22} {'wall s':>8} {'CPU s':>8}  load before/after")
    runs = []
    for r in range(args.rounds):
        for path in paths:
            res = run_notebook(path, args.fast, args.timeout)
            res["round"] = r
            runs.append(res)
            print(f"{r:>5}  {res['notebook']:<22} {res['wall_s']:8.1f} {res['cpu_s']:8.1f}  "
                  f"{res['load_before']:.2f}/{res['load_after']:.2f}"
                  + (f"  FAILED {res['error']}" if res["error"] else ""), flush=True)
    print("\n| notebook | wall (s), median [min, max] | CPU (s), median [min, max] |")
    print("| --- | --- | --- |")
    summary = {}
    for path in paths:
        ok = [x for x in runs if x["notebook"] == path.stem and not x["error"]]
        if not ok:
            print(f"| {path.stem} | failed | failed |")
            continue
        w, c = [x["wall_s"] for x in ok], [x["cpu_s"] for x in ok]
        summary[path.stem] = {"wall_median": statistics.median(w), "wall_range": [min(w), max(w)],
                              "cpu_median": statistics.median(c), "cpu_range": [min(c), max(c)]}
        print(f"| {path.stem} | {statistics.median(w):.0f} [{min(w):.0f}, {max(w):.0f}] | "
              f"{statistics.median(c):.0f} [{min(c):.0f}, {max(c):.0f}] |")
    if args.json:
        args.json.write_text(json.dumps({"mode": "fast" if args.fast else "full", "runs": runs,
                                         "summary": summary, **h.host_fields(threads)}, indent=1))
    return 1 if any(x["error"] for x in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
