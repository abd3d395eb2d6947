#!/usr/bin/env python
"""Energy conservation of gapkit in NVE molecular dynamics of crystalline silicon.

Fits a GAP on the mlearn Si training set (by default exactly the model of
``si_mlearn.py``: SOAP n_max=8, l_max=8, sigma=0.5, zeta=4, r_cut=5.4 Å, 1000 CUR
sparse points, noises 0.01/0.05/0.01, virials, least-squares E0), then runs
velocity-Verlet NVE (``ase.md.verlet.VelocityVerlet``) of a 64-atom diamond cell
(2x2x2 conventional cells, a = 5.43 Å) started from the perfect lattice with
Maxwell-Boltzmann momenta at 1000 K (seeded numpy draw, total momentum removed;
equipartition brings the average to roughly 500 K), dt = 1 fs, 2000 steps.

The run is done twice, with the same training data and settings except the cutoff:

``smooth``
    ``SOAP(cutoff="cosine", r_cut=5.4, cutoff_width=1.0)``: neighbour densities are
    tapered to zero between 4.4 and 5.4 Å, so energy and forces are continuous.
``hard``
    ``SOAP(cutoff="dscribe")``: DScribe's features, where an atom enters the density
    abruptly at ``r_cut + sigma*sqrt(-2 ln 1e-3)`` (DScribe's Gaussian padding,
    1.86 Å for sigma=0.5). By default ``r_cut = 5.4 - 1.86 = 3.54`` Å, so that both
    models see neighbours up to the same distance, 5.4 Å (the interaction range);
    ``--hard-r-cut 5.4`` uses DScribe's r_cut equal to the smooth one instead
    (interaction range 7.26 Å).

Recorded every ``--record-every`` steps (default 10): total energy per atom. Reported
per run: the drift (slope of a linear least-squares fit of E_tot(t), meV/atom/ps),
the fluctuation (standard deviation and max-min of E_tot, meV/atom), the largest
step-to-step change of E_tot and its largest second difference (every step,
meV/atom; the second difference detects kinks and jumps), the average temperature, the
wall time and the cost in µs per atom per MD step. The test-set errors of each model
are printed too, for context.

Fitted models are cached (``model.save``) in ``--cache-dir`` (a folder under the
system temporary directory by default) under a hash of the settings, so a second run
skips the fits; ``--model`` / ``--hard-model`` load given model files instead.

Examples::

    python benchmarks/si_nve.py                                    # full: 2 x 2000 steps
    python benchmarks/si_nve.py --steps 200 --n-train 40 --n-sparse 100 --n-max 4 --l-max 4
    python benchmarks/si_nve.py --which smooth --model /tmp/si_gap.npz --plot /tmp/etot.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import harness as h
from harness import STRESS_KEY, num

SCRIPT = Path(__file__).resolve()

#: DScribe's Gaussian padding of r_cut, in units of sigma: sqrt(-2 ln 1e-3).
DSCRIBE_PADDING = math.sqrt(-2.0 * math.log(1e-3))


def build_parser() -> argparse.ArgumentParser:
    p = h.new_parser(
        "NVE energy conservation of gapkit on 64-atom diamond Si: smooth "
        "(cosine) vs hard (DScribe) SOAP cutoff.")
    h.add_si_model_arguments(p)
    p.add_argument("--hard-r-cut", type=float, default=None,
                   help="DScribe r_cut of the hard-cutoff model, Å (default: r_cut - "
                        "sigma*sqrt(-2 ln 1e-3), i.e. the same interaction range as the smooth "
                        "model)")
    p.add_argument("--which", choices=("both", "smooth", "hard"), default="both")
    p.add_argument("--model", type=Path, default=None,
                   help="load the smooth-cutoff model from this gapkit file instead of fitting")
    p.add_argument("--hard-model", type=Path, default=None,
                   help="load the hard-cutoff model from this gapkit file instead of fitting")
    p.add_argument("--cache-dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "gapkit_si_nve_models",
                   help="where fitted models are cached (keyed by the settings)")
    p.add_argument("--no-cache", action="store_true", help="always fit; do not save models")
    p.add_argument("--steps", type=int, default=2000, help="MD steps")
    p.add_argument("--dt", type=float, default=1.0, help="time step, fs")
    p.add_argument("--temperature", type=float, default=1000.0,
                   help="initial Maxwell-Boltzmann temperature, K")
    p.add_argument("--lattice", type=float, default=5.43, help="diamond lattice constant, Å")
    p.add_argument("--repeat", type=int, default=2, help="conventional cells per direction")
    p.add_argument("--record-every", type=int, default=10, help="record E_tot every N steps")
    p.add_argument("--md-seed", type=int, default=0, help="seed of the momentum draw")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG",
                   help="save a plot of E_tot(t) of the runs to PNG")
    h.add_run_arguments(p, quip=False, keep_tmp=False)
    return p


# ----------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------
MODEL_KEYS = ("n_train", "r_cut", "cutoff_width", "n_max", "l_max", "sigma", "zeta", "delta",
              "n_sparse", "sparse_method", "energy_noise", "force_noise", "virial_noise",
              "no_virials", "e0", "jitter", "optimize", "seed")


def model_key(args, data_dir: Path, cutoff: str, r_cut: float) -> str:
    spec = {k: getattr(args, k) for k in MODEL_KEYS}
    spec.update(cutoff=cutoff, r_cut=r_cut, data=str(data_dir), stress_key=STRESS_KEY)
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def get_model(args, data_dir: Path, train, cutoff: str, r_cut: float, path: Path | None):
    """A fitted model: loaded from ``path``, from the cache, or fitted (and cached)."""
    import gapkit

    if path is not None:
        t0 = time.perf_counter()
        model = gapkit.load(path)
        return model, {"source": f"loaded {path}", "fit_time_s": None,
                       "load_time_s": time.perf_counter() - t0}
    cache = None
    if not args.no_cache:
        cache = args.cache_dir / f"si_{cutoff}_{model_key(args, data_dir, cutoff, r_cut)}.npz"
        if cache.is_file():
            try:
                model = gapkit.load(cache)
                return model, {"source": f"cached {cache}", "fit_time_s": None}
            except Exception as exc:  # noqa: BLE001 - stale or corrupt cache: refit
                print(f"  (cache {cache} unreadable: {exc}; refitting)")
    model = h.build_si_model(args, cutoff=cutoff, r_cut=r_cut)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    info = {"source": "fitted", "fit_time_s": fit_s}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        model.save(cache)
        info["source"] = f"fitted, saved to {cache}"
    return model, info


def test_errors(model, test) -> dict:
    import numpy as np

    E, F = h.reference_labels(test)
    pred = model.predict([a.copy() for a in test], stress=False)
    dE = (pred.energy - E) / np.array([len(a) for a in test], float) * 1e3
    dF = np.concatenate([(np.asarray(f) - r).ravel() for f, r in zip(pred.forces, F)])
    return {"energy_mae": float(np.mean(np.abs(dE))), "force_mae": float(np.mean(np.abs(dF)))}


# ----------------------------------------------------------------------------------
# MD
# ----------------------------------------------------------------------------------
def make_cell(args):
    import numpy as np
    from ase import units
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=args.lattice, cubic=True).repeat((args.repeat,) * 3)
    rng = np.random.default_rng(args.md_seed)
    m = atoms.get_masses()[:, None]
    p = rng.standard_normal((len(atoms), 3)) * np.sqrt(m * units.kB * args.temperature)
    p -= m * (p.sum(axis=0) / m.sum())  # zero total momentum
    atoms.set_momenta(p)
    return atoms


def run_nve(model, args) -> dict:
    import numpy as np
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from gapkit import GAPCalculator

    atoms = make_cell(args)
    n = len(atoms)
    atoms.calc = GAPCalculator(model)
    e_all, rec = [], []

    def record():
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        e_all.append(epot + ekin)
        step = len(e_all) - 1
        if step % args.record_every == 0:
            rec.append((step * args.dt / 1000.0, (epot + ekin) / n, epot / n, ekin / n,
                        atoms.get_temperature()))

    dyn = VelocityVerlet(atoms, timestep=args.dt * units.fs)
    t0 = time.perf_counter()
    record()  # step 0 (one energy + forces evaluation)
    first_s = time.perf_counter() - t0
    dyn.attach(record, interval=1)
    t0 = time.perf_counter()
    dyn.run(args.steps)
    wall = time.perf_counter() - t0

    r = np.array(rec)
    t_ps, etot = r[:, 0], r[:, 1] * 1e3  # meV/atom
    slope = float(np.polyfit(t_ps, etot, 1)[0]) if len(t_ps) > 2 else float("nan")
    e_step = np.asarray(e_all) / n * 1e3  # every step, meV/atom
    jumps = np.abs(np.diff(e_step))
    kinks = np.abs(np.diff(e_step, 2))
    return {
        "n_atoms": n, "steps": args.steps, "dt_fs": args.dt, "n_records": len(rec),
        "drift_mev_per_atom_per_ps": slope,
        "fluct_std_mev_per_atom": float(np.std(etot)),
        "fluct_ptp_mev_per_atom": float(np.ptp(etot)),
        "max_step_change_mev_per_atom": float(jumps.max()) if len(jumps) else float("nan"),
        "max_second_difference_mev_per_atom": float(kinks.max()) if len(kinks) else float("nan"),
        "final_minus_initial_mev_per_atom": float(etot[-1] - etot[0]),
        "temperature_mean_K": float(np.mean(r[:, 4])),
        "temperature_max_K": float(np.max(r[:, 4])),
        "epot_std_mev_per_atom": float(np.std(r[:, 2]) * 1e3),
        "wall_s": wall, "first_eval_s": first_s,
        "us_per_atom_per_step": wall / (args.steps * n) * 1e6 if args.steps else float("nan"),
        "series": {"t_ps": t_ps.tolist(), "etot_mev_per_atom": etot.tolist(),
                   "temperature_K": r[:, 4].tolist()},
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(7, 2.6 * len(results)), squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], results.items()):
        s = r["md"]["series"]
        e = [x - s["etot_mev_per_atom"][0] for x in s["etot_mev_per_atom"]]
        ax.plot(s["t_ps"], e, lw=1)
        ax.set_ylabel("E_tot - E_tot(0)\n[meV/atom]")
        ax.set_title(f"{name}: {r['label']}; drift {r['md']['drift_mev_per_atom_per_ps']:.3g} "
                     f"meV/atom/ps, std {r['md']['fluct_std_mev_per_atom']:.3g} meV/atom",
                     fontsize=9)
    axes[-1, 0].set_xlabel("t [ps]")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(results: dict) -> None:
    rows = [
        ("interaction range [Å]", lambda r: r["interaction_range"], ".2f"),
        ("test energy MAE [meV/atom]", lambda r: r["test"]["energy_mae"], ".2f"),
        ("test force MAE [eV/Å]", lambda r: r["test"]["force_mae"], ".4f"),
        ("drift [meV/atom/ps]", lambda r: r["md"]["drift_mev_per_atom_per_ps"], ".4f"),
        ("E_tot std [meV/atom]", lambda r: r["md"]["fluct_std_mev_per_atom"], ".4f"),
        ("E_tot max-min [meV/atom]", lambda r: r["md"]["fluct_ptp_mev_per_atom"], ".4f"),
        ("E_tot end-start [meV/atom]",
         lambda r: r["md"]["final_minus_initial_mev_per_atom"], ".4f"),
        ("max |dE_tot| 1 step [meV/atom]",
         lambda r: r["md"]["max_step_change_mev_per_atom"], ".4f"),
        ("max |d2E_tot| [meV/atom]",
         lambda r: r["md"]["max_second_difference_mev_per_atom"], ".5f"),
        ("E_pot std [meV/atom]", lambda r: r["md"]["epot_std_mev_per_atom"], ".1f"),
        ("mean temperature [K]", lambda r: r["md"]["temperature_mean_K"], ".0f"),
        ("max temperature [K]", lambda r: r["md"]["temperature_max_K"], ".0f"),
        ("fit time [s]", lambda r: r["model"]["fit_time_s"], ".1f"),
        ("MD wall time [s]", lambda r: r["md"]["wall_s"], ".1f"),
        ("MD cost [µs/atom/step]", lambda r: r["md"]["us_per_atom_per_step"], ".0f"),
    ]
    names = list(results)
    head = f"{'':32s}" + "".join(f" {n:>14s}" for n in names)
    if len(names) == 2:
        head += f" {'hard/smooth':>12s}"
    print(head)
    print("-" * len(head))
    for label, get, fmt in rows:
        vals = [get(results[n]) for n in names]
        line = f"{label:32s}" + "".join(f" {num(v, fmt):>14s}" for v in vals)
        if len(names) == 2 and label.startswith(("drift", "E_tot", "max |d")):
            a, b = vals[0], vals[1]
            line += f" {num(abs(b) / abs(a) if a else None, '.1f'):>12s}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    h.set_thread_env(args.threads)  # before numpy is imported
    if args.steps < 1 or args.record_every < 1:
        parser.error("--steps and --record-every must be >= 1")

    command = h.command_line(SCRIPT, argv)
    data_dir, how = h.resolve_data_dir(args.data_dir, "si_mlearn", h.SI_FILES)
    need_data = ((args.which in ("both", "smooth") and args.model is None)
                 or (args.which in ("both", "hard") and args.hard_model is None))
    missing = [f for f in h.SI_FILES if not (data_dir / f).is_file()]
    if missing and need_data:
        h.find_data_dir(args.data_dir, "si_mlearn", h.SI_FILES, "the mlearn Si folder",
                        ", or pass --model/--hard-model")
        return 0
    try:
        from threadpoolctl import threadpool_limits
        if args.threads and args.threads > 0:
            threadpool_limits(args.threads)
    except ImportError:
        pass

    hard_r_cut = args.hard_r_cut if args.hard_r_cut is not None else \
        round(args.r_cut - args.sigma * DSCRIBE_PADDING, 4)
    print(f"data: {data_dir} ({how}); host {platform.node()}, {os.cpu_count()} CPUs, "
          f"threads {args.threads or 'env'}")
    print(f"model: n_train={args.n_train or 'all'} n_max={args.n_max} l_max={args.l_max} "
          f"sigma={args.sigma} zeta={args.zeta:g} delta={args.delta} n_sparse={args.n_sparse} "
          f"({args.sparse_method}) noises E/F/V={args.energy_noise}/{args.force_noise}/"
          f"{args.virial_noise} virials={'no' if args.no_virials else 'yes'} e0={args.e0} "
          f"optimize={args.optimize}")
    print(f"smooth: cutoff='cosine' r_cut={args.r_cut} width={args.cutoff_width}; hard: "
          f"cutoff='dscribe' r_cut={hard_r_cut} (+ padding {args.sigma * DSCRIBE_PADDING:.3f} "
          f"= interaction range {hard_r_cut + args.sigma * DSCRIBE_PADDING:.2f} Å)")
    print(f"MD: {8 * args.repeat ** 3} Si atoms, diamond a={args.lattice}, T0={args.temperature} K "
          f"(seed {args.md_seed}), dt={args.dt} fs, {args.steps} steps, record every "
          f"{args.record_every}", flush=True)

    train = test = None
    if not missing:
        train, test = h.load_si(data_dir, args.n_train, None, virials=not args.no_virials)
    runs = []
    if args.which in ("both", "smooth"):
        runs.append(("smooth", "cosine", args.r_cut, args.model,
                     f"cosine cutoff r_cut={args.r_cut}, width {args.cutoff_width}"))
    if args.which in ("both", "hard"):
        runs.append(("hard", "dscribe", hard_r_cut, args.hard_model,
                     f"DScribe hard cutoff r_cut={hard_r_cut}"))
    results = {}
    for name, cutoff, r_cut, path, label in runs:
        print(f"\n[{time.strftime('%H:%M:%S')}] {name}: model ...", flush=True)
        model, info = get_model(args, data_dir, train, cutoff, r_cut, path)
        desc = model.descriptor_
        print(f"  {info['source']}" + (f" in {info['fit_time_s']:.1f} s" if info["fit_time_s"]
                                       else "")
              + f"; descriptor cutoff={desc.cutoff!r} r_cut={desc.r_cut}, "
                f"{len(model.sparse_species_)} sparse points", flush=True)
        test_err = test_errors(model, test) if test is not None else {"energy_mae": None,
                                                                     "force_mae": None}
        print(f"  test set: energy MAE {num(test_err['energy_mae'], '.2f')} meV/atom, "
              f"force MAE {num(test_err['force_mae'], '.4f')} eV/Å", flush=True)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: NVE {args.steps} steps ...", flush=True)
        md = run_nve(model, args)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {md['wall_s']:.1f} s; drift "
              f"{md['drift_mev_per_atom_per_ps']:.4f} meV/atom/ps, std "
              f"{md['fluct_std_mev_per_atom']:.4f} meV/atom", flush=True)
        results[name] = {"label": label, "cutoff": cutoff, "r_cut": r_cut,
                         "interaction_range": float(desc.interaction_range), "model": info,
                         "test": test_err, "md": md}
        del model

    print()
    print_table(results)
    print("\ndrift: slope of a linear fit of E_tot(t) sampled every "
          f"{args.record_every} steps; std and max-min of the same samples; max |dE_tot|: "
          "largest change between consecutive steps; max |d2E_tot|: largest second difference "
          "E(n+1) - 2 E(n) + E(n-1) over all steps, a kink detector (O(dt^2) smaller than the "
          "step change for a smooth trajectory, as large as a jump for a discontinuity)")
    if args.plot is not None:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")
    h.save_results(args.json, {"command": command, "settings": h.settings(args),
                               "hard_r_cut": hard_r_cut, **h.host_fields(), "results": results},
                   say="results written to")
    return 0


if __name__ == "__main__":
    sys.exit(main())
