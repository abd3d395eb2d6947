"""Benchmark of ``gapkit.diagnostics.check_data`` on rMD17 ethanol (issue 16).

Plants ``k`` corrupted frames of each kind in the 1000 DFT frames of
``/work/shared/data/ethanol_rmd17/train.xyz`` (or ``--data``):

* ``shift_0.1``, ``shift_0.3``: the energy shifted by +0.1 / +0.3 eV;
* ``flip``: the force on the atom with the largest force reversed;
* ``scale_1.3``: every force scaled by 1.3 (a stand-in for labels from another level
  of theory; no xTB labels of these frames are at hand),

runs :func:`check_data` with its defaults (5 folds, fold models on at most 200
frames) and reports, per kind, the detection rate (planted frames flagged) and the
ranks, the false-alarm rate (clean frames flagged) and the CPU time.

With several ``--seeds`` the planting and the folds are redrawn per seed and the rates
are pooled over seeds (detection: planted frames flagged / planted; false alarms:
clean frames flagged / clean frames checked). CPU time is ``time.process_time()`` of
the process (all its threads), the wall time is for information only.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/check_data_ethanol.py \
        [--k 5] [--seeds 0,1,2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from gapkit.data import read_frames
from gapkit.diagnostics.check_data import check_data
from gapkit.utils import to_jsonable

KINDS = ("shift_0.1", "shift_0.3", "flip", "scale_1.3")


def plant(frames: list, k: int, seed: int) -> dict[int, str]:
    """Corrupt ``k`` distinct frames per kind in place; returns {index: kind}."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(frames), k * len(KINDS), replace=False)
    planted = {}
    for n, idx in enumerate(chosen):
        kind = KINDS[n // k]
        a = frames[idx]
        e, f = a.get_potential_energy(), a.get_forces().copy()
        if kind.startswith("shift"):
            e += float(kind.split("_")[1])
        elif kind == "flip":
            j = int(np.argmax(np.linalg.norm(f, axis=1)))
            f[j] *= -1
        else:
            f *= 1.3
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        planted[int(idx)] = kind
    return planted


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/ethanol_rmd17/train.xyz")
    p.add_argument("--k", type=int, default=5, help="planted frames per kind (default 5)")
    p.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds SEED)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, pooled (default 0)")
    p.add_argument("--max-train", type=int, default=None, help="default: check_data's")
    p.add_argument("--n-sparse", type=int, default=None, help="default: check_data's")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    seeds = [args.seed] if args.seed is not None else [int(x) for x in args.seeds.split(",") if x]
    opts = {k: v for k, v in (("max_train", args.max_train), ("n_sparse", args.n_sparse)) if v}
    runs = [run_one(args.data, args.k, seed, opts) for seed in seeds]
    pooled = {"seeds": seeds, "k": args.k, "options": opts or "default", "kinds": {}}
    for kind in KINDS:
        det = sum(r["kinds"][kind]["detected"] for r in runs)
        n = sum(r["kinds"][kind]["n"] for r in runs)
        pooled["kinds"][kind] = {"detected": det, "n": n, "detection_rate": det / n}
    fa = sum(r["false_alarms"] for r in runs)
    n_clean = sum(r["n_clean"] for r in runs)
    pooled.update(false_alarms=fa, n_clean=n_clean, false_alarm_rate=fa / n_clean,
                  cpu_time_s=[r["cpu_time_s"] for r in runs])
    if len(runs) > 1:
        print(f"pooled over seeds {seeds}:")
        for kind, row in pooled["kinds"].items():
            print(f"  {kind:<10} detected {row['detected']}/{row['n']} "
                  f"({100 * row['detection_rate']:.0f} %)")
        print(f"  false alarms {fa}/{n_clean} = {100 * fa / n_clean:.2f} %")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(to_jsonable({"pooled": pooled, "runs": runs}), fh, indent=1)


def run_one(path: str, k: int, seed: int, opts: dict) -> dict:
    """Plant, check and score one seed; prints its lines and returns its numbers."""
    frames = read_frames(path)
    planted = plant(frames, k, seed)
    t0, c0 = time.perf_counter(), time.process_time()
    rep = check_data(frames, random_state=seed, **opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rank = {r["index"]: i for i, r in enumerate(rep["frames"])}
    flagged = {r["index"] for r in rep["frames"] if r["flagged"]}
    out = {"seed": seed, "n_frames": len(frames), "k": k, "wall_time_s": wall,
           "cpu_time_s": cpu, "kinds": {}}
    for kind in KINDS:
        idx = [i for i, kd in planted.items() if kd == kind]
        out["kinds"][kind] = {"detected": sum(i in flagged for i in idx), "n": len(idx),
                              "detection_rate": float(np.mean([i in flagged for i in idx])),
                              "ranks": sorted(rank[i] for i in idx)}
    clean = [i for i in range(len(frames)) if i not in planted]
    fa = [i for i in clean if i in flagged]
    out["false_alarms"] = len(fa)
    out["n_clean"] = len(clean)
    out["false_alarm_rate"] = len(fa) / len(clean)
    out["false_alarm_frames"] = [(i, next(r["reason"] for r in rep["frames"] if r["index"] == i))
                                 for i in fa]
    out["consistency"] = rep["consistency"]["message"]
    print(f"seed {seed}: {len(frames)} frames, {k} planted per kind, options {opts or 'default'}, "
          f"CPU {cpu:.0f} s (wall {wall:.0f} s)")
    for kind, row in out["kinds"].items():
        print(f"  {kind:<10} detected {row['detected']}/{row['n']}  ranks {row['ranks']}")
    print(f"  false alarms {len(fa)}/{len(clean)} = {100 * out['false_alarm_rate']:.2f} %  {fa}")
    print(f"  consistency: {out['consistency']}")
    return out


if __name__ == "__main__":
    main()
