#!/usr/bin/env python
"""Ewald plus GP on synthetic NaCl: a local GAP against a Coulomb-baseline (Δ) GAP.

Data
----
``data/ionic_train.xyz`` (60 cells) and ``data/ionic_test.xyz`` (20 cells), made by
``data/make_ionic_data.py`` from a known potential, :class:`gapkit.physics.baselines.BornMayerCoulomb`:
Na--Cl Born--Mayer repulsion (A = 1220 eV, ρ = 0.317 Å, switched off between 5 and 6 Å)
plus the Ewald sum of fixed charges ±1 e. Rattled, strained rock-salt cells of 2, 8 and
16 atoms (2-atom primitive fcc, 8-atom cube, 16-atom 2x1x1 repeat), with energies,
forces and stresses.

Models, for every SOAP cutoff r_cut
-----------------------------------
* **local**: ``GAP(SOAP(r_cut=...))`` fitted on the total labels (Born--Mayer + Coulomb);
  everything beyond r_cut is invisible to it.
* **Δ (Ewald + GP)**: the same GAP with ``baseline=CoulombBaseline(charges=CHARGES)`` (the
  charges of the data script): the GP learns reference minus Ewald, i.e. only the
  short-range Born--Mayer part, and predictions add the Ewald sum back.

Both: SOAP n_max 6, l_max 4, σ_atom 0.5 Å, 1 Å cosine taper, ζ 4, δ "auto" (1 eV), every
training environment as a sparse point (272 per species), σ_E 1 meV/√atom, σ_F 10 meV/Å,
σ_V 10 meV/√atom, least-squares E0, trained on energies, forces and virials.

Reported on the committed test set and on a **larger-cell transfer set** (see below):
energy MAE / RMSE (meV/atom), force MAE / RMSE (meV/Å per component), stress MAE (GPa
per Voigt component), fit time; plus two references without any GP: "E0 only" (a
per-species constant fitted by least squares on the training energies) and "Coulomb
baseline alone" (Ewald + least-squares E0).

Checks
------
* **No double counting.** Reference minus the Coulomb baseline must be exactly the
  Born--Mayer part: the script evaluates ``BornMayerCoulomb`` with zero charges on every
  frame and prints the largest difference (limited by the Ewald accuracy, 1e-8 in the
  baseline against 1e-10 in the data). At one cutoff it also fits a plain GAP directly on
  the Born--Mayer-only labels and checks that the Δ model's prediction minus the Ewald
  energy equals it.
* **Larger cells.** The committed cells are small (face-to-face widths 3.1--5.9 Å; the 16-atom cell
  is 11.3 Å long): a 6 Å SOAP already sees almost every atom of the cell and its images,
  so on a test set of the *same* cell types a local model with a large cutoff can learn
  the Ewald sum of these particular lattices. To show what it misses, the script also
  generates (in memory, nothing is written) rattled 64-atom 2x2x2 and 32-atom 4x1x1
  cells with exactly the recipe and reference potential of ``data/make_ionic_data.py``
  (imported from it), seed ``SEED + 1``: long-wavelength disorder that no training cell
  contains.

Run (about 1--2 minutes on two cores, BLAS limited to one thread)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/ionic_ewald.py \\
        --out /tmp/ionic_ewald.json --plot /tmp/ionic_ewald.png
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from threadpoolctl import threadpool_limits

from gapkit import GAP, SOAP, read_frames
from gapkit.physics.baselines import BornMayerCoulomb, CoulombBaseline
from gapkit.metrics import error_metrics
from gapkit.model import Prediction

import harness as h
from harness import REPO

EV_A3_TO_GPA = 160.21766208
# 99th percentile of the nearest Na-Cl distances in the committed data (Å): the Born-Mayer
# repulsion lives there, so a smaller cutoff cannot describe it
FIRST_SHELL_MAX = 3.22
LARGE_KINDS = {"rocksalt_2x2x2": (2, 2, 2), "rocksalt_4x1x1": (4, 1, 1)}


def load_data_script():
    """Import ``data/make_ionic_data.py`` (not a package) as a module."""
    path = REPO / "data" / "make_ionic_data.py"
    spec = importlib.util.spec_from_file_location("make_ionic_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_calc(mid) -> BornMayerCoulomb:
    """The data script's reference potential, with its settings."""
    return BornMayerCoulomb(mid.CHARGES, mid.BORN_MAYER, r_cut=6.0, switch_width=1.0,
                            accuracy=1e-10)


