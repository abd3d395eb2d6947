#!/usr/bin/env python
"""Energy errors and σ_E of mlearn Si's vacancy cells against how hot each cell is.

For a model trained without the vacancy cells (the ``si`` part of
``uncertainty_calibration.py`` caches one as ``si_aimd_elastic.npz``): predicts the 64
vacancy cells of ``train.xyz`` + ``test.xyz``, and prints the Pearson correlation of
the energy error with the cell's largest reference force component, and the errors,
σ_E and z of the cells cooler and hotter than ``--split`` eV/Å (the AIMD-NVT training
cells' largest force is given for scale). Used in docs/guide/uncertainty.md (session
10) to show that the vacancy-energy misses are a formation-energy error of the model.

Example::

    python benchmarks/si_vacancy_errors.py /tmp/s10/cache_ct/si_aimd_elastic.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import read

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "si_mlearn"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--split", type=float, default=2.5, help="largest force, eV/Å")
    args = p.parse_args(argv)
    if not SHARED.is_dir():
        print(f"no data at {SHARED}: nothing to do")
        return 0
    from gapkit import load

    both = read(SHARED / "train.xyz", ":") + read(SHARED / "test.xyz", ":")
    vac = [a for a in both if a.info["config_type"] == "Vacancy"]
    aimd = [a for a in both if a.info["config_type"] == "AIMD-NVT"]
    model = load(args.model)
    ref = np.array([a.get_potential_energy() for a in vac])
    fmax = np.array([np.abs(a.get_forces()).max() for a in vac])
    pred, std = model.predict([a.copy() for a in vac], return_std=True)
    err = pred.energy - ref
    z = err / std.energy
    out = {"n_cells": len(vac), "pearson_error_fmax": float(np.corrcoef(fmax, err)[0, 1]),
           "aimd_fmax_percentiles_5_50_95": [float(v) for v in np.percentile(
               [np.abs(a.get_forces()).max() for a in aimd], [5, 50, 95])]}
    for name, m in (("cool", fmax < args.split), ("hot", fmax >= args.split)):
        out[name] = {"n": int(m.sum()), "fmax_range": [float(fmax[m].min()), float(fmax[m].max())],
                     "error_eV_min_median_max": [float(np.min(err[m])), float(np.median(err[m])),
                                                 float(np.max(err[m]))],
                     "std_eV_min_median_max": [float(np.min(std.energy[m])),
                                               float(np.median(std.energy[m])),
                                               float(np.max(std.energy[m]))],
                     "z_min_median_max": [float(np.min(z[m])), float(np.median(z[m])),
                                          float(np.max(z[m]))]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
