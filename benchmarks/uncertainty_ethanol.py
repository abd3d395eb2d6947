#!/usr/bin/env python
"""Uncertainty benchmark on revised MD17 ethanol: calibration and out-of-distribution detection.

What it does
------------
1. Fits a gapkit GAP (``optimize=True``: ``delta`` and the energy/force noises by type-II
   maximum likelihood) on the first ``--n-train`` frames of ``train.xyz`` and prints the
   learned ``delta`` and the aleatoric noises. Predicts ``test_MD.xyz`` with the *raw* DTC
   variance, then recalibrates (``GAP.recalibrate``) on the next ``--n-val`` frames of
   ``train.xyz`` (used for nothing else) and predicts again. Calibration of energies and of
   force components for both: z-score mean/std, 68/95 % coverage, Gaussian NLL,
   miscalibration area, Spearman(|error|, sigma). For the energy Spearman also: its 90 %
   bootstrap interval over the test frames, the same Spearman on the validation frames
   (a second sample of the statistic), the "ceiling" (errors drawn from N(0, sigma^2)) and
   what a *perfect* sigma could reach on these errors, estimated from their excess kurtosis
   (``oracle_spearman``: for e ~ N(0, s^2) the kurtosis fixes how much the true s varies).
   All test_MD frames have 9 atoms, so the Spearman depends only on the epistemic sigma.
2. Out-of-distribution (OOD) detection by the energy std sigma_E, with the ``test_MD``
   frames as in-distribution negatives and as positives

   * ``test_H_removal.xyz`` frames with ``OH_dist`` > 1.4 Å (hydroxyl H pulled away),
   * ``test_dimers.xyz`` (isolated 2-atom molecules),
   * the methanol (6-atom) frames of ``test_eth_meth.xyz``,

   each separately and pooled. The score is the *total* sigma_E (epistemic and aleatoric in
   quadrature), either per atom (sigma_E / N_atoms) or per structure; AUROC from
   ``sklearn.metrics.roc_auc_score``. These sets are predicted energies-only
   (``forces=False``). The mean epistemic sigma_E / N_atoms of each set is also given.
3. If quippy is importable (and not ``--no-quip``), fits QUIP ``gap_fit`` on the same
   training frames with matched settings (the helpers of ``ethanol_rmd17.py``; one SOAP
   block per species with gapkit's actual per-species sparse counts; random sparse points
   like gapkit unless ``--quip-sparse-method cur_points``; by default gapkit's *learned*
   ``delta`` and noises, since gap_fit cannot learn them) and predicts with
   ``quippy.potential.Potential(param_filename=..., calc_args="local_gap_variance")``.

   What QUIP returns (checked with quippy-ase 0.10.3): through the ASE calculator the
   per-atom variances are in ``pot.extra_results["atoms"]["local_gap_variance"]`` (shape
   (n,), eV^2), *not* in ``atoms.arrays``; with forces requested there is also
   ``extra_results["atoms"]["gap_variance_gradient"]`` ((n, 3), the gradient of the summed
   variance with respect to positions, not a force variance); nothing is added to
   ``extra_results["config"]`` / ``atoms.info`` (no ``gap_variance`` or
   ``energy_variance``). The local variance is the prior-minus-Nyström term
   ``delta^2 (k(q,q) - k K_MM^-1 k)`` per atom (it tends to delta^2 for an environment
   unlike all sparse points): there is no posterior-weight term, no covariance between
   atoms and no force variance. The QUIP energy std used here is
   ``sqrt(sum_i local_gap_variance_i + (sigma_E sqrt(N))^2)`` with sigma_E the energy
   ``default_sigma`` given to gap_fit (per sqrt(atom), gap_fit's default
   ``sigma_per_atom=T``) as the aleatoric part. Summing local variances ignores the
   cross-atom covariances that gapkit's structure variance includes.

Everything goes to a temporary directory (``--keep-tmp`` keeps it). BLAS/OpenMP threads
default to 1 (``--threads``), as in ``ethanol_rmd17.py``.

Example (quick check)::

    python benchmarks/uncertainty_ethanol.py --n-train 100 --n-val 50 --n-test 100 \\
        --n-sparse C:100,H:200,O:100
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import harness as h

SCRIPT = Path(__file__).resolve()
CORE_FILES = h.ETHANOL_FILES
OOD_FILES = {"H_removal": "test_H_removal.xyz", "dimers": "test_dimers.xyz",
             "methanol": "test_eth_meth.xyz"}
# Reference settings of the accuracy benchmark (DESIGN.md): what "full size" means here.
FULL = {"n_train": 1000, "n_max": 8, "l_max": 6, "n_sparse": {"C": 1000, "H": 2000, "O": 1000}}
TARGETS = {"z_std": (0.8, 1.25), "coverage_95": (0.92, 0.97), "spearman_E": 0.5, "auroc": 0.95}
OH_CUT = 1.4


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def _opt_float(text):
    return None if str(text).lower() in ("none", "learned") else float(text)


def build_parser() -> argparse.ArgumentParser:
    p = h.new_parser(
        "gapkit uncertainty on rMD17 ethanol: calibration (raw DTC vs recalibrated) "
        "and OOD detection, side by side with QUIP's local_gap_variance.")
    p.add_argument("--n-train", type=int, default=800, help="first N frames of train.xyz")
    p.add_argument("--n-val", type=int, default=200,
                   help="the next N frames of train.xyz, used only by GAP.recalibrate")
    p.add_argument("--n-test", type=int, default=1000, help="first N frames of test_MD.xyz")
    h.add_data_dir_argument(p)
    h.add_soap_arguments(p, n_max=6, l_max=4)
    p.add_argument("--n-sparse", type=h.parse_species_counts, default="C:500,H:1000,O:500",
                   help="sparse points per species, SYMBOL:COUNT,...")
    h.add_sparse_method_argument(p, default="random", quip_note=False)
    p.add_argument("--energy-noise", type=float, default=0.001,
                   help="initial sigma_E for the optimiser, eV/sqrt(atom)")
    p.add_argument("--force-noise", type=float, default=0.02,
                   help="initial sigma_F for the optimiser, eV/Å")
    p.add_argument("--jitter", type=float, default=1e-8)
    p.add_argument("--quip-sparse-method", choices=("random", "cur_points"), default="random",
                   help="gap_fit sparse_method (random matches gapkit's default)")
    p.add_argument("--quip-delta", type=_opt_float, default=None,
                   help="gap_fit delta, eV (default: gapkit's learned delta)")
    p.add_argument("--quip-energy-noise", type=_opt_float, default=None,
                   help="gap_fit default_sigma energy, eV/sqrt(atom) (default: gapkit's learned)")
    p.add_argument("--quip-force-noise", type=_opt_float, default=None,
                   help="gap_fit default_sigma forces, eV/Å (default: gapkit's learned)")
    p.add_argument("--cutoff-transition-width", type=float, default=1.0,
                   help="QUIP SOAP cutoff transition width, Å")
    p.add_argument("--quip-timeout", type=float, default=3600.0, help="seconds allowed for gap_fit")
    p.add_argument("--seed", type=int, default=0, help="random seed (both codes)")
    h.add_run_arguments(p)
    return p


# ----------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------
def load_sets(data_dir: Path, args) -> tuple[dict, list[str]]:
    from ase.io import read

    notes = []
    train_all = read(str(data_dir / "train.xyz"), index=":")
    need = args.n_train + args.n_val
    if len(train_all) < need:
        raise SystemExit(f"train.xyz has {len(train_all)} frames, fewer than --n-train + --n-val = {need}")
    test = read(str(data_dir / "test_MD.xyz"), index=f":{args.n_test}")
    if len(test) < args.n_test:
        notes.append(f"test_MD.xyz has only {len(test)} frames")
    sets = {"train": train_all[:args.n_train], "val": train_all[args.n_train:need], "test_MD": test,
            "ood": {}}
    f = data_dir / OOD_FILES["H_removal"]
    if f.is_file():
        fr = [a for a in read(str(f), index=":") if float(a.info["OH_dist"]) > OH_CUT]
        sets["ood"][f"H_removal (OH>{OH_CUT} Å)"] = fr
    f = data_dir / OOD_FILES["dimers"]
    if f.is_file():
        sets["ood"]["dimers"] = read(str(f), index=":")
    f = data_dir / OOD_FILES["methanol"]
    if f.is_file():
        sets["ood"]["methanol (eth_meth)"] = [a for a in read(str(f), index=":") if len(a) == 6]
    for name, fn in OOD_FILES.items():
        if not (data_dir / fn).is_file():
            notes.append(f"{fn} missing: OOD set {name} skipped")
    return sets, notes


def energies_of(frames):
    import numpy as np

    return np.array([a.get_potential_energy() for a in frames], dtype=np.float64)


def natoms_of(frames):
    import numpy as np

    return np.array([len(a) for a in frames], dtype=np.float64)


# ----------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------
def calib(errors, std, n_draws: int = 100, seed: int = 0, n_boot: int = 0) -> dict:
    """``calibration_metrics`` plus ``spearman_ideal``: the mean Spearman(|e|, sigma) when the
    errors are drawn from N(0, sigma^2) with the predicted sigmas, i.e. what a perfectly
    calibrated sigma of the same spread would reach. With ``n_boot`` > 0 also
    ``spearman_ci90``: the 5-95 % percentiles of the Spearman over ``n_boot`` bootstrap
    resamples of the frames (its sampling uncertainty)."""
    import numpy as np
    from scipy import stats

    from gapkit.uncertainty import calibration_metrics

    out = calibration_metrics(errors, std)
    s = np.asarray(std, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    rhos = [stats.spearmanr(np.abs(s * rng.standard_normal(s.size)), s).statistic
            for _ in range(n_draws)] if np.ptp(s) > 0 else [float("nan")]
    out["spearman_ideal"] = float(np.mean(rhos))
    if n_boot > 0 and np.ptp(s) > 0:
        a = np.abs(np.asarray(errors, dtype=np.float64).ravel())
        boots = []
        for _ in range(n_boot):
            i = rng.integers(0, s.size, s.size)
            boots.append(stats.spearmanr(a[i], s[i]).statistic)
        out["spearman_ci90"] = [float(x) for x in np.percentile(boots, [5, 95])]
    return out


def oracle_spearman(errors, n: int = 200_000, seed: int = 0) -> dict:
    """What a *perfect* sigma could reach on these errors, estimated from their shape alone.

    If e_k ~ N(0, s_k^2) with the true per-frame std s_k (a Gaussian scale mixture), the excess
    kurtosis of e is 3 Var(s^2)/E[s^2]^2: the errors themselves bound how much the true std
    varies between frames, hence Spearman(|e|, s). ``cv2`` = kurtosis/3 (its 5-95 % bootstrap
    range too); ``gamma`` / ``lognormal``: the Spearman(|e|, s) of a simulated scale mixture whose
    variance s^2 is gamma / lognormal distributed with that CV^2. Uses only the test errors, no
    sigma: a diagnostic of the data set, not a predictor."""
    import numpy as np
    from scipy import stats

    e = np.asarray(errors, dtype=np.float64).ravel()
    e = e - e.mean()
    rng = np.random.default_rng(seed)
    kurt = float(stats.kurtosis(e))
    boots = np.percentile([stats.kurtosis(rng.choice(e, e.size)) for _ in range(500)], [5, 95])

    def sim(cv2):
        if not cv2 > 0:  # no excess kurtosis: no evidence that the true std varies
            return 0.0, 0.0
        g = rng.gamma(1.0 / cv2, cv2, n)
        lv = rng.normal(0.0, np.sqrt(np.log1p(cv2)), n)
        return tuple(float(stats.spearmanr(np.abs(np.sqrt(v) * rng.standard_normal(n)), v).statistic)
                     for v in (g, np.exp(lv)))

    out = {"excess_kurtosis": kurt, "excess_kurtosis_ci90": [float(x) for x in boots],
           "cv2": kurt / 3.0}
    out["gamma"], out["lognormal"] = sim(kurt / 3.0)
    out["gamma_ci90"] = [sim(max(b, 0.0) / 3.0)[0] for b in boots]
    return out


def auroc_block(sig_in, n_in, ood: dict) -> dict:
    """AUROC of sigma_E per atom and total, each OOD set vs in-distribution, and pooled."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    out = {}
    pooled_s, pooled_n = [], []
    for name, (s, n) in ood.items():
        pooled_s.append(s)
        pooled_n.append(n)
        out[name] = _auroc(sig_in, n_in, s, n, roc_auc_score)
    if len(ood) > 1:
        out["pooled"] = _auroc(sig_in, n_in, np.concatenate(pooled_s), np.concatenate(pooled_n),
                               roc_auc_score)
    return out


