"""Benchmark of ``gapkit.diagnostics.check_data`` on rMD17 ethanol (issue 16).

Plants ``k`` corrupted frames of each kind in the 1000 DFT frames of
``/work/shared/data/ethanol_rmd17/train.xyz`` (or ``--data``):

* ``shift_0.1``, ``shift_0.3``: the energy shifted by +0.1 / +0.3 eV;
* ``flip``: the force on the atom with the largest force reversed;
* ``scale_1.3``: every force scaled by 1.3 (a stand-in for labels from another level
  of theory; no xTB labels of these frames are at hand),

runs :func:`check_data` with its defaults (5 folds, fold models on at most 300
frames) and reports, per kind, the detection rate (planted frames flagged) and the
median rank, the false-alarm rate (clean frames flagged) and the wall time.

Usage::

    python benchmarks/check_data_ethanol.py [--k 5] [--seed 0] [--json OUT.json]
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=None, help="default: check_data's")
    p.add_argument("--n-sparse", type=int, default=None, help="default: check_data's")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    frames = read_frames(args.data)
    planted = plant(frames, args.k, args.seed)
    t0 = time.perf_counter()
    opts = {k: v for k, v in (("max_train", args.max_train), ("n_sparse", args.n_sparse)) if v}
    rep = check_data(frames, random_state=args.seed, **opts)
    wall = time.perf_counter() - t0
    rank = {r["index"]: i for i, r in enumerate(rep["frames"])}
    flagged = {r["index"] for r in rep["frames"] if r["flagged"]}
    out = {"n_frames": len(frames), "k": args.k, "wall_time_s": wall, "kinds": {}}
    for kind in KINDS:
        idx = [i for i, kd in planted.items() if kd == kind]
        out["kinds"][kind] = {"detected": sum(i in flagged for i in idx), "n": len(idx),
                              "detection_rate": float(np.mean([i in flagged for i in idx])),
                              "ranks": sorted(rank[i] for i in idx)}
    clean = [i for i in range(len(frames)) if i not in planted]
    fa = [i for i in clean if i in flagged]
    out["false_alarms"] = len(fa)
    out["false_alarm_rate"] = len(fa) / len(clean)
    out["false_alarm_frames"] = [(i, next(r["reason"] for r in rep["frames"] if r["index"] == i))
                                 for i in fa]
    out["consistency"] = rep["consistency"]["message"]
    print(f"{len(frames)} frames, {args.k} planted per kind, options {opts or 'default'}, "
          f"wall time {wall:.1f} s")
    for kind, row in out["kinds"].items():
        print(f"  {kind:<10} detected {row['detected']}/{row['n']}  ranks {row['ranks']}")
    print(f"  false alarms {len(fa)}/{len(clean)} = {100 * out['false_alarm_rate']:.2f} %  {fa}")
    print(f"  consistency: {out['consistency']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(to_jsonable(out), fh, indent=1)


if __name__ == "__main__":
    main()
