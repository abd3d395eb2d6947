#!/usr/bin/env python
"""The default model (SOAP + 2-body) against earlier defaults: accuracy and cost (issue #14).

Variants (``--variants``, default all), each fitted in a fresh process (so that its
peak RSS is its own) with every other setting at gapkit's defaults:

* ``default``: ``GAP()``, i.e. ``[Term(SOAP(radial_scaling=4, radial_scaling_r0=2)),
  Term(TwoBody(r_cut=5), zeta=1, n_sparse=50)]`` (:func:`gapkit.gp.terms.default_terms`);
* ``noscale``: ``GAP(default_terms(SOAP()))``, the session-6 default (no radial scaling);
* ``soap``: ``GAP(SOAP())``, the default before that.

Data (``--set``): ``ethanol`` (rMD17: the first ``--n-frames`` frames of
``train.xyz``, E0 from ``isolated_atoms.xyz`` as in ``fit_threads.py --default-fit``,
test MAE on ``--n-test`` evenly spaced ``test_MD`` frames) or ``si`` (mlearn Si,
its own split, virials from the kbar labels, E0 by least squares; all 25 test cells).

Printed per variant: fit wall and CPU time (``time.process_time`` of the worker, all
threads), peak RSS of the fit, M, the model file size (``model.save``), test MAEs.
Then the prediction cost: both saved models loaded in one process with one BLAS
thread (threadpoolctl), energies + forces of ``--n-pred`` test frames, alternating
A B A B for ``--rounds`` (>= 5) rounds, ``time.process_time`` per call; median, range
and the median ratio of ``default`` to each other variant fitted (goal: within 1.1x).

Examples::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/default_cost.py --set ethanol \\
        --n-frames 1000 --json /tmp/default_cost_ethanol.json
    python benchmarks/default_cost.py --set si --variants default,noscale
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/default_cost.py --set si
    python benchmarks/default_cost.py --set ethanol --n-frames 100 --n-test 50 --rounds 5  # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness as h

SCRIPT = Path(__file__).resolve()
VARIANTS = ("default", "noscale", "soap")


def _data(args):
    """(train, test for the MAE, e0) of ``--set``."""
    from ase.io import read

    if args.set == "si":
        data_dir = h.find_data_dir(args.data_dir, "si_mlearn", h.SI_FILES, "mlearn Si")
        if data_dir is None:
            sys.exit(1)
        train, test = h.load_si(data_dir)
        return train, test, "lstsq"
    data_dir = h.find_data_dir(args.data_dir, "ethanol_rmd17", h.ETHANOL_FILES, "rMD17 ethanol")
    if data_dir is None:
        sys.exit(1)
    train = read(str(data_dir / "train.xyz"), f":{args.n_frames}")
    test_all = read(str(data_dir / "test_MD.xyz"), ":")
    test = [test_all[k] for k in h.evenly_spaced(len(test_all), args.n_test)]
    return train, test, h.isolated_energies(data_dir / "isolated_atoms.xyz")


def worker(args) -> dict:
    """Fit one variant, save it to ``--out``, score it; the result as a dict."""
    from gapkit import GAP, SOAP
    from gapkit.gp.terms import default_terms

    train, test, e0 = _data(args)
    kw = dict(e0=e0, random_state=args.seed)
    descriptor = {"default": None, "noscale": default_terms(SOAP()), "soap": SOAP()}
    model = GAP(descriptor[args.variant], **kw)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(train)
    out = {"variant": args.variant, "fit_wall_s": time.perf_counter() - t0,
           "fit_cpu_s": time.process_time() - c0, "peak_rss_mb": h.maxrss_mib(),
           "M": int(len(model.alpha_)),
           "terms": [type(t.descriptor).__name__ for t in model.terms_]}
    path = model.save(args.out)
    out["file_mb"] = path.stat().st_size / 2 ** 20
    out.update(h.model_maes(model, test))
    return out


def predict_times(paths: dict, frames, rounds: int) -> dict:
    """process_time of energies + forces of ``frames``, A B A B, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from gapkit import load

    models = {k: load(p) for k, p in paths.items()}
    times = {k: [] for k in models}
    with threadpool_limits(1):
        for m in models.values():
            m.predict(frames[:2])  # warm the engines
        for r in range(max(5, rounds)):
            order = list(models) if r % 2 == 0 else list(models)[::-1]
            for k in order:
                c0 = time.process_time()
                models[k].predict(frames)
                times[k].append(time.process_time() - c0)
    out = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)}
           for k, v in times.items()}
    for other in [k for k in times if k != "default"]:
        ratios = [a / b for a, b in zip(times["default"], times[other])]
        out[f"ratio_default_over_{other}"] = {"median": statistics.median(ratios),
                                              "min": min(ratios), "max": max(ratios)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=("ethanol", "si"), default="ethanol")
    p.add_argument("--n-frames", type=int, default=1000, help="ethanol training frames")
    p.add_argument("--n-test", type=int, default=1000, help="ethanol test_MD frames")
    p.add_argument("--n-pred", type=int, default=100, help="test frames of the timing")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep", type=Path, default=None, help="folder to keep the model files in")
    p.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(worker(args)))
        return 0
    folder = args.keep or Path(tempfile.mkdtemp(prefix="default_cost_"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"# default vs earlier defaults: {args.set}"
          + (f", {args.n_frames} frames" if args.set == "ethanol" else "")
          + f"; {h.host_line(h.set_thread_env(None))}", flush=True)
    rows, paths = [], {}
    for variant in args.variants.split(","):
        out = folder / f"{args.set}_{variant}.npz"
        cmd = [sys.executable, str(SCRIPT), "--variant", variant, "--out", str(out),
               "--set", args.set, "--n-frames", str(args.n_frames), "--n-test",
               str(args.n_test), "--seed", str(args.seed)]
        if args.data_dir:
            cmd += ["--data-dir", str(args.data_dir)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:])
            return 1
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["load"] = h.loadavg()
        rows.append(row)
        paths[variant] = out
        print(f"{variant:>8}: {'+'.join(row['terms'])}  M {row['M']}  fit wall "
              f"{row['fit_wall_s']:.0f} s  CPU {row['fit_cpu_s']:.0f} s  peak RSS "
              f"{row['peak_rss_mb']:.0f} MiB  file {row['file_mb']:.1f} MiB  test E "
              f"{row['energy_mae_meV']:.2f} meV ({row['energy_mae_meV_atom']:.3f} meV/atom)  "
              f"F {row['force_mae_meV_A']:.2f} meV/Å  load {row['load']:.1f}", flush=True)
    results = {"set": args.set, "fits": rows}
    if "default" in paths and len(paths) > 1:
        _, test, _ = _data(args)
        frames = [test[k] for k in h.evenly_spaced(len(test), args.n_pred)]
        pt = predict_times(paths, frames, args.rounds)
        results["predict"] = pt
        for k in paths:
            print(f"predict {k:>8}: {len(frames)} frames E+F, CPU median "
                  f"{pt[k]['median_s']:.3f} s (range {pt[k]['min_s']:.3f}-{pt[k]['max_s']:.3f})")
        for k in [k for k in paths if k != "default"]:
            r = pt[f"ratio_default_over_{k}"]
            print(f"predict ratio default/{k}: median {r['median']:.3f} (range "
                  f"{r['min']:.3f}-{r['max']:.3f}; goal <= 1.1)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
