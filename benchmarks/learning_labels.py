#!/usr/bin/env python
"""Learning curves of GAPs trained on energies only, forces only and both, with the
power-law extrapolation to a target force error (issue 16).

For each data set, :func:`gapkit.diagnostics.label_curves` refits a GAP on random
training subsets of every size (the same subsets and seeds for the three label sets)
and records the test errors and the number of labels used (1 per energy, 3N per force
set). Each curve is then fitted by ``err(N) = a N**-b + c`` with a bootstrap interval
(:mod:`gapkit.diagnostics.extrapolation`) and read off at the target force RMSE.

* ``ethanol``: rMD17 ethanol (``ethanol_rmd17/train.xyz`` pool of 1000 DFT frames, a
  random ``--max-test`` of ``test_MD.xyz``); SOAP r_cut 4.5 Å, n_max 6, l_max 4,
  sigma 0.5 Å, 200 CUR sparse points per species; noises 0.001 eV/√atom and
  0.02 eV/Å (gapkit's defaults); target 0.012 eV/Å.
* ``si``: mlearn Si (214 training cells, the 25 test cells), energies and forces only
  (no virials, so that the three label sets are comparable); SOAP r_cut 5.4 Å
  (cosine cutoff, 1 Å transition), n_max 6, l_max 4, sigma 0.5 Å, 300 CUR sparse
  points; noises 0.01 eV/√atom, 0.05 eV/Å (mlearn's default_sigma); target 0.065 eV/Å.

The descriptors are smaller than those of ``ethanol_rmd17.py`` / ``si_mlearn.py`` to
keep each data set well under 15 CPU minutes on one core. Errors are RMSEs (forces
eV/Å per component, energies eV/atom); a forces-only model's energy error is after
refitted per-species offsets (see :mod:`gapkit.diagnostics.label_sets`).

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/learning_labels.py \\
        --dataset ethanol --out /tmp/ll_ethanol
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/learning_labels.py \\
        --dataset si --out /tmp/ll_si
    python benchmarks/learning_labels.py --dataset ethanol --from /tmp/ll_ethanol  # report only

Writes ``OUT/curve_<labels>.json`` (one per label set), ``OUT/results.json`` (the
fits, targets and CPU time) and ``OUT/learning_labels.png``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import harness as h

DEFAULTS = {
    "ethanol": {"sizes": "25,50,100,200,400", "r_cut": 4.5, "n_max": 6, "l_max": 4,
                "n_sparse": 200, "energy_noise": 0.001, "force_noise": 0.02, "target": 0.012,
                "max_test": 200, "repeats": 2},
    "si": {"sizes": "20,40,80,140,214", "r_cut": 5.4, "n_max": 6, "l_max": 4, "n_sparse": 300,
           "energy_noise": 0.01, "force_noise": 0.05, "target": 0.065, "max_test": 25,
           "repeats": 3},
}
LABELS = ("energy", "forces", "energy+forces")


def parse_args(argv=None):
    p = h.new_parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DEFAULTS), required=True)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="shared data folder (default $GAPKIT_SHARED_DATA or <repo>/../shared/data)")
    p.add_argument("--sizes", type=h.int_list, default=None, help="training sizes (default per data set)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--n-max", type=int, default=None)
    p.add_argument("--l-max", type=int, default=None)
    p.add_argument("--r-cut", type=float, default=None)
    p.add_argument("--n-sparse", type=int, default=None, help="sparse points per species")
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--target-forces", type=float, default=None, help="eV/Å (force RMSE)")
    p.add_argument("--target-energy", type=float, default=None, help="eV/atom (energy RMSE)")
    p.add_argument("--labels", default=",".join(LABELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--from", dest="from_dir", type=Path, default=None,
                   help="re-read the curves of an earlier run and report only")
    args = p.parse_args(argv)
    d = DEFAULTS[args.dataset]
    for k in ("repeats", "n_max", "l_max", "r_cut", "n_sparse", "max_test"):
        if getattr(args, k) is None:
            setattr(args, k, d[k])
    if args.sizes is None:
        args.sizes = h.int_list(d["sizes"])
    if args.target_forces is None:
        args.target_forces = d["target"]
    if args.out is None:
        args.out = args.from_dir or Path(f"learning_labels_{args.dataset}")
    return args


def load(args):
    """(model, train pool, test frames, description) of the data set."""
    import numpy as np

    from gapkit import GAP, SOAP, read_frames
    if args.dataset == "ethanol":
        root, _ = h.resolve_data_dir(args.data_dir, "ethanol_rmd17", ("train.xyz", "test_MD.xyz"))
        pool = read_frames(root / "train.xyz")
        test_all = read_frames(root / "test_MD.xyz")
        rs = np.random.RandomState(args.seed)
        keep = np.sort(rs.choice(len(test_all), min(args.max_test, len(test_all)), replace=False))
        test = [test_all[k] for k in keep]
        soap = SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=0.5)
    else:
        root, _ = h.resolve_data_dir(args.data_dir, "si_mlearn", ("train.xyz", "test.xyz"))
        pool, test = h.load_si(root, virials=False)
        test = test[:args.max_test]
        soap = SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=0.5,
                    cutoff="cosine", cutoff_width=1.0)
    d = DEFAULTS[args.dataset]
    model = GAP(soap, n_sparse=args.n_sparse, energy_noise=d["energy_noise"],
                force_noise=d["force_noise"], random_state=args.seed)
    return model, pool, test, str(root)


def report(curves: dict, args, cpu: float | None) -> dict:
    """Print the table and the extrapolations; returns the results dict."""
    targets = {"forces_rmse": args.target_forces}
    if args.target_energy:
        targets["energy_rmse_per_atom"] = args.target_energy
    out = {"dataset": args.dataset, "settings": h.settings(args), "cpu_s": cpu, "curves": {}}
    print(f"\n{args.dataset}: {curves[next(iter(curves))].meta['n_pool']} pool structures, "
          f"{curves[next(iter(curves))].meta['n_test']} test; {args.repeats} repeats")
    print(f"{'labels':>14} {'N':>5} {'n_labels':>9} {'F RMSE meV/Å':>13} {'E RMSE meV/at':>14}")
    for name, c in curves.items():
        for i, n in enumerate(c.sizes):
            print(f"{name:>14} {n:>5d} {c.mean('n_labels')[i]:>9.0f} "
                  f"{1000 * c.mean('test_forces_rmse')[i]:>8.1f} ±{1000 * c.std('test_forces_rmse')[i]:<4.1f}"
                  f"{1000 * c.mean('test_energy_rmse_per_atom')[i]:>9.2f} "
                  f"±{1000 * c.std('test_energy_rmse_per_atom')[i]:.2f}")
    for name, c in curves.items():
        d = c.diagnose(targets=targets)
        print(f"\n[{name}] {d.verdict}")
        for e in d.extrapolations.values():
            print("  " + e.message.replace("\n", "\n  "))
        out["curves"][name] = {"sizes": c.sizes.tolist(),
                               "n_labels": c.mean("n_labels").tolist(),
                               "test_forces_rmse": c.mean("test_forces_rmse").tolist(),
                               "test_forces_rmse_std": c.std("test_forces_rmse").tolist(),
                               "test_energy_rmse_per_atom": c.mean("test_energy_rmse_per_atom").tolist(),
                               "fit_time": c.mean("fit_time").tolist(),
                               "diagnosis": d.to_dict()}
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    h.command_line(Path(__file__), sys.argv[1:] if argv is None else argv)
    from gapkit import plotting
    from gapkit.diagnostics import LearningCurve, label_curves
    from gapkit.diagnostics.label_sets import parse_labels

    names = parse_labels(args.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = None
    if args.from_dir is not None:
        curves = {n: LearningCurve.from_json(args.from_dir / f"curve_{n}.json") for n in names}
    else:
        from threadpoolctl import threadpool_limits
        model, pool, test, root = load(args)
        print(f"data: {root}")
        t0 = time.process_time()
        with threadpool_limits(limits=1):
            curves = label_curves(model, pool, test, sizes=args.sizes, repeats=args.repeats,
                                  random_state=args.seed, return_std=False, labels=names,
                                  progress=True)
        cpu = time.process_time() - t0
        for n, c in curves.items():
            c.to_json(args.out / f"curve_{n}.json")
        print(f"CPU time {cpu:.0f} s, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    res = report(curves, args, cpu)
    targets = {"forces_rmse": args.target_forces}
    if args.target_energy:
        targets["energy_rmse_per_atom"] = args.target_energy
    fig = plotting.label_curves_figure(curves, targets=targets)
    fig.savefig(args.out / "learning_labels.png", dpi=150)
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    print(f"\nwrote {args.out}/results.json, learning_labels.png, curve_*.json")


if __name__ == "__main__":
    main()
