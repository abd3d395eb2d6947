#!/usr/bin/env python
"""mlearn Si (AIMD-NVT + Elastic) in-distribution σ over several default splits, with and
without keeping equivalent frames on one side of the validation split.

For each ``--seeds`` value: ``GAP(random_state=seed)`` (every other setting default)
fitted on mlearn's AIMD-NVT + Elastic training cells, energies and forces only, and its
calibrated σ on the 16 AIMD-NVT + Elastic test cells: energy and force ZMS, 95 %
coverage, force ENCE. ``--plain`` turns the grouping off (every frame its own group,
the split before session 10). Prints one JSON line per seed.

Example (the two runs of docs/guide/uncertainty.md, session 10, side by side)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/si_split_seeds.py --seeds 0,1,2,3
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/si_split_seeds.py --seeds 0,1,2,3 --plain
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase.io import read

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "si_mlearn"
KEEP = ("AIMD-NVT", "Elastic")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--plain", action="store_true", help="no grouping of equivalent frames")
    args = p.parse_args(argv)
    if not SHARED.is_dir():
        print(f"no data at {SHARED}: nothing to do")
        return 0
    import gapkit.data.reading as reading
    from gapkit import GAP
    from gapkit.uncertainty import metrics as mt

    if args.plain:
        reading.EQUIVALENT_ENERGY_TOL = -1.0  # every frame a group of its own
    frames = {}
    for name in ("train", "test"):
        fr = [a for a in read(SHARED / f"{name}.xyz", ":") if a.info["config_type"] in KEEP]
        for a in fr:
            a.info.pop("mlearn_virial_stress", None)
        frames[name] = fr
    test = frames["test"]
    E = np.array([a.get_potential_energy() for a in test])
    F = [a.get_forces() for a in test]
    for seed in [int(s) for s in args.seeds.split(",")]:
        t = time.perf_counter()
        model = GAP(random_state=seed).fit(frames["train"])
        wall = time.perf_counter() - t
        pred, std = model.predict([a.copy() for a in test], return_std=True)
        ze = (pred.energy - E) / std.energy
        ef = np.concatenate([pf - f for pf, f in zip(pred.forces, F)])
        sf = np.concatenate(std.forces)
        zf = ef / sf
        print(json.dumps({
            "seed": seed, "grouped": not args.plain, "fit_s": round(wall, 1),
            "source": model.calibration_.source,
            "config_types": {k: v.as_dict() for k, v in model.calibration_.config_types.items()},
            "energy_zms": float(np.mean(ze ** 2)), "energy_coverage95": float(np.mean(np.abs(ze) < 1.96)),
            "forces_zms": float(np.mean(zf ** 2)), "forces_coverage95": float(np.mean(np.abs(zf) < 1.96)),
            "forces_ence": float(mt.forces_ence(ef, sf))}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
