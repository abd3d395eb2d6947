"""Accuracy of gapkit's defaults, ``optimize``, ``tune`` and the road toward FCHL.

Every row is one fit in its own process (``--row NAME``, so the peak RSS is the
fit's own), run one at a time; results go to ``--json`` as they come, and the table
is printed with the published rows beside it at the end.

Rows (``--rows``; default all):

``eth_*``
    rMD17 ethanol, 1000 train frames, scored on all 1000 ``test_MD`` frames:
    ``eth_old_default`` (``n_sparse=1000``, the default before ``"auto"``),
    ``eth_default`` (today's defaults: SOAP with radial scaling m 4, r0 2 Å, + 2-body,
    since session 7; ``eth_2b_soap`` is the session-6 default), ``eth_all_env`` (every environment:
    C 2000 / H 6000 / O 1000, random), ``eth_optimize``, and the road one change at a
    time on the 1000 frames: ``eth_2b_soap`` (2-body zeta 1, 50 points per species,
    + SOAP), ``eth_zeta2``, ``eth_cw05`` (cosine taper 0.5 Å), ``eth_nl_10_8``,
    ``eth_nl_6_4``, ``eth_sigma04``, ``eth_multi_cutoff`` (SOAP r_cut 3 + 5 Å).
``*_3b`` (``road_3b``, ``eth_3b``, ``si_3b``, ``own_*_3b``)
    the default terms plus a 3-body term (ACSF angular G4 functions only, zeta 2,
    200 sparse points per species), each term with its automatic weight.
``road_*``
    one change at a time on 300 evenly spaced rMD17 train frames (``auto`` takes
    every environment there), scored on 300 ``test_MD`` frames: defaults, zeta 2 and
    6, n_max/l_max 10/8 and 6/4, 2-body + SOAP, two SOAP terms with r_cut 3 and 5 Å,
    ``optimize``, ``tune`` (120 s on 60 frames, then a fit of the 300 with the
    chosen settings).
``si_*``
    mlearn Si (214 train / 25 test, virials from the kbar labels): defaults, the
    old default, ``optimize``, 2-body + SOAP (unscaled: the session-6 default).
``own_*``
    data made here (not the shared sets): GFN2-xTB ethanol at 500 K (300 train;
    tested at 500 K and 1000 K), GFN2-xTB isopropanol 500 K, EMT Cu 300 K (tested at
    300 K and 600 K), EMT Cu-Al cells (``resolve_grid.py``): old default against
    today's default, zeta 2 and 2-body + SOAP
    (cached by ``sparse_gain.py`` / ``uncertainty_calibration.py``).

Fit CPU seconds (``time.process_time``) and peak RSS are recorded per row, and the
CPU seconds of predicting the test set (energies and forces); wall times are not
claimed (the machine is shared): rerun on a quiet machine for timings.

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/accuracy.py \\
        --rows eth_default si_default --json /tmp/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
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
CACHE = Path.home() / ".cache/gapkit-bench/uncertainty_calibration"

#: Published test MAEs (energy, forces): ethanol meV / meV/Å, Si meV/atom / eV/Å.
PUBLISHED = {
    "ethanol": [("GAP (Kovács et al. 2021)", 3.5, 18.1), ("FCHL", 0.9, 6.2),
                ("linear ACE", 1.2, 7.3), ("MACE", 0.4, 2.1)],
    "si": [("GAP (mlearn)", 2.91, 0.07), ("MTP (mlearn)", 2.21, 0.06)],
}


def evenly(n_total, n):
    return np.linspace(0, n_total - 1, n).astype(int)


def ethanol(n_train, n_test):
    from ase.io import read
    d = SHARED / "ethanol_rmd17"
    tr, te = read(d / "train.xyz", ":"), read(d / "test_MD.xyz", ":")
    return ([tr[k] for k in evenly(len(tr), n_train)],
            {"test_MD": [te[k] for k in evenly(len(te), n_test)]})


def si():
    from harness import load_si
    train, test = load_si(SHARED / "si_mlearn")
    return train, {"test": test}


def own(name):
    if name == "emt_cual":
        from resolve_grid import load as grid_load
        return grid_load(name, CACHE)
    from sparse_gain import data_set
    train, tests, e0 = data_set(name, CACHE)
    return train, tests, e0


def soap(**kw):
    from gapkit import SOAP
    return SOAP(**kw)


def two_body_soap(**soap_kw):
    from gapkit import SOAP, Term, TwoBody
    return [Term(TwoBody(r_cut=5.0), zeta=1, n_sparse=50), Term(SOAP(**soap_kw))]


def multi_cutoff():
    from gapkit import SOAP, Term
    return [Term(SOAP(r_cut=3.0)), Term(SOAP(r_cut=5.0))]


def multi_sigma():
    from gapkit import SOAP, Term
    return [Term(SOAP(sigma=0.3)), Term(SOAP(sigma=0.6))]


def three_body_default():
    """The default terms plus a 3-body term: ACSF angular functions only (the 12 default
    G4, no radial G2), zeta 2, 200 sparse points per species."""
    from gapkit import ACSF, Term
    from gapkit.gp.terms import default_terms
    return default_terms() + [Term(ACSF(g2_params=[]), zeta=2, n_sparse=200)]


def rows():
    """name -> (data, GAP kwargs, mode)."""
    eth = ("ethanol", 1000, 1000)
    road = ("ethanol", 300, 300)
    out = {
        "eth_old_default": (eth, {"n_sparse": 1000}, "fit"),
        "eth_default": (eth, {}, "fit"),
        "eth_all_env": (eth, {"n_sparse": {"C": 2000, "H": 6000, "O": 1000},
                              "sparse_method": "random"}, "fit"),
        "eth_optimize": (eth, {"optimize": True}, "fit"),
        "eth_2b_soap": (eth, {"descriptor": ("2b",)}, "fit"),
        "eth_zeta2": (eth, {"zeta": 2.0}, "fit"),
        "eth_cw05": (eth, {"descriptor": ("soap", {"cutoff_width": 0.5})}, "fit"),
        "eth_nl_10_8": (eth, {"descriptor": ("soap", {"n_max": 10, "l_max": 8})}, "fit"),
        "eth_nl_6_4": (eth, {"descriptor": ("soap", {"n_max": 6, "l_max": 4})}, "fit"),
        "eth_sigma04": (eth, {"descriptor": ("soap", {"sigma": 0.4})}, "fit"),
        "eth_multi_cutoff": (eth, {"descriptor": ("multi",)}, "fit"),
        "eth_multi_sigma": (eth, {"descriptor": ("multi_sigma",)}, "fit"),
        "eth_nl_8_4": (eth, {"descriptor": ("soap", {"n_max": 8, "l_max": 4})}, "fit"),
        "eth_nl_6_6": (eth, {"descriptor": ("soap", {"n_max": 6, "l_max": 6})}, "fit"),
        "eth_nl_4_4": (eth, {"descriptor": ("soap", {"n_max": 4, "l_max": 4})}, "fit"),
        "eth_nl_6_4_m7000": (eth, {"descriptor": ("soap", {"n_max": 6, "l_max": 4}),
                                   "n_sparse": {"C": 2000, "H": 4000, "O": 1000}}, "fit"),
        # the same changes on top of 2-body + SOAP (the default from session 6 on)
        "eth2b_zeta2": (eth, {"descriptor": ("2b",), "zeta": 2.0}, "fit"),
        "eth2b_cw05": (eth, {"descriptor": ("2b", {"cutoff_width": 0.5})}, "fit"),
        "eth2b_nl_10_8": (eth, {"descriptor": ("2b", {"n_max": 10, "l_max": 8})}, "fit"),
        "eth2b_nl_6_4": (eth, {"descriptor": ("2b", {"n_max": 6, "l_max": 4})}, "fit"),
        "eth2b_sigma04": (eth, {"descriptor": ("2b", {"sigma": 0.4})}, "fit"),
        "road_default": (road, {}, "fit"),
        "road_old_default": (road, {"n_sparse": 1000}, "fit"),
        "road_zeta2": (road, {"zeta": 2.0}, "fit"),
        "road_zeta6": (road, {"zeta": 6.0}, "fit"),
        "road_nl_10_8": (road, {"descriptor": ("soap", {"n_max": 10, "l_max": 8})}, "fit"),
        "road_nl_6_4": (road, {"descriptor": ("soap", {"n_max": 6, "l_max": 4})}, "fit"),
        "road_sigma04": (road, {"descriptor": ("soap", {"sigma": 0.4})}, "fit"),
        "road_2b_soap": (road, {"descriptor": ("2b",)}, "fit"),
        "road_multi_cutoff": (road, {"descriptor": ("multi",)}, "fit"),
        "road_optimize": (road, {"optimize": True}, "fit"),
        "road_tune": (road, {}, "tune"),
        # 2-body + 3-body (ACSF G4 only) + SOAP with radial scaling, one weight each
        "road_3b": (road, {"descriptor": ("3b",)}, "fit"),
        "eth_3b": (eth, {"descriptor": ("3b",)}, "fit"),
        "si_3b": (("si",), {"descriptor": ("3b",)}, "fit"),
        "si_default": (("si",), {}, "fit"),
        "si_old_default": (("si",), {"n_sparse": 1000}, "fit"),
        "si_optimize": (("si",), {"optimize": True}, "fit"),
        "si_2b_soap": (("si",), {"descriptor": ("2b",)}, "fit"),
    }
    # radial scaling u(r) = 2 / (1 + (r / r0)**m) of the SOAP neighbour density
    # (road_rs_*: on top of 2-body + SOAP, the default from session 6 on)
    for r0, m in ((1.5, 2), (2, 4), (3, 4), (3, 6)):
        tag, kw_rs = f"rs_{r0:g}_{m}", {"radial_scaling": float(m), "radial_scaling_r0": float(r0)}
        out[f"road_{tag}"] = (road, {"descriptor": ("2b", kw_rs)}, "fit")
        out[f"eth_{tag}"] = (eth, {"descriptor": ("soap", kw_rs)}, "fit")
        out[f"eth2b_{tag}"] = (eth, {"descriptor": ("2b", kw_rs)}, "fit")
    for name in ("xtb_ethanol", "xtb_isopropanol", "emt_cu", "emt_cual"):
        out[f"own_{name}_default"] = (("own", name), {}, "fit")
        out[f"own_{name}_old_default"] = (("own", name), {"n_sparse": 1000}, "fit")
        out[f"own_{name}_zeta2"] = (("own", name), {"zeta": 2.0}, "fit")
        out[f"own_{name}_2b_soap"] = (("own", name), {"descriptor": ("2b",)}, "fit")
        out[f"own_{name}_3b"] = (("own", name), {"descriptor": ("3b",)}, "fit")
    return out


def load(data):
    if data[0] == "ethanol":
        from harness import isolated_energies
        train, tests = ethanol(data[1], data[2])
        return train, tests, isolated_energies(SHARED / "ethanol_rmd17" / "isolated_atoms.xyz")
    if data[0] == "si":
        train, tests = si()
        return train, tests, "lstsq"
    return own(data[1])


def errors(model, frames):
    from gapkit.metrics import error_metrics
    t = time.process_time()
    p = model.predict(frames)
    cpu = time.process_time() - t
    m = error_metrics(p, frames)
    return {"E_mae_meV": 1e3 * m["energy_mae"], "E_mae_meV_atom": 1e3 * m["energy_mae_per_atom"],
            "F_mae_meV_A": 1e3 * m["forces_mae"], "predict_cpu_s": cpu,
            "n_atoms": m["n_atoms"]}


def run_row(name, calibrate=True):
    from gapkit import GAP
    data, kw, mode = rows()[name]
    kw = dict(kw, calibrate=calibrate)
    train, tests, e0 = load(data)
    desc = kw.pop("descriptor", None)
    if desc is not None:
        args = desc[1] if len(desc) > 1 else {}
        kw["descriptor"] = {"soap": soap, "2b": two_body_soap,
                            "multi": multi_cutoff, "multi_sigma": multi_sigma,
                            "3b": three_body_default}[desc[0]](**args)
    out = {"row": name, "n_train": len(train), "calibrate": calibrate}
    t0 = time.process_time()
    if mode == "tune":
        from gapkit.model.tuning import tune
        res = tune(train, time_budget=120.0, n_frames=60, gap_params={"e0": e0})
        out["tune"] = {"best": res.best, "n_trials": len(res.trials), "trials": res.trials}
        b = res.best
        kw.update(descriptor=soap(r_cut=b["r_cut"], sigma=b["sigma"], n_max=b["n_max"],
                                  l_max=b["l_max"]), zeta=b["zeta"], n_sparse=b["n_sparse"])
    model = GAP(e0=e0, random_state=0, **kw).fit(train)
    out["fit_cpu_s"] = time.process_time() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["M"] = int(len(model.alpha_))
    out["sparse_per_species"] = {int(z): int(np.sum(model.sparse_species_ == z))
                                 for z in model.species_}
    out["delta"] = model.delta_
    out["noise"] = {k.label: v for k, v in model.noise_.items()}
    if "hyperparameters" in model.extra_:
        h = model.extra_["hyperparameters"]
        out["hyperparameters"] = {"chosen": h["chosen"], "candidates": h["candidates"]}
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"accuracy_{name}.npz"
    model.save(path)
    out["file_mb"] = path.stat().st_size / 1e6
    path.unlink()
    out["test"] = {k: errors(model, v) for k, v in tests.items()}
    return out


def table(results):
    lines = ["| row | M | E MAE | F MAE | fit CPU s | peak MB | file MB | predict CPU s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        for tname, e in r["test"].items():
            si_like = name.startswith("si") or "cu" in name or "isopropanol" in name
            E = f"{e['E_mae_meV_atom']:.2f} meV/atom" if si_like else f"{e['E_mae_meV']:.2f} meV"
            F = f"{e['F_mae_meV_A'] / 1e3:.3f} eV/Å" if name.startswith("si") else \
                f"{e['F_mae_meV_A']:.1f} meV/Å"
            lines.append(f"| {name} ({tname}) | {r['M']} | {E} | {F} | {r['fit_cpu_s']:.0f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['file_mb']:.0f} | {e['predict_cpu_s']:.1f} |")
    for what, pubs in PUBLISHED.items():
        for label, e, f in pubs:
            unit = ("meV/atom", "eV/Å") if what == "si" else ("meV", "meV/Å")
            lines.append(f"| published {what}: {label} | | {e} {unit[0]} | {f} {unit[1]} | | | | |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=None, help=f"rows (default all): {list(rows())}")
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--no-calibrate", action="store_true",
                   help="calibrate=False for every row: the mean model of all training "
                        "frames in one fit (the calibrated default fits twice when a "
                        "species takes every environment); results keyed NAME@nocal")
    p.add_argument("--json", type=Path, default=Path("/tmp/accuracy.json"))
    args = p.parse_args(argv)
    if args.row:
        print("RESULT " + json.dumps(run_row(args.row, not args.no_calibrate)), flush=True)
        return
    names = args.rows or list(rows())
    unknown = [n for n in names if n not in rows()]
    if unknown:
        p.error(f"unknown rows {unknown}")
    results = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for name in names:
        t = time.perf_counter()
        key = f"{name}@nocal" if args.no_calibrate else name
        proc = subprocess.run([sys.executable, str(SCRIPT), "--row", name]
                              + ["--no-calibrate"] * args.no_calibrate,
                              capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{name}: failed (rc {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
            continue
        results[key] = json.loads(line[0][7:])
        results[key]["wall_s_not_a_timing"] = time.perf_counter() - t
        args.json.write_text(json.dumps(results, indent=1))
        r = results[key]
        print(key, {k: (round(v["E_mae_meV"], 2), round(v["E_mae_meV_atom"], 3),
                         round(v["F_mae_meV_A"], 1)) for k, v in r["test"].items()},
              f"M={r['M']} fit_cpu={r['fit_cpu_s']:.0f}s peak={r['peak_rss_mb']:.0f}MB "
              f"file={r['file_mb']:.0f}MB", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
