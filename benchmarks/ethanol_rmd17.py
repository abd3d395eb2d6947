#!/usr/bin/env python
"""Benchmark gapkit against QUIP's ``gap_fit`` on revised MD17 ethanol.

Trains both codes with matched SOAP/GP settings on the first ``--n-train`` frames of
``train.xyz`` (E0 from ``isolated_atoms.xyz``) and tests on the first ``--n-test``
frames of ``test_MD.xyz``. Reported per tool:

* energy MAE / RMSE, meV per structure; force MAE / RMSE, meV/Å per component;
* fit wall time and the peak resident set size (RSS) of the fit;
* prediction cost (energies + forces of the test set), µs per atom.

Each tool runs in its own subprocess (this script re-invoked with a hidden
``--worker gapkit|quip`` flag), so the peak RSS figures are measured separately:

* gapkit: ``ru_maxrss`` of the worker process itself, read right after ``fit``
  (it therefore includes the Python interpreter, numpy/ase/dscribe and the data;
  the worker's RSS before ``fit`` is reported as the baseline);
* QUIP: ``ru_maxrss`` of ``RUSAGE_CHILDREN`` in the worker, whose only child
  up to that point is the ``gap_fit`` executable.

Both workers run with ``--threads`` BLAS/OpenMP threads (default 1; ``0`` keeps the
environment). The 1-minute load average before and after each worker is printed:
timings taken while other jobs run are not comparable.

Everything is written into a temporary directory; nothing goes into the
repository unless ``--json`` points there. Seeds are fixed (``--seed``).

Example::

    python benchmarks/ethanol_rmd17.py --n-train 100 --n-test 100 \\
        --n-sparse C:200,H:400,O:100 --quip-n-sparse 100

Published reference (GAP on rMD17 ethanol, 1000 training configurations):
energy MAE 3.5 meV, force MAE 18.1 meV/Å.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import harness as h
from harness import error_metrics, maxrss_mib, reference_labels

SCRIPT = Path(__file__).resolve()
DATA_FILES = h.ETHANOL_FILES
PUBLISHED = {"name": "GAP (published, rMD17, N=1000)", "energy_mae": 3.5, "force_mae": 18.1}


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def parse_quip_n_sparse(text: str):
    text = str(text).strip()
    if text == "same":
        return "same"
    if ":" in text:
        return h.parse_species_counts(text)
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--quip-n-sparse must be an integer, SYMBOL:COUNT,... or 'same', got '{text}'") from None
    if n <= 0:
        raise argparse.ArgumentTypeError("--quip-n-sparse must be positive")
    return n


def quip_sparse_counts(args, train) -> dict[str, int]:
    """Per-species n_sparse for gap_fit, capped at the environments available."""
    return h.cap_sparse_counts(train, args.n_sparse if args.quip_n_sparse == "same"
                               else args.quip_n_sparse)


def build_parser() -> argparse.ArgumentParser:
    p = h.new_parser(
        "gapkit vs QUIP gap_fit on rMD17 ethanol (accuracy, fit time, peak RSS, "
        "prediction cost).")
    p.add_argument("--n-train", type=int, default=1000, help="first N frames of train.xyz")
    p.add_argument("--n-test", type=int, default=1000, help="first N frames of test_MD.xyz")
    h.add_data_dir_argument(p)
    p.add_argument("--n-sparse", type=h.parse_species_counts, default="C:1000,H:2000,O:1000",
                   help="gapkit sparse points per species, SYMBOL:COUNT,...")
    h.add_sparse_method_argument(p)
    h.add_soap_arguments(p, n_max=8, l_max=6)
    p.add_argument("--cutoff-transition-width", type=float, default=1.0,
                   help="QUIP only: width of the cosine cutoff transition, Å")
    p.add_argument("--delta", type=float, default=1.0, help="kernel scale, eV")
    h.add_noise_arguments(p, 0.001, 0.02)
    p.add_argument("--jitter", type=float, default=1e-8,
                   help="K_MM jitter (gapkit jitter, QUIP sparse_jitter)")
    p.add_argument("--quip-n-sparse", type=parse_quip_n_sparse, default="300",
                   help="QUIP sparse points per species (one SOAP block per centre species): "
                        "a count for every species, SYMBOL:COUNT,..., or 'same' for --n-sparse")
    p.add_argument("--seed", type=int, default=0, help="random seed for both codes")
    h.add_run_arguments(p, workers=("gapkit", "quip"))
    p.add_argument("--no-warmup", action="store_true",
                   help="do not run one untimed prediction before timing the test set")
    return p


# ----------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------
def load_data(data_dir: Path, n_train: int, n_test: int):
    """Training and test frames with reference labels copied out of the calculators."""
    from ase.io import read

    train = read(str(data_dir / "train.xyz"), index=f":{n_train}")
    test = read(str(data_dir / "test_MD.xyz"), index=f":{n_test}")
    if len(train) < n_train:
        print(f"warning: train.xyz has only {len(train)} frames (< {n_train})", file=sys.stderr)
    if len(test) < n_test:
        print(f"warning: test_MD.xyz has only {len(test)} frames (< {n_test})", file=sys.stderr)
    return train, test


# ----------------------------------------------------------------------------------
# gapkit worker
# ----------------------------------------------------------------------------------
def worker_gapkit(args, data_dir: Path) -> dict:
    import numpy as np

    from ase.data import chemical_symbols

    import gapkit
    from gapkit.descriptors import SOAP
    from gapkit.model import GAP

    train, test = load_data(data_dir, args.n_train, args.n_test)
    E_ref, F_ref = reference_labels(test)
    n_test_atoms = int(sum(len(a) for a in test))
    rss_before = h.current_rss_mib()
    peak_before = maxrss_mib()

    model = GAP(SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=args.sigma),
                zeta=args.zeta, delta=args.delta, n_sparse=dict(args.n_sparse),
                sparse_method=args.sparse_method, energy_noise=args.energy_noise,
                force_noise=args.force_noise, jitter=args.jitter,
                e0=str(data_dir / "isolated_atoms.xyz"), random_state=args.seed, verbose=False)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    fit_peak = maxrss_mib()

    warm_s = None
    if not args.no_warmup:  # one untimed structure: lazy initialisation, caches
        t0 = time.perf_counter()
        model.predict(test[:1])
        warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(test)
    pred_s = time.perf_counter() - t0
    metrics = error_metrics(E_ref, F_ref, pred.energy, pred.forces)
    n_sparse_used = {chemical_symbols[z]: int(np.sum(model.sparse_species_ == z))
                     for z in model.species_}
    return {
        "tool": "gapkit", "version": getattr(gapkit, "__version__", "?"),
        "fit_time_s": fit_s, "fit_peak_rss_mib": fit_peak,
        "rss_before_fit_mib": rss_before, "peak_rss_before_fit_mib": peak_before,
        "predict_time_s": pred_s, "predict_us_per_atom": pred_s / n_test_atoms * 1e6,
        "predict_warmup_ms": None if warm_s is None else warm_s * 1e3,
        "predict_peak_rss_mib": maxrss_mib(),
        "n_test_atoms": n_test_atoms, "n_train_frames": len(train),
        "n_sparse": n_sparse_used, "n_features": int(model.descriptor_.n_features),
        "e0": {str(k): float(v) for k, v in model.e0_.values.items()},
        "delta": float(model.delta_), "log_marginal_likelihood": float(model.log_marginal_likelihood_),
        "threadpools": h.threadpool_info(), **metrics,
    }


# ----------------------------------------------------------------------------------
# QUIP worker
# ----------------------------------------------------------------------------------
def worker_quip(args, data_dir: Path, tmp: Path) -> dict:
    import numpy as np

    train, test = load_data(data_dir, args.n_train, args.n_test)
    E_ref, F_ref = reference_labels(test)
    n_test_atoms = int(sum(len(a) for a in test))
    e0 = h.isolated_energies(data_dir / "isolated_atoms.xyz")
    train_xyz, gp_xml = tmp / "quip_train.xyz", tmp / "gp.xml"
    h.write_quip_xyz(train, train_xyz, periodic=False, cutoff=args.r_cut, config_type="train")
    n_sparse = quip_sparse_counts(args, train)
    soap = dict(r_cut=args.r_cut, cutoff_width=args.cutoff_transition_width, n_max=args.n_max,
                l_max=args.l_max, sigma=args.sigma, zeta=args.zeta, delta=args.delta)
    cmd = h.gap_fit_command(train_xyz, gp_xml, soap, n_sparse, e0,
                            (args.energy_noise, args.force_noise), args.jitter, args.seed)
    fit = h.run_gap_fit(cmd, tmp, gp_xml)

    from quippy.potential import Potential

    pot = Potential(param_filename=str(gp_xml))
    frames = [a.copy() for a in test]  # copies drop the reference calculators
    warm_s = None
    if not args.no_warmup:  # one untimed structure: lazy initialisation, caches
        w = test[0].copy()
        t0 = time.perf_counter()
        w.calc = pot
        w.get_potential_energy()
        w.get_forces()
        warm_s = time.perf_counter() - t0
    E_pred = np.empty(len(frames))
    F_pred = []
    t0 = time.perf_counter()
    for k, a in enumerate(frames):
        a.calc = pot
        E_pred[k] = a.get_potential_energy()
        F_pred.append(np.array(a.get_forces()))
    pred_s = time.perf_counter() - t0
    metrics = error_metrics(E_ref, F_ref, E_pred, F_pred)
    fit.pop("fit_load")
    return {
        "tool": "quip", "version": h.quip_version(), **fit,
        "predict_time_s": pred_s, "predict_us_per_atom": pred_s / n_test_atoms * 1e6,
        "predict_warmup_ms": None if warm_s is None else warm_s * 1e3,
        "predict_peak_rss_mib": maxrss_mib(),
        "n_test_atoms": n_test_atoms, "n_train_frames": len(train), "n_sparse": n_sparse,
        **metrics,
    }


WORKERS = {
    "gapkit": lambda p: worker_gapkit(argparse.Namespace(**p["args"]), Path(p["data_dir"])),
    "quip": lambda p: worker_quip(argparse.Namespace(**p["args"]), Path(p["data_dir"]),
                                  Path(p["tmp"])),
}


# ----------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------
def print_table(g: dict | None, q: dict | None) -> None:
    rows = [  # (label, key, format)
        ("energy MAE  [meV/structure]", "energy_mae", ".2f"),
        ("energy RMSE [meV/structure]", "energy_rmse", ".2f"),
        ("force MAE   [meV/Å]", "force_mae", ".2f"),
        ("force RMSE  [meV/Å]", "force_rmse", ".2f"),
        ("fit wall time [s]", "fit_time_s", ".1f"),
        ("fit peak RSS [MiB]", "fit_peak_rss_mib", ".0f"),
        ("predict E+F [µs/atom]", "predict_us_per_atom", ".1f"),
        ("predict warm-up, 1 frame [ms]", "predict_warmup_ms", ".1f"),
        ("predict process peak RSS [MiB]", "predict_peak_rss_mib", ".0f"),
        ("worker wall time [s]", "worker_wall_s", ".1f"),
    ]
    h.print_comparison(rows, g, q, PUBLISHED, pub_fmt=".1f", width=11)
    g_ok = g if g and g.get("ok") else None
    q_ok = q if q and q.get("ok") else None
    if g_ok:
        print(f"\ngapkit: sparse points {g_ok['n_sparse']}, {g_ok['n_features']} features; "
              f"RSS before fit {h.num(g_ok['rss_before_fit_mib'], '.0f')} MiB (interpreter + "
              f"libraries + data), so the fit itself added "
              f"~{g_ok['fit_peak_rss_mib'] - g_ok['peak_rss_before_fit_mib']:.0f} MiB")
    if q_ok:
        print(f"QUIP:   sparse points {q_ok['n_sparse']}; peak RSS is the gap_fit binary alone")
    if g_ok and q_ok:
        print(f"test set: {g_ok['n_test_frames']} frames, {g_ok['n_test_atoms']} atoms, "
              f"{g_ok['n_force_components']} force components")
    for r in (g, q):
        if r and not r.get("ok"):
            print(f"{r['tool']} FAILED: {r.get('error')}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return h.worker_main(args, WORKERS, tool=args.worker)

    command = h.command_line(SCRIPT, argv)
    data_dir = h.find_data_dir(args.data_dir, "ethanol_rmd17", DATA_FILES,
                               "the rMD17 ethanol folder")
    if data_dir is None:
        return 0
    if args.n_train < 1 or args.n_test < 1:
        parser.error("--n-train and --n-test must be >= 1")

    do_quip, quip_note = h.quip_status(args.no_quip)
    env, threads = h.worker_env(args.threads)
    print(f"data: {data_dir} ({h.resolve_data_dir(args.data_dir, 'ethanol_rmd17', DATA_FILES)[1]})")
    print(h.host_line(threads))
    print(f"settings: n_train={args.n_train} n_test={args.n_test} r_cut={args.r_cut} "
          f"n_max={args.n_max} l_max={args.l_max} sigma={args.sigma} zeta={args.zeta:g} "
          f"delta={args.delta} energy_noise={args.energy_noise} force_noise={args.force_noise} "
          f"jitter={args.jitter} seed={args.seed}")
    print(f"gapkit: n_sparse={args.n_sparse} sparse_method={args.sparse_method}")
    print(f"QUIP:   {quip_note}; n_sparse={args.quip_n_sparse} per species (cur_points), "
          f"cutoff_transition_width={args.cutoff_transition_width}")
    print(flush=True)

    spec = {"args": h.settings(args), "data_dir": str(data_dir)}
    results = {"command": command, "data_dir": str(data_dir), "settings": spec["args"],
               **h.host_fields(threads), "published": PUBLISHED}
    with h.temp_dir("gapkit_bench_", args.keep_tmp) as tmp:
        g = h.launch_worker(SCRIPT, "gapkit", spec, tmp / "gapkit", env)
        q = h.launch_worker(SCRIPT, "quip", spec, tmp / "quip", env) if do_quip else None
        if q and q.get("ok"):
            print("\ngap_fit command: " + q["gap_fit_command"])
        print()
        print_table(g, q)
        results.update(gapkit=g, quip=q)
        h.save_results(args.json, results)
    ok = g.get("ok") and (q is None or q.get("ok"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
