#!/usr/bin/env python
"""Benchmark gapkit (and QUIP's ``gap_fit``) on the mlearn silicon dataset.

Trains on mlearn's own split, ``train.xyz`` (214 periodic cells, energies, forces and
virials), tests on ``test.xyz`` (25 cells). Reported per tool:

* energy MAE / RMSE in meV/atom, force MAE / RMSE in eV/Å per component, stress MAE /
  RMSE in GPa per Voigt component, overall and per ``config_type``
  (AIMD-NVT, Vacancy, Elastic, Surface);
* fit wall time and the peak resident set size (RSS) of the fit;
* prediction cost of energy + forces + stress on the test set, µs/atom.

Defaults follow mlearn's GAP (Zuo et al., J. Phys. Chem. A 124, 731 (2020)): SOAP
l_max=8, n_max=8, atom_sigma=0.5 Å, zeta=4, cutoff 5.4 Å, 1000 CUR sparse points,
default_sigma {0.01 0.05 0.01} (energy eV per sqrt(atom), forces eV/Å, virial eV per
sqrt(atom)). gapkit uses its smooth cosine cutoff, ``cutoff="cosine"`` with a
transition width of 1.0 Å (the density is tapered from 4.4 to 5.4 Å), which is
QUIP's ``cutoff_transition_width=1.0`` (QUIP's default is 0.5 Å; mlearn did not set
it). E0 is gapkit's least-squares per-atom reference energy; ``delta`` is gapkit's
default (``"auto"``, i.e. max(RMS energy per atom after E0, 1 eV)) unless given.

The stress labels
-----------------
mlearn stores six numbers per cell, ``mlearn_virial_stress`` (order xx yy zz xy yz
xz), without units. Before training this script fits the energy differences between
strained pairs of the ``Elastic`` cells (same fractional coordinates) to the work
``trapezoid(V sigma : d eps)`` and prints the fitted conversion factor: the values
are in kbar with VASP's sign (positive = compressive), i.e.

    ASE stress (eV/Å^3)   = -value / 1602.1766
    GAP virial (eV, 3x3)  = -stress_ASE * V = +value * V / 1602.1766

gapkit gets the virial as a 3x3 matrix in ``atoms.info["virial"]``; QUIP gets the
same matrix as a 9-vector ``virial=`` in the training extxyz
(``virial_parameter_name=virial``).

Virials and the published numbers: mlearn's own ``GAPotential.train`` has
``use_stress=False`` by default (and writes the raw kbar values as ``dft_virial``), so
the published GAP was most likely fitted to energies and forces only. With the
virials at ``virial_noise=0.01`` eV/sqrt(atom) (about 0.1 kbar for a 64-atom cell)
the fit is strained: the type-II maximum likelihood (``--optimize``) puts the virial
noise near 0.5 eV/sqrt(atom), and ``--no-virials`` gives about half the force error
of the default run. Compare both.

QUIP comparison
---------------
With quippy installed (and without ``--no-quip``) ``gap_fit`` is run with matched
settings: the same SOAP cutoff / transition width / n_max / l_max / atom_sigma /
zeta, ``delta`` equal to gapkit's fitted ``delta_``, ``n_sparse`` CUR points, the
same ``default_sigma`` (gapkit's learned noises with ``--optimize``), and ``e0``
equal to gapkit's least-squares E0. Predictions use ``quippy.potential.Potential``
(its stress is ``-virial / V`` in ASE's Voigt order, eV/Å^3). The two SOAPs are
*not* identical (gapkit's is DScribe's GTO basis, QUIP's its own radial basis), so
the comparison is of the two codes at matched hyperparameters.

Each tool is fitted in its own subprocess (this script re-invoked with a hidden
``--worker`` flag), so that peak RSS figures are separate: for gapkit the worker's
own ``ru_maxrss`` right after ``fit`` (interpreter, libraries and data included; the
value before the fit is printed too), for QUIP ``RUSAGE_CHILDREN`` (the ``gap_fit``
binary alone). Both use ``--threads`` BLAS/OpenMP threads (default 1).

Examples::

    python benchmarks/si_mlearn.py                       # mlearn defaults + QUIP
    python benchmarks/si_mlearn.py --n-train 40 --n-sparse 100 --n-max 4 --l-max 4
    python benchmarks/si_mlearn.py --optimize --no-quip --json /tmp/si.json

Published GAP (mlearn test set): energy MAE 2.91 meV/atom, force MAE 0.07 eV/Å.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import harness as h
from harness import KBAR_PER_EV_A3, STRESS_KEY, load_si, maxrss_mib, mlearn_matrix, num

SCRIPT = Path(__file__).resolve()
DATA_FILES = h.SI_FILES
#: 1 eV/Å^3 in GPa.
GPA_PER_EV_A3 = 160.21766208
PUBLISHED = {"name": "GAP (mlearn, Zuo et al. 2020)", "energy_mae": 2.91, "force_mae": 0.07}
CONFIG_TYPES = ("AIMD-NVT", "Vacancy", "Elastic", "Surface")


# ----------------------------------------------------------------------------------
# data and units
# ----------------------------------------------------------------------------------
def ase_stress(atoms, factor: float = -1.0 / KBAR_PER_EV_A3):
    """Reference stress of a frame in ASE's Voigt order (xx yy zz yz xz xy), eV/Å^3."""
    import numpy as np

    m = mlearn_matrix(atoms.info[STRESS_KEY]) * factor
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