def born_mayer_only(mid) -> BornMayerCoulomb:
    """The short-range part alone: the same potential with all charges zero."""
    return BornMayerCoulomb({s: 0.0 for s in mid.CHARGES}, mid.BORN_MAYER, r_cut=6.0,
                            switch_width=1.0)


def large_frames(mid, n_per_kind: int, seed: int) -> list:
    """Rattled supercells made with ``make_ionic_data.make_frame``'s recipe.

    Random lattice constant ``A0 (1 + U(-0.03, 0.03))``, symmetric strain ``N(0, 0.015)``,
    Gaussian rattle with std ``U(0.03, 0.15)`` Å, redrawn when two atoms are closer than
    ``MIN_DIST`` or a force reaches ``MAX_FORCE``; labelled by the same reference potential.
    """
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    calc = reference_calc(mid)
    out = []
    for kind, rep in LARGE_KINDS.items():
        made = 0
        while made < n_per_kind:
            a = mid.A0 * (1.0 + rng.uniform(-0.03, 0.03))
            atoms = bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(rep)
            eps = rng.normal(0.0, 0.015, (3, 3))
            eps = 0.5 * (eps + eps.T)
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
            atoms.positions += rng.normal(0.0, rng.uniform(0.03, 0.15), atoms.positions.shape)
            dist = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
            if dist.min() < mid.MIN_DIST:
                continue
            r = calc.evaluate(atoms)
            if np.linalg.norm(r["forces"], axis=1).max() >= mid.MAX_FORCE:
                continue
            atoms.info["config_type"] = kind
            atoms.calc = SinglePointCalculator(atoms, energy=r["energy"], forces=r["forces"],
                                               stress=r["stress"])
            out.append(atoms)
            made += 1
    return out


def relabel(frames, calc) -> list:
    """Copies of ``frames`` labelled by ``calc`` (energy, forces, stress)."""
    out = []
    for f in frames:
        r = calc.evaluate(f)
        a = f.copy()
        a.calc = SinglePointCalculator(a, energy=r["energy"], forces=r["forces"],
                                       stress=r["stress"])
        out.append(a)
    return out


def cell_summary(frames) -> dict:
    """Per config_type: count, atoms, cell lengths and smallest perpendicular width (Å)."""
    out = {}
    for f in frames:
        ct = f.info.get("config_type", "?")
        cell = f.cell.array
        vol = abs(np.linalg.det(cell))
        widths = [vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                  for i in range(3)]
        d = out.setdefault(ct, {"n": 0, "atoms": len(f), "lengths": [], "widths": []})
        d["n"] += 1
        d["lengths"] += list(f.cell.lengths())
        d["widths"] += widths
    return {ct: {"n": d["n"], "atoms": d["atoms"],
                 "length_min": float(min(d["lengths"])), "length_max": float(max(d["lengths"])),
                 "width_min": float(min(d["widths"]))} for ct, d in out.items()}


def errors(energy, forces, stress, frames) -> dict:
    """Energy (meV/atom), force (meV/Å) and stress (GPa) errors of raw prediction arrays."""
    m = error_metrics(Prediction(energy=np.asarray(energy, float), energies=[],
                                 forces=list(forces)), frames)
    ref_s = np.array([f.get_stress() for f in frames])
    ds = (np.asarray(stress) - ref_s) * EV_A3_TO_GPA
    return {"energy_mae": 1e3 * m["energy_mae_per_atom"],
            "energy_rmse": 1e3 * m["energy_rmse_per_atom"],
            "forces_mae": 1e3 * m["forces_mae"], "forces_rmse": 1e3 * m["forces_rmse"],
            "stress_mae": float(np.mean(np.abs(ds))),
            "stress_rmse": float(np.sqrt(np.mean(ds ** 2)))}


def model_errors(model, frames) -> dict:
    p = model.predict(frames)
    return errors(p.energy, p.forces, p.stress, frames)


def composition(frames, species) -> np.ndarray:
    return np.array([[np.sum(f.numbers == z) for z in species] for f in frames], float)


