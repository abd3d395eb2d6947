#!/usr/bin/env python
"""Descriptor comparison on the same data: 2-body, ACSF, SOAP and 2b+SOAP.

Every model is the same sparse GP (same training frames, noises, E0 and sparse-point
method); only the kernel's descriptor changes:

* ``2b``       -- :class:`gapkit.descriptors.TwoBody` at ``zeta=1``, unnormalised: the GP
                  energy is exactly a sum of pair potentials ``phi_ZZ'(r_ij)``;
* ``2b z=2``   -- the same radial features at ``zeta=2``: products of two distances from
                  one centre, still blind to angles;
* ``ACSF``     -- :class:`gapkit.descriptors.ACSF` (Behler-Parrinello G2 + G4, DScribe's
                  definitions), normalised, ``zeta=4``;
* ``SOAP``     -- :class:`gapkit.descriptors.SOAP`, ``zeta=4``;
* ``2b+SOAP``  -- additive kernel, one :class:`gapkit.Term` per descriptor (GAP's "2b+SOAP").

Data: revised MD17 ethanol (PBE; ``--data-dir``, else ``$GAPKIT_SHARED_DATA[/ethanol_rmd17]``,
else ``<repo>/../shared/data/ethanol_rmd17``) when present, else the project's default
GFN2-xTB data (``data/``). Training frames are evenly spaced over
``train.xyz``; test frames evenly spaced over ``test_MD.xyz`` (``data/test.xyz``).
Prints a markdown table (energy MAE per structure, force MAE, fit and prediction times)
and writes JSON with ``--out``.

Example::

    OMP_NUM_THREADS=1 python benchmarks/descriptors_ethanol.py --n-train 200 --n-test 200
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from ase.io import read

import harness as h

from gapkit import GAP, SOAP, Term
from gapkit.data import default_data_dir
from gapkit.descriptors import ACSF, TwoBody
from gapkit.metrics import reference_arrays

RMD17_FILES = ("train.xyz", "test_MD.xyz")


def evenly(frames: list, n: int) -> list:
    return [frames[i] for i in h.evenly_spaced(len(frames), n)]


def models(args) -> dict:
    soap = dict(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max)
    two = dict(r_cut=args.r_cut, n_gaussians=args.n_gaussians)
    n_many = args.n_sparse
    n_two = args.n_sparse_2b
    return {
        "2b": [Term(TwoBody(**two), zeta=1, n_sparse=n_two)],
        "2b z=2": [Term(TwoBody(**two), zeta=2, n_sparse=n_many)],
        "ACSF": [Term(ACSF(r_cut=args.r_cut), zeta=4, n_sparse=n_many)],
        "SOAP": [Term(SOAP(**soap), zeta=4, n_sparse=n_many)],
        "2b+SOAP": [Term(TwoBody(**two), zeta=1, n_sparse=n_two),
                    Term(SOAP(**soap), zeta=4, n_sparse=n_many)],
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--r-cut", type=float, default=5.0)
    p.add_argument("--n-max", type=int, default=6)
    p.add_argument("--l-max", type=int, default=4)
    p.add_argument("--n-gaussians", type=int, default=16)
    p.add_argument("--n-sparse", type=int, default=300, help="sparse points per species (many-body terms)")
    p.add_argument("--n-sparse-2b", type=int, default=100, help="sparse points per species (2b term)")
    p.add_argument("--only", nargs="*", default=None, help="subset of model names")
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--seed", type=int, default=0)
    h.add_data_dir_argument(p, files=RMD17_FILES)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    shared, how = h.resolve_data_dir(args.data_dir, "ethanol_rmd17", RMD17_FILES)
    have_rmd17 = all((shared / f).is_file() for f in RMD17_FILES)
    if args.data_dir is not None and not have_rmd17:
        p.error(f"--data-dir {shared} lacks {' or '.join(RMD17_FILES)}")
    if have_rmd17:
        source = f"rMD17 ethanol (PBE/def2-SVP), {shared} ({how})"
        train = evenly(read(shared / "train.xyz", ":"), args.n_train)
        test = evenly(read(shared / "test_MD.xyz", ":"), args.n_test)
    else:
        source = "default data (GFN2-xTB ethanol/methanol), data/"
        train = evenly(read(default_data_dir() / "train.xyz", ":"), args.n_train)
        test = evenly(read(default_data_dir() / "test.xyz", ":"), args.n_test)
    print(f"data: {source}; {len(train)} train / {len(test)} test frames", flush=True)
    ref = reference_arrays(test)
    n_atoms = np.array([len(a) for a in test])
    results = {}
    for name, terms in models(args).items():
        if args.only and name not in args.only:
            continue
        model = GAP(terms, sparse_method="cur", random_state=args.seed)
        t0 = time.perf_counter()
        model.fit(train)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(test)
        t_pred = time.perf_counter() - t0
        e_err = pred.energy - ref["energy"]
        f_err = pred.forces_flat - np.vstack(ref["forces"])
        results[name] = {
            "energy_mae_meV": 1e3 * float(np.mean(np.abs(e_err))),
            "energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(e_err) / n_atoms)),
            "forces_mae_meV_A": 1e3 * float(np.mean(np.abs(f_err))),
            "forces_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(f_err ** 2))),
            "fit_s": t_fit, "predict_us_per_atom": 1e6 * t_pred / n_atoms.sum(),
            "M": int(len(model.alpha_)),
            "features": [int(t.sparse_q.shape[1]) for t in model.terms_],
            "weights": [float(t.weight) for t in model.terms_],
        }
        r = results[name]
        print(f"{name:8s} E MAE {r['energy_mae_meV']:8.2f} meV  F MAE {r['forces_mae_meV_A']:7.1f} "
              f"meV/Å  fit {t_fit:6.1f} s  M={r['M']}", flush=True)
    print()
    print("| descriptor | features | E MAE (meV) | F MAE (meV/Å) | F RMSE (meV/Å) | fit (s) | predict (µs/atom) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {'+'.join(map(str, r['features']))} | {r['energy_mae_meV']:.1f} | "
              f"{r['forces_mae_meV_A']:.1f} | {r['forces_rmse_meV_A']:.1f} | {r['fit_s']:.0f} | "
              f"{r['predict_us_per_atom']:.0f} |")
    out = {"source": source, "args": h.settings(args), "results": results}
    h.save_results(args.out, out, indent=1, say="")
    return out


if __name__ == "__main__":
    main()
