#!/usr/bin/env python
"""Do virials help or hurt? Energy, force and stress test errors with and without virials.

Issue #14: training on virials with a too-small σ_V (0.01 eV/sqrt(atom), QUIP-style)
made forces 2x and energies 2-4x worse on mlearn-style sets. gapkit's default is now
``virial_noise="auto"`` = ``force_noise * (V/N)**(1/3)`` (see :mod:`gapkit.model.params`).
This script fits, on each data set, the same GAP

* without virials (``use_virials=False``),
* with virials at the default (``auto``),
* with virials at fixed σ_V (``--fixed``, default 0.01 and 0.1 eV/sqrt(atom)),

and prints the test errors: energy MAE (meV/atom), force MAE (meV/Å per component) and
stress MAE (GPa per Voigt component), overall and per ``config_type``
(:mod:`gapkit.diagnostics.breakdown`), with ``delta_`` and the virial noise used.

Data sets (``--sets``):

* ``cu``: EMT Cu made here: 32-atom fcc cells, strained (up to 1-3 %), rattled, with
  vacancies (``config_type`` rattled / elastic / vacancy); energies, forces and stresses
  from ASE's EMT. Train and test cells come from different seeds;
* ``cual``: the same for random fcc Cu-Al alloys (20-80 % Al);
* ``si``: mlearn Si (``--data-dir``, default ``<repo>/../shared/data/si_mlearn``): 214
  training cells, 25 test cells, the kbar stress labels turned into GAP virials
  (``-stress * V``) for training and testing. Skipped when the folder is absent.

The defaults were *not* chosen on ``si`` (it is only measured here); the EMT sets are
the project's own.

Run (about 10-20 minutes of CPU on one thread with the default, reduced SOAP)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/virials.py --json /tmp/virials.json
    python benchmarks/virials.py --sets cu --n-train 60 --n-test 30      # quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import harness as h

SCRIPT = Path(__file__).resolve()


def emt_cells(kind: str, n: int, seed: int) -> list:
    """``n`` labelled EMT cells of ``kind`` (``"cu"`` or ``"cual"``), ``config_type``
    cycling through rattled / elastic / vacancy."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        ct = ("rattled", "elastic", "vacancy")[k % 3]
        a = bulk("Cu", "fcc", a=3.60 if kind == "cu" else 3.75, cubic=True).repeat(2)
        if kind == "cual":
            a.numbers[rng.random(len(a)) < rng.uniform(0.2, 0.8)] = 13
        if ct == "vacancy":
            del a[int(rng.integers(len(a)))]
        amp = {"rattled": 0.03, "elastic": 0.01, "vacancy": 0.02}[ct]
        eps = rng.uniform(-1, 1, (3, 3)) * amp
        a.set_cell(a.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        rattle = {"rattled": rng.uniform(0.05, 0.15), "elastic": 0.02, "vacancy": 0.08}[ct]
        a.positions += rng.normal(0, rattle, a.positions.shape)
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        a.info["config_type"] = ct
        out.append(a)
    return out


def load_set(name: str, args) -> tuple[list, list] | None:
    """(train, test) frames of a data set, or None when its data are missing."""
    if name in ("cu", "cual"):
        return emt_cells(name, args.n_train, 1), emt_cells(name, args.n_test, 2)
    data_dir = h.find_data_dir(args.data_dir, "si_mlearn", h.SI_FILES, "mlearn Si")
    if data_dir is None:
        return None
    train, test = h.load_si(data_dir, None, None, virials=True)
    for a in test:
        a.info["virial"] = (h.mlearn_matrix(a.info[h.STRESS_KEY]) * a.get_volume()
                            / h.KBAR_PER_EV_A3)
    return train, test


def run_variant(train, test, args, label: str) -> dict:
    """Fit one variant and return its test errors (overall and per config_type)."""
    import warnings

    from gapkit import GAP, SOAP
    from gapkit.diagnostics.breakdown import breakdown, frame_errors, group_metrics

    kw = {} if label == "auto" else ({"use_virials": False} if label == "none"
                                     else {"virial_noise": float(label)})
    model = GAP(SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=args.sigma),
                n_sparse=args.n_sparse, calibrate=False, random_state=args.seed, **kw)
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train)
    cpu = time.process_time() - t0
    fe = frame_errors(model.predict(test), test)   # default keys: the stress labels always
    noise = model.noise_.labelled()
    return {"variant": label, "delta": model.delta_, "virial_noise": noise.get("virial"),
            "fit_cpu_s": cpu, "all": group_metrics(fe),
            "by_config_type": breakdown(fe, fe.config_types)}


def print_table(name: str, rows: list[dict]) -> None:
    """Errors of every variant of one data set (and per config_type)."""
    def n(x, f):
        return h.num(x, f) if x is not None else "n/a"

    print(f"\n{name}: test errors (E meV/atom | F meV/Å | S GPa), delta eV, sigma_V eV/sqrt(atom)")
    print(f"{'variant':>10} {'delta':>7} {'sigma_V':>8} {'E MAE':>8} {'F MAE':>8} {'S MAE':>8}"
          "   per config_type E / F / S")
    for r in rows:
        m = r["all"]
        per = "; ".join(f"{ct} {n(1000 * g['energy_mae_per_atom'], '.2f')} / "
                        f"{n(1000 * g['forces_mae'], '.1f')} / {n(g['stress_mae'], '.3f')}"
                        for ct, g in r["by_config_type"].items())
        print(f"{r['variant']:>10} {r['delta']:7.3g} {n(r['virial_noise'], '.3g'):>8} "
              f"{1000 * m['energy_mae_per_atom']:8.3f} {1000 * m['forces_mae']:8.2f} "
              f"{n(m['stress_mae'], '.4f'):>8}   {per}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = h.new_parser(__doc__.split("\n")[0])
    p.add_argument("--sets", default="cu,cual,si", help="comma-separated: cu, cual, si")
    p.add_argument("--fixed", default="0.01,0.1",
                   help="fixed virial noises to compare (eV/sqrt(atom), comma-separated)")
    p.add_argument("--n-train", type=int, default=120, help="EMT training cells per set")
    p.add_argument("--n-test", type=int, default=60, help="EMT test cells per set")
    p.add_argument("--n-sparse", type=int, default=300, help="sparse points per species")
    h.add_soap_arguments(p, n_max=6, l_max=4, r_cut=5.0)
    h.add_data_dir_argument(p, "si_mlearn", h.SI_FILES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = p.parse_args(argv)
    h.command_line(SCRIPT, sys.argv[1:] if argv is None else argv)
    variants = ["none", "auto"] + [v.strip() for v in args.fixed.split(",") if v.strip()]
    results = {"settings": h.settings(args), "sets": {}}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        data = load_set(name, args)
        if data is None:
            print(f"\n{name}: data not found, skipped")
            continue
        train, test = data
        rows = [run_variant(train, test, args, v) for v in variants]
        results["sets"][name] = {"n_train": len(train), "n_test": len(test), "rows": rows}
        print_table(f"{name} ({len(train)} train / {len(test)} test cells)", rows)
    h.save_results(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
