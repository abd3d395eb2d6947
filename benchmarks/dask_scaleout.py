#!/usr/bin/env python
"""A gapkit fit scaled out over a Dask cluster, against the same fit run serially.

Training data are made on the fly on the cluster (nothing is committed): 32-atom Cu/Al
cells labelled with EMT (:func:`fit_memory.emt_cells`: energies, forces, virials).
The same model is fitted twice on the same frames and sparse set:

* **Dask**: ``GAP(...).fit(frames, client=client)`` on a ``dask.distributed.LocalCluster``
  of ``--workers`` processes x ``--threads-per-worker`` threads: each task streams a
  share of the structures into its own per-group triangular factors (memory O(M**2) +
  one structure's descriptor derivatives) and only those factors travel back; the client
  merges them in task order;
* **serial**: ``GAP(..., n_jobs=1).fit(frames)`` in this process.

Printed: wall and CPU time of both fits and their ratio (throughput in structures/s),
each worker's peak RSS (``ru_maxrss`` read on the worker after the fit) and its RSS
before, the O(M**2) size of the factors and row buffers, and the agreement of the two
models (weights and predicted energies/forces of ``--n-test`` new cells).
The sparse set is drawn at random (``sparse_method="random"``) and the fit is not
calibrated (``calibrate=False``): selection and calibration run on the client, and
what is scaled out is the row stream (descriptors with derivatives, design rows, QR).

The same code runs on a multi-node cluster: give ``--scheduler ADDRESS`` of a running
scheduler (e.g. one started by dask-jobqueue's ``SLURMCluster``; see
``docs/guide/scaling.md``) instead of a LocalCluster.

Examples::

    python benchmarks/dask_scaleout.py --n-structures 400 --workers 2      # quick check
    python benchmarks/dask_scaleout.py --n-structures 20000 --workers 2 --json /tmp/dask.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy; inherited by the worker processes

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_memory import build_model, emt_cells  # noqa: E402


def worker_rss() -> dict:
    """Peak and current RSS of this worker process, MiB."""
    import resource

    cur = None
    try:
        with open("/proc/self/statm") as fh:
            cur = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        pass
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "current_mib": cur}


def make_frames(client, n: int, seed: int, block: int = 250) -> list:
    """``n`` labelled cells, made in blocks on the cluster (the same cells for any
    cluster: structure k depends only on ``seed`` and k)."""
    futures = [client.submit(emt_cells, min(block, n - s), seed, start=s, pure=False)
               for s in range(0, n, block)]
    frames = []
    for fut in futures:
        frames.extend(fut.result())
        fut.release()
    return frames


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-structures", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--memory-limit", default="3GiB", help="per LocalCluster worker")
    p.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler (instead of a LocalCluster)")
    p.add_argument("--n-sparse", type=int, default=300, help="sparse points per species")
    p.add_argument("--n-test", type=int, default=50, help="new cells to compare predictions on")
    p.add_argument("--no-serial", action="store_true", help="skip the serial fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from dask.distributed import Client, LocalCluster

    if args.scheduler:
        cluster, client = None, Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                               processes=True, memory_limit=args.memory_limit,
                               dashboard_address=None)
        client = Client(cluster)
    n_workers = len(client.scheduler_info()["workers"])
    print(f"# Dask fit: {args.n_structures} EMT Cu/Al 32-atom cells, {n_workers} workers x "
          f"{args.threads_per_worker} thread(s), n_sparse {args.n_sparse}/species (random), "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    frames = make_frames(client, args.n_structures, args.seed)
    test = emt_cells(args.n_test, args.seed + 1)
    print(f"made and labelled {len(frames)} cells on the cluster in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    client.restart()  # fresh workers: their peak RSS is the fit's, not the data generation's
    kw = dict(sparse_method="random", calibrate=False)
    # warm-up (imports, compiled engine loops) on every worker and here, not timed
    warm = frames[:4 * n_workers]
    build_model(4, args.seed, **kw).fit(warm, client=client)
    build_model(4, args.seed, n_jobs=1, **kw).fit(warm)
    client.run(lambda: __import__("gc").collect())
    rss_before = client.run(worker_rss)

    res = {"n_structures": len(frames), "workers": n_workers,
           "threads_per_worker": args.threads_per_worker, "n_sparse": args.n_sparse}
    w0, c0 = time.perf_counter(), time.process_time()
    dask_model = build_model(args.n_sparse, args.seed, **kw).fit(frames, client=client)
    res["dask"] = {"wall_s": time.perf_counter() - w0, "client_cpu_s": time.process_time() - c0}
    rss_after = client.run(worker_rss)
    M = int(len(dask_model.sparse_species_))
    groups = len(dask_model.state_.n_train)
    block = max(2 * M, 2000)
    res["M"] = M
    res["factor_bytes_per_worker"] = groups * ((M + 1) ** 2 + block * (M + 1)) * 8
    res["workers_rss"] = {w: {"before_fit": rss_before[w], "after_fit": rss_after[w]}
                          for w in rss_after}
    print(f"dask   fit: wall {res['dask']['wall_s']:8.1f} s  "
          f"({len(frames) / res['dask']['wall_s']:.1f} structures/s), M = {M}", flush=True)
    for w, r in res["workers_rss"].items():
        print(f"  worker {w}: peak RSS {r['after_fit']['peak_mib']:.0f} MiB (peak before the "
              f"fit {r['before_fit']['peak_mib']:.0f} MiB: imports and a 4-point warm-up fit)")
    print(f"  O(M^2) factors + row buffers: {res['factor_bytes_per_worker'] / 2 ** 20:.0f} MiB "
          f"per worker ({groups} groups)")
    if not args.no_serial:
        w0, c0 = time.perf_counter(), time.process_time()
        serial = build_model(args.n_sparse, args.seed, n_jobs=1, **kw).fit(frames)
        res["serial"] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
        print(f"serial fit: wall {res['serial']['wall_s']:8.1f} s  "
              f"({len(frames) / res['serial']['wall_s']:.1f} structures/s); Dask speed-up "
              f"{res['serial']['wall_s'] / res['dask']['wall_s']:.2f}x", flush=True)
        a, b = serial.alpha_, dask_model.alpha_
        ps, pd = serial.predict(test), dask_model.predict(test)
        res["agreement"] = {
            "sparse_sets_equal": bool(np.array_equal(serial.sparse_q_, dask_model.sparse_q_)),
            "alpha_max_rel": float(np.abs(a - b).max() / np.abs(a).max()),
            "energy_max_abs_eV": float(np.abs(ps.energy - pd.energy).max()),
            "force_max_abs_eV_A": float(max(np.abs(x - y).max()
                                            for x, y in zip(ps.forces, pd.forces)))}
        print("  same model: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in res["agreement"].items()))
    print(f"load {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    client.close()
    if cluster is not None:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