def no_gp_references(train, sets: dict, baseline) -> dict:
    """'E0 only' and 'Coulomb baseline alone' (Ewald + least-squares E0), no GP."""
    species = sorted(set(np.concatenate([f.numbers for f in train]).tolist()))
    e_tr = np.array([f.get_potential_energy() for f in train])
    b_tr = np.array([baseline.evaluate(f)["energy"] for f in train])
    X = composition(train, species)
    e0_plain = np.linalg.lstsq(X, e_tr, rcond=None)[0]
    e0_base = np.linalg.lstsq(X, e_tr - b_tr, rcond=None)[0]
    out = {"e0_only": {}, "baseline_alone": {}}
    for name, frames in sets.items():
        Xs = composition(frames, species)
        zeros = [np.zeros((len(f), 3)) for f in frames]
        out["e0_only"][name] = errors(Xs @ e0_plain, zeros, np.zeros((len(frames), 6)), frames)
        r = [baseline.evaluate(f) for f in frames]
        out["baseline_alone"][name] = errors(
            Xs @ e0_base + np.array([x["energy"] for x in r]), [x["forces"] for x in r],
            np.array([x["stress"] for x in r]), frames)
    return out


def double_counting_check(mid, frames, baseline) -> dict:
    """Largest |reference - Coulomb baseline - Born-Mayer only| over ``frames``."""
    bm = born_mayer_only(mid)
    de, df, ds = 0.0, 0.0, 0.0
    for f in frames:
        b, s = baseline.evaluate(f), bm.evaluate(f)
        de = max(de, abs(f.get_potential_energy() - b["energy"] - s["energy"]) / len(f))
        df = max(df, float(np.abs(f.get_forces() - b["forces"] - s["forces"]).max()))
        ds = max(ds, float(np.abs(f.get_stress() - b["stress"] - s["stress"]).max()))
    return {"energy_per_atom_eV": de, "forces_eV_A": df, "stress_eV_A3": ds}


def build_model(args, r_cut: float, baseline=None) -> GAP:
    return GAP(SOAP(r_cut=r_cut, n_max=args.n_max, l_max=args.l_max, sigma=0.5,
                    cutoff_width=args.cutoff_width),
               zeta=4, n_sparse=args.n_sparse, energy_noise=args.energy_noise,
               force_noise=args.force_noise, virial_noise=args.virial_noise, e0="lstsq",
               baseline=baseline, random_state=0)


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def markdown_table(rows: list, refs: dict, large: bool) -> str:
    head = ["r_cut (Å)", "model", "E MAE / RMSE (meV/atom)", "F MAE / RMSE (meV/Å)",
            "S MAE (GPa)"]
    if large:
        head += ["larger cells: E MAE (meV/atom)", "F MAE (meV/Å)", "S MAE (GPa)"]
    head += ["fit (s)"]
    align = [" ---: ", " --- "] + [" ---: "] * (len(head) - 2)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]

    def cells(t, g):
        c = [f"{fmt(t['energy_mae'])} / {fmt(t['energy_rmse'])}",
             f"{fmt(t['forces_mae'])} / {fmt(t['forces_rmse'])}", fmt(t["stress_mae"])]
        if large:
            c += [fmt(g["energy_mae"]), fmt(g["forces_mae"]), fmt(g["stress_mae"])]
        return c

    for key, label in (("e0_only", "E0 only (no GP)"),
                       ("baseline_alone", "Coulomb baseline + E0 (no GP)")):
        r = refs[key]
        lines.append("| – | " + label + " | " + " | ".join(cells(r["test"], r.get("large")))
                     + " | – |")
    for row in rows:
        name = "Δ: Ewald + GP" if row["model"] == "delta" else "local GP"
        c = cells(row["test"], row.get("large"))
        lines.append(f"| {row['r_cut']:g} | {name} | " + " | ".join(c)
                     + f" | {row['fit_time']:.1f} |")
    return "\n".join(lines)