def verify_stress_units(frames, max_strain: float = 0.025) -> dict:
    """Fit the mlearn stress-to-ASE-stress factor from the energy-strain relation.

    For every pair (i, j) of ``Elastic`` frames with the same atoms and the same
    fractional coordinates whose cells differ by a small homogeneous deformation
    ``F`` (``cell_j = cell_i F^T``), the energy difference along the straight path
    ``F(t) = I + t (F - I)`` is

        E_j - E_i = int V sigma : sym(dF/dt F(t)^-1) dt
                  ~ 1/2 [V_i sigma_i : sym(G) + V_j sigma_j : sym(G F^-1)],  G = F - I

    (trapezoid rule; ``sigma`` the ASE stress, ``(1/V) dE/d eps``). With
    ``sigma = c * value`` the factor ``c`` is a one-parameter least-squares fit.
    Expected for kbar with VASP's sign: ``c = -1/1602.1766``.
    """
    import numpy as np

    el = [a for a in frames if a.info.get("config_type") == "Elastic" and STRESS_KEY in a.info]
    rows, dE = [], []
    for i in range(len(el)):
        for j in range(i + 1, len(el)):
            a, b = el[i], el[j]
            if len(a) != len(b) or not np.array_equal(a.numbers, b.numbers):
                continue
            ds = a.get_scaled_positions() - b.get_scaled_positions()
            ds -= np.round(ds)
            if np.abs(ds).max() > 1e-6:
                continue
            Ft = np.linalg.solve(a.cell.array, b.cell.array)  # cell_i^-1 cell_j = F^T
            F = Ft.T
            G = F - np.eye(3)
            if np.abs(G).max() > max_strain or np.abs(G).max() < 1e-8:
                continue
            Gs_i = 0.5 * (G + G.T)
            H = G @ np.linalg.inv(F)
            Gs_j = 0.5 * (H + H.T)
            w = 0.5 * (a.get_volume() * np.sum(mlearn_matrix(a.info[STRESS_KEY]) * Gs_i)
                       + b.get_volume() * np.sum(mlearn_matrix(b.info[STRESS_KEY]) * Gs_j))
            rows.append(w)
            dE.append(b.get_potential_energy() - a.get_potential_energy())
    if not rows:
        return {"n_pairs": 0}
    x, y = np.array(rows), np.array(dE)
    c = float(x @ y / (x @ x))
    resid = y - c * x
    return {"n_pairs": int(len(x)), "factor": c, "units_per_eV_A3": -1.0 / c,
            "rel_residual": float(np.linalg.norm(resid) / np.linalg.norm(y)),
            "max_abs_residual_meV": float(np.abs(resid).max() * 1e3),
            "expected_factor": -1.0 / KBAR_PER_EV_A3}


def reference_labels(frames) -> dict:
    import numpy as np

    return {"energy": [float(a.get_potential_energy()) for a in frames],
            "forces": [np.asarray(a.get_forces(), dtype=float).tolist() for a in frames],
            "stress": [ase_stress(a).tolist() if STRESS_KEY in a.info else [float("nan")] * 6
                       for a in frames],
            "n_atoms": [len(a) for a in frames],
            "config_type": [str(a.info.get("config_type", "default")) for a in frames]}


