#!/usr/bin/env python
"""E+F speed of gapkit against the hardware (dgemm FLOP limit) and quippy, in one run.

Cases (issue #17), each with a gapkit model and a QUIP model fitted here with the same
settings and the same number of sparse points per species:

* ``ethanol_box``: 64 rMD17 ethanol molecules in a periodic box (576 atoms); SOAP
  n_max 8, l_max 6, r_cut 5 Å, cosine cutoff width 1 Å (QUIP
  ``cutoff_transition_width=1``), atom sigma 0.5 Å, zeta 4; models fitted on the first
  ``--n-train`` frames of ``train.xyz`` with ``--n-sparse`` CUR points per species;
* ``si_512``: a rattled 512-atom diamond Si cell (4x4x4 conventional); SOAP n_max 8,
  l_max 8, r_cut 5.4 Å, width 1 Å; models fitted on ``--n-train`` mlearn Si cells;
* ``default`` columns (``--no-default`` to skip): the same cases with gapkit's default
  model at the same SOAP settings (:func:`gapkit.gp.terms.default_terms`: SOAP with the
  default radial scaling ``m = 4``, ``r0 = 2`` Å, plus the 2-body term, 50 sparse points
  per species), timed in the same alternation; printed: its time and its cost over
  plain SOAP (default / plain), and its ratio to quippy's plain SOAP;
* ``si_large`` (threads): a ``8 * --large-repeat**3``-atom Si cell (4096 atoms by
  default: 8 blocks of 512), gapkit only, alternating 1 and 2 worker threads over the
  atom blocks (``set_engine_threads``; each worker one engine and one BLAS thread),
  and the default (no setting: one worker per free core); printed: median and range
  of wall and CPU time, the speed-up and the CPU use (CPU / wall, cores busy).

One E+F call is what an MD step asks for: gapkit ``check_structure`` +
``predict_structure(forces=True, stress=False)``; quippy ``Potential.calculate(["energy",
"forces"])`` after ``reset()``. Every call moves the atoms by ~1e-4 Å (no cached
result). The codes alternate A B A B for ``--rounds`` (>= 5) rounds after one warm-up
call each; printed: median and [min, max] of the wall times, the ratio gapkit/quippy, the
FLOP count of the call, numpy's dgemm rate on this machine (one thread, best of 5
2000x2000 products) and the fraction ``FLOPs / (time x dgemm rate)``.

FLOP count (multiply-add = 2): kernel ``4 N_z M_z F`` per species (``q.Q_M`` and the
gradient), power spectrum and ``dE/dc`` ``2 x 2 (S n)^2 (l_max+1)^2`` per atom,
expansion ``2 P n (l_max+1)^2``, per-pair VJP ``4 P n (l_max+1)^2 + 8 P (l_max+1)^2``,
radial basis ``4 P (l_max+1) n^2`` (P neighbour pairs, S species, F features).

Goals (issue #17): >= 25 % of the limit on the ethanol box, >= 15 % on Si, <= 0.03x
quippy. Without the data a case is skipped; without quippy / gap_fit only gapkit runs.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/engine_speed.py --rounds 7 \\
        --json /tmp/engine_speed.json
    python benchmarks/engine_speed.py --rounds 5 --n-train 20 --n-sparse 50 --no-quip  # quick
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/engine_speed.py --threads-only \
        --rounds 9   # the second core only (goal >= 1.6x on an idle 2-core machine)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import harness as h

GOAL_FRACTION = {"ethanol_box": 0.25, "si_512": 0.15}
GOAL_RATIO = 0.03
ETH_SOAP = dict(r_cut=5.0, n_max=8, l_max=6, sigma=0.5, cutoff_width=1.0)
SI_SOAP = dict(r_cut=5.4, n_max=8, l_max=8, sigma=0.5, cutoff_width=1.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (>= 5)")
    p.add_argument("--n-train", type=int, default=50, help="training frames of each model")
    p.add_argument("--n-sparse", type=int, default=300, help="CUR sparse points per species")
    p.add_argument("--large-repeat", type=int, default=8,
                   help="Si cell of the threads row: 8 * repeat**3 atoms (0: skip)")
    p.add_argument("--no-quip", action="store_true", help="gapkit only")
    p.add_argument("--no-default", action="store_true",
                   help="skip the default model (SOAP + radial scaling + 2-body) column")
    p.add_argument("--threads-only", action="store_true",
                   help="only the threads row (fits the Si model, no quippy)")
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    p.add_argument("--seed", type=int, default=0)
    h.add_data_dir_argument(p, "ethanol_rmd17", h.ETHANOL_FILES, flag="--ethanol-dir")
    h.add_data_dir_argument(p, "si_mlearn", h.SI_FILES, flag="--si-dir")
    return p


# ----------------------------------------------------------------------------------
# structures and models
# ----------------------------------------------------------------------------------
def ethanol_box(molecule, n_side: int = 4, spacing: float = 5.5):
    """``n_side**3`` randomly rotated copies of ``molecule`` in a periodic cubic box."""
    import numpy as np

    mol = molecule.copy()
    mol.calc = None
    mol.positions -= mol.positions.mean(axis=0)
    rng = np.random.default_rng(0)
    box = None
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                m = mol.copy()
                m.rotate(float(rng.uniform(0, 360)), "z", center=(0, 0, 0))
                m.translate(spacing * (np.array([i, j, k]) + 0.5))
                box = m if box is None else box + m
    box.cell = [n_side * spacing] * 3
    box.pbc = True
    return box


def si_cell(repeat: int, seed: int):
    from ase.build import bulk

    cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat((repeat,) * 3)
    cell.rattle(0.05, seed=seed)
    return cell


def fit_gapkit(train, soap: dict, n_sparse: int, e0, seed: int):
    from gapkit import GAP, SOAP

    return GAP(SOAP(cutoff="cosine", **soap), zeta=4.0, delta=1.0, n_sparse=n_sparse,
               sparse_method="cur", energy_noise=0.001, force_noise=0.02, e0=e0,
               random_state=seed, calibrate=False).fit(train)


def fit_gapkit_default(train, soap: dict, n_sparse: int, e0, seed: int):
    """The default model (SOAP with the default radial scaling, then the 2-body term) at
    the SOAP settings ``soap``."""
    from gapkit import GAP, SOAP
    from gapkit.gp.terms import (DEFAULT_RADIAL_SCALING, DEFAULT_RADIAL_SCALING_R0,
                                 default_terms)

    many = SOAP(cutoff="cosine", radial_scaling=DEFAULT_RADIAL_SCALING,
                radial_scaling_r0=DEFAULT_RADIAL_SCALING_R0, **soap)
    return GAP(default_terms(many), zeta=4.0, delta=1.0, n_sparse=n_sparse,
               sparse_method="cur", energy_noise=0.001, force_noise=0.02, e0=e0,
               random_state=seed, calibrate=False).fit(train)


def fit_quip(train, soap: dict, n_sparse: int, e0: dict, periodic: bool, tmp: Path, seed: int):
    from quippy.potential import Potential

    tmp.mkdir(parents=True, exist_ok=True)
    train_xyz, gp_xml = tmp / "train.xyz", tmp / "gp.xml"
    h.write_quip_xyz(train, train_xyz, periodic=periodic, cutoff=soap["r_cut"],
                     config_type="train")
    counts = h.cap_sparse_counts(train, n_sparse)
    cmd = h.gap_fit_command(train_xyz, gp_xml, dict(soap, zeta=4.0, delta=1.0), counts, e0,
                            (0.001, 0.02), 1e-8, seed)
    h.run_gap_fit(cmd, tmp, gp_xml)
    return Potential(param_filename=str(gp_xml))


# ----------------------------------------------------------------------------------
# calls, FLOPs, the dgemm limit
# ----------------------------------------------------------------------------------
def gapkit_call(model):
    def call(atoms):
        model.check_structure(atoms)
        return model.predict_structure(atoms, forces=True, stress=False)
    return call


def quip_call(pot):
    def call(atoms):
        atoms.calc = pot
        pot.reset()  # never serve cached results
        pot.calculate(atoms, properties=["energy", "forces"])
    return call


def moved(atoms, rng):
    a = atoms.copy()
    a.positions += 1e-4 * rng.normal(size=a.positions.shape)
    return a


def alternate(calls: dict, atoms, rounds: int, seed: int) -> dict:
    """Wall times of the callables in ``calls`` run alternately (one warm-up each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for fn in calls.values():
        fn(moved(atoms, rng))
    times = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    for _ in range(max(5, rounds)):
        for k, fn in calls.items():
            a = moved(atoms, rng)
            c0, t0 = time.process_time(), time.perf_counter()
            fn(a)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v),
                "times_s": v, "cpu_median_s": statistics.median(cpu[k]), "cpu_s": cpu[k]}
            for k, v in times.items()}