def plot(rows: list, refs: dict, path: str, large: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantities = [("energy_mae", "energy MAE (meV/atom)"), ("forces_mae", "force MAE (meV/Å)"),
                  ("stress_mae", "stress MAE (GPa)")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True)
    styles = {("local", "test"): dict(color="C3", marker="o", ls="-", label="local GP, test set"),
              ("delta", "test"): dict(color="C0", marker="s", ls="-",
                                      label="Ewald + GP (Δ), test set"),
              ("local", "large"): dict(color="C3", marker="o", ls="--", mfc="none",
                                       label="local GP, larger cells"),
              ("delta", "large"): dict(color="C0", marker="s", ls="--", mfc="none",
                                       label="Ewald + GP (Δ), larger cells")}
    sets = ("test", "large") if large else ("test",)
    for ax, (key, label) in zip(axes, quantities):
        for model in ("local", "delta"):
            for s in sets:
                rs = [r for r in rows if r["model"] == model]
                ax.plot([r["r_cut"] for r in rs], [r[s][key] for r in rs], **styles[(model, s)])
        lo = min(r["r_cut"] for r in rows)
        if lo < FIRST_SHELL_MAX:
            ax.axvspan(lo - 0.1, FIRST_SHELL_MAX, color="0.9", zorder=0,
                       label="r_cut within the first Na–Cl shell")
        ax.set_yscale("log")
        ax.set_xlabel("SOAP cutoff r_cut (Å)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle("Synthetic NaCl (Born–Mayer + Ewald): test error against the SOAP cutoff "
                 f"(no GP: Coulomb baseline alone {fmt(refs['baseline_alone']['test']['forces_mae'])} "
                 f"meV/Å, E0 only {fmt(refs['e0_only']['test']['forces_mae'])} meV/Å)")
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cutoffs", default="3,3.5,4,5,6,8", help="SOAP cutoffs, Å, comma-separated")
    p.add_argument("--n-max", type=int, default=6)
    p.add_argument("--l-max", type=int, default=4)
    p.add_argument("--cutoff-width", type=float, default=1.0, help="cosine taper width, Å")
    p.add_argument("--n-sparse", type=int, default=300,
                   help="sparse points per species (capped at the 272 available)")
    h.add_noise_arguments(p, 0.001, 0.01, 0.01)
    p.add_argument("--large-frames", type=int, default=8,
                   help="frames per larger-cell kind (64-atom 2x2x2, 32-atom 4x1x1); 0: skip")
    p.add_argument("--check-cutoff", type=float, default=4.0,
                   help="cutoff of the explicit Δ = GP(Born-Mayer labels) check; 0: skip")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--plot", default=None, help="write the error-vs-cutoff PNG here")
    args = p.parse_args(argv)
    cutoffs = [float(x) for x in args.cutoffs.split(",") if x.strip()]

    t_start = time.perf_counter()
    mid = load_data_script()
    train = read_frames(REPO / "data" / "ionic_train.xyz")
    test = read_frames(REPO / "data" / "ionic_test.xyz")
    baseline = CoulombBaseline(charges=mid.CHARGES)
    large = args.large_frames > 0
    sets = {"test": test}
    if large:
        sets["large"] = large_frames(mid, args.large_frames, seed=mid.SEED + 1)

    print(f"charges {mid.CHARGES}, Born-Mayer {mid.BORN_MAYER} (cutoff 6 Å)")
    print("cells (Å; width = smallest distance between opposite cell faces):")
    summary = {name: cell_summary(fr) for name, fr in [("train", train), *sets.items()]}
    for name, s in summary.items():
        for ct, d in s.items():
            print(f"  {name:5s} {ct:15s} {d['n']:3d} frames x {d['atoms']:2d} atoms, lengths "
                  f"{d['length_min']:.2f}-{d['length_max']:.2f}, width >= {d['width_min']:.2f}")

    # how much of the labels is Coulomb, and no double counting -----------------------
    dc = double_counting_check(mid, train + test, baseline)
    print(f"no double counting: |reference - Ewald - Born-Mayer| <= "
          f"{dc['energy_per_atom_eV']:.1e} eV/atom, {dc['forces_eV_A']:.1e} eV/Å, "
          f"{dc['stress_eV_A3']:.1e} eV/Å³ (Ewald accuracy 1e-8 vs 1e-10 in the data)")
    bm = born_mayer_only(mid)
    parts = {}
    for name, fr in sets.items():
        ec = np.array([baseline.evaluate(f)["energy"] / len(f) for f in fr])
        eb = np.array([bm.evaluate(f)["energy"] / len(f) for f in fr])
        fc = np.concatenate([baseline.evaluate(f)["forces"].ravel() for f in fr])
        fb = np.concatenate([bm.evaluate(f)["forces"].ravel() for f in fr])
        parts[name] = {"coulomb_energy_std": 1e3 * ec.std(), "born_mayer_energy_std": 1e3 * eb.std(),
                       "coulomb_forces_rms": 1e3 * np.sqrt(np.mean(fc ** 2)),
                       "born_mayer_forces_rms": 1e3 * np.sqrt(np.mean(fb ** 2))}
        print(f"  {name}: std of E/atom: Ewald {parts[name]['coulomb_energy_std']:.0f}, "
              f"Born-Mayer {parts[name]['born_mayer_energy_std']:.0f} meV/atom; RMS force "
              f"component: Ewald {parts[name]['coulomb_forces_rms']:.0f}, "
              f"Born-Mayer {parts[name]['born_mayer_forces_rms']:.0f} meV/Å")

    refs = no_gp_references(train, sets, baseline)

    rows = []
    with threadpool_limits(1):
        for rc in cutoffs:
            for name, base in (("local", None), ("delta", baseline)):
                t0 = time.perf_counter()
                model = build_model(args, rc, base).fit(train)
                fit_time = time.perf_counter() - t0
                row = {"r_cut": rc, "model": name, "fit_time": fit_time,
                       "n_sparse": int(len(model.alpha_)),
                       "load_1min": os.getloadavg()[0]}
                for sname, fr in sets.items():
                    row[sname] = model_errors(model, fr)
                rows.append(row)
                g = row.get("large")
                print(f"r_cut {rc:4g} {name:5s}: test E {fmt(row['test']['energy_mae'])} meV/atom, "
                      f"F {fmt(row['test']['forces_mae'])} meV/Å, "
                      f"S {fmt(row['test']['stress_mae'])} GPa"
                      + (f" | larger cells E {fmt(g['energy_mae'])}, F {fmt(g['forces_mae'])}, "
                         f"S {fmt(g['stress_mae'])}" if g else "")
                      + f" | fit {fit_time:.1f} s (load {row['load_1min']:.1f})", flush=True)

        # explicit check: Δ model - Ewald == plain GAP on the Born-Mayer-only labels
        check = None
        if args.check_cutoff > 0:
            rc = args.check_cutoff
            delta = build_model(args, rc, baseline).fit(train)
            plain = build_model(args, rc).fit(relabel(train, bm))
            fr = list(sets.get("large", test))
            pd, pp = delta.predict(fr), plain.predict(fr)
            b = [baseline.evaluate(f) for f in fr]
            n = np.array([len(f) for f in fr])
            check = {"r_cut": rc,
                     "energy_per_atom_eV": float(np.max(np.abs(
                         (pd.energy - np.array([x["energy"] for x in b]) - pp.energy) / n))),
                     "forces_eV_A": float(max(np.abs(a - x["forces"] - c).max()
                                              for a, x, c in zip(pd.forces, b, pp.forces)))}
            print(f"Δ model - Ewald vs GAP fitted on Born-Mayer-only labels (r_cut {rc:g}): "
                  f"max difference {check['energy_per_atom_eV']:.1e} eV/atom, "
                  f"{check['forces_eV_A']:.1e} eV/Å")

    elapsed = time.perf_counter() - t_start
    print()
    print(f"SOAP n_max {args.n_max}, l_max {args.l_max}, σ 0.5 Å, taper {args.cutoff_width:g} Å, "
          f"ζ 4, M = {rows[0]['n_sparse']}; σ_E {args.energy_noise:g} eV/√atom, "
          f"σ_F {args.force_noise:g} eV/Å, σ_V {args.virial_noise:g} eV/√atom. "
          f"Test set: data/ionic_test.xyz (20 cells)"
          + (f"; larger cells: {len(sets['large'])} generated cells "
             f"({args.large_frames} x 64-atom 2x2x2, {args.large_frames} x 32-atom 4x1x1)"
             if large else ""))
    print()
    print(markdown_table(rows, refs, large))
    print(f"\ntotal {elapsed:.0f} s")

    if args.out:
        res = {"settings": vars(args), "cells": summary, "label_parts": parts,
               "double_counting": dc, "delta_equals_born_mayer_gp": check,
               "references": refs, "rows": rows, "elapsed_s": elapsed,
               "units": {"energy": "meV/atom", "forces": "meV/Å per component",
                         "stress": "GPa per Voigt component"}}
        h.save_results(args.out, res, indent=1, say="json:")
    if args.plot:
        plot(rows, refs, args.plot, large)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
