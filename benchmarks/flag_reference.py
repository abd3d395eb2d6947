#!/usr/bin/env python
"""Relative flags (``3x``) on the packaged default data, for several units (issue #11).

Fits the default model (``gapkit fit``, packaged data, default held-out split), keeps
the calibrated epistemic force stds of the calibration atoms, and counts the frames
that ``FlagThreshold(relative=3)`` flags with each unit: ``old`` (the unit before
session 8: RMS over calibration frames of each frame's largest atom std) and the
``q`` quantiles over the calibration atoms of an atom's largest force-component std.
Sets: the packaged ``test.xyz`` (in distribution, 70 frames), and two far sets made
from it: one H atom removed from every frame, and pairs of test molecules 3.5-4.5 Å
apart (dimers). Only the force criterion is compared (the local-energy std of these
molecules is nearly constant). Light (one 200-frame fit).

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/flag_reference.py -o /tmp/d.gap
"""

from __future__ import annotations

import argparse

import numpy as np


def far_sets(test, seed=0):
    """H removal (one random H per frame) and dimers (consecutive test frames)."""
    rng = np.random.RandomState(seed)
    hrem, dimers = [], []
    for a in test:
        h = [i for i, s in enumerate(a.get_chemical_symbols()) if s == "H"]
        b = a.copy()
        del b[h[rng.randint(len(h))]]
        hrem.append(b)
    for k in range(0, len(test) - 1, 2):
        a, b = test[k].copy(), test[k + 1].copy()
        b.positions += a.positions.mean(0) - b.positions.mean(0) + [0, 0, 3.5 + rng.rand()]
        dimers.append(a + b)
    return {"H removal": hrem, "dimers": dimers}


def main(argv=None):
    import gapkit.model.calibration as cb
    from ase.io import read
    from gapkit import load
    from gapkit.cli import main as cli
    from gapkit.data import default_data_dir
    from gapkit.model.variance import collect_std
    from gapkit.uncertainty.flags import FlagThreshold

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True, help="model file to write")
    args = p.parse_args(argv)
    cap = {}
    orig = cb._reference_stds

    def keep(state, parts, frames, forces):
        cap.update(state=state, parts=parts, frames=frames)
        return orig(state, parts, frames, forces)

    cb._reference_stds = keep
    try:
        cli(["fit", "-o", args.output])
    finally:
        cb._reference_stds = orig
    fe = collect_std(cap["state"], cap["parts"], cap["frames"], True).forces_epistemic
    per_atom = np.concatenate([np.max(f, axis=1) for f in fe])
    units = {"old": float(np.sqrt(np.mean([np.max(f) ** 2 for f in fe])))}
    for q in (0.9, 0.95, 0.98, 0.99, 1.0):
        units[f"q{q}"] = float(np.quantile(per_atom, q))
    print(f"{len(per_atom)} calibration atoms; units (eV/Å): "
          + ", ".join(f"{k} {v:.4f}" for k, v in units.items()))
    model = load(args.output)
    test = read(f"{default_data_dir()}/test.xyz", ":")
    print("| set | unit | flagged by 3x | score min / p5 / max |\n| --- | --- | --- | --- |")
    for name, frames in {"test.xyz": test, **far_sets(test)}.items():
        _, std = model.predict(frames, return_std=True)
        for k, u in units.items():
            s = FlagThreshold(relative=3.0).structure_scores(
                std, frames, {"forces": u, "energy_per_atom": np.inf})
            print(f"| {name} | {k} | {np.mean(s > 1):.3f} ({int(np.sum(s > 1))}/{len(s)}) | "
                  f"{s.min():.2f} / {np.percentile(s, 5):.2f} / {s.max():.2f} |")


if __name__ == "__main__":
    main()
