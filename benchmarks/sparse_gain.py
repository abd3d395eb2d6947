"""Gain curve: test error against the number of sparse points per species.

One fit per data set takes every training environment as a sparse point (random
order); the streamed row factors of that fit give the exact solve for every nested
subset of its columns (``R^T R = A^T A``, so the QR of a column subset of ``R`` is the
factor of that subset of the design matrix), so the whole curve costs one fit plus a
small QR per point. Subsets are random (nested: the first ``k`` of a random
permutation per species); CUR, the default selection, is a little better than random
at small counts, so the curve is conservative where it is steep.

Data sets (made here unless noted; cached in ``--cache``):

``xtb_ethanol``
    GFN2-xTB ethanol Langevin MD at 500 K (train 300 frames) tested on 500 K and
    1000 K frames (the sets of ``uncertainty_calibration.py``).
``xtb_isopropanol``
    GFN2-xTB isopropanol (12 atoms) at 500 K, 300 train / 100 test frames.
``emt_cu``
    EMT Cu, 108-atom cells at 300 K: 30 train frames, tested on 300 K and 600 K.
``rmd17``
    shared rMD17 ethanol, 300 evenly spaced train frames, 200 test_MD frames.

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/sparse_gain.py \\
        --sets xtb_ethanol emt_cu --json /tmp/sparse_gain.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parent))
REPO = SCRIPT.parent.parent
SHARED = Path(os.environ.get("GAPKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
FRACTIONS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
SETS = ("xtb_ethanol", "xtb_isopropanol", "emt_cu", "rmd17")


def xtb_molecule_md(name, temperature, n_frames, seed):
    from ase.build import molecule
    from ase.constraints import FixCom
    from tblite.ase import TBLite
    from uncertainty_calibration import sample_md

    atoms = molecule(name)
    atoms.set_constraint(FixCom())
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return sample_md(atoms, temperature, n_frames, seed, f"{name}_{temperature:.0f}K",
                     20, 500, 0.5, friction=0.02, zero_rotation=True)


def data_set(name, cache):
    """(train, {test name: frames}, e0) of one set."""
    from ase.io import read
    from uncertainty_calibration import cached_frames, emt_md, xtb_e0, xtb_md

    if name == "xtb_ethanol":
        tr, _ = cached_frames(cache, "xtb_500K_train", lambda: xtb_md(500, 300, 1))
        t5, _ = cached_frames(cache, "xtb_500K_test", lambda: xtb_md(500, 150, 2))
        t10, _ = cached_frames(cache, "xtb_1000K_test", lambda: xtb_md(1000, 300, 3))
        return tr, {"500K": t5, "1000K": t10}, xtb_e0()
    if name == "xtb_isopropanol":
        tr, _ = cached_frames(cache, "xtb_ipa_500K_train",
                              lambda: xtb_molecule_md("C2H6CHOH", 500, 300, 11))
        te, _ = cached_frames(cache, "xtb_ipa_500K_test",
                              lambda: xtb_molecule_md("C2H6CHOH", 500, 100, 12))
        return tr, {"500K": te}, xtb_e0()
    if name == "emt_cu":
        tr, _ = cached_frames(cache, "cu_300K_train", lambda: emt_md(300, 60, 1))
        t3, _ = cached_frames(cache, "cu_300K_test", lambda: emt_md(300, 30, 2))
        t6, _ = cached_frames(cache, "cu_600K_test", lambda: emt_md(600, 30, 3))
        return tr[:30], {"300K": t3, "600K": t6}, "lstsq"
    if name == "rmd17":
        d = SHARED / "ethanol_rmd17"
        tr = read(d / "train.xyz", ":")
        te = read(d / "test_MD.xyz", ":")
        return ([tr[k] for k in np.linspace(0, 999, 300).astype(int)],
                {"test_MD": [te[k] for k in np.linspace(0, 999, 200).astype(int)]}, "lstsq")
    raise ValueError(f"unknown set {name!r}; choose from {SETS}")


def errors(model, frames):
    from harness import model_maes
    return model_maes(model, frames)


def subset_state(state, groups, cols):
    """The exact fit with only the sparse columns ``cols`` (same rows, noises, delta)."""
    import scipy.linalg as sla
    from gapkit.gp import solver as gp
    from gapkit.gp import terms
    from gapkit.gp.solver import RowGroup

    (t,) = state.terms
    M = len(state.alpha)
    sel = np.r_[cols, M]
    sub = {}
    for g, r in groups.items():
        R = sla.qr(r.R[:, sel], mode="r")[0][: len(sel)]
        sub[g] = RowGroup(R=np.triu(R), n_rows=r.n_rows, log_inv_w=r.log_inv_w)
    ft = terms.FittedTerm(t.descriptor, t.zeta, t.weight, t.sparse_q[cols],
                          t.sparse_species[cols], 0)
    L = gp.cholesky_kmm(terms.kernel_mm([ft]), 1e-8)
    sol = gp.solve(sub, L, state.delta, dict(state.noise))
    return state.replace(terms=(ft,), alpha=sol.alpha, kmm_cholesky=L, posterior_factor=sol.R)


def gain_curve(name, cache, seed=0):
    from gapkit import GAP

    train, tests, e0 = data_set(name, cache)
    numbers = np.concatenate([a.numbers for a in train])
    n_env = {int(z): int(np.sum(numbers == z)) for z in np.unique(numbers)}
    t0 = time.process_time()
    model = GAP(n_sparse={z: n for z, n in n_env.items()}, sparse_method="random",
                e0=e0, calibrate=False, random_state=seed).fit(train)
    cpu = time.process_time() - t0
    state, groups = model.state_, model._groups
    Z = state.terms[0].sparse_species
    rng = np.random.RandomState(seed)
    order = {int(z): rng.permutation(np.flatnonzero(Z == z)) for z in np.unique(Z)}
    rows = []
    for f in FRACTIONS:
        cols = np.sort(np.concatenate([o[: max(1, int(round(f * len(o))))]
                                       for o in order.values()]))
        model.state_ = subset_state(state, groups, cols)
        row = {"fraction": f, "M": int(len(cols)),
               "per_species": {int(z): int(np.sum(Z[cols] == z)) for z in order}}
        for tname, frames in tests.items():
            row[tname] = errors(model, frames)
        rows.append(row)
        print(name, f, row["M"], {k: (round(v["energy_mae_meV_atom"], 3),
                                      round(v["force_mae_meV_A"], 1))
                                  for k, v in row.items() if isinstance(v, dict)
                                  and "force_mae_meV_A" in v}, flush=True)
    return {"n_train_frames": len(train), "n_env": n_env, "fit_cpu_s": cpu, "rows": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--cache", type=Path,
                   default=Path.home() / ".cache/gapkit-bench/uncertainty_calibration")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in args.sets:
        out[name] = gain_curve(name, args.cache)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