def _auroc(s0, n0, s1, n1, roc_auc_score):
    import numpy as np

    y = np.r_[np.zeros(len(s0)), np.ones(len(s1))]
    s = np.r_[s0, s1]
    n = np.r_[n0, n1]
    return {"per_atom": float(roc_auc_score(y, s / n)), "total": float(roc_auc_score(y, s)),
            "n_pos": int(len(s1)), "n_neg": int(len(s0))}


# ----------------------------------------------------------------------------------
# gapkit
# ----------------------------------------------------------------------------------
def run_gapkit(args, data_dir: Path, sets: dict, timing: dict) -> tuple[dict, object]:
    import numpy as np
    from ase.data import chemical_symbols

    from gapkit import GAP, SOAP

    test, ood = sets["test_MD"], sets["ood"]
    E_ref, F_ref = h.reference_labels(test)
    n_test = natoms_of(test)
    model = GAP(SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=args.sigma),
                zeta=args.zeta, n_sparse=dict(args.n_sparse), sparse_method=args.sparse_method,
                energy_noise=args.energy_noise, force_noise=args.force_noise, jitter=args.jitter,
                e0=str(data_dir / "isolated_atoms.xyz"), optimize=True, random_state=args.seed)
    t0 = time.perf_counter()
    model.fit(sets["train"])
    timing["gapkit fit + type-II ML"] = time.perf_counter() - t0
    res = {"delta": float(model.delta_), **h.noise_fields(model),
           "log_marginal_likelihood": float(model.log_marginal_likelihood_),
           "n_sparse": {chemical_symbols[z]: int(np.sum(model.sparse_species_ == z))
                        for z in model.species_},
           "n_features": int(model.descriptor_.n_features)}
    print(f"[{time.strftime('%H:%M:%S')}] gapkit fit {timing['gapkit fit + type-II ML']:.1f} s: "
          f"delta={model.delta_:.4g} eV, noise={model.noise_}", flush=True)

    def evaluate(tag: str):
        t0 = time.perf_counter()
        pred, std = model.predict(test, return_std=True)
        timing[f"gapkit {tag}: predict test_MD E+F+σ"] = time.perf_counter() - t0
        dE = pred.energy - E_ref
        dF = np.concatenate([(p - r).ravel() for p, r in zip(pred.forces, F_ref)])
        sF = np.concatenate([s.ravel() for s in std.forces])
        out = {"energy": calib(dE, std.energy, n_boot=1000), "forces": calib(dF, sF),
               "energy_mae_meV": float(np.mean(np.abs(dE)) * 1e3),
               "force_mae_meV_per_A": float(np.mean(np.abs(dF)) * 1e3),
               "mean_sigma_E_meV": float(np.mean(std.energy) * 1e3),
               "mean_sigma_E_epistemic_meV": float(np.mean(std.energy_epistemic) * 1e3),
               "mean_sigma_F_meV_per_A": float(np.mean(sF) * 1e3),
               "mean_sigma_F_epistemic_meV_per_A": float(np.mean(np.concatenate(
                   [s.ravel() for s in std.forces_epistemic])) * 1e3),
               "mean_epistemic_sigma_E_per_atom_meV": {
                   "test_MD": float(np.mean(std.energy_epistemic / n_test) * 1e3)},
               "energy_mae_per_atom_meV": {"test_MD": float(np.mean(np.abs(dE) / n_test) * 1e3)}}
        t0 = time.perf_counter()
        scores = {}
        for name, frames in ood.items():
            p, s = model.predict(frames, return_std=True, forces=False)
            n = natoms_of(frames)
            scores[name] = (s.energy, n)
            out["mean_epistemic_sigma_E_per_atom_meV"][name] = float(
                np.mean(s.energy_epistemic / n) * 1e3)
            out["energy_mae_per_atom_meV"][name] = float(
                np.mean(np.abs(p.energy - energies_of(frames)) / n) * 1e3)
        out["auroc"] = auroc_block(std.energy, n_test, scores)
        # the same Spearman on the held-out validation frames: a second sample of the
        # in-distribution statistic (for "recal" these frames also fitted the two scales)
        pv, sv = model.predict(sets["val"], return_std=True, forces=False)
        out["val_energy"] = calib(pv.energy - energies_of(sets["val"]), sv.energy, n_boot=1000)
        if tag == "raw":
            out["oracle_E"] = oracle_spearman(dE)
        timing[f"gapkit {tag}: predict OOD sets E+σ"] = time.perf_counter() - t0
        print(f"[{time.strftime('%H:%M:%S')}] gapkit {tag} evaluated "
              f"(test {timing[f'gapkit {tag}: predict test_MD E+F+σ']:.1f} s, OOD "
              f"{timing[f'gapkit {tag}: predict OOD sets E+σ']:.1f} s)", flush=True)
        return out

    res["raw"] = evaluate("raw")
    t0 = time.perf_counter()
    model.recalibrate(sets["val"])
    timing["gapkit recalibrate (val)"] = time.perf_counter() - t0
    res["variance_scale"] = model.calibration_.as_dict()
    print(f"[{time.strftime('%H:%M:%S')}] recalibrated in {timing['gapkit recalibrate (val)']:.1f} s: "
          f"{model.calibration_}", flush=True)
    res["recal"] = evaluate("recal")
    return res, model