def error_metrics(ref: dict, pred: dict) -> dict:
    """Overall and per-config_type errors. Energies in meV/atom, forces in eV/Å per
    component, stresses in GPa per Voigt component."""
    import numpy as np

    n = np.asarray(ref["n_atoms"], dtype=float)
    ct = np.asarray(ref["config_type"])
    dE = (np.asarray(pred["energy"]) - np.asarray(ref["energy"])) / n * 1000.0
    dF = [np.asarray(p) - np.asarray(r) for p, r in zip(pred["forces"], ref["forces"])]
    dS = (np.asarray(pred["stress"], dtype=float) - np.asarray(ref["stress"], dtype=float)) \
        * GPA_PER_EV_A3

    def block(mask):
        idx = np.nonzero(mask)[0]
        f = np.concatenate([dF[k].ravel() for k in idx])
        s = dS[idx].ravel()
        s = s[np.isfinite(s)]
        return {"n_frames": int(len(idx)), "n_atoms": int(n[idx].sum()),
                "energy_mae": float(np.mean(np.abs(dE[idx]))),
                "energy_rmse": float(np.sqrt(np.mean(dE[idx] ** 2))),
                "force_mae": float(np.mean(np.abs(f))),
                "force_rmse": float(np.sqrt(np.mean(f ** 2))),
                "stress_mae": float(np.mean(np.abs(s))) if len(s) else None,
                "stress_rmse": float(np.sqrt(np.mean(s ** 2))) if len(s) else None}

    out = block(np.ones(len(n), bool))
    out["by_config_type"] = {c: block(ct == c) for c in sorted(set(ct.tolist()),
                                                                key=_config_order)}
    return out


def _config_order(c: str):
    return (CONFIG_TYPES.index(c) if c in CONFIG_TYPES else len(CONFIG_TYPES), c)


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = h.new_parser(
        "gapkit (vs QUIP gap_fit) on mlearn Si: accuracy, fit time, peak RSS, "
        "prediction cost.")
    h.add_si_model_arguments(p)
    p.add_argument("--n-test", type=int, default=None,
                   help="use N evenly spaced test cells (default: all 25)")
    p.add_argument("--quip-timeout", type=float, default=None, metavar="S",
                   help="stop gap_fit after S seconds and report QUIP as not finished "
                        "(gapkit's results are still printed)")
    h.add_run_arguments(p, workers=("gapkit", "quip"))
    return p


# ----------------------------------------------------------------------------------
# workers
# ----------------------------------------------------------------------------------
def worker_gapkit(args, data_dir: Path) -> dict:
    import numpy as np

    import gapkit

    train, test = load_si(data_dir, args.n_train, args.n_test, virials=not args.no_virials)
    n_test_atoms = int(sum(len(a) for a in test))
    frames = [a.copy() for a in test]  # without the reference calculators
    rss_before = h.current_rss_mib()
    peak_before = maxrss_mib()
    model = h.build_si_model(args)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    fit_peak = maxrss_mib()

    t0 = time.perf_counter()  # untimed warm-up: one structure
    model.predict(frames[:1], stress=True)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(frames, stress=True)
    pred_s = time.perf_counter() - t0
    return {
        "tool": "gapkit", "version": getattr(gapkit, "__version__", "?"),
        "fit_time_s": fit_s, "fit_peak_rss_mib": fit_peak,
        "rss_before_fit_mib": rss_before, "peak_rss_before_fit_mib": peak_before,
        "predict_time_s": pred_s, "predict_us_per_atom": pred_s / n_test_atoms * 1e6,
        "predict_warmup_ms": warm_s * 1e3,
        "n_test_atoms": n_test_atoms, "n_train_frames": len(train),
        "n_train_atoms": int(sum(len(a) for a in train)),
        "n_sparse": int(len(model.sparse_species_)),
        "n_features": int(model.descriptor_.n_features),
        "e0": {"Si": float(model.e0_.values[14])},
        "delta": float(model.delta_), **h.noise_fields(model),
        "n_train_rows": h.labelled_counts(model.n_train_),
        "log_marginal_likelihood": float(model.log_marginal_likelihood_),
        "threadpools": h.threadpool_info(),
        "pred": {"energy": np.asarray(pred.energy, float).tolist(),
                 "forces": [np.asarray(f, float).tolist() for f in pred.forces],
                 "stress": np.asarray(pred.stress, float).tolist()},
    }


