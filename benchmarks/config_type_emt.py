#!/usr/bin/env python
"""Per-``config_type`` σ multipliers on data made here: EMT copper of two kinds.

Two ``config_type`` s whose errors differ: ``bulk_300K`` (32-atom fcc Cu, Langevin MD at
300 K) and ``vacancy_900K`` (the same cell with one vacancy, MD at 900 K). ``--n-train``
frames of each (default 150) go to ``GAP(random_state=...)`` with every other setting
at its default (so the default 20 % split holds out ~30 frames of each type, above the
20-frame threshold), and ``--n-test`` other frames of each (separate MD runs) are the
test set. The same fitted model is evaluated with its per-type multipliers and with
them emptied (the pooled calibration): energy and force ZMS and 95 % coverage per type.
One JSON object is printed.

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/config_type_emt.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def md(temperature: float, n: int, seed: int, vacancy: bool, label: str):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from uncertainty_calibration import sample_md

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    if vacancy:
        del atoms[0]
    atoms.calc = EMT()
    return sample_md(atoms, temperature, n, seed, label, every=20, n_equil=500, dt_fs=2.0,
                     friction=0.01)


def stats(model, frames) -> dict:
    E = np.array([a.get_potential_energy() for a in frames])
    F = [a.get_forces() for a in frames]
    pred, std = model.predict([a.copy() for a in frames], return_std=True)
    ze = (pred.energy - E) / std.energy
    zf = np.concatenate([((pf - f) / s).ravel() for pf, f, s in zip(pred.forces, F, std.forces)])
    return {"energy_zms": float(np.mean(ze ** 2)), "energy_coverage95": float(np.mean(np.abs(ze) < 1.96)),
            "forces_zms": float(np.mean(zf ** 2)), "forces_coverage95": float(np.mean(np.abs(zf) < 1.96))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=150)
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--random-state", type=int, default=0)
    args = p.parse_args(argv)
    from gapkit import GAP

    kinds = {"bulk_300K": (300.0, False), "vacancy_900K": (900.0, True)}
    train, test = [], {}
    t0 = time.perf_counter()
    for k, (name, (T, vac)) in enumerate(kinds.items()):
        train += md(T, args.n_train, 100 + k, vac, name)
        test[name] = md(T, args.n_test, 200 + k, vac, name)
    label_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = GAP(random_state=args.random_state).fit(train)
    out = {"label_s": round(label_s, 1), "fit_s": round(time.perf_counter() - t0, 1),
           "source": model.calibration_.source,
           "config_types": {k: v.as_dict() for k, v in model.calibration_.config_types.items()}}
    with_types = {name: stats(model, fr) for name, fr in test.items()}
    model.state_ = model.state_.replace(calibration=replace(model.calibration_, config_types={}))
    pooled = {name: stats(model, fr) for name, fr in test.items()}
    out["with_multipliers"], out["pooled"] = with_types, pooled
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