# ----------------------------------------------------------------------------------
# QUIP
# ----------------------------------------------------------------------------------
def run_quip(args, data_dir: Path, sets: dict, g: dict, tmp: Path, timing: dict) -> dict:
    import numpy as np
    from quippy.potential import Potential

    train, test, ood = sets["train"], sets["test_MD"], sets["ood"]
    delta = g["delta"] if args.quip_delta is None else args.quip_delta
    sE = g["noise_level"]["energy"] if args.quip_energy_noise is None else args.quip_energy_noise
    sF = g["noise_level"]["forces"] if args.quip_force_noise is None else args.quip_force_noise
    soap = dict(r_cut=args.r_cut, cutoff_width=args.cutoff_transition_width, n_max=args.n_max,
                l_max=args.l_max, sigma=args.sigma, zeta=args.zeta, delta=delta)
    e0 = h.isolated_energies(data_dir / "isolated_atoms.xyz")
    n_sparse = h.cap_sparse_counts(train, dict(g["n_sparse"]))  # gapkit's actual counts
    train_xyz, gp_xml = tmp / "quip_train.xyz", tmp / "gp.xml"
    h.write_quip_xyz(train, train_xyz, periodic=False, cutoff=args.r_cut, config_type="train")
    cmd = h.gap_fit_command(train_xyz, gp_xml, soap, n_sparse, e0, (sE, sF), args.jitter,
                            args.seed, sparse_method=args.quip_sparse_method)
    print(f"[{time.strftime('%H:%M:%S')}] running gap_fit (timeout {args.quip_timeout:.0f} s) ...",
          flush=True)
    try:
        timing["QUIP gap_fit"] = h.run_gap_fit(cmd, tmp, gp_xml, args.quip_timeout)["fit_time_s"]
    except h.QuipTimeout:
        timing["QUIP gap_fit"] = args.quip_timeout
        raise
    print(f"[{time.strftime('%H:%M:%S')}] gap_fit done in {timing['QUIP gap_fit']:.1f} s", flush=True)

    pot = Potential(param_filename=str(gp_xml), calc_args="local_gap_variance")
    seen_keys = {"atoms": set(), "config": set()}

    def predict(frames, forces: bool):
        E, F, V = [], [], []
        pot.set_default_properties(["energy", "forces"] if forces else ["energy"])
        for a in frames:
            b = a.copy()  # the copy drops the reference calculator
            b.calc = pot
            E.append(b.get_potential_energy())
            if forces:
                F.append(np.array(b.get_forces()))
            ex = pot.extra_results
            seen_keys["atoms"].update(ex["atoms"].keys())
            seen_keys["config"].update(ex["config"].keys())
            seen_keys["atoms"].update(f"atoms.arrays:{k}" for k in b.arrays
                                      if k not in ("numbers", "positions"))
            V.append(np.asarray(ex["atoms"]["local_gap_variance"], dtype=np.float64).copy())
        return np.array(E), F, V

    def std_from(V, n):
        epi = np.sqrt(np.array([max(float(v.sum()), 0.0) for v in V]))
        return epi, np.hypot(epi, sE * np.sqrt(n))

    E_ref, F_ref = h.reference_labels(test)
    n_test = natoms_of(test)
    t0 = time.perf_counter()
    E, F, V = predict(test, forces=True)
    timing["QUIP predict test_MD E+F+var"] = time.perf_counter() - t0
    dE = E - E_ref
    dF = np.concatenate([(p - r).ravel() for p, r in zip(F, F_ref)])
    epi, tot = std_from(V, n_test)
    out = {"delta": delta, "default_sigma": {"energy": sE, "forces": sF}, "n_sparse": n_sparse,
           "gap_fit_command": shlex.join(cmd),
           "energy": calib(dE, tot, n_boot=1000),
           "energy_mae_meV": float(np.mean(np.abs(dE)) * 1e3),
           "force_mae_meV_per_A": float(np.mean(np.abs(dF)) * 1e3),
           "mean_sigma_E_meV": float(np.mean(tot) * 1e3),
           "mean_sigma_E_epistemic_meV": float(np.mean(epi) * 1e3),
           "min_local_variance": float(min(v.min() for v in V)),
           "mean_epistemic_sigma_E_per_atom_meV": {"test_MD": float(np.mean(epi / n_test) * 1e3)},
           "energy_mae_per_atom_meV": {"test_MD": float(np.mean(np.abs(dE) / n_test) * 1e3)}}
    t0 = time.perf_counter()
    scores = {}
    for name, frames in ood.items():
        Eo, _, Vo = predict(frames, forces=False)
        n = natoms_of(frames)
        e_o, t_o = std_from(Vo, n)
        scores[name] = (t_o, n)
        out["mean_epistemic_sigma_E_per_atom_meV"][name] = float(np.mean(e_o / n) * 1e3)
        out["energy_mae_per_atom_meV"][name] = float(
            np.mean(np.abs(Eo - energies_of(frames)) / n) * 1e3)
    out["auroc"] = auroc_block(tot, n_test, scores)
    Ev, _, Vv = predict(sets["val"], forces=False)
    out["val_energy"] = calib(Ev - energies_of(sets["val"]), std_from(Vv, natoms_of(sets["val"]))[1],
                              n_boot=1000)
    out["oracle_E"] = oracle_spearman(dE)
    timing["QUIP predict OOD sets E+var"] = time.perf_counter() - t0
    out["result_keys_seen"] = {k: sorted(v) for k, v in seen_keys.items()}
    return out