def worker_quip(args, data_dir: Path, tmp: Path, params: dict) -> dict:
    import numpy as np

    train, test = load_si(data_dir, args.n_train, args.n_test, virials=not args.no_virials)
    n_test_atoms = int(sum(len(a) for a in test))
    train_xyz, gp_xml = tmp / "quip_train.xyz", tmp / "gp.xml"
    h.write_quip_xyz(train, train_xyz, periodic=True)
    soap = dict(r_cut=args.r_cut, cutoff_width=args.cutoff_width, n_max=args.n_max,
                l_max=args.l_max, sigma=args.sigma, zeta=args.zeta, delta=params["delta"])
    cmd = h.gap_fit_command(train_xyz, gp_xml, soap, {"Si": args.n_sparse}, {"Si": params["e0"]},
                            params["sigmas"], args.jitter, args.seed, virials=True)
    fit = h.run_gap_fit(cmd, tmp, gp_xml, timeout=getattr(args, "quip_timeout", None))

    from quippy.potential import Potential

    pot = Potential(param_filename=str(gp_xml))
    frames = [a.copy() for a in test]

    def one(a):
        # one QUIP call for all three properties: quippy's calculator computes only what
        # it is asked for, so get_potential_energy/get_forces/get_stress in turn would
        # evaluate the potential three times
        a.calc = pot
        pot.calculate(a, properties=["energy", "forces", "stress"])
        r = pot.results
        return float(r["energy"]), np.array(r["forces"]), np.array(r["stress"])

    t0 = time.perf_counter()
    one(test[0].copy())
    warm_s = time.perf_counter() - t0
    E, F, S = [], [], []
    t0 = time.perf_counter()
    for a in frames:
        e, f, s = one(a)
        E.append(float(e))
        F.append(f.tolist())
        S.append(s.tolist())
    pred_s = time.perf_counter() - t0
    return {
        "tool": "quip", "version": h.quip_version(),
        **{k: fit[k] for k in ("fit_time_s", "fit_peak_rss_mib",
                               "children_peak_rss_before_fit_mib", "gap_fit_command")},
        "predict_time_s": pred_s, "predict_us_per_atom": pred_s / n_test_atoms * 1e6,
        "predict_warmup_ms": warm_s * 1e3,
        "n_test_atoms": n_test_atoms, "n_train_frames": len(train),
        "n_sparse": args.n_sparse,
        "pred": {"energy": E, "forces": F, "stress": S},
    }


WORKERS = {
    "gapkit": lambda p: worker_gapkit(argparse.Namespace(**p["args"]), Path(p["data_dir"])),
    "quip": lambda p: worker_quip(argparse.Namespace(**p["args"]), Path(p["data_dir"]),
                                  Path(p["tmp"]), p["quip"]),
}


# ----------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------
def print_table(g: dict | None, q: dict | None) -> None:
    rows = [
        ("energy MAE  [meV/atom]", "energy_mae", ".2f"),
        ("energy RMSE [meV/atom]", "energy_rmse", ".2f"),
        ("force MAE   [eV/Å]", "force_mae", ".4f"),
        ("force RMSE  [eV/Å]", "force_rmse", ".4f"),
        ("stress MAE  [GPa]", "stress_mae", ".3f"),
        ("stress RMSE [GPa]", "stress_rmse", ".3f"),
        ("fit wall time [s]", "fit_time_s", ".1f"),
        ("fit peak RSS [MiB]", "fit_peak_rss_mib", ".0f"),
        ("predict E+F+S [µs/atom]", "predict_us_per_atom", ".0f"),
        ("predict warm-up, 1 cell [ms]", "predict_warmup_ms", ".0f"),
        ("worker wall time [s]", "worker_wall_s", ".1f"),
    ]
    h.print_comparison(rows, g, q, PUBLISHED)


