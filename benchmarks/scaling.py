#!/usr/bin/env python
"""Scaling of gapkit against QUIP (``gap_fit`` / ``quippy``): fit time and peak memory
versus the training-set size N and the number of sparse points M, and prediction cost.

Everything is measured in one run on this machine, gapkit and QUIP back to back, and
printed as ONE markdown table (``--json OUT`` also writes every number):

1. **Fit vs N** (rMD17 ethanol, first N frames of ``train.xyz``, E0 from
   ``isolated_atoms.xyz``; ``--sizes``, default 250,500,1000): SOAP n_max 8, l_max 6,
   r_cut 5 Å (cosine cutoff of width 1 Å, QUIP ``cutoff_transition_width=1``), atom
   sigma 0.5 Å, zeta 4, delta 1 eV, noise 0.001 eV/sqrt(atom) / 0.02 eV/Å,
   ``--n-sparse`` (300) CUR sparse points per species (gapkit ``sparse_method="cur"``;
   QUIP one SOAP block per centre species, ``sparse_method=cur_points``). Wall time and
   peak RSS of each fit; the growth of the peak RSS from the smallest to the largest N
   shows whether memory is flat in N (gapkit streams the training rows).
2. **Fit vs M** at N = ``--m-n`` (500): ``--m-values`` (100,300,600) sparse points per
   species, gapkit only unless ``--quip-m``.
3. **Prediction**, µs per atom, energies + forces, after one untimed warm-up call, best
   of 3: the first ``--n-predict`` (200) frames of ethanol ``test_MD.xyz`` with the
   largest-N models of both codes; and a 216-atom Si diamond cell (3x3x3 conventional,
   a = 5.43 Å, rattled by 0.05 Å with ``--seed``) with a gapkit and a QUIP model fitted
   on ``--si-n-train`` (20) evenly spaced cells of mlearn's Si ``train.xyz`` (energies,
   forces, virials; SOAP n_max 8, l_max 8, r_cut 5.4 Å, cosine width 1 Å,
   ``--si-n-sparse`` (300) CUR points); for Si also energy + forces + stress.

Goals printed beside the ratios gapkit/QUIP: fit time <= 0.5x gap_fit, peak RSS <= 0.5x
gap_fit and flat in N (largest-N / smallest-N peak RSS <= 1.10), prediction <= 0.5x
quippy.

How things are measured
-----------------------
Each fit runs in its own subprocess (this script re-invoked with a hidden ``--worker``
flag). gapkit's peak RSS is ``ru_maxrss`` of that worker read right after ``fit`` (it
includes the interpreter, numpy/scipy/ase/sklearn and the training frames; the RSS
before the fit is given in the notes); QUIP's is ``ru_maxrss`` of ``RUSAGE_CHILDREN`` in
its worker, whose only child is the ``gap_fit`` binary. The worker of the largest N also
times the predictions (after the fit's peak RSS has been read). Every subprocess gets
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` = ``--threads`` (default
1; 0 keeps the environment). The machine may be shared: the 1-minute load average is
printed before and after every measurement and given in the table.

Without the data (ethanol or Si) the corresponding rows are skipped; without quippy /
gap_fit only the gapkit columns are filled; the script then still exits 0.

Examples::

    python benchmarks/scaling.py --json /tmp/scaling.json
    python benchmarks/scaling.py --sizes 30,60 --m-values 20,40 --m-n 60 --n-sparse 50 \\
        --n-predict 20 --si-n-train 4 --si-n-sparse 50
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import harness as h
from harness import ETHANOL_FILES as ETH_FILES, SI_FILES, best_of as _best_of, loadavg as _load
from harness import maxrss_mib, num as _fmt

SCRIPT = Path(__file__).resolve()
GOAL_RATIO = 0.5
GOAL_FLAT = 1.10


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = h.new_parser(
        "gapkit vs QUIP: fit time / peak RSS vs N and M, prediction cost.")
    p.add_argument("--sizes", type=h.int_list, default=[250, 500, 1000],
                   help="ethanol training-set sizes N for the fit-vs-N rows")
    p.add_argument("--n-sparse", type=int, default=300,
                   help="sparse points per species for the fit-vs-N rows and the ethanol models")
    p.add_argument("--m-values", type=h.int_list, default=[100, 300, 600],
                   help="sparse points per species for the fit-vs-M rows")
    p.add_argument("--m-n", type=int, default=500, help="N of the fit-vs-M rows")
    p.add_argument("--quip-m", action="store_true", help="also run gap_fit for the fit-vs-M rows")
    p.add_argument("--n-predict", type=int, default=200,
                   help="ethanol test_MD frames for the prediction timing")
    p.add_argument("--si-n-train", type=int, default=20,
                   help="evenly spaced mlearn Si training cells for the Si models")
    p.add_argument("--si-n-sparse", type=int, default=300, help="sparse points of the Si models")
    p.add_argument("--si-repeat", type=int, default=3,
                   help="Si test cell: repeat of the 8-atom conventional cell per direction")
    p.add_argument("--repeats", type=int, default=3, help="prediction timings: best of this many")
    p.add_argument("--no-si", action="store_true", help="skip the Si prediction rows")
    p.add_argument("--no-predict", action="store_true", help="skip the ethanol prediction rows")
    p.add_argument("--n-jobs", type=int, default=1,
                   help="gapkit GAP(n_jobs=...) for its fits (default 1: serial, like gap_fit "
                        "on one thread; GAP's own default uses every core)")
    p.add_argument("--chunk-size", type=int, default=32, help="gapkit GAP(chunk_size=...)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="gapkit GAP(calibrate=False) for the ethanol fits (gap_fit calibrates "
                        "no std; the default calibrated fit holds out 20 %% and, when a "
                        "species takes every environment, refits)")
    p.add_argument("--seed", type=int, default=0)
    h.add_data_dir_argument(p, "ethanol_rmd17", ETH_FILES, flag="--ethanol-dir")
    h.add_data_dir_argument(p, "si_mlearn", SI_FILES, flag="--si-dir")
    p.add_argument("--worker-timeout", type=float, default=0,
                   help="kill a measurement subprocess after this many seconds (0: never)")
    h.add_run_arguments(p, workers=("gk_eth", "qp_eth", "gk_si", "qp_si"))
    return p


# ----------------------------------------------------------------------------------
# shared settings
# ----------------------------------------------------------------------------------
ETH_SOAP = dict(r_cut=5.0, n_max=8, l_max=6, sigma=0.5, cutoff_width=1.0)
ETH_GP = dict(zeta=4.0, delta=1.0, energy_noise=0.001, force_noise=0.02, jitter=1e-8)
SI_SOAP = dict(r_cut=5.4, n_max=8, l_max=8, sigma=0.5, cutoff_width=1.0)
SI_GP = dict(zeta=4.0, delta="auto", energy_noise=0.01, force_noise=0.05, virial_noise=0.01,
             e0="lstsq", jitter=1e-8)
SI_A = 5.43  # Å, diamond lattice constant of the timing cell


def si_test_cell(repeat: int, seed: int):
    from ase.build import bulk

    cell = bulk("Si", "diamond", a=SI_A, cubic=True).repeat((repeat, repeat, repeat))
    cell.rattle(stdev=0.05, seed=seed)
    return cell


# ----------------------------------------------------------------------------------
# workers (each in its own process)
# ----------------------------------------------------------------------------------
def worker_gapkit_ethanol(p: dict) -> dict:
    from ase.io import read

    from gapkit.descriptors import SOAP
    from gapkit.model import GAP

    d = Path(p["data_dir"])
    train = read(str(d / "train.xyz"), index=f":{p['n']}")
    rss_before = h.current_rss_mib()
    peak_before = maxrss_mib()
    model = GAP(SOAP(r_cut=ETH_SOAP["r_cut"], n_max=ETH_SOAP["n_max"], l_max=ETH_SOAP["l_max"],
                     sigma=ETH_SOAP["sigma"], cutoff="cosine", cutoff_width=ETH_SOAP["cutoff_width"]),
                zeta=ETH_GP["zeta"], delta=ETH_GP["delta"], n_sparse=int(p["m"]),
                sparse_method="cur", energy_noise=ETH_GP["energy_noise"],
                force_noise=ETH_GP["force_noise"], jitter=ETH_GP["jitter"],
                e0=str(d / "isolated_atoms.xyz"), random_state=p["seed"],
                chunk_size=p["chunk_size"], n_jobs=p["n_jobs"], verbose=False,
                calibrate=not p.get("no_calibrate", False))
    l0 = _load()
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    fit_load = [l0, _load()]
    fit_peak = maxrss_mib()
    from ase.data import chemical_symbols
    import numpy as np

    res = {"tool": "gapkit", "n_train": len(train), "fit_time_s": fit_s,
           "fit_peak_rss_mib": fit_peak, "rss_before_fit_mib": rss_before,
           "peak_rss_before_fit_mib": peak_before, "fit_load": fit_load,
           "n_sparse": {chemical_symbols[z]: int(np.sum(model.sparse_species_ == z))
                        for z in model.species_},
           "n_features": int(model.descriptor_.n_features),
           "n_rows": h.labelled_counts(model.n_train_),
           "threadpools": h.threadpool_info()}
    if p.get("predict"):
        test = read(str(d / "test_MD.xyz"), index=f":{p['n_predict']}")
        E_ref, F_ref = h.reference_labels(test)
        frames = [a.copy() for a in test]  # without the reference calculators
        n_atoms = sum(len(a) for a in frames)
        t0 = time.perf_counter()
        model.predict(frames[:1])
        warm = time.perf_counter() - t0
        out = {}

        def run():
            out["pred"] = model.predict(frames)

        best, times, load = _best_of(run, p["repeats"])
        m = h.error_metrics(E_ref, F_ref, out["pred"].energy, out["pred"].forces)
        res["predict"] = {"n_frames": len(frames), "n_atoms": n_atoms, "best_s": best,
                          "times_s": times, "us_per_atom": best / n_atoms * 1e6,
                          "warmup_ms": warm * 1e3, "load": load,
                          "energy_mae_mev": m["energy_mae"], "force_mae_mev_A": m["force_mae"]}
    return res


def worker_quip_ethanol(p: dict) -> dict:
    from ase.io import read

    d = Path(p["data_dir"])
    tmp = Path(p["tmp"])
    train = read(str(d / "train.xyz"), index=f":{p['n']}")
    e0 = h.isolated_energies(d / "isolated_atoms.xyz")
    n_sparse = h.cap_sparse_counts(train, int(p["m"]))
    train_xyz, gp_xml = tmp / "quip_train.xyz", tmp / "gp.xml"
    h.write_quip_xyz(train, train_xyz, periodic=False, cutoff=ETH_SOAP["r_cut"], config_type="train")
    cmd = h.gap_fit_command(train_xyz, gp_xml, dict(ETH_SOAP, zeta=ETH_GP["zeta"],
                                                    delta=ETH_GP["delta"]), n_sparse, e0,
                            (ETH_GP["energy_noise"], ETH_GP["force_noise"]), ETH_GP["jitter"],
                            p["seed"])
    fit = h.run_gap_fit(cmd, tmp, gp_xml)
    res = {"tool": "quip", "version": h.quip_version(), "n_train": len(train),
           **{k: fit[k] for k in ("fit_time_s", "fit_peak_rss_mib", "fit_load", "gap_fit_command")},
           "n_sparse": n_sparse}
    if p.get("predict"):
        import numpy as np
        from quippy.potential import Potential

        test = read(str(d / "test_MD.xyz"), index=f":{p['n_predict']}")
        E_ref, F_ref = h.reference_labels(test)
        frames = [a.copy() for a in test]
        n_atoms = sum(len(a) for a in frames)
        pot = Potential(param_filename=str(gp_xml))

        def one(a):  # one QUIP call for both properties
            a.calc = pot
            pot.reset()  # never serve cached results
            pot.calculate(a, properties=["energy", "forces"])
            return float(pot.results["energy"]), np.array(pot.results["forces"])

        t0 = time.perf_counter()
        one(frames[0].copy())
        warm = time.perf_counter() - t0
        out = {}

        def run():
            out["pred"] = [one(a) for a in frames]

        best, times, load = _best_of(run, p["repeats"])
        m = h.error_metrics(E_ref, F_ref, [e for e, _ in out["pred"]], [f for _, f in out["pred"]])
        res["predict"] = {"n_frames": len(frames), "n_atoms": n_atoms, "best_s": best,
                          "times_s": times, "us_per_atom": best / n_atoms * 1e6,
                          "warmup_ms": warm * 1e3, "load": load,
                          "energy_mae_mev": m["energy_mae"], "force_mae_mev_A": m["force_mae"]}
    return res


def _si_args(p: dict) -> argparse.Namespace:
    return argparse.Namespace(n_sparse=int(p["m"]), sparse_method="cur", optimize=False,
                              seed=p["seed"], **SI_SOAP, **SI_GP)


def worker_gapkit_si(p: dict) -> dict:
    import numpy as np

    train, _ = h.load_si(Path(p["data_dir"]), p["n"], 1, virials=True)
    model = h.build_si_model(_si_args(p))
    model.set_params(chunk_size=p["chunk_size"], n_jobs=p["n_jobs"])
    peak_before = maxrss_mib()
    l0 = _load()
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    res = {"tool": "gapkit", "n_train": len(train), "n_train_atoms": int(sum(len(a) for a in train)),
           "fit_time_s": fit_s, "fit_load": [l0, _load()],
           "fit_peak_rss_mib": maxrss_mib(),
           "peak_rss_before_fit_mib": peak_before,
           "n_sparse": int(len(model.sparse_species_)), "e0": float(model.e0_.values[14]),
           "delta": float(model.delta_), "noise": model.noise_.labelled()}
    cell = si_test_cell(p["repeat"], p["seed"])
    n_atoms = len(cell)
    for label, stress in (("EF", False), ("EFS", True)):
        t0 = time.perf_counter()
        model.predict([cell], stress=stress)
        warm = time.perf_counter() - t0
        out = {}

        def run():
            out["pred"] = model.predict([cell], stress=stress)

        best, times, load = _best_of(run, p["repeats"])
        pr = out["pred"]
        res[f"predict_{label}"] = {
            "n_atoms": n_atoms, "best_s": best, "times_s": times,
            "us_per_atom": best / n_atoms * 1e6, "warmup_ms": warm * 1e3, "load": load,
            "energy": float(pr.energy[0]), "forces": np.asarray(pr.forces[0]).tolist(),
            "stress": None if pr.stress is None else np.asarray(pr.stress[0]).tolist()}
    return res


def worker_quip_si(p: dict) -> dict:
    import numpy as np

    tmp = Path(p["tmp"])
    train, _ = h.load_si(Path(p["data_dir"]), p["n"], 1, virials=True)
    if p.get("e0") is None:  # gapkit's lstsq E0 for one species: mean energy per atom
        p["e0"] = float(sum(a.get_potential_energy() for a in train) / sum(len(a) for a in train))
    delta = p.get("delta") or 1.0
    train_xyz, gp_xml = tmp / "quip_train.xyz", tmp / "gp.xml"
    h.write_quip_xyz(train, train_xyz, periodic=True)
    cmd = h.gap_fit_command(train_xyz, gp_xml, dict(SI_SOAP, zeta=SI_GP["zeta"], delta=delta),
                            {"Si": int(p["m"])}, {"Si": p["e0"]},
                            (SI_GP["energy_noise"], SI_GP["force_noise"], SI_GP["virial_noise"]),
                            SI_GP["jitter"], p["seed"], virials=True)
    fit = h.run_gap_fit(cmd, tmp, gp_xml)
    res = {"tool": "quip", "version": h.quip_version(), "n_train": len(train),
           **{k: fit[k] for k in ("fit_time_s", "fit_peak_rss_mib", "fit_load", "gap_fit_command")}}
    from quippy.potential import Potential

    pot = Potential(param_filename=str(gp_xml))
    cell = si_test_cell(p["repeat"], p["seed"])
    n_atoms = len(cell)
    for label, props in (("EF", ["energy", "forces"]), ("EFS", ["energy", "forces", "stress"])):
        a = cell.copy()
        a.calc = pot
        out = {}

        def run():
            pot.reset()  # quippy would otherwise return the cached results of the same cell
            pot.calculate(a, properties=props)
            out["r"] = {k: np.array(pot.results[k]) for k in props}

        t0 = time.perf_counter()
        run()
        warm = time.perf_counter() - t0
        best, times, load = _best_of(run, p["repeats"])
        r = out["r"]
        res[f"predict_{label}"] = {
            "n_atoms": n_atoms, "best_s": best, "times_s": times,
            "us_per_atom": best / n_atoms * 1e6, "warmup_ms": warm * 1e3, "load": load,
            "energy": float(r["energy"]), "forces": r["forces"].tolist(),
            "stress": r["stress"].tolist() if "stress" in r else None}
    return res


WORKERS = {"gk_eth": worker_gapkit_ethanol, "qp_eth": worker_quip_ethanol,
           "gk_si": worker_gapkit_si, "qp_si": worker_quip_si}


def gapkit_fingerprint() -> dict:
    """Where gapkit is imported from and a hash of its sources (other people may edit
    the package while a long benchmark runs; the driver warns when this changes)."""
    import hashlib

    import gapkit

    root = Path(gapkit.__file__).resolve().parent
    sha = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        sha.update(str(f.relative_to(root)).encode())
        sha.update(f.read_bytes())
    return {"path": str(root), "sha256": sha.hexdigest()[:12]}


def run_worker(args) -> int:
    fp_start = gapkit_fingerprint()

    def finish(res):
        res["worker_peak_rss_mib"] = maxrss_mib()
        res["gapkit_source"] = fp_start
        fp_end = gapkit_fingerprint()
        if fp_end != fp_start:
            res["gapkit_source_changed_to"] = fp_end

    return h.worker_main(args, WORKERS, finish=finish)


# ----------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------
class Driver:
    def __init__(self, args, env: dict, tmp: Path):
        self.args, self.env, self.tmp = args, env, tmp
        self.count = 0
        self.sources: set = set()

    def launch(self, kind: str, label: str, params: dict) -> dict:
        self.count += 1
        params = dict(params, seed=self.args.seed, repeats=self.args.repeats,
                      chunk_size=self.args.chunk_size, n_jobs=self.args.n_jobs,
                      no_calibrate=self.args.no_calibrate)
        print(f"[{time.strftime('%H:%M:%S')}] {label}: start (1-min load {_load():.2f})", flush=True)
        res = h.launch_worker(SCRIPT, kind, params, self.tmp / f"{self.count:02d}_{kind}",
                              self.env, timeout=self.args.worker_timeout or None, quiet=True)
        res.pop("tool", None)
        l0, l1 = res.pop("loadavg_1min_before_after")
        wall = res["worker_wall_s"]
        res.update(label=label, kind=kind, load_worker=[l0, l1])
        msg = "ok" if res.get("ok") else "FAILED: " + str(res.get("error"))
        extra = ""
        if res.get("ok") and "fit_time_s" in res:
            fl = res.get("fit_load", [None, None])
            extra = (f"; fit {res['fit_time_s']:.1f} s, peak RSS {res['fit_peak_rss_mib']:.0f} MiB, "
                     f"load during fit {fl[0]:.2f} -> {fl[1]:.2f}")
        for key in ("predict", "predict_EF", "predict_EFS"):
            if res.get("ok") and key in res:
                pr = res[key]
                extra += (f"; {key} {pr['us_per_atom']:.1f} us/atom (load {pr['load'][0]:.2f} -> "
                          f"{pr['load'][1]:.2f})")
        src = res.get("gapkit_source") or {}
        print(f"[{time.strftime('%H:%M:%S')}] {label}: {msg} in {wall:.1f} s wall{extra}; "
              f"1-min load {l0:.2f} before, {l1:.2f} after; gapkit {src.get('path')} "
              f"sources {src.get('sha256')}", flush=True)
        if res.get("gapkit_source_changed_to"):
            print(f"WARNING: gapkit's sources changed while '{label}' ran", flush=True)
        self.sources.add(src.get("sha256"))
        if res.get("gapkit_source_changed_to"):
            self.sources.add(res["gapkit_source_changed_to"]["sha256"])
        return res


def _ratio(g, q):
    return g / q if (g is not None and q) else None


def _goal(ratio, limit=GOAL_RATIO, what="≤ 0.5×"):
    if ratio is None:
        return what
    return f"{what} {'✓' if ratio <= limit else '✗'}"


def _ld(*pairs) -> str:
    parts = [f"{a:.1f}→{b:.1f}" for a, b in (pp for pp in pairs if pp)]
    return " / ".join(parts) if parts else "-"


def _get(r: dict | None, *keys):
    if not r or not r.get("ok"):
        return None
    for k in keys:
        if r is None:
            return None
        r = r.get(k) if isinstance(r, dict) else None
    return r


def build_rows(R: dict, args) -> list[list[str]]:
    rows = []

    def fail_note(*rs):
        return "; ".join(f"{r['label']} FAILED: {r.get('error')}" for r in rs
                         if r is not None and not r.get("ok"))

    # -- fit vs N -------------------------------------------------------------------
    fitN = R.get("fit_vs_n", [])
    for e in fitN:
        g, q = e.get("gapkit"), e.get("quip")
        case = f"N={e['n']}, M={e['m']}/species"
        gt, qt = _get(g, "fit_time_s"), _get(q, "fit_time_s")
        gm, qm = _get(g, "fit_peak_rss_mib"), _get(q, "fit_peak_rss_mib")
        note = ""
        if _get(g, "n_rows"):
            note = (f"gapkit M={sum(g['n_sparse'].values())}, rows {g['n_rows']}, "
                    f"pre-fit RSS {g['rss_before_fit_mib']:.0f} MiB")
        note = "; ".join(x for x in (note, fail_note(g, q)) if x)
        rows.append(["fit vs N", case, "fit wall time [s]", _fmt(gt, ".1f"), _fmt(qt, ".1f"),
                     _fmt(_ratio(gt, qt), ".2f"), _goal(_ratio(gt, qt)),
                     _ld(_get(g, "fit_load"), _get(q, "fit_load")), note])
        rows.append(["fit vs N", case, "fit peak RSS [MiB]", _fmt(gm, ".0f"), _fmt(qm, ".0f"),
                     _fmt(_ratio(gm, qm), ".2f"), _goal(_ratio(gm, qm)),
                     _ld(_get(g, "fit_load"), _get(q, "fit_load")),
                     (f"gapkit fit added {gm - g['peak_rss_before_fit_mib']:.0f} MiB"
                      if gm is not None else "")])
    ok = [e for e in fitN if _get(e.get("gapkit"), "fit_peak_rss_mib") is not None]
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        gr = b["gapkit"]["fit_peak_rss_mib"] / a["gapkit"]["fit_peak_rss_mib"]
        qa, qb = _get(a.get("quip"), "fit_peak_rss_mib"), _get(b.get("quip"), "fit_peak_rss_mib")
        qr = qb / qa if (qa and qb) else None
        ga = a["gapkit"]["fit_peak_rss_mib"] - a["gapkit"]["peak_rss_before_fit_mib"]
        gb = b["gapkit"]["fit_peak_rss_mib"] - b["gapkit"]["peak_rss_before_fit_mib"]
        rows.append(["fit vs N", f"N={a['n']}→{b['n']} ({b['n'] / a['n']:.0f}× N)",
                     "peak RSS growth, RSS(N max)/RSS(N min)", _fmt(gr, ".2f"), _fmt(qr, ".2f"),
                     "-", f"gapkit flat (≤ {GOAL_FLAT:.2f}) {'✓' if gr <= GOAL_FLAT else '✗'}", "-",
                     f"gapkit fit increment {ga:.0f}→{gb:.0f} MiB "
                     f"({gb / ga:.2f}×)" if ga > 0 else ""])
    # -- fit vs M -------------------------------------------------------------------
    for e in R.get("fit_vs_m", []):
        g, q = e.get("gapkit"), e.get("quip")
        case = f"N={e['n']}, M={e['m']}/species"
        gt, qt = _get(g, "fit_time_s"), _get(q, "fit_time_s")
        gm, qm = _get(g, "fit_peak_rss_mib"), _get(q, "fit_peak_rss_mib")
        note = "same run as the fit-vs-N row" if e.get("reused") else ""
        if _get(g, "n_sparse"):
            note = "; ".join(x for x in (note, f"gapkit M={sum(g['n_sparse'].values())}") if x)
        note = "; ".join(x for x in (note, fail_note(g, q)) if x)
        rows.append(["fit vs M", case, "fit wall time [s]", _fmt(gt, ".1f"), _fmt(qt, ".1f"),
                     _fmt(_ratio(gt, qt), ".2f"), _goal(_ratio(gt, qt)) if qt else "-",
                     _ld(_get(g, "fit_load"), _get(q, "fit_load")), note])
        rows.append(["fit vs M", case, "fit peak RSS [MiB]", _fmt(gm, ".0f"), _fmt(qm, ".0f"),
                     _fmt(_ratio(gm, qm), ".2f"), _goal(_ratio(gm, qm)) if qm else "-",
                     _ld(_get(g, "fit_load"), _get(q, "fit_load")),
                     (f"gapkit fit added {gm - g['peak_rss_before_fit_mib']:.0f} MiB"
                      if gm is not None else "")])
    # -- prediction ------------------------------------------------------------------
    pe = R.get("predict_ethanol")
    if pe:
        g, q = pe.get("gapkit"), pe.get("quip")
        gp, qp = _get(g, "predict"), _get(q, "predict")
        n_at = (gp or qp or {}).get("n_atoms")
        case = (f"ethanol test_MD, {args.n_predict} frames ({n_at} atoms), N={pe['n']} models")
        gu, qu = (gp or {}).get("us_per_atom"), (qp or {}).get("us_per_atom")
        note = []
        if gp:
            note.append(f"force MAE gapkit {gp['force_mae_mev_A']:.1f} meV/Å")
        if qp:
            note.append(f"quippy {qp['force_mae_mev_A']:.1f} meV/Å")
        if gp:
            note.append(f"gapkit warm-up {gp['warmup_ms']:.0f} ms")
        f = fail_note(g, q)
        if f:
            note.append(f)
        rows.append(["predict", case, "E+F [µs/atom]", _fmt(gu, ".0f"), _fmt(qu, ".0f"),
                     _fmt(_ratio(gu, qu), ".2f"), _goal(_ratio(gu, qu)),
                     _ld((gp or {}).get("load"), (qp or {}).get("load")), "; ".join(note)])
    ps = R.get("predict_si")
    if ps:
        import numpy as np

        g, q = ps.get("gapkit"), ps.get("quip")
        for label, what in (("EF", "E+F [µs/atom]"), ("EFS", "E+F+stress [µs/atom]")):
            gp, qp = _get(g, f"predict_{label}"), _get(q, f"predict_{label}")
            n_at = (gp or qp or {}).get("n_atoms")
            case = (f"Si diamond {args.si_repeat}³ cells ({n_at} atoms, rattled 0.05 Å), "
                    f"models on {args.si_n_train} mlearn cells, M={args.si_n_sparse}")
            gu, qu = (gp or {}).get("us_per_atom"), (qp or {}).get("us_per_atom")
            note = []
            if gp and qp and label == "EF":
                dF = np.asarray(gp["forces"]) - np.asarray(qp["forces"])
                note.append(f"RMS(F gapkit − F quippy) {np.sqrt(np.mean(dF ** 2)):.3f} eV/Å, "
                            f"E gapkit − E quippy {(gp['energy'] - qp['energy']) / n_at * 1e3:+.1f} "
                            "meV/atom")
            if label == "EF" and _get(g, "fit_time_s") is not None:
                note.append(f"Si fit gapkit {g['fit_time_s']:.1f} s / {g['fit_peak_rss_mib']:.0f} MiB"
                            + (f", gap_fit {q['fit_time_s']:.1f} s / {q['fit_peak_rss_mib']:.0f} MiB"
                               if _get(q, "fit_time_s") is not None else ""))
            f = fail_note(g, q)
            if f and label == "EF":
                note.append(f)
            rows.append(["predict", case, what, _fmt(gu, ".0f"), _fmt(qu, ".0f"),
                         _fmt(_ratio(gu, qu), ".2f"), _goal(_ratio(gu, qu)),
                         _ld((gp or {}).get("load"), (qp or {}).get("load")), "; ".join(note)])
    return rows


def print_table(rows: list[list[str]]) -> None:
    head = ["section", "case", "quantity", "gapkit", "QUIP", "gapkit/QUIP", "goal",
            "1-min load (gapkit / QUIP)", "notes"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 3 + ["---:"] * 3 + ["---"] * 3) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)

    command = h.command_line(SCRIPT, argv)
    eth_dir = h.resolve_data_dir(args.ethanol_dir, "ethanol_rmd17", ETH_FILES)[0]
    si_dir = h.resolve_data_dir(args.si_dir, "si_mlearn", SI_FILES)[0]
    have_eth = all((eth_dir / f).is_file() for f in ETH_FILES)
    have_si = (not args.no_si) and all((si_dir / f).is_file() for f in SI_FILES)
    if not have_eth:
        print(f"ethanol data not found in {eth_dir} (needs {', '.join(ETH_FILES)}): "
              "fit-vs-N, fit-vs-M and ethanol prediction rows skipped")
    if not args.no_si and not have_si:
        print(f"Si data not found in {si_dir} (needs {', '.join(SI_FILES)}): Si rows skipped")
    if not have_eth and not have_si:
        print("Nothing to measure (set --ethanol-dir / --si-dir or $GAPKIT_SHARED_DATA).")
        return 0
    do_quip, why = (False, "disabled (--no-quip)") if args.no_quip else h.quippy_available()
    if not do_quip:
        print(f"QUIP: {why or 'unavailable'}; gapkit-only columns")

    env, threads = h.worker_env(args.threads)
    print(f"{h.host_line(threads)}; gapkit n_jobs={args.n_jobs} chunk_size={args.chunk_size}")
    print(f"ethanol: {eth_dir}; SOAP {ETH_SOAP}, GP {ETH_GP}, CUR; sizes {args.sizes} at "
          f"M={args.n_sparse}/species; M sweep {args.m_values}/species at N={args.m_n}"
          f"{' (with gap_fit)' if args.quip_m else ' (gapkit only)'}; prediction on "
          f"{args.n_predict} test_MD frames, best of {args.repeats}")
    if have_si:
        print(f"Si: {si_dir}; SOAP {SI_SOAP}, GP {SI_GP}, {args.si_n_sparse} CUR points, "
              f"{args.si_n_train} training cells; test cell {args.si_repeat}^3 x 8 atoms, "
              f"a={SI_A} Å, rattle 0.05 Å seed {args.seed}")
    print(flush=True)

    with h.temp_dir("gapkit_scaling_", args.keep_tmp) as tmp:
        drv = Driver(args, env, tmp)
        R: dict = {"command": command, **h.host_fields(threads), "quip": do_quip, "quip_note": why,
                   "settings": h.settings(args),
                   "ethanol_settings": {"soap": ETH_SOAP, "gp": ETH_GP},
                   "si_settings": {"soap": SI_SOAP, "gp": SI_GP, "a": SI_A},
                   "goals": {"fit_time_ratio": GOAL_RATIO, "peak_rss_ratio": GOAL_RATIO,
                             "peak_rss_growth": GOAL_FLAT, "predict_ratio": GOAL_RATIO}}
        t_start = time.perf_counter()
        if have_eth:
            sizes = sorted(set(args.sizes))
            n_pred = max(sizes)
            base = {"data_dir": str(eth_dir), "n_predict": args.n_predict}
            R["fit_vs_n"] = []
            for n in sizes:
                pred = (n == n_pred) and not args.no_predict
                e = {"n": n, "m": args.n_sparse}
                p = dict(base, n=n, m=args.n_sparse, predict=pred)
                e["gapkit"] = drv.launch("gk_eth", f"gapkit fit N={n} M={args.n_sparse}"
                                         + (" + predict" if pred else ""), p)
                if do_quip:
                    e["quip"] = drv.launch("qp_eth", f"gap_fit N={n} M={args.n_sparse}"
                                           + (" + predict" if pred else ""), p)
                R["fit_vs_n"].append(e)
                if pred:
                    R["predict_ethanol"] = {"n": n, "gapkit": e["gapkit"], "quip": e.get("quip")}
            R["fit_vs_m"] = []
            for m in args.m_values:
                e = {"n": args.m_n, "m": m}
                prev = next((x for x in R["fit_vs_n"] if x["n"] == args.m_n and x["m"] == m), None)
                if prev is not None:
                    e.update(gapkit=prev["gapkit"], reused=True)
                    if args.quip_m and do_quip:
                        e["quip"] = prev.get("quip")
                else:
                    p = dict(base, n=args.m_n, m=m, predict=False)
                    e["gapkit"] = drv.launch("gk_eth", f"gapkit fit N={args.m_n} M={m}", p)
                    if args.quip_m and do_quip:
                        e["quip"] = drv.launch("qp_eth", f"gap_fit N={args.m_n} M={m}", p)
                R["fit_vs_m"].append(e)
        if have_si:
            p = {"data_dir": str(si_dir), "n": args.si_n_train, "m": args.si_n_sparse,
                 "repeat": args.si_repeat}
            g = drv.launch("gk_si", f"Si gapkit fit ({args.si_n_train} cells) + predict", p)
            q = None
            if do_quip:
                qp = dict(p, e0=_get(g, "e0"), delta=_get(g, "delta"))
                q = drv.launch("qp_si", f"Si gap_fit ({args.si_n_train} cells) + quippy predict", qp)
            R["predict_si"] = {"gapkit": g, "quip": q}
        R["total_wall_s"] = time.perf_counter() - t_start

        rows = build_rows(R, args)
        print()
        print(f"command: {command}")
        print(f"(threads per process: {args.threads or 'environment'}; {os.cpu_count()} CPUs; "
              f"total {R['total_wall_s']:.0f} s; QUIP = gap_fit for fits, quippy.potential."
              f"Potential for predictions{'' if do_quip else '; QUIP unavailable: ' + str(why)})")
        R["gapkit_sources"] = sorted(x for x in drv.sources if x)
        if len(R["gapkit_sources"]) > 1:
            print("WARNING: gapkit's source files changed during this run (hashes "
                  f"{', '.join(R['gapkit_sources'])}): the rows below mix code versions; "
                  "benchmark a frozen copy (PYTHONPATH=<copy>) for comparable numbers")
        elif R["gapkit_sources"]:
            print(f"gapkit sources (sha256 of gapkit/**/*.py): {R['gapkit_sources'][0]}, "
                  "unchanged during the run")
        print()
        print_table(rows)
        R["table_rows"] = rows
        h.save_results(args.json, R)
    return 0


if __name__ == "__main__":
    sys.exit(main())