# ----------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------
def _f(x, fmt=".3f"):
    if x is None:
        return "n/a"
    try:
        import math
        if isinstance(x, float) and math.isnan(x):
            return "nan"
    except Exception:  # noqa: BLE001
        pass
    return format(x, fmt)


def _scales(d: dict) -> str:
    """"s_Nys, s_post" of a ``VarianceScale.as_dict()``, or per atomic number of a
    ``{Z: VarianceScale.as_dict()}`` table (``"0"``: every species)."""
    if "nystrom" in d:
        return f"{d['nystrom']:.3g}, {d['posterior']:.3g}"
    return "; ".join(f"Z={z}: {_scales(v)}" for z, v in d.items()) or "1, 1"


def _mark(x, target) -> str:
    if x is None:
        return "n/a"
    if isinstance(target, tuple):
        ok = target[0] <= x <= target[1]
    else:
        ok = x >= target
    return f"{x:.3f} {'✓' if ok else '✗'}"


def print_report(cmdline: str, args, res: dict, timing: dict, notes: list[str]) -> None:
    g = res.get("gapkit")
    q = res.get("quip") if res.get("quip", {}) and "error" not in res.get("quip", {}) else None
    raw, rec = g["raw"], g["recal"]
    rows = []

    def sec(title):
        rows.append((f"**{title}**", "", "", "", ""))

    def row(label, target, a, b, c):
        rows.append((label, target, a, b, c))

    sec("model")
    sc = g["variance_scale"]
    row("delta [eV]", "", f"{g['delta']:.4g} (learned)", "same", _f(q and q["delta"], ".4g"))
    row("aleatoric σ_E [meV/√atom]", "", f"{g['noise_level'].get('energy', float('nan')) * 1e3:.3f} (learned)",
        "same", _f(q and q["default_sigma"]["energy"] * 1e3, ".3f") + (" (default_sigma)" if q else ""))
    row("aleatoric σ_F [meV/Å]", "", f"{g['noise_level'].get('forces', float('nan')) * 1e3:.2f} (learned)",
        "same", _f(q and q["default_sigma"]["forces"] * 1e3, ".2f") + (" (default_sigma)" if q else ""))
    row("variance scales E (s_Nys, s_post)", "", "1, 1", _scales(sc["energy"]), "-")
    row("variance scales F (s_Nys, s_post)", "", "1, 1", _scales(sc["forces"]), "n/a")
    ns = ",".join(f"{k}:{v}" for k, v in g["n_sparse"].items())
    row("sparse points", "", f"{ns} ({args.sparse_method})", "same",
        (",".join(f"{k}:{v}" for k, v in q["n_sparse"].items()) + f" ({args.quip_sparse_method})")
        if q else "n/a")
    sec(f"accuracy, test_MD ({len(res['_n']['test_MD'])} frames)")
    row("E MAE [meV/structure]", "", _f(raw["energy_mae_meV"], ".2f"), "same",
        _f(q and q["energy_mae_meV"], ".2f"))
    row("F MAE [meV/Å]", "", _f(raw["force_mae_meV_per_A"], ".2f"), "same",
        _f(q and q["force_mae_meV_per_A"], ".2f"))
    sec("energy calibration, test_MD (total σ_E)")
    qE = q["energy"] if q else {}
    for key, label, target in (("z_mean", "z mean", "≈ 0"), ("z_std", "z std", TARGETS["z_std"]),
                               ("coverage_68", "coverage 68 %", "≈ 0.68"),
                               ("coverage_95", "coverage 95 %", TARGETS["coverage_95"]),
                               ("nll", "NLL [per structure, eV units]", "lower"),
                               ("miscalibration_area", "miscalibration area", "→ 0"),
                               ("spearman", "Spearman(abs E err, σ_E)", TARGETS["spearman_E"])):
        if isinstance(target, (tuple, float)):
            tstr = (f"[{target[0]}, {target[1]}]" if isinstance(target, tuple) else f"≥ {target}")
            vals = [_mark(raw["energy"][key], target), _mark(rec["energy"][key], target),
                    _mark(qE.get(key), target) if q else "n/a"]
        else:
            tstr = target
            vals = [_f(raw["energy"][key]), _f(rec["energy"][key]), _f(qE.get(key)) if q else "n/a"]
        row("E " + label, tstr, *vals)
    def ci(block):
        c = block.get("spearman_ci90")
        return "n/a" if c is None else f"[{c[0]:.2f}, {c[1]:.2f}]"

    row("E Spearman 90 % bootstrap interval (frames)", "", ci(raw["energy"]), ci(rec["energy"]),
        ci(qE) if q else "n/a")
    nv = args.n_val

    def val_sp(block):
        v = block.get("val_energy")
        return "n/a" if v is None else f"{v['spearman']:.3f} {ci(v)}"

    row(f"E Spearman on the {nv} validation frames", "", val_sp(raw), val_sp(rec),
        val_sp(q) if q else "n/a")
    row("E Spearman ceiling (e ~ N(0, σ_E²))", "", _f(raw["energy"]["spearman_ideal"]),
        _f(rec["energy"]["spearman_ideal"]), _f(qE.get("spearman_ideal")) if q else "n/a")

    def orc(block):
        o = block.get("oracle_E")
        if o is None:
            return "n/a"
        return (f"{o['gamma']:.2f} [{o['gamma_ci90'][0]:.2f}, {o['gamma_ci90'][1]:.2f}] / "
                f"{o['lognormal']:.2f} (κ {o['excess_kurtosis']:.2f})")

    row("E Spearman of a perfect σ, from the error kurtosis κ: gamma [90 %] / lognormal", "",
        orc(raw), "same", orc(q) if q else "n/a")
    row("mean σ_E total / epistemic [meV]", "",
        f"{raw['mean_sigma_E_meV']:.2f} / {raw['mean_sigma_E_epistemic_meV']:.2f}",
        f"{rec['mean_sigma_E_meV']:.2f} / {rec['mean_sigma_E_epistemic_meV']:.2f}",
        f"{q['mean_sigma_E_meV']:.2f} / {q['mean_sigma_E_epistemic_meV']:.2f}" if q else "n/a")
    sec("force calibration, test_MD (components)")
    for key, label, target in (("z_mean", "z mean", "≈ 0"), ("z_std", "z std", TARGETS["z_std"]),
                               ("coverage_68", "coverage 68 %", "≈ 0.68"),
                               ("coverage_95", "coverage 95 %", TARGETS["coverage_95"]),
                               ("nll", "NLL [per component, eV/Å units]", "lower"),
                               ("miscalibration_area", "miscalibration area", "→ 0"),
                               ("spearman", "Spearman(abs F err, σ_F)", "higher")):
        if isinstance(target, tuple):
            vals = [_mark(raw["forces"][key], target), _mark(rec["forces"][key], target)]
            tstr = f"[{target[0]}, {target[1]}]"
        else:
            vals = [_f(raw["forces"][key]), _f(rec["forces"][key])]
            tstr = target
        row("F " + label, tstr, *vals, "n/a (no force variance)")
    row("F Spearman ceiling (e ~ N(0, σ_F²))", "", _f(raw["forces"]["spearman_ideal"]),
        _f(rec["forces"]["spearman_ideal"]), "n/a")
    row("mean σ_F total / epistemic [meV/Å]", "",
        f"{raw['mean_sigma_F_meV_per_A']:.2f} / {raw['mean_sigma_F_epistemic_meV_per_A']:.2f}",
        f"{rec['mean_sigma_F_meV_per_A']:.2f} / {rec['mean_sigma_F_epistemic_meV_per_A']:.2f}", "n/a")
    sec("OOD AUROC vs test_MD: σ_E/N_atoms ; σ_E")
    for name in list(res["_n"]["ood"]) + (["pooled"] if len(res["_n"]["ood"]) > 1 else []):
        def au(block):
            a = block["auroc"].get(name)
            return "n/a" if a is None else (f"{_mark(a['per_atom'], TARGETS['auroc'])} ; "
                                            f"{_mark(a['total'], TARGETS['auroc'])}")
        npos = raw["auroc"][name]["n_pos"]
        row(f"AUROC {name} (n={npos})", f"≥ {TARGETS['auroc']}", au(raw), au(rec),
            au(q) if q else "n/a")
    sec("mean epistemic σ_E/N_atoms (E MAE/N_atoms) [meV/atom]")
    for name in ["test_MD"] + list(res["_n"]["ood"]):
        def ms(block):
            return (f"{block['mean_epistemic_sigma_E_per_atom_meV'][name]:.3g} "
                    f"({block['energy_mae_per_atom_meV'][name]:.3g})")
        row(name, "", ms(raw), ms(rec), ms(q) if q else "n/a")
    sec("timing [s]")
    row("load data", "", _f(timing.get("load data"), ".1f"), "", "")
    row("fit", "", _f(timing.get("gapkit fit + type-II ML"), ".1f") + " (incl. type-II ML)",
        _f(timing.get("gapkit recalibrate (val)"), ".1f") + " (recalibrate)",
        _f(timing.get("QUIP gap_fit"), ".1f") + " (gap_fit)" if "QUIP gap_fit" in timing else "n/a")
    row("predict test_MD E+F+σ", "", _f(timing.get("gapkit raw: predict test_MD E+F+σ"), ".1f"),
        _f(timing.get("gapkit recal: predict test_MD E+F+σ"), ".1f"),
        _f(timing.get("QUIP predict test_MD E+F+var"), ".1f") if q else "n/a")
    row("predict OOD sets + val E+σ", "", _f(timing.get("gapkit raw: predict OOD sets E+σ"), ".1f"),
        _f(timing.get("gapkit recal: predict OOD sets E+σ"), ".1f"),
        _f(timing.get("QUIP predict OOD sets E+var"), ".1f") if q else "n/a")
    row("total wall", "", _f(timing.get("total"), ".1f"), "", "")

    print()
    print(f"command: `{cmdline}`")
    print()
    for n in notes:
        print(f"> {n}")
    print()
    h.print_markdown_table(("quantity", "target", "gapkit raw DTC", "gapkit recalibrated",
                            "QUIP local_gap_variance"), rows)
    print()
    print("✓/✗: inside/outside the target. OOD AUROC cells: score σ_E/N_atoms ; score σ_E "
          "(total σ_E in both, i.e. epistemic and aleatoric in quadrature). Spearman ceiling: "
          "mean Spearman(|e|, σ) over errors drawn from N(0, σ²) with the predicted σ, what a "
          "perfectly calibrated σ of this spread gives on average (on test_MD every frame has 9 "
          "atoms, so the constant aleatoric term lowers this ceiling but not the ranking: the "
          "Spearman itself depends only on the epistemic σ). Perfect σ from the kurtosis: if "
          "e ~ N(0, s²) with a frame-dependent true s, the excess kurtosis κ of the test errors "
          "fixes CV²(s²) = κ/3, and a simulated scale mixture with gamma (lognormal) distributed s² "
          "of that CV² gives this Spearman(|e|, s): the most any σ could reach on these errors "
          "under that model. gapkit σ_E = sqrt(s_N·Nyström + s_P·posterior + "
          "(σ_E·√N)²) over the whole structure (cross-atom covariances included); QUIP σ_E = "
          "sqrt(Σ_i local_gap_variance_i + (default_sigma_E·√N)²) (no posterior term, no "
          "covariances). OOD sets predicted energies-only.")
    if q:
        print(f"QUIP result keys seen: {q['result_keys_seen']}")
        print(f"gap_fit command: {q['gap_fit_command']}")
    if res.get("quip") and "error" in res["quip"]:
        print(f"QUIP FAILED: {res['quip']['error']}")


