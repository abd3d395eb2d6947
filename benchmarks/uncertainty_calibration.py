#!/usr/bin/env python
"""Calibrated uncertainty of gapkit with its *defaults*, measured against the issue's targets.

Every model is ``GAP(e0=...)`` with all other settings at their defaults (SOAP defaults,
``calibrate=True``, ``valid_fraction=0.2``, ``force_std="fast"``); nothing is tuned on the
sets below. E0 comes from isolated atoms where the data has them (rMD17 ethanol, xTB).

Parts (``--part``, repeatable; default all, run one after the other):

``ethanol``
    rMD17 ethanol: train on the first 800 frames of ``train.xyz``; model A calibrates on
    the other 200 (``fit(valid=...)``), model B uses the default split (holds out 20 % of
    the 800 and adds them back). In distribution on ``test_MD.xyz``: ZMS (energies, force
    components, per species), 95 % coverage, ENCE, Spearman, AUROC (worst 10 %) with the
    simulated references of a perfectly calibrated σ (``metrics.reference``).
    Far shift with model A: ``test_H_removal``, ``test_dimers``, ``test_norm_mode_874/3005``
    (energies only) and the methanol frames of ``test_eth_meth`` (energies and forces):
    ZMS, AUROC of σ_E/atom separating the set from test_MD, AUROC of the worst 10 % inside
    the set, median |error| / median σ, the per-distance table of H_removal and the
    fraction of frames flagged by ``3x``.
``mild``
    Data made here: GFN2-xTB (tblite) Langevin MD of ethanol at 500 K (train trajectory,
    independent held-out trajectory) and 1000 K; EMT copper, 108-atom fcc cell, 300 K
    train / 300 K held-out / 600 K, and a 107-atom vacancy cell at 300 K (far shift).
``si``
    mlearn Si: train on AIMD-NVT + Elastic of ``train.xyz`` (energies and forces only: the
    kbar stress labels are not used), test on the same types of ``test.xyz``; far shift:
    Vacancy and Surface frames of test and train. Energies per atom.
``noise``
    xTB 500 K training forces + N(0, 0.05² eV²/Å²); learned aleatoric σ_F with and without
    ``optimize=True``.
``flags``
    ``gapkit fit -o M.npz`` (default data) then ``gapkit predict M.npz test.xyz
    --flag-threshold 3x``: fraction of frames flagged.
``fast``
    100 evenly spaced test_MD frames, model A: per-atom ratio of fast to exact calibrated
    epistemic σ_F, ZMS and ENCE of both.

Fitted models and generated labels are cached in ``--cache`` (default
``~/.cache/gapkit-bench/uncertainty_calibration``; ``--refit`` ignores cached models, which
are otherwise reused whatever the library does now: the JSON's ``fits`` records the commit
each cached model was fitted with).
No timings are claimed (wall times are printed for orientation only).

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/uncertainty_calibration.py \\
        --part ethanol --json /tmp/uq_ethanol.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
SHARED = Path(os.environ.get("GAPKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
PARTS = ("ethanol", "mild", "si", "noise", "flags", "fast")
ROWS: list[dict] = []  # the target table


# ----------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------
def row(part, name, target, measured, ok=None, note=""):
    ROWS.append({"part": part, "quantity": name, "target": target, "measured": measured,
                 "pass": ok, "note": note})


def fmt(x, nd=3):
    if x is None:
        return "–"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt(v, nd) for v in x) + "]"
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "nan"
        return f"{x:.{nd}g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{nd}f}"
    return str(x)


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    return x


def evenly(n_total, n):
    if n is None or n >= n_total:
        return list(range(n_total))
    return sorted(set(np.round(np.linspace(0, n_total - 1, n)).astype(int).tolist()))


def read(path, index=":"):
    from ase.io import read as _read
    return _read(str(path), index=index)


def isolated_e0(path, species=None):
    e0 = {a.get_chemical_symbols()[0]: float(a.get_potential_energy())
          for a in read(path) if len(a) == 1}
    return {k: v for k, v in e0.items() if species is None or k in species}


def fitted(cache: Path, name: str, make, frames, refit=False, **fit_kw):
    """A fitted GAP from the cache, else ``make().fit(frames, **fit_kw)`` saved there."""
    from gapkit import load
    path = cache / f"{name}.npz"
    meta = cache / f"{name}.json"
    # --refit ignores models cached before this run, not those fitted earlier in it
    # (the fast part reuses the ethanol part's model A)
    if path.is_file() and (not refit or name in FITTED_THIS_RUN):
        FIT_META[name] = json.loads(meta.read_text()) if meta.is_file() else {}
        return load(path), 0.0
    t = time.perf_counter()
    model = make().fit(frames, **fit_kw)
    wall = time.perf_counter() - t
    model.save(path)
    FITTED_THIS_RUN.add(name)
    FIT_META[name] = {"git_head": _git("rev-parse", "HEAD"),
                      "git_dirty_library": _git("status", "--short", "--", "gapkit"),
                      "fit_wall_s": wall, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    meta.write_text(json.dumps(FIT_META[name], indent=1))
    return model, wall


FITTED_THIS_RUN: set = set()
FIT_META: dict = {}  # name -> library commit of the cached fit (a cached model is reused
#                       whatever the library does now: pass --refit after library changes)


def _git(*a):
    try:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return None


def labels(frames):
    E = np.array([a.get_potential_energy() for a in frames])
    F = []
    for a in frames:
        try:
            F.append(np.array(a.get_forces()))
        except Exception:  # noqa: BLE001 - energies-only frames
            F.append(None)
    return E, F


# ----------------------------------------------------------------------------------
# metrics of one set
# ----------------------------------------------------------------------------------
def set_metrics(model, frames, force_std=None, per_atom=False, forces=True, n_draws=200):
    """Calibration metrics of ``frames`` (energies per structure, or per atom)."""
    from gapkit.uncertainty import metrics as m

    E, F = labels(frames)
    has_f = forces and all(f is not None for f in F)
    pred, std = model.predict(frames, return_std=True, forces=has_f, force_std=force_std)
    nat = np.array([len(a) for a in frames], dtype=float)
    de = np.asarray(pred.energy) - E
    se = np.asarray(std.energy)
    se_epi = np.asarray(std.energy_epistemic)
    if per_atom:
        de, se, se_epi = de / nat, se / nat, se_epi / nat
    out = {"n_frames": len(frames), "energy_unit": "eV/atom" if per_atom else "eV",
           "energy_mae": float(np.mean(np.abs(de))), "energy_rmse": float(np.sqrt(np.mean(de ** 2))),
           "energy_zms": m.zms(de, se), "energy_coverage95": m.coverage(de, se, 0.95),
           "energy_median_abs_err": float(np.median(np.abs(de))),
           "energy_median_std": float(np.median(se)),
           "energy_median_std_epistemic": float(np.median(se_epi))}
    out["energy_err_over_std"] = out["energy_median_abs_err"] / out["energy_median_std"]
    if len(frames) >= 10:
        for k, stat in (("energy_ence", m.ence), ("energy_spearman", m.spearman),
                        ("energy_auroc_worst10", m.auroc_worst)):
            out[k] = stat(de, se)
            out[k + "_reference"] = m.reference(stat, se, n_draws, 0)
        rmse, rmv = m.binned_rmse_rmv(de, se, m.equal_count_bins(se, 10))
        out["energy_ence_bins_rmse_rmv"] = np.c_[rmse, rmv].tolist()
    arrays = {"de": de, "se": se, "se_epi": se_epi, "nat": nat,
              "se_per_atom": np.asarray(std.energy) / nat}
    if has_f:
        fe = np.concatenate([(pred.forces[k] - F[k]).reshape(-1, 3) for k in range(len(frames))])
        fs = np.concatenate([np.broadcast_to(np.reshape(std.forces[k], (len(a), -1)), (len(a), 3))
                             for k, a in enumerate(frames)])
        fa = np.concatenate([np.broadcast_to(np.reshape(std.forces_aleatoric[k], (len(a), -1)),
                                             (len(a), 3)) for k, a in enumerate(frames)])
        fep = np.concatenate([np.broadcast_to(np.reshape(std.forces_epistemic[k], (len(a), -1)),
                                              (len(a), 3)) for k, a in enumerate(frames)])
        num = np.concatenate([a.numbers for a in frames])
        out.update({
            "forces_mae": float(np.mean(np.abs(fe))), "forces_rmse": float(np.sqrt(np.mean(fe ** 2))),
            "forces_zms": m.zms(fe, fs), "forces_coverage95": m.coverage(fe, fs, 0.95),
            "forces_zms_by_species": m.zms_by_species(fe, fs, num),
            "forces_median_abs_err": float(np.median(np.abs(fe))),
            "forces_median_std": float(np.median(fs)),
            "forces_aleatoric_by_species": {s: float(np.sqrt(np.mean(fa[num == z] ** 2)))
                                            for s, z in _species(num)},
            "forces_epistemic_rms": float(np.sqrt(np.mean(fep ** 2)))})
        out["forces_err_over_std"] = out["forces_median_abs_err"] / out["forces_median_std"]
        for k, stat in (("forces_ence", m.forces_ence), ("forces_spearman", m.forces_spearman)):
            out[k] = stat(fe, fs)
            out[k + "_reference"] = m.reference(stat, fs, n_draws, 0)
        # per-atom AUROC of the worst 10 % of |ΔF|
        norm, sig = m.atom_norms(fe, fs)
        rmse, rmv = m.binned_rmse_rmv(norm / np.sqrt(3.0), sig, m.equal_count_bins(sig, 10))
        out["forces_ence_bins_rmse_rmv"] = np.c_[rmse, rmv].tolist()
        out["forces_auroc_worst10"] = m.auroc_worst(norm, sig)
        out["forces_auroc_worst10_reference"] = m.reference(
            lambda e, s: m.auroc_worst(*m.atom_norms(e, s)), fs, n_draws, 0)
        arrays.update({"fe": fe, "fs": fs, "fa": fa, "fep": fep, "num": num})
    return out, arrays, (pred, std)


def _species(num):
    from ase.data import chemical_symbols
    return [(chemical_symbols[z], z) for z in np.unique(num)]


def in_range(x, lo, hi):
    return x is not None and np.isfinite(x) and lo <= x <= hi


def indist_rows(part, label, r, zms_range=(0.8, 1.25), cov=True, forces=True):
    """Table rows of the in-distribution targets for one metrics dict ``r``."""
    lo, hi = zms_range
    t = f"{lo}–{hi}"
    row(part, f"{label} ZMS E", t, r["energy_zms"], in_range(r["energy_zms"], lo, hi))
    if forces and "forces_zms" in r:
        row(part, f"{label} ZMS F", t, r["forces_zms"], in_range(r["forces_zms"], lo, hi))
        for s, v in r["forces_zms_by_species"].items():
            row(part, f"{label} ZMS F[{s}]", t, v, in_range(v, lo, hi))
    if not cov:
        return
    row(part, f"{label} coverage95 E", "0.92–0.97", r["energy_coverage95"],
        in_range(r["energy_coverage95"], 0.92, 0.97))
    if forces and "forces_coverage95" in r:
        row(part, f"{label} coverage95 F", "0.92–0.97", r["forces_coverage95"],
            in_range(r["forces_coverage95"], 0.92, 0.97))
    for p in (("energy", "forces") if forces and "forces_zms" in r else ("energy",)):
        if f"{p}_ence" not in r:
            continue
        ref = r[f"{p}_ence_reference"]
        row(part, f"{label} ENCE {p[0].upper()}", f"≤ 2×ref ({fmt(2 * ref[0])})", r[f"{p}_ence"],
            r[f"{p}_ence"] <= 2 * ref[0], f"ref {fmt(ref)}")
        for k in ("spearman", "auroc_worst10"):
            ref = r[f"{p}_{k}_reference"]
            v = r[f"{p}_{k}"]
            row(part, f"{label} {k} {p[0].upper()}", f"≥ {fmt(ref[1])} (ref p5)", v,
                bool(np.isfinite(v) and v >= ref[1]), f"ref {fmt(ref)}")


def separation_auroc(score_pos, score_neg):
    from sklearn.metrics import roc_auc_score
    y = np.r_[np.ones(len(score_pos)), np.zeros(len(score_neg))]
    return float(roc_auc_score(y, np.r_[score_pos, score_neg]))


def without_compression(model):
    """A shallow copy of ``model`` without the compression term, or
    ``None`` when the model has none."""
    import copy
    from dataclasses import replace
    st = model.state_
    if not getattr(st.calibration, "compression", None):
        return None
    off = copy.copy(model)
    off.state_ = st.replace(calibration=replace(st.calibration, compression={}))
    return off


def flagged_fraction(model, frames, std, threshold="3x"):
    from gapkit.uncertainty.flags import FlagThreshold
    flags = FlagThreshold.parse(threshold).evaluate(std, frames, model.flag_reference())
    return float(np.mean(flags.structures))


def far_set(part, name, model, frames, ref_test, results, forces=True, flag=True):
    """Metrics of a far-shift set against the in-distribution ``ref_test`` arrays."""
    r, arr, (pred, std) = set_metrics(model, frames, forces=forces)
    r["auroc_vs_indist_sigmaE_per_atom"] = separation_auroc(arr["se_per_atom"], ref_test["se_per_atom"])
    # the same energies without the compression term (gapkit.model.distance_variance)
    off = without_compression(model)
    if off is not None:
        _, s_off = off.predict(frames, return_std=True, forces=False)
        se_off = np.asarray(s_off.energy) / (arr["nat"] if r["energy_unit"] == "eV/atom" else 1.0)
        r["energy_zms_without_compression_term"] = float(np.mean((arr["de"] / se_off) ** 2))
        r["auroc_vs_indist_without_compression_term"] = separation_auroc(
            np.asarray(s_off.energy) / arr["nat"], ref_test["se_per_atom"])
    if flag:
        try:
            if std.forces is None:
                _, std = model.predict(frames, return_std=True)
            r["flagged_3x"] = flagged_fraction(model, frames, std)
        except Exception as exc:  # noqa: BLE001
            r["flagged_3x_error"] = repr(exc)
    results[name] = r
    row(part, f"{name} ZMS E", "≤ 4", r["energy_zms"], r["energy_zms"] <= 4,
        f"n={len(frames)}, med|e|/med σ={fmt(r['energy_err_over_std'])}, without the "
        f"compression term {fmt(r.get('energy_zms_without_compression_term'))}")
    if "forces_zms" in r:
        row(part, f"{name} ZMS F", "≤ 4", r["forces_zms"], r["forces_zms"] <= 4)
    row(part, f"{name} AUROC σE/atom vs in-dist", "≥ 0.95", r["auroc_vs_indist_sigmaE_per_atom"],
        r["auroc_vs_indist_sigmaE_per_atom"] >= 0.95)
    if "energy_auroc_worst10" in r:
        ref = r["energy_auroc_worst10_reference"]
        row(part, f"{name} AUROC worst10 E (inside)", f"≥ {fmt(ref[1])} (ref p5)",
            r["energy_auroc_worst10"], bool(r["energy_auroc_worst10"] >= ref[1]), f"ref {fmt(ref)}")
    if "flagged_3x" in r:
        row(part, f"{name} flagged by 3x", "most (> 0.5)", r["flagged_3x"], r["flagged_3x"] > 0.5)
    return r, arr


def far_subset(name, arr, mask, ref_arr, far):
    """ZMS and separation AUROC of the frames of a far set selected by ``mask``."""
    z = arr["de"][mask] / arr["se"][mask]
    auc = separation_auroc(arr["se_per_atom"][mask], ref_arr["se_per_atom"])
    far[name] = {"n": int(mask.sum()), "energy_zms": float(np.mean(z ** 2)),
                 "auroc_vs_indist_sigmaE_per_atom": auc}
    row("far", f"{name} ZMS E", "≤ 4", far[name]["energy_zms"], far[name]["energy_zms"] <= 4,
        f"n={int(mask.sum())}")
    row("far", f"{name} AUROC σE/atom vs in-dist", "≥ 0.95", auc, auc >= 0.95)


# ----------------------------------------------------------------------------------
# part 1 + 2: rMD17 ethanol
# ----------------------------------------------------------------------------------
def ethanol_models(args):
    from gapkit import GAP
    d = SHARED / "ethanol_rmd17"
    train = read(d / "train.xyz")
    e0 = isolated_e0(d / "isolated_atoms.xyz", {"H", "C", "O"})
    make = lambda: GAP(e0=e0)  # noqa: E731
    A, wa = fitted(args.cache, "eth_A_valid200", make, train[:800], args.refit, valid=train[800:1000])
    B, wb = fitted(args.cache, "eth_B_default", make, train[:800], args.refit)
    return A, B, {"fit_wall_A": wa, "fit_wall_B": wb, "e0": e0}


def part_ethanol(args, out):
    d = SHARED / "ethanol_rmd17"
    A, B, info = ethanol_models(args)
    res = {"info": info}
    test = read(d / "test_MD.xyz")
    test = [test[k] for k in evenly(len(test), args.n_test)]
    for label, model in (("A (valid=200)", A), ("B (default split)", B)):
        t = time.perf_counter()
        r, arr, _ = set_metrics(model, test)
        r["calibration_source"] = model.calibration_.source
        r["calibration_reference"] = model.calibration_.reference
        r["fast_force_ratio"] = model.calibration_.fast_force_ratio
        r["predict_wall"] = time.perf_counter() - t
        res[label] = r
        indist_rows("ethanol", f"rMD17 {label}", r)
        if label.startswith("A"):
            ref_arr = arr
    # far shift with model A
    far = {}
    hrem = read(d / "test_H_removal.xyz")
    r, arr = far_set("far", "H_removal", A, hrem, ref_arr, far)
    oh = np.array([a.info["OH_dist"] for a in hrem])
    order = np.argsort(oh)
    far_subset("H_removal (OH<0.85 or >1.15 Å)", arr, (oh < 0.85) | (oh > 1.15), ref_arr, far)
    far["H_removal_table"] = [{"OH_dist": float(oh[k]), "err_eV": float(arr["de"][k]),
                               "std_eV": float(arr["se"][k]), "std_epi_eV": float(arr["se_epi"][k]),
                               "z": float(arr["de"][k] / arr["se"][k])} for k in order]
    dim = read(d / "test_dimers.xyz")
    r, arr = far_set("far", "dimers", A, dim, ref_arr, far)
    ct = np.array([a.info["config_type"] for a in dim])
    dist = np.array([a.info["distance"] for a in dim])
    far["dimers_by_pair"] = {}
    for p in sorted(set(ct)):
        k = ct == p
        z = arr["de"][k] / arr["se"][k]
        far["dimers_by_pair"][p] = {"n": int(k.sum()), "zms": float(np.mean(z ** 2)),
                                    "max_abs_z": float(np.max(np.abs(z))),
                                    "dist_of_max_abs_z": float(dist[k][np.argmax(np.abs(z))]),
                                    "frac_abs_z_gt_2": float(np.mean(np.abs(z) > 2))}
    for nm in ("874", "3005"):
        fr = read(d / f"test_norm_mode_{nm}.xyz")
        r, arr = far_set("far", f"norm_mode_{nm}", A, fr, ref_arr, far)
        disp = np.array([a.info["displacement"] for a in fr])
        far_subset(f"norm_mode_{nm} (|disp|>=0.5)", arr, np.abs(disp) >= 0.5, ref_arr, far)
        far[f"norm_mode_{nm}_table"] = [{"displacement": float(disp[k]), "err_eV": float(arr["de"][k]),
                                         "std_eV": float(arr["se"][k]),
                                         "z": float(arr["de"][k] / arr["se"][k])}
                                        for k in np.argsort(disp)]
    meth = [a for a in read(d / "test_eth_meth.xyz") if len(a) == 6]
    meth = [meth[k] for k in evenly(len(meth), args.n_far)]
    far_set("far", "methanol", A, meth, ref_arr, far)
    # in-distribution flag rate of the same model on test_MD, for contrast
    _, std = A.predict(test, return_std=True)
    far["test_MD_flagged_3x"] = flagged_fraction(A, test, std)
    far["flag_reference"] = A.flag_reference()
    row("far", "test_MD flagged by 3x (contrast)", "small (< 0.05)", far["test_MD_flagged_3x"],
        far["test_MD_flagged_3x"] < 0.05)
    res["far"] = far
    out["ethanol"] = res


# ----------------------------------------------------------------------------------
# part 3: mild shift, data made here
# ----------------------------------------------------------------------------------
def sample_md(atoms, temperature, n_frames, seed, label, every, n_equil, dt_fs, friction,
              zero_rotation=False):
    """Langevin MD snapshots of ``atoms`` (with its calculator), every ``every`` steps
    after ``n_equil``, labelled with the raw forces (no constraint adjustment: with
    ASE 3.29's FixCom attached, get_forces() differs from the raw forces by up to
    ~1 eV/Å although the raw forces sum to zero) and ``config_type = label``."""
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    rng = np.random.RandomState(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if zero_rotation:
        ZeroRotation(atoms)
    dyn = Langevin(atoms, dt_fs * units.fs, temperature_K=temperature,
                   friction=friction / units.fs, rng=rng)
    dyn.run(n_equil)
    frames = []
    while len(frames) < n_frames:
        dyn.run(every)
        a = atoms.copy()
        a.set_constraint()
        a.calc = SinglePointCalculator(a, energy=atoms.get_potential_energy(),
                                       forces=atoms.get_forces(apply_constraint=False))
        a.info["config_type"] = label
        frames.append(a)
    return frames


def xtb_md(temperature, n_frames, seed, every=20, n_equil=500, dt_fs=0.5):
    from ase.build import molecule
    from ase.constraints import FixCom
    from tblite.ase import TBLite

    atoms = molecule("CH3CH2OH")
    atoms.set_constraint(FixCom())
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return sample_md(atoms, temperature, n_frames, seed, f"ethanol_{temperature:.0f}K",
                     every, n_equil, dt_fs, friction=0.02, zero_rotation=True)


def emt_md(temperature, n_frames, seed, vacancy=False, every=20, n_equil=500, dt_fs=2.0):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    if vacancy:
        del atoms[0]
    atoms.calc = EMT()
    return sample_md(atoms, temperature, n_frames, seed,
                     f"Cu{'_vac' if vacancy else ''}_{temperature:.0f}K", every, n_equil,
                     dt_fs, friction=0.01)


def cached_frames(cache, name, make):
    from ase.io import write
    path = cache / f"{name}.xyz"
    if path.is_file():
        return read(path), 0.0
    t = time.perf_counter()
    frames = make()
    wall = time.perf_counter() - t
    write(str(path), frames, format="extxyz")
    return read(path), wall


def xtb_sets(args):
    walls = {}
    sets = {}
    for name, T, n, seed in (("xtb_500K_train", 500, 300, 1), ("xtb_500K_test", 500, 150, 2),
                             ("xtb_1000K_test", 1000, 300, 3)):
        sets[name], walls[name] = cached_frames(args.cache, name, lambda: xtb_md(T, n, seed))
    return sets, walls


def xtb_e0():
    # the GFN2-xTB free-atom energies (tblite 0.8.0, default settings) of gapkit's data
    return isolated_e0(REPO / "data" / "isolated_atoms.xyz")


def part_mild(args, out):
    from gapkit import GAP
    res = {}
    sets, walls = xtb_sets(args)
    res["label_wall"] = walls
    res["max_force_1000K"] = float(max(np.abs(a.get_forces()).max() for a in sets["xtb_1000K_test"]))
    model, w = fitted(args.cache, "xtb_500K", lambda: GAP(e0=xtb_e0()), sets["xtb_500K_train"],
                      args.refit)
    res["fit_wall"] = w
    r, arr, _ = set_metrics(model, sets["xtb_500K_test"])
    res["xtb_500K_test"] = r
    indist_rows("mild", "xTB 500K held-out", r)
    r, arr2, _ = set_metrics(model, sets["xtb_1000K_test"])
    r["auroc_vs_indist_sigmaE_per_atom"] = separation_auroc(arr2["se_per_atom"], arr["se_per_atom"])
    res["xtb_1000K_test"] = r
    row("mild", "xTB 1000K ZMS E", "≤ 2.25", r["energy_zms"], r["energy_zms"] <= 2.25,
        f"med|e|/med σ={fmt(r['energy_err_over_std'])}")
    row("mild", "xTB 1000K ZMS F", "≤ 2.25", r["forces_zms"], r["forces_zms"] <= 2.25)
    for s, v in r["forces_zms_by_species"].items():
        row("mild", f"xTB 1000K ZMS F[{s}]", "≤ 2.25", v, v <= 2.25)
    # EMT copper
    cu = {}
    for name, T, n, seed, vac in (("cu_300K_train", 300, 60, 11, False), ("cu_300K_test", 300, 30, 12, False),
                                  ("cu_600K_test", 600, 30, 13, False), ("cu_vac_300K", 300, 30, 14, True)):
        cu[name], walls[name] = cached_frames(args.cache, name, lambda: emt_md(T, n, seed, vac))
    cmodel, w = fitted(args.cache, "cu_300K", lambda: GAP(), cu["cu_300K_train"], args.refit)
    res["cu_fit_wall"] = w
    r, arr, _ = set_metrics(cmodel, cu["cu_300K_test"], per_atom=True)
    res["cu_300K_test"] = r
    indist_rows("mild", "EMT Cu 300K held-out", r)
    r, arr2, _ = set_metrics(cmodel, cu["cu_600K_test"], per_atom=True)
    r["auroc_vs_indist_sigmaE_per_atom"] = separation_auroc(arr2["se_per_atom"], arr["se_per_atom"])
    res["cu_600K_test"] = r
    row("mild", "EMT Cu 600K ZMS E", "≤ 2.25", r["energy_zms"], r["energy_zms"] <= 2.25,
        f"med|e|/med σ={fmt(r['energy_err_over_std'])}")
    row("mild", "EMT Cu 600K ZMS F", "≤ 2.25", r["forces_zms"], r["forces_zms"] <= 2.25)
    far = {}
    r, _ = far_set("mild", "EMT Cu vacancy 300K", cmodel, cu["cu_vac_300K"], arr, far)
    res["cu_vacancy"] = far["EMT Cu vacancy 300K"]
    out["mild"] = res


# ----------------------------------------------------------------------------------
# part 4: mlearn Si
# ----------------------------------------------------------------------------------
def part_si(args, out):
    from gapkit import GAP
    d = SHARED / "si_mlearn"
    train_all, test_all = read(d / "train.xyz"), read(d / "test.xyz")
    for a in train_all + test_all:  # energies + forces only (no stress labels)
        a.info.pop("mlearn_virial_stress", None)
    keep = ("AIMD-NVT", "Elastic")
    train = [a for a in train_all if a.info["config_type"] in keep]
    model, w = fitted(args.cache, "si_aimd_elastic", lambda: GAP(), train, args.refit)
    res = {"fit_wall": w, "n_train": len(train), "stress": "not used (energies and forces only)"}
    test = [a for a in test_all if a.info["config_type"] in keep]
    r, arr, _ = set_metrics(model, test, per_atom=True)
    res["indist_test"] = r
    indist_rows("si", "Si AIMD+Elastic test", r)
    far = {}
    for ct in ("Vacancy", "Surface"):
        fr = [a for a in test_all + train_all if a.info["config_type"] == ct]
        rr, _ = far_set("si", f"Si {ct}", model, fr, arr, far, flag=True)
        # per-atom energies for the far sets, as in distribution
        rr2, _, _ = set_metrics(model, fr, per_atom=True)
        far[f"Si {ct}"]["per_atom"] = {k: rr2[k] for k in ("energy_zms", "energy_mae",
                                                           "energy_err_over_std")}
    res["far"] = far
    # the same with exact force stds, and the fast/exact record of the calibration
    res["fast_force_ratio"] = model.calibration_.fast_force_ratio
    res["calibration"] = repr(model.calibration_)
    r, _, _ = set_metrics(model, test, per_atom=True, force_std="exact")
    res["indist_test_exact"] = r
    row("si", "Si AIMD+Elastic test ZMS F (exact σ)", "0.8–1.25", r["forces_zms"],
        in_range(r["forces_zms"], 0.8, 1.25))
    ref = r["forces_ence_reference"]
    row("si", "Si AIMD+Elastic test ENCE F (exact σ)", f"≤ 2×ref ({fmt(2 * ref[0])})",
        r["forces_ence"], r["forces_ence"] <= 2 * ref[0], f"ref {fmt(ref)}")
    for ct in ("Vacancy", "Surface"):
        fr = [a for a in test_all + train_all if a.info["config_type"] == ct]
        r, _, _ = set_metrics(model, fr, per_atom=True, force_std="exact")
        res["far"][f"Si {ct}"]["exact"] = {k: r[k] for k in ("forces_zms", "forces_median_std",
                                                              "forces_mae")}
        row("si", f"Si {ct} ZMS F (exact σ)", "≤ 4", r["forces_zms"], r["forces_zms"] <= 4)
    # by config_type in distribution (fast σ)
    r_ct = {}
    for ct in keep:
        fr = [a for a in test if a.info["config_type"] == ct]
        r, _, _ = set_metrics(model, fr, per_atom=True)
        r_ct[ct] = {k: r[k] for k in ("n_frames", "forces_zms", "forces_rmse", "forces_median_std",
                                      "energy_zms")}
    res["indist_by_config_type"] = r_ct
    out["si"] = res


# ----------------------------------------------------------------------------------
# part 5: label noise
# ----------------------------------------------------------------------------------
def part_noise(args, out, sigma=0.05):
    from ase.calculators.singlepoint import SinglePointCalculator
    from gapkit import GAP
    sets, _ = xtb_sets(args)
    rng = np.random.RandomState(123)
    noisy = []
    for a in sets["xtb_500K_train"]:
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy(),
                                       forces=a.get_forces() + sigma * rng.standard_normal((len(a), 3)))
        noisy.append(b)
    res = {"sigma_true": sigma}
    test = sets["xtb_500K_test"]
    for label, opt in (("default", False), ("optimize", True)):
        model, w = fitted(args.cache, f"xtb_500K_noisy_{label}", lambda: GAP(e0=xtb_e0(), optimize=opt),
                          noisy, args.refit)
        r, arr, (_, std) = set_metrics(model, test)
        fa = np.concatenate([np.ravel(x) for x in std.forces_aleatoric])
        r["forces_aleatoric_rms"] = float(np.sqrt(np.mean(fa ** 2)))
        r["learned_noise"] = {str(k): float(v) for k, v in model.noise_.labelled().items()}
        r["calibration"] = repr(model.calibration_)
        r["fit_wall"] = w
        res[label] = r
        v = r["forces_aleatoric_rms"]
        row("noise", f"σ_F aleatoric ({label})", "0.04–0.06", v, in_range(v, 0.04, 0.06),
            "per species " + ", ".join(f"{s}={fmt(x)}" for s, x in r["forces_aleatoric_by_species"].items()))
        row("noise", f"ZMS F vs clean test ({label})", "(info) < 1: σ includes label noise",
            r["forces_zms"], None)
    out["noise"] = res


# ----------------------------------------------------------------------------------
# part 6: flags through the CLI
# ----------------------------------------------------------------------------------
def part_flags(args, out):
    from gapkit.data import default_data_dir
    model = args.cache / "default_model.npz"
    pred = args.cache / "default_test_pred.xyz"
    res = {}
    cmds = []
    if args.refit or not model.is_file():
        if model.is_file():
            model.unlink()
        c = ["gapkit", "fit", "-o", str(model)]
        cmds.append(c)
        p = subprocess.run(c, capture_output=True, text=True)
        res["fit_stdout_tail"] = (p.stdout + p.stderr)[-3000:]
        if p.returncode:
            raise SystemExit(f"gapkit fit failed: {p.stderr[-2000:]}")
    if pred.is_file():
        pred.unlink()
    test = Path(default_data_dir()) / "test.xyz"
    c = ["gapkit", "predict", str(model), str(test), "-o", str(pred), "--flag-threshold", "3x"]
    cmds.append(c)
    p = subprocess.run(c, capture_output=True, text=True)
    res["predict_stdout"] = (p.stdout + p.stderr)[-3000:]
    if p.returncode:
        raise SystemExit(f"gapkit predict failed: {p.stderr[-2000:]}")
    fr = read(pred)
    flagged = np.array([bool(a.info.get("gapkit_flagged", False)) for a in fr])
    res["n_frames"] = len(fr)
    res["flagged_fraction"] = float(flagged.mean())
    res["flagged_config_types"] = [fr[k].info.get("config_type") for k in np.flatnonzero(flagged)]
    res["commands"] = [" ".join(x) for x in cmds]
    # which criterion flags them (same model, python API): forces alone, local energies alone
    from gapkit import load
    from gapkit.uncertainty.flags import FlagThreshold
    mdl = load(model)
    ref = mdl.flag_reference()
    frames = read(test)
    _, std = mdl.predict(frames, return_std=True)
    res["flag_reference"] = ref
    for name, thr in (("forces_only", f"forces={3 * ref['forces']}"),
                      ("local_energy_only", f"energy={3 * ref['energy_per_atom']}")):
        sc = FlagThreshold.parse(thr).structure_scores(std, frames, ref)
        res[f"flagged_fraction_{name}"] = float(np.mean(sc > 1))
        res[f"max_score_{name}_p50_95_max"] = np.percentile(sc, [50, 95, 100]).tolist()
    row("flags", "default data test.xyz flagged by 3x", "< 0.05", res["flagged_fraction"],
        res["flagged_fraction"] < 0.05, f"{int(flagged.sum())}/{len(fr)}")
    # The default test trajectory spends half its ethanol frames in the trans conformer,
    # which the training data barely visits: split the flag rate by conformer.
    train_conf = [ethanol_conformer(a) for a in read(Path(default_data_dir()) / "train.xyz")]
    test_conf = np.array([ethanol_conformer(a) for a in frames], dtype=object)
    res["train_conformers"] = {c: int(sum(x == c for x in train_conf)) for c in ("gauche", "trans")}
    f_err = np.array([np.mean(np.abs(a.arrays["gapkit_forces"] - b.get_forces()))
                      for a, b in zip(fr, frames)])
    by = {}
    for name, mask in (("trans ethanol", test_conf == "trans"),
                       ("gauche ethanol + methanol", test_conf != "trans")):
        by[name] = {"n": int(mask.sum()), "flagged_fraction": float(flagged[mask].mean()),
                    "force_mae": float(f_err[mask].mean())}
    res["by_conformer"] = by
    g = by["gauche ethanol + methanol"]
    row("flags", "  in distribution (gauche ethanol, methanol)", "< 0.05", g["flagged_fraction"],
        g["flagged_fraction"] < 0.05, f"n={g['n']}, F MAE {1e3 * g['force_mae']:.0f} meV/A")
    t = by["trans ethanol"]
    row("flags", f"  trans ethanol ({res['train_conformers']['trans']} trans in training)",
        "most", t["flagged_fraction"], t["flagged_fraction"] > 0.5,
        f"n={t['n']}, F MAE {1e3 * t['force_mae']:.0f} meV/A")
    out["flags"] = res


def ethanol_conformer(atoms) -> str:
    """'trans' or 'gauche' from the H-O-C-C dihedral of an ethanol frame; 'other' if not ethanol."""
    s = atoms.get_chemical_symbols()
    if s.count("C") != 2 or s.count("O") != 1:
        return "other"
    o = s.index("O")
    c = [i for i, x in enumerate(s) if x == "C"]
    h = [i for i, x in enumerate(s) if x == "H"]
    dc = atoms.get_distances(o, c)
    c1, c2 = c[int(np.argmin(dc))], c[int(np.argmax(dc))]
    ho = h[int(np.argmin(atoms.get_distances(o, h)))]
    d = atoms.get_dihedral(ho, o, c1, c2) % 360.0
    return "trans" if 120.0 < d < 240.0 else "gauche"


# ----------------------------------------------------------------------------------
# part 7: fast vs exact σ_F
# ----------------------------------------------------------------------------------
def part_fast(args, out):
    from gapkit.uncertainty import metrics as m
    A, _, _ = ethanol_models(args)
    test = read(SHARED / "ethanol_rmd17" / "test_MD.xyz")
    sub = [test[k] for k in evenly(len(test), args.n_fast)]
    res = {}
    arrs = {}
    for mode in ("fast", "exact"):
        t = time.perf_counter()
        r, arr, _ = set_metrics(A, sub, force_std=mode)
        r["predict_wall"] = time.perf_counter() - t
        res[mode] = {k: r[k] for k in r if k.startswith("forces")}
        arrs[mode] = arr
    num = arrs["fast"]["num"]
    ep_fast = np.sqrt(np.mean(arrs["fast"]["fep"] ** 2, axis=1))
    ep_exact = np.sqrt(np.mean(arrs["exact"]["fep"] ** 2, axis=1))
    ratio = ep_fast / ep_exact
    res["ratio_fast_over_exact_epistemic_p5_50_95"] = np.percentile(ratio, [5, 50, 95]).tolist()
    res["ratio_by_species"] = {s: np.percentile(ratio[num == z], [5, 50, 95]).tolist()
                               for s, z in _species(num)}
    res["calibration_fast_force_ratio"] = A.calibration_.fast_force_ratio
    res["spearman_fast_vs_exact_sigma"] = float(m.spearman(ep_fast, ep_exact))
    row("fast", "fast/exact σ_F,epi p5/p50/p95", "(info) ≈ 1", res["ratio_fast_over_exact_epistemic_p5_50_95"],
        None, "by species " + "; ".join(f"{s} {fmt(v)}" for s, v in res["ratio_by_species"].items()))
    for mode in ("fast", "exact"):
        r = res[mode]
        row("fast", f"{mode}: ZMS F", "0.8–1.25", r["forces_zms"], in_range(r["forces_zms"], 0.8, 1.25))
        ref = r["forces_ence_reference"]
        row("fast", f"{mode}: ENCE F", f"≤ 2×ref ({fmt(2 * ref[0])})", r["forces_ence"],
            r["forces_ence"] <= 2 * ref[0], f"ref {fmt(ref)}")
        ref = r["forces_spearman_reference"]
        row("fast", f"{mode}: Spearman F", f"≥ {fmt(ref[1])} (ref p5)", r["forces_spearman"],
            r["forces_spearman"] >= ref[1], f"ref {fmt(ref)}")
    out["fast"] = res


# ----------------------------------------------------------------------------------
def print_table(rows):
    print("\n| part | quantity | target | measured | pass | note |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ok = "–" if r["pass"] is None else ("yes" if r["pass"] else "**NO**")
        print(f"| {r['part']} | {r['quantity']} | {r['target']} | {fmt(r['measured'])} | {ok} | {r['note']} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", action="append", choices=PARTS, help="part(s) to run (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write results here")
    p.add_argument("--cache", type=Path,
                   default=Path("~/.cache/gapkit-bench/uncertainty_calibration").expanduser())
    p.add_argument("--refit", action="store_true", help="ignore cached models (labels are kept)")
    p.add_argument("--n-test", type=int, default=1000, help="test_MD frames (ethanol part)")
    p.add_argument("--n-far", type=int, default=None,
                   help="at most this many evenly spaced methanol frames (ethanol part)")
    p.add_argument("--n-fast", type=int, default=100, help="test_MD frames of the fast part")
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    out = {"command": " ".join([sys.executable, *sys.argv]), "walls": {}}
    import gapkit
    out["gapkit_version"] = getattr(gapkit, "__version__", None)
    out["git_head"] = _git("rev-parse", "HEAD")
    out["git_dirty_library"] = _git("status", "--short", "--", "gapkit")
    for part in args.part or PARTS:
        t = time.perf_counter()
        print(f"== part {part}", flush=True)
        globals()[f"part_{part}"](args, out)
        out["walls"][part] = time.perf_counter() - t
        print(f"   done in {out['walls'][part]:.0f} s (wall, loaded machine: orientation only)", flush=True)
        if args.json:  # after every part, so a long run leaves what it has measured
            out["fits"], out["table"] = FIT_META, ROWS
            args.json.write_text(json.dumps(jsonable(out), indent=1))
            print_table(ROWS)
    out["fits"] = FIT_META
    out["table"] = ROWS
    print_table(ROWS)
    if args.json:
        args.json.write_text(json.dumps(jsonable(out), indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
