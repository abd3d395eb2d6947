"""Approximation error of the variance basis: sigma over M_v sparse columns against all M.

For each data set one uncalibrated default GAP is fitted on a training part; then for
every ``M_v`` of ``--m-v`` (and for all M) the variance basis is chosen on its sparse
set (:func:`gapkit.model.variance.with_variance_basis`), the std is calibrated on a
held-out validation part (``recalibrate``: the same fit of the scales as the default
split) and the test frames are predicted with energy stds and fast force stds (the
MD calculator's). Printed per ``M_v``:

* ratio sigma(M_v) / sigma(M) of the epistemic std, 5/50/95 %, and its Spearman rank
  correlation with sigma(M), for total energies and per-atom fast force stds;
* ZMS = mean (error / sigma)**2 (1 when calibrated) and the 95 % coverage, for
  energies and force components, against the true errors, beside the same numbers of
  the full-M std;
* the one-off cost of the basis (greedy columns, factors; process time, seconds).

Sets: ``eth`` (rMD17 ethanol: 200 train, 100 validation from ``train.xyz``, 200
``test_MD`` frames), ``si`` (mlearn Si: 160 random train frames, the other 54 for
validation, the 25 ``test.xyz`` frames), ``xtb`` (the project's own xTB data: a
random 150 train + 50 validation split of ``data/train.xyz``, ``data/test.xyz``).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/uncertainty_subset.py \\
        --set xtb eth si --m-v 250 500 1000 2000 --json results/uncertainty_subset.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase.io import read
from scipy.stats import spearmanr

import gapkit
from gapkit.gp.subset import greedy_columns
from gapkit.model.variance import variance_factors, with_variance_basis
from harness import REPO, SHARED_DATA, save_results


def data_set(name: str):
    """(train, validation, test, e0) of one set."""
    if name == "eth":
        d = SHARED_DATA / "ethanol_rmd17"
        frames = read(d / "train.xyz", ":")
        test = read(d / "test_MD.xyz", ":")[::5]
        return frames[:200], frames[800:900], test, str(d / "isolated_atoms.xyz")
    if name == "si":
        d = SHARED_DATA / "si_mlearn"
        frames = read(d / "train.xyz", ":")
        test = read(d / "test.xyz", ":")
        for a in frames + test:
            a.info.pop("mlearn_virial_stress", None)
        idx = np.random.default_rng(0).permutation(len(frames))
        return ([frames[i] for i in idx[:160]], [frames[i] for i in idx[160:]], test, "lstsq")
    d = REPO / "data"
    frames = read(d / "train.xyz", ":")  # ordered by molecule: a random split
    idx = np.random.default_rng(0).permutation(len(frames))
    return ([frames[i] for i in idx[:150]], [frames[i] for i in idx[150:]],
            read(d / "test.xyz", ":"), str(d / "isolated_atoms.xyz"))


def errors(test):
    e = np.array([a.get_potential_energy() for a in test])
    return e, [a.get_forces() for a in test]


def stats(err: np.ndarray, sig: np.ndarray) -> dict:
    z = err / sig
    return {"zms": float(np.mean(z ** 2)), "coverage95": float(np.mean(np.abs(z) <= 1.96))}


def run_set(name: str, m_vs: list[int], model_path: Path | None) -> dict:
    train, val, test, e0 = data_set(name)
    t0 = time.process_time()
    if model_path is not None and model_path.is_file():
        model = gapkit.load(model_path)
    else:
        model = gapkit.GAP(e0=e0, random_state=0, calibrate=False).fit(train)
        if model_path is not None:
            model.save(model_path)
    t_fit = time.process_time() - t0
    base = model.state_.replace(variance_basis=None)
    M = len(base.alpha)
    e_ref, f_ref = errors(test)
    out = {"M": M, "n_train": len(train), "n_val": len(val), "n_test": len(test),
           "fit_process_s": t_fit, "by_m_v": {}}
    results = {}
    for m_v in [None] + [m for m in m_vs if m < M]:
        t0 = time.process_time()
        state = with_variance_basis(base, m_v if m_v is not None else "all")
        t_cols = time.process_time() - t0
        t0 = time.process_time()
        variance_factors(state)
        t_fac = time.process_time() - t0
        model.state_ = state
        model.recalibrate(val)
        pred, std = model.predict(test, return_std=True, force_std="fast")
        f_err = np.concatenate([p - r for p, r in zip(pred.forces, f_ref)]).ravel()
        f_sig = np.concatenate(std.forces).ravel()
        e_err = pred.energy - e_ref
        results[m_v] = {"e_epi": std.energy_epistemic,
                        "f_epi": np.concatenate([f[:, 0] for f in std.forces_epistemic])}
        residual = greedy_columns(base.terms, m_v, return_residual=True)[1] if m_v else 0.0
        row = {"basis_process_s": t_cols, "factors_process_s": t_fac, "span_residual": residual,
               "energy": stats(e_err, std.energy), "forces": stats(f_err, f_sig),
               "fast_force_ratio": {str(k): v for k, v in
                                    model.calibration_.fast_force_ratio.items()}}
        if m_v is not None:
            for key, what in (("e_epi", "energy"), ("f_epi", "forces")):
                r = results[m_v][key] / results[None][key]
                row[what]["ratio_5_50_95"] = [float(x) for x in np.percentile(r, [5, 50, 95])]
                row[what]["spearman"] = float(spearmanr(results[m_v][key], results[None][key])[0])
        out["by_m_v"]["all" if m_v is None else str(m_v)] = row
        tag = f"M_v = {'all (' + str(M) + ')' if m_v is None else m_v}"
        line = f"{name} {tag}: "
        for what in ("energy", "forces"):
            s = row[what]
            line += (f"{what} ZMS {s['zms']:.2f} cov95 {s['coverage95']:.3f}"
                     + (f" ratio {'/'.join(f'{x:.2f}' for x in s['ratio_5_50_95'])} "
                        f"rank {s['spearman']:.3f}" if "spearman" in s else "") + "; ")
        print(line + f"span residual {residual:.2g}; basis {t_cols:.2f} s + factors {t_fac:.2f} s",
              flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", nargs="+", default=["xtb", "eth", "si"], choices=["xtb", "eth", "si"])
    p.add_argument("--m-v", nargs="+", type=int, default=[250, 500, 1000, 2000])
    p.add_argument("--model-dir", type=Path, default=None,
                   help="keep (and reuse) the fitted models here")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    res = {}
    for name in args.set:
        if name != "xtb" and not SHARED_DATA.is_dir():
            print(f"{name}: shared data not found at {SHARED_DATA}, skipped")
            continue
        path = None if args.model_dir is None else args.model_dir / f"{name}.npz"
        res[name] = run_set(name, args.m_v, path)
    save_results(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