# ----------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    cmdline = shlex.join(["python", os.path.relpath(SCRIPT, os.getcwd()), *argv])
    print(f"command: {cmdline}", flush=True)

    data_dir = h.find_data_dir(args.data_dir, "ethanol_rmd17", CORE_FILES,
                               "the rMD17 ethanol folder")
    if data_dir is None:
        return 0
    if args.n_train < 1 or args.n_val < 1 or args.n_test < 1:
        parser.error("--n-train, --n-val and --n-test must be >= 1")
    h.set_thread_env(args.threads)

    t_all = time.perf_counter()
    notes = []
    subset = []
    if args.n_train < FULL["n_train"]:
        subset.append(f"{args.n_train} of the 1000 training frames (next {args.n_val} held out "
                      "for recalibration)")
    if args.n_test < 1000:
        subset.append(f"{args.n_test} of the 1000 test_MD frames")
    if (args.n_max, args.l_max) != (FULL["n_max"], FULL["l_max"]):
        subset.append(f"SOAP n_max={args.n_max}, l_max={args.l_max} (reference n_max 8, l_max 6)")
    if any(args.n_sparse.get(k, 0) < v for k, v in FULL["n_sparse"].items()):
        subset.append(f"n_sparse {args.n_sparse} (reference C:1000,H:2000,O:1000)")
    if subset:
        notes.append("SMALLER THAN THE REFERENCE SETTINGS: " + "; ".join(subset) + ".")
    notes.append(f"settings: r_cut={args.r_cut} Å, sigma={args.sigma} Å, zeta={args.zeta:g}, "
                 f"sparse {args.sparse_method} seed {args.seed}; gapkit optimize=True from "
                 f"σ_E={args.energy_noise}, σ_F={args.force_noise}; threads={args.threads}")
    notes.append(f"OOD positives: test_H_removal OH_dist > {OH_CUT} Å, test_dimers (all), "
                 "test_eth_meth methanol (6-atom) frames; negatives: test_MD. Score: total σ_E "
                 "per atom (σ_E / N_atoms) and per structure.")

    do_quip = not args.no_quip
    if do_quip:
        do_quip, why = h.quippy_available()
        if not do_quip:
            notes.append(f"QUIP skipped: {why}")
    else:
        notes.append("QUIP skipped (--no-quip)")

    timing = {}
    t0 = time.perf_counter()
    sets, n2 = load_sets(data_dir, args)
    notes += n2
    timing["load data"] = time.perf_counter() - t0
    print(f"data: {data_dir}; train {len(sets['train'])}, val {len(sets['val'])}, "
          f"test_MD {len(sets['test_MD'])}, OOD " +
          ", ".join(f"{k} {len(v)}" for k, v in sets["ood"].items()), flush=True)
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)

    res = {"command": cmdline, "data_dir": str(data_dir), "settings": h.settings(args),
        "_n": {"test_MD": [len(a) for a in sets["test_MD"]],
               "ood": {k: len(v) for k, v in sets["ood"].items()}}}
    g, _model = run_gapkit(args, data_dir, sets, timing)
    res["gapkit"] = g
    with h.temp_dir("gapkit_uq_", args.keep_tmp, say=notes.append) as tmp:
        if do_quip:
            try:
                res["quip"] = run_quip(args, data_dir, sets, g, tmp, timing)
            except Exception as exc:  # noqa: BLE001 - report, keep gapkit's results
                import traceback
                traceback.print_exc()
                res["quip"] = {"error": f"{type(exc).__name__}: {exc}"}
    timing["total"] = time.perf_counter() - t_all
    notes.append(f"1-min load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
                 "(timings on a shared machine)")
    res["timing_s"] = timing
    print_report(cmdline, args, res, timing, notes)
    if args.json is not None:
        out = dict(res)
        n = out.pop("_n")
        out["n_frames"] = {"train": args.n_train, "val": args.n_val, "test_MD": len(n["test_MD"]),
                           **n["ood"]}
        h.save_results(args.json, out)
    return 0 if "error" not in res.get("quip", {}) else 1


if __name__ == "__main__":
    sys.exit(main())