def print_breakdown(g: dict | None, q: dict | None) -> None:
    tools = [(n, r) for n, r in (("gapkit", g), ("QUIP", q)) if r and r.get("ok")]
    if not tools:
        return
    types = list(tools[0][1]["by_config_type"])
    print("\nper config_type (test set): energy MAE meV/atom | force MAE eV/Å | stress MAE GPa")
    head = f"{'config_type':12s} {'cells':>5s} {'atoms':>6s}"
    for name, _ in tools:
        head += f" | {name + ' E':>9s} {name + ' F':>9s} {name + ' S':>9s}"
    print(head)
    print("-" * len(head))
    for c in types:
        b0 = tools[0][1]["by_config_type"][c]
        line = f"{c:12s} {b0['n_frames']:5d} {b0['n_atoms']:6d}"
        for _, r in tools:
            b = r["by_config_type"][c]
            line += (f" | {num(b['energy_mae'], '.2f'):>9s} {num(b['force_mae'], '.4f'):>9s} "
                     f"{num(b['stress_mae'], '.3f'):>9s}")
        print(line)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return h.worker_main(args, WORKERS, tool=args.worker)
    try:
        h.parse_delta(args.delta)
        h.parse_e0(args.e0)
    except ValueError:
        parser.error("--delta must be 'auto' or a number; --e0 'lstsq', 'zero' or a number")

    command = h.command_line(SCRIPT, argv)
    data_dir = h.find_data_dir(args.data_dir, "si_mlearn", DATA_FILES, "the mlearn Si folder")
    if data_dir is None:
        return 0
    how = h.resolve_data_dir(args.data_dir, "si_mlearn", DATA_FILES)[1]
    for name in ("n_train", "n_test"):
        v = getattr(args, name)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    do_quip, quip_note = h.quip_status(args.no_quip)
    env, threads = h.worker_env(args.threads)
    print(f"data: {data_dir} ({how})")
    print(h.host_line(threads))

    # units of the stress labels -------------------------------------------------------
    from ase.io import read

    every = (read(str(data_dir / "train.xyz"), index=":")
             + read(str(data_dir / "test.xyz"), index=":"))
    chk = verify_stress_units(every)
    if chk["n_pairs"]:
        print(f"stress units: fitted ASE stress = {chk['factor']:.6e} x {STRESS_KEY} over "
              f"{chk['n_pairs']} strained Elastic pairs (relative residual "
              f"{100 * chk['rel_residual']:.2f} %, max {chk['max_abs_residual_meV']:.1f} meV), "
              f"i.e. 1 eV/Å^3 = {chk['units_per_eV_A3']:.1f} units; expected for kbar with VASP's "
              f"sign: {chk['expected_factor']:.6e} (1602.18)")
        if abs(chk["factor"] / chk["expected_factor"] - 1) > 0.05:
            print("WARNING: the fitted factor differs from -1/1602.18 by more than 5 %; the "
                  "virials used for training may be wrong")
    else:
        print("stress units: no strained Elastic pairs found; assuming kbar, VASP sign")
    del every

    print(f"settings: n_train={args.n_train or 'all'} n_test={args.n_test or 'all'} "
          f"SOAP r_cut={args.r_cut} (cosine cutoff, width {args.cutoff_width}) n_max={args.n_max} "
          f"l_max={args.l_max} sigma={args.sigma} zeta={args.zeta:g} delta={args.delta} "
          f"n_sparse={args.n_sparse} ({args.sparse_method}) noises E/F/V={args.energy_noise}/"
          f"{args.force_noise}/{args.virial_noise} virials={'no' if args.no_virials else 'yes'} "
          f"e0={args.e0} optimize={args.optimize} jitter={args.jitter} seed={args.seed}")
    print(f"QUIP: {quip_note}")
    print(flush=True)

    _, test = load_si(data_dir, args.n_train, args.n_test, virials=False)
    ref = reference_labels(test)

    wargs = h.settings(args)
    spec = {"args": wargs, "data_dir": str(data_dir)}
    results = {"command": command, "data_dir": str(data_dir), "settings": wargs,
               "stress_units_check": chk, **h.host_fields(threads), "published": PUBLISHED}
    q = None
    with h.temp_dir("gapkit_si_", args.keep_tmp) as tmp:
        g = h.launch_worker(SCRIPT, "gapkit", spec, tmp / "gapkit", env)
        if g.get("ok"):
            g.update(error_metrics(ref, g.pop("pred")))
            print(f"gapkit: {g['n_sparse']} sparse points, {g['n_features']} features, "
                  f"{g['n_train_frames']} cells / {g['n_train_atoms']} atoms, rows "
                  f"{g['n_train_rows']}; delta_={g['delta']:.4g} eV, E0={g['e0']['Si']:.6f} eV, "
                  f"noise_={ {k: round(v, 5) for k, v in g['noise'].items()} }; RSS before fit "
                  f"{num(g['rss_before_fit_mib'], '.0f')} MiB", flush=True)
        if do_quip and g.get("ok"):
            level = g["noise_level"]  # RMS over the groups of a kind
            sig = (level.get("energy", args.energy_noise), level.get("forces", args.force_noise),
                   level.get("virial", args.virial_noise))
            q = h.launch_worker(SCRIPT, "quip", dict(spec, quip={"e0": g["e0"]["Si"],
                                "delta": g["delta"], "sigmas": sig}), tmp / "quip", env)
            if q.get("ok"):
                q.update(error_metrics(ref, q.pop("pred")))
                print("gap_fit command: " + q["gap_fit_command"])
        elif do_quip:
            print("QUIP skipped: it needs gapkit's delta and E0 and gapkit failed")
        print()
        print_table(g, q)
        print_breakdown(g, q)
        print(f"\ntest set: {len(test)} cells, {sum(ref['n_atoms'])} atoms; stress compared per "
              f"Voigt component (6 per cell); energies per atom")
        for r in (g, q):
            if r and not r.get("ok"):
                word = "did not finish" if r.get("timed_out") else "FAILED"
                print(f"{r['tool']} {word}: {r.get('error')}")
        results.update(gapkit=g, quip=q)
        h.save_results(args.json, results)
    ok = g.get("ok") and (q is None or q.get("ok") or q.get("timed_out"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
