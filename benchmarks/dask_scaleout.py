#!/usr/bin/env python
"""A gapkit fit scaled out over Dask ``LocalCluster`` s, against the same fit run serially.

Training data are made on the fly (nothing is committed): :func:`emt_cell` draws small
fcc Cu/Al cells of 4-16 atoms (conventional cubic 1x1x1, 2x1x1, 2x2x1 and primitive
2x2x2, 2x2x3, 2x2x4, 3x3x1 cells), 0-50 % Al, lattice expanded with the Al fraction
(Vegard-like, up to +12 %), a random symmetric strain of up to ±3 % and a thermal-like
Gaussian rattle of ``0.1 Å * sqrt(T / 1000 K)`` with T uniform in 100-1500 K, labelled
with ASE's EMT (energies, forces, virials). Structure k depends only on ``--seed`` and
k. The client's copy is made in blocks on the cluster and gathered (about 1.7 kB per
``Atoms``).

The same model (SOAP n_max 6, l_max 4, r_cut 4.5 Å, F = 390; ``--n-sparse`` random
sparse points per species; not calibrated) is fitted, for every ``--sizes`` entry,

* **on Dask**: ``GAP(...).fit(source, client=client)`` on one ``LocalCluster`` per
  entry of ``--workers``. With ``--source seed`` (default) the source is a
  :class:`gapkit.data.sources.GeneratedFrames` of :func:`emt_cell`: each worker
  thread runs one chain task that carries only the source indices, digests and
  energies of its chunks of ``chunk_size`` (32) structures; the worker makes each
  chunk's structures again from the seed, folds their rows into its accumulator and
  drops them (:mod:`gapkit.gp.distributed`). ``--source file`` writes an extxyz file (under
  ``--tmp``) that the workers read by byte offset; ``--source graph`` gives the plain
  list (the chunks travel in the tasks);
* **serially**: ``GAP(..., n_jobs=1).fit(frames)`` in this process.

Workers are restarted before every Dask fit and warmed up with a tiny fit (imports,
compiled engine loops) that is not timed; Dask's statistical profiler is off on them
unless ``--worker-profile on`` (its history grows with wall time, up to 1000 one-second
cycles, whatever the fit holds: +10 MiB per worker on a 4,000-structure fit of 74 s,
``docs/guide/scaling.md``); then every process's peak RSS (``VmHWM``) is
reset, so the peaks printed are the fit's own. Printed per fit: wall and CPU time
(driver + workers), throughput, the peak RSS of the driver and of every worker, each
worker's live-chunk counter (chunks in flight at once, most structures in one), the
memory bound ``G (M+1)**2 + G B (M+1)`` doubles next to it, and the agreement with the
serial model (weights; energies, forces, stresses of ``--n-test`` new cells). At the
end: the per-worker peak RSS at the largest size over the smallest (the bound says
about 1; it was 1.4x for 2x the structures when each task carried N / (2 workers)
structures).

The same code runs on a multi-node cluster: give ``--scheduler ADDRESS`` of a running
scheduler (e.g. one started by dask-jobqueue's ``SLURMCluster``) or
``--scheduler-file FILE`` (``dask scheduler --scheduler-file FILE`` and ``dask worker
--scheduler-file FILE`` started by ``srun``; see ``docs/guide/scaling.md``).

Examples::

    python benchmarks/dask_scaleout.py --sizes 100,200 --n-sparse 40   # quick check
    python benchmarks/dask_scaleout.py --sizes 2000,20000 --n-sparse 300 --workers 3 \\
        --n-test 20 --source file --json /tmp/dask20k.json   # 20k structures (32 min loaded)
    python benchmarks/dask_scaleout.py --sizes 3000 --rounds 5 --workers 2 --source file  # timing
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy; inherited by the worker processes

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.cli import int_list  # noqa: E402
from harness.host import current_rss_mib, host_line, THREAD_VARS  # noqa: E402

SPECIES = ["Al", "Cu"]
SOAP_SETTINGS = dict(r_cut=4.5, n_max=6, l_max=4, sigma=0.5, cutoff_width=1.0)
#: (conventional cubic cell?, repeats): 4, 8, 16, 8, 12, 16 and 9 atoms
CELLS = ((True, (1, 1, 1)), (True, (2, 1, 1)), (True, (2, 2, 1)), (False, (2, 2, 2)),
         (False, (2, 2, 3)), (False, (2, 2, 4)), (False, (3, 3, 1)))


def emt_cell(k: int, seed: int = 0):
    """Labelled Cu/Al cell number ``k`` (depends only on ``seed`` and k): EMT energy
    (eV), forces (eV/Å) and stress as a SinglePointCalculator; ``info["temperature_K"]``
    is the rattle's T. Made on any process (the workers' ``GeneratedFrames``)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng([seed, k])
    cubic, reps = CELLS[int(rng.integers(len(CELLS)))]
    atoms = bulk("Cu", "fcc", a=3.61, cubic=cubic).repeat(reps)
    n_al = int(rng.binomial(len(atoms), rng.uniform(0.0, 0.5)))
    atoms.numbers[rng.choice(len(atoms), n_al, replace=False)] = 13
    eps = rng.uniform(-0.03, 0.03, size=(3, 3))
    scale = 1.0 + 0.12 * n_al / len(atoms)
    atoms.set_cell(atoms.cell @ (scale * np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    T = float(rng.uniform(100.0, 1500.0))
    atoms.positions += rng.normal(scale=0.1 * np.sqrt(T / 1000.0), size=atoms.positions.shape)
    atoms.info["temperature_K"] = T
    atoms.calc = EMT()
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
    return atoms


def emt_cells(n: int, seed: int = 0, start: int = 0) -> list:
    """Cells ``start`` ... ``start + n - 1`` of :func:`emt_cell`."""
    return [emt_cell(k, seed) for k in range(start, start + n)]


def build_model(n_sparse: int, seed: int, **kw):
    from gapkit import GAP, SOAP

    return GAP(SOAP(species=SPECIES, **SOAP_SETTINGS), n_sparse=n_sparse, delta=1.0,
               energy_noise=0.002, force_noise=0.05, virial_noise=0.05, e0="lstsq",
               sparse_method="random", calibrate=False, random_state=seed, **kw)


def worker_usage() -> dict:
    """Peak and current RSS (MiB) and CPU time (s) of this (worker) process: ``VmHWM``
    and ``VmRSS`` of ``/proc/self/status`` (``ru_maxrss`` is no use here: Linux keeps it
    across ``execve``, so a worker spawned by a 1 GB driver starts with a 1 GB "peak").
    Nothing from ``harness``: workers on other nodes cannot import it."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {"peak_mib": ru.ru_maxrss / 1024.0, "current_mib": None,
           "cpu_s": ru.ru_utime + ru.ru_stime}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key = "peak_mib" if line.startswith("VmHWM") else "current_mib"
                    out[key] = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return out


def reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0:
    ``echo 5 > /proc/self/clear_refs``), so that the next peak is the next fit's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def warm_up(frames, seed: int) -> None:
    """A tiny serial fit in this process (imports, compiled engine loops)."""
    build_model(4, seed, n_jobs=1).fit(frames)
    gc.collect()


def make_frames(client, n: int, seed: int, block: int = 500) -> tuple[list, float]:
    """``n`` labelled cells made in blocks on the cluster, and the worker CPU it took."""
    c0 = sum(u["cpu_s"] for u in client.run(worker_usage).values())
    futures = [client.submit(emt_cells, min(block, n - s), seed, start=s, pure=False)
               for s in range(0, n, block)]
    frames = []
    for fut in futures:
        frames.extend(fut.result())
        fut.release()
    return frames, sum(u["cpu_s"] for u in client.run(worker_usage).values()) - c0


def chunk_stats() -> dict:
    """This worker's live-chunk counter (:data:`gapkit.gp.distributed.live_chunks`)."""
    from gapkit.gp.distributed import live_chunks

    return live_chunks.stats()


def dask_internals(dask_worker) -> dict:
    """What Dask itself keeps on a worker that grows with the fit's wall time: the
    statistical profiler's history (``profile_history`` and ``profile_keys_history``,
    one entry per ``distributed.worker.profile.cycle`` of 1 s, at most
    ``distributed.admin.low-level-log-length`` = 1000 of each) and the task logs, as
    (entries, pickled MiB), and the tasks and results the worker still holds."""
    import pickle

    def size(items) -> list:
        items = list(items)
        return [len(items), len(pickle.dumps(items, protocol=5)) / 2 ** 20]

    w = dask_worker
    return {"profile_history": size(w.profile_history),
            "profile_keys_history": size(w.profile_keys_history),
            "transition_log": size(w.state.log), "stimulus_log": size(w.state.stimulus_log),
            "tasks": len(w.state.tasks), "data": len(w.data)}


def reset_chunks() -> None:
    from gapkit.gp.distributed import live_chunks

    live_chunks.reset()


def training_input(frames, args, tmp: Path):
    """What the Dask fit is given: a source the workers load their chunks from
    (``--source seed``: :class:`GeneratedFrames` of :func:`emt_cell`; ``file``: an
    extxyz file read by byte offset), or the plain list (``graph``: chunks travel in
    the tasks)."""
    from gapkit.data.sources import FileFrames, GeneratedFrames

    if args.source == "graph":
        return frames
    if args.source == "seed":
        src = GeneratedFrames(emt_cell, len(frames), seed=args.seed)
    else:
        from ase.io import write

        path = tmp / f"dask_scaleout_{len(frames)}.xyz"
        write(path, frames, format="extxyz")
        return FileFrames(path)  # the client reads it too (extxyz rounds positions to 1e-8 Å)
    src.attach(frames)  # the client's copy: the frames made on the cluster
    return src


def dask_fit(client, train, warm, args) -> tuple[object, dict]:
    """One timed Dask fit on fresh, warmed-up workers."""
    client.restart()  # fresh workers: their peak RSS is this fit's
    client.run(warm_up, warm, args.seed)
    client.run(reset_chunks)
    client.run(reset_peak)
    reset_peak()
    rss0 = worker_usage()["current_mib"]
    before = client.run(worker_usage)
    w0, c0 = time.perf_counter(), time.process_time()
    model = build_model(args.n_sparse, args.seed).fit(train, client=client)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    after = client.run(worker_usage)
    chunks = client.run(chunk_stats)
    kept = client.run(dask_internals)
    workers = {w: {"rss_before_mib": before[w]["current_mib"],
                   "peak_before_mib": before[w]["peak_mib"], "peak_mib": after[w]["peak_mib"],
                   "cpu_s": after[w]["cpu_s"] - before[w]["cpu_s"], "chunks": chunks[w],
                   "dask_internals": kept[w]}
               for w in after}
    return model, {"wall_s": wall, "driver_cpu_s": cpu, "driver_rss_before_mib": rss0,
                   "cpu_s": cpu + sum(w["cpu_s"] for w in workers.values()),
                   "driver_peak_mib": worker_usage()["peak_mib"], "workers": workers}


def serial_fit(frames, args) -> tuple[object, dict]:
    gc.collect()
    reset_peak()
    rss0 = worker_usage()["current_mib"]
    w0, c0 = time.perf_counter(), time.process_time()
    model = build_model(args.n_sparse, args.seed, n_jobs=1).fit(frames)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return model, {"wall_s": wall, "cpu_s": cpu, "driver_cpu_s": cpu, "driver_rss_before_mib": rss0,
                   "driver_peak_mib": worker_usage()["peak_mib"]}


def memory_bound(model, n_features: int) -> dict:
    """What a worker's fit needs beyond the interpreter, MiB: the per-group factors and
    row buffers (O(M**2) + one block of rows), the sparse set it is sent, and one
    structure's design rows (at most 16 atoms: 1 + 48 + 6 rows)."""
    from gapkit.gp.solver import BLOCK_ROWS

    M = int(len(model.sparse_species_))
    G = len(model.state_.n_train)
    B = BLOCK_ROWS
    mib = 8 / 2 ** 20
    return {"M": M, "groups": G, "block_rows": B,
            "factors_mib": G * (M + 1) ** 2 * mib, "row_buffers_mib": G * B * (M + 1) * mib,
            "sparse_set_mib": M * n_features * mib, "one_structure_rows_mib": 55 * M * mib,
            "total_mib": (G * (M + 1) ** 2 + G * B * (M + 1) + M * n_features + 55 * M) * mib}


def agreement(ref, model, test) -> dict:
    a, b = ref.alpha_, model.alpha_
    pr, pm = ref.predict(test, stress=True), model.predict(test, stress=True)
    return {"sparse_sets_equal": bool(np.array_equal(ref.sparse_q_, model.sparse_q_)),
            "alpha_max_rel": float(np.abs(a - b).max() / np.abs(a).max()),
            "energy_max_abs_eV": float(np.abs(pr.energy - pm.energy).max()),
            "force_max_abs_eV_A": float(max(np.abs(x - y).max()
                                            for x, y in zip(pr.forces, pm.forces))),
            "stress_max_abs_eV_A3": float(np.abs(np.asarray(pr.stress) - np.asarray(pm.stress)).max())}


def summary(runs: list[dict], n_struct: int, n_rows: int) -> dict:
    def stat(key):
        v = [r[key] for r in runs]
        return {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v}
    wall, cpu = stat("wall_s"), stat("cpu_s")
    return {"wall_s": wall, "cpu_s": cpu,
            "structures_per_s": n_struct / wall["median"], "rows_per_s": n_rows / wall["median"],
            "structures_per_cpu_s": n_struct / cpu["median"], "rows_per_cpu_s": n_rows / cpu["median"],
            "driver_peak_mib": max(r["driver_peak_mib"] for r in runs)}


def fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int_list, default=[5000, 20000],
                   help="training-set sizes (structures), each fitted on every cluster; "
                        "the per-worker peak RSS is compared between the smallest and largest")
    p.add_argument("--workers", type=int_list, default=[2],
                   help="one LocalCluster per entry, e.g. 2,4")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--memory-limit", default="3GiB", help="per LocalCluster worker")
    p.add_argument("--source", choices=["seed", "file", "graph"], default="seed",
                   help="how workers get their chunks: made from the seed, read from an extxyz "
                        "file, or sent in the task graph (the plain frame list)")
    p.add_argument("--worker-profile", choices=["on", "off"], default="off",
                   help="Dask's statistical profiler on the LocalCluster workers "
                        "(distributed.worker.profile.enabled; Dask's default is on). Its "
                        "history grows with wall time (~0.15 MiB per worker-second on this "
                        "fit) for the first 1000 s, whatever the fit holds: off measures the "
                        "fit's own memory")
    p.add_argument("--tmp", type=Path, default=Path("/tmp"), help="folder for --source file")
    p.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler (instead of LocalClusters)")
    p.add_argument("--scheduler-file", type=Path, default=None,
                   help="scheduler file of a running Dask scheduler (dask scheduler "
                        "--scheduler-file, e.g. in a SLURM job)")
    p.add_argument("--n-sparse", type=int, default=300, help="random sparse points per species")
    p.add_argument("--n-test", type=int, default=50, help="new cells to compare predictions on")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternating rounds (each cluster, serial); >= 5 for timings")
    p.add_argument("--no-serial", action="store_true", help="skip the serial fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import logging

    import dask
    from dask.distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    # the LocalCluster workers get this process's config (not a --scheduler's workers)
    dask.config.set({"distributed.worker.profile.enabled": args.worker_profile == "on"})
    print(host_line({v: os.environ.get(v) for v in THREAD_VARS}))
    clients, clusters = {}, []
    if args.scheduler or args.scheduler_file:
        client = (Client(args.scheduler) if args.scheduler
                  else Client(scheduler_file=str(args.scheduler_file)))
        clients[f"dask {len(client.scheduler_info()['workers'])} workers"] = client
    else:
        for w in args.workers:
            cl = LocalCluster(n_workers=w, threads_per_worker=args.threads_per_worker,
                              processes=True, memory_limit=args.memory_limit,
                              dashboard_address=None, silence_logs=logging.WARNING)
            clusters.append(cl)
            clients[f"dask {w}x{args.threads_per_worker}"] = Client(cl, set_as_default=False)
    first = max(clients.values(), key=lambda c: len(c.scheduler_info()["workers"]))
    n_max = max(args.sizes)
    print(f"# Dask fit: up to {n_max} EMT Cu/Al cells of 4-16 atoms, SOAP {SOAP_SETTINGS}, "
          f"{args.n_sparse} random sparse points per species, clusters {list(clients)}, "
          f"source {args.source}, worker profiler {args.worker_profile}, sizes {args.sizes}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    w0 = time.perf_counter()
    frames_all, gen_cpu = make_frames(first, n_max, args.seed)
    test = emt_cells(args.n_test, args.seed, start=10 ** 7)  # not among the training cells
    print(f"made and labelled {len(frames_all)} cells on the cluster: wall "
          f"{time.perf_counter() - w0:.1f} s, worker CPU {gen_cpu:.1f} s; driver RSS "
          f"{current_rss_mib():.0f} MiB", flush=True)
    res = {"sizes": args.sizes, "source": args.source, "worker_profile": args.worker_profile,
           "n_sparse_per_species": args.n_sparse,
           "threads_per_worker": args.threads_per_worker, "soap": SOAP_SETTINGS,
           "generation": {"worker_cpu_s": gen_cpu}, "load_start": os.getloadavg()[0], "by_size": {}}
    warm = frames_all[:8]
    warm_up(warm, args.seed)
    names = list(clients) + ([] if args.no_serial else ["serial"])
    for n in sorted(args.sizes):
        frames = frames_all[:n]
        train = training_input(frames, args, args.tmp)
        if args.source == "file":
            frames = train.frames()  # the serial fit gets the same (file) structures
        runs = {k: [] for k in names}
        models = {}
        for r in range(args.rounds):
            for name in names:
                if name == "serial":
                    models[name], run = serial_fit(frames, args)
                else:
                    models[name], run = dask_fit(clients[name], train, warm, args)
                run["load"] = os.getloadavg()[0]
                runs[name].append(run)
                print(f"N {n} round {r + 1} {name:>10}: wall {run['wall_s']:7.1f} s, CPU "
                      f"{run['cpu_s']:7.1f} s (driver {run['driver_cpu_s']:.1f} s), driver peak RSS "
                      f"{run['driver_peak_mib']:.0f} MiB (before {run['driver_rss_before_mib']:.0f}), "
                      f"load {run['load']:.1f}", flush=True)
                for w, u in run.get("workers", {}).items():
                    print(f"    worker {w}: peak RSS {u['peak_mib']:.0f} MiB (before the fit "
                          f"{u['rss_before_mib']:.0f} MiB, growth {u['peak_mib'] - u['rss_before_mib']:.0f}"
                          f" MiB), CPU {u['cpu_s']:.1f} s, chunks {fmt(u['chunks'])}", flush=True)
                    k = u["dask_internals"]
                    print(f"      Dask keeps: profile history {k['profile_history'][0]} + "
                          f"{k['profile_keys_history'][0]} entries "
                          f"({k['profile_history'][1] + k['profile_keys_history'][1]:.1f} MiB "
                          f"pickled), {k['tasks']} tasks, {k['data']} results", flush=True)
        ref = models["serial"] if "serial" in models else next(iter(models.values()))
        n_rows = int(sum(ref.state_.n_train.values()))
        bound = memory_bound(ref, ref.state_.terms[0].sparse_q.shape[1])
        out = {"n_rows": n_rows, "n_atoms": sum(len(a) for a in frames), "bound": bound,
               "runs": runs, "summary": {}}
        print(f"N {n}: {n_rows} training rows, M = {bound['M']}; per-worker bound: factors "
              f"{bound['factors_mib']:.1f} + row buffers {bound['row_buffers_mib']:.1f} + sparse set "
              f"{bound['sparse_set_mib']:.1f} + one structure's rows "
              f"{bound['one_structure_rows_mib']:.1f} = {bound['total_mib']:.1f} MiB")
        for name in sorted(names, key=lambda x: x != "serial"):  # serial first: the ratios
            s = summary(runs[name], n, n_rows)
            wk = [u for run in runs[name] for u in run.get("workers", {}).values()]
            if wk:
                s["worker_peak_mib"] = max(u["peak_mib"] for u in wk)
                s["worker_growth_mib"] = max(u["peak_mib"] - u["rss_before_mib"] for u in wk)
                s["live_chunks_peak"] = max(u["chunks"]["peak"] for u in wk)
                s["frames_per_chunk_max"] = max(u["chunks"]["max_frames"] for u in wk)
            if name != "serial" and "serial" in models:
                s["agreement"] = agreement(models["serial"], models[name], test)
            out["summary"][name] = s
            print(f"  {name:>10}: wall {s['wall_s']['median']:.1f} s [{s['wall_s']['min']:.1f}, "
                  f"{s['wall_s']['max']:.1f}], CPU {s['cpu_s']['median']:.1f} s "
                  f"[{s['cpu_s']['min']:.1f}, {s['cpu_s']['max']:.1f}], "
                  f"{s['structures_per_cpu_s']:.1f} structures/CPU-s, {s['structures_per_s']:.1f}/wall-s"
                  + (f", worker peak {s['worker_peak_mib']:.0f} MiB (growth "
                     f"{s['worker_growth_mib']:.0f}), live chunks <= {s['live_chunks_peak']}, "
                     f"<= {s['frames_per_chunk_max']} structures each" if wk else ""), flush=True)
            if "agreement" in s:
                print(f"    same model as serial: {fmt(s['agreement'])}; CPU "
                      f"{s['cpu_s']['median'] / out['summary']['serial']['cpu_s']['median']:.2f}x, wall "
                      f"{s['wall_s']['median'] / out['summary']['serial']['wall_s']['median']:.2f}x "
                      f"the serial fit's", flush=True)
        res["by_size"][n] = out
    lo, hi = min(args.sizes), max(args.sizes)
    if lo != hi:
        for name in clients:
            a, b = res["by_size"][lo]["summary"][name], res["by_size"][hi]["summary"][name]
            res.setdefault("memory_ratio", {})[name] = {
                "worker_peak": b["worker_peak_mib"] / a["worker_peak_mib"],
                "worker_growth": b["worker_growth_mib"] / a["worker_growth_mib"]}
            print(f"{name}: per-worker peak RSS {a['worker_peak_mib']:.0f} -> {b['worker_peak_mib']:.0f} MiB "
                  f"({b['worker_peak_mib'] / a['worker_peak_mib']:.3f}x) from {lo} to {hi} structures; "
                  f"growth over the warmed-up worker {a['worker_growth_mib']:.0f} -> "
                  f"{b['worker_growth_mib']:.0f} MiB ({b['worker_growth_mib'] / a['worker_growth_mib']:.3f}x)")
    res["load_end"] = os.getloadavg()[0]
    print(f"load {res['load_start']:.1f} -> {res['load_end']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
        print(f"results written to {args.json}")
    for c in clients.values():
        c.close()
    for cl in clusters:
        cl.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