def flop_count(model, atoms) -> dict:
    """FLOPs of one E+F call (see the module docstring)."""
    import numpy as np

    from gapkit.descriptors.neighbours import neighbour_pairs

    d = model.descriptor_
    F = d.n_features
    nlm = (d.l_max + 1) ** 2
    S = len(d.species_numbers)
    n = d.n_max
    _, _, dist, _ = neighbour_pairs(atoms, d.interaction_range)
    P = int(np.sum(dist < d.interaction_range))
    kernel = 0
    for t in model.state_.terms:
        for z in np.unique(t.sparse_species):
            kernel += 4 * int(np.sum(atoms.numbers == z)) * int(np.sum(t.sparse_species == z)) * F
    engine = (len(atoms) * 4 * (S * n) ** 2 * nlm + P * (6 * n * nlm + 8 * nlm)
              + 4 * P * (d.l_max + 1) * n * n)
    return {"kernel": kernel, "engine": int(engine), "total": int(kernel + engine),
            "pairs": P, "features": F}


def dgemm_rate(size: int = 2000, repeats: int = 5) -> float:
    """numpy dgemm FLOP/s on one thread (best of ``repeats``)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((size, size))
    with threadpool_limits(1):
        a @ a
        best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2.0 * size ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def threads_row(model, atoms, rounds: int, seed: int) -> dict:
    """gapkit E+F of a large cell on 1 and 2 block threads and the default, alternating."""
    from gapkit.descriptors.threads import block_threads, set_engine_threads

    call = gapkit_call(model)

    def with_threads(k):
        def fn(a):
            set_engine_threads(k)
            try:
                call(a)
            finally:
                set_engine_threads(None)
        return fn

    out = alternate({"threads_1": with_threads(1), "threads_2": with_threads(2),
                     "default": with_threads(None)}, atoms, rounds, seed)
    out["speedup_2"] = out["threads_1"]["median_s"] / out["threads_2"]["median_s"]
    out["speedup_default"] = out["threads_1"]["median_s"] / out["default"]["median_s"]
    out["default_threads_now"] = block_threads(10 ** 6)
    set_engine_threads(2)
    try:
        f2 = call(atoms).forces
    finally:
        set_engine_threads(None)
    set_engine_threads(1)
    try:
        out["max_force_difference"] = float(abs(call(atoms).forces - f2).max())
    finally:
        set_engine_threads(None)
    out["n_atoms"] = len(atoms)
    return out


# ----------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    pinned = h.set_thread_env(1)
    from ase.io import read

    print(h.host_line(pinned))
    print("command:", " ".join(sys.argv))
    quip_ok, quip_note = h.quip_status(args.no_quip)
    print("quippy:", quip_note)
    rate = dgemm_rate()
    print(f"dgemm limit (numpy, 1 thread): {rate / 1e9:.1f} GFLOP/s")
    results = {"dgemm_flops": rate, "host": h.host_fields(pinned), "cases": {}}
    cases = []
    eth_dir = h.find_data_dir(args.ethanol_dir, "ethanol_rmd17", h.ETHANOL_FILES,
                              "the rMD17 ethanol folder")
    si_dir = h.find_data_dir(args.si_dir, "si_mlearn", h.SI_FILES, "the mlearn Si folder")
    with h.temp_dir("gk_engine_speed_") as tmp:
        if eth_dir is not None and not args.threads_only:
            train = read(str(eth_dir / "train.xyz"), f":{args.n_train}")
            e0_file = str(eth_dir / "isolated_atoms.xyz")
            model = fit_gapkit(train, ETH_SOAP, args.n_sparse, e0_file, args.seed)
            pot = (fit_quip(train, ETH_SOAP, args.n_sparse, h.isolated_energies(e0_file),
                            False, tmp / "eth", args.seed) if quip_ok else None)
            dflt = (None if args.no_default else
                    fit_gapkit_default(train, ETH_SOAP, args.n_sparse, e0_file, args.seed))
            cases.append(("ethanol_box", model, pot, ethanol_box(train[0]), dflt))
        if si_dir is not None:
            train, _ = h.load_si(si_dir, args.n_train, 1, virials=False)
            e0 = float(sum(a.get_potential_energy() for a in train) / sum(len(a) for a in train))
            model = fit_gapkit(train, SI_SOAP, args.n_sparse, {"Si": e0}, args.seed)
            pot = (fit_quip(train, SI_SOAP, args.n_sparse, {"Si": e0}, True, tmp / "si",
                            args.seed) if quip_ok and not args.threads_only else None)
            dflt = (None if args.no_default or args.threads_only else
                    fit_gapkit_default(train, SI_SOAP, args.n_sparse, {"Si": e0}, args.seed))
            cases.append(("si_512", model, pot, si_cell(4, args.seed), dflt))
        for name, model, pot, atoms, dflt in ([] if args.threads_only else cases):
            calls = {"gapkit": gapkit_call(model)}
            if dflt is not None:
                calls["gapkit_default"] = gapkit_call(dflt)
            if pot is not None:
                calls["quippy"] = quip_call(pot)
            r = alternate(calls, atoms, args.rounds, args.seed)
            r["flops"] = flop_count(model, atoms)
            r["n_atoms"] = len(atoms)
            r["n_sparse"] = int(len(model.alpha_))
            g = r["gapkit"]["median_s"]
            r["fraction_of_limit"] = r["flops"]["total"] / (g * rate)
            if pot is not None:
                r["ratio_gapkit_over_quippy"] = g / r["quippy"]["median_s"]
            if dflt is not None:
                r["default_over_plain"] = r["gapkit_default"]["median_s"] / g
                r["default_over_plain_cpu"] = (r["gapkit_default"]["cpu_median_s"]
                                               / r["gapkit"]["cpu_median_s"])
                if pot is not None:
                    r["ratio_default_over_quippy"] = (r["gapkit_default"]["median_s"]
                                                      / r["quippy"]["median_s"])
            results["cases"][name] = r
            _print_case(name, r)
        if args.large_repeat and si_dir is not None:
            model = next(c[1] for c in cases if c[0] == "si_512")
            r = threads_row(model, si_cell(args.large_repeat, args.seed), args.rounds, args.seed)
            results["cases"]["si_large_threads"] = r
            print(f"si_large: {r['n_atoms']} atoms, gapkit E+F, {max(5, args.rounds)} "
                  f"alternating rounds:")
            for key in ("threads_1", "threads_2", "default"):
                t = r[key]
                print(f"  {key:9s}: wall {_span(t)}, CPU {t['cpu_median_s'] * 1e3:.1f} ms "
                      f"(CPU / wall {t['cpu_median_s'] / t['median_s']:.2f})")
            print(f"  speed-up of 2 threads {r['speedup_2']:.2f}x (goal >= 1.6x on an idle 2-core "
                  f"machine), of the default {r['speedup_default']:.2f}x (default now "
                  f"{r['default_threads_now']} thread(s)); max |F(1) - F(2)| "
                  f"{r['max_force_difference']:.1e} eV/Å; load average {h.loadavg()}")
    h.save_results(args.json, results)
    return 0


def _span(t: dict) -> str:
    return f"{t['median_s'] * 1e3:.1f} ms [{t['min_s'] * 1e3:.1f}, {t['max_s'] * 1e3:.1f}]"


def _print_case(name: str, r: dict) -> None:
    fl = r["flops"]
    line = (f"{name}: {r['n_atoms']} atoms, M = {r['n_sparse']}, {fl['pairs']} pairs, "
            f"F = {fl['features']}: gapkit E+F {_span(r['gapkit'])}")
    if "quippy" in r:
        line += (f", quippy {_span(r['quippy'])}, ratio {r['ratio_gapkit_over_quippy']:.3f} "
                 f"(goal <= {GOAL_RATIO})")
    print(line)
    print(f"  gapkit CPU {r['gapkit']['cpu_median_s'] * 1e3:.1f} ms (median)"
          + (f", quippy CPU {r['quippy']['cpu_median_s'] * 1e3:.1f} ms, CPU ratio "
             f"{r['gapkit']['cpu_median_s'] / r['quippy']['cpu_median_s']:.3f}"
             if "quippy" in r else ""))
    if "gapkit_default" in r:
        d = r["gapkit_default"]
        print(f"  default model (SOAP + radial scaling + 2-body) E+F {_span(d)}, CPU "
              f"{d['cpu_median_s'] * 1e3:.1f} ms: {r['default_over_plain']:.2f}x plain SOAP "
              f"(CPU {r['default_over_plain_cpu']:.2f}x)"
              + (f", ratio to quippy (plain SOAP) {r['ratio_default_over_quippy']:.3f}"
                 if "ratio_default_over_quippy" in r else ""))
    print(f"  FLOPs {fl['total'] / 1e9:.3f} G (kernel {fl['kernel'] / 1e9:.3f}, engine "
          f"{fl['engine'] / 1e9:.3f}); fraction of the dgemm limit "
          f"{100 * r['fraction_of_limit']:.1f} % (goal >= {100 * GOAL_FRACTION[name]:.0f} %)")


if __name__ == "__main__":
    sys.exit(main())
