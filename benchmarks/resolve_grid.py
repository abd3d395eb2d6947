"""One fit per data set, then exact re-solves for other noises, δ and term weights.

The streamed row factors of a fit (``R^T R = A^T A`` per noise group) give the exact
solve for any energy/force/virial noise, any δ and any relative weight of additive
kernel terms (a term's rows and its ``K_MM`` block scale by ``w**2``), so one fit
per data set and descriptor buys a whole grid of those choices: a small QR per
point and one prediction of the test sets. The descriptor, the sparse set and the
data stay fixed (``calibrate=False``: the mean model of all training frames).

Grid (``--grid``): ``energy_noise`` times ``--e-mult`` (σ_F and the automatic σ_V
fixed), δ times ``--delta-mult`` of the automatic value, and for a multi-term
descriptor the first term's weight times ``--w-mult``.

Data sets (made here unless noted; cached in ``--cache``): ``xtb_ethanol``,
``xtb_isopropanol``, ``emt_cu`` (``sparse_gain.py``), ``emt_cual`` (120 / 60 EMT
Cu-Al cells with vacancies and strain, stress labels: ``virials.py``), ``emt_nial`` and
``xtb_acetaldehyde`` (``unseen_sets.py``: sets no default was chosen on), and the shared
``rmd17_300`` / ``rmd17_1000`` (evenly spaced train frames, E0 of the isolated atoms;
tested on 500 ``test_MD`` frames) and ``si`` (mlearn split, virials).

Variants (``--variant``): ``default`` (``GAP()``: SOAP with radial scaling m 4, r0 2 Å
+ 2-body, since session 7); ``noscale`` (SOAP + 2-body without the scaling, the
session-6 default); ``rc6`` / ``rc6_r024`` (the default model at r_cut 6 Å with
r0 2 Å, the rule, or r0 2.4 Å, scaled with the cutoff); ``soap`` (SOAP alone, the
default before that); ``cw05`` (cosine taper 0.5 Å);
``nl_10_8`` / ``nl_6_4`` (n_max / l_max); ``2b`` (2-body zeta 1, 50 points per
species, + SOAP); ``zeta2``.

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/resolve_grid.py \\
        --set xtb_ethanol --variant default --json /tmp/grid_xtb_ethanol.json
"""

from __future__ import annotations

import argparse
import itertools
import logging
import json
import os
import resource
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
SETS = ("xtb_ethanol", "xtb_isopropanol", "emt_cu", "emt_cual", "emt_nial", "xtb_acetaldehyde",
        "rmd17_300", "rmd17_1000", "si")
VARIANTS = ("default", "noscale", "rc6", "rc6_r024", "soap", "cw05", "nl_10_8", "nl_6_4", "2b", "zeta2", "cw05_2b")


def load(name, cache):
    """(train, {test: frames}, e0)."""
    from ase.io import read
    if name in ("xtb_ethanol", "xtb_isopropanol", "emt_cu"):
        from sparse_gain import data_set
        return data_set(name, cache)
    if name in ("emt_nial", "xtb_acetaldehyde"):
        from unseen_sets import data_set
        return data_set(name, cache)
    if name == "emt_cual":
        from uncertainty_calibration import cached_frames
        from virials import emt_cells
        tr, _ = cached_frames(cache, "cual_cells_train", lambda: emt_cells("cual", 120, 1))
        te, _ = cached_frames(cache, "cual_cells_test", lambda: emt_cells("cual", 60, 2))
        return tr, {"test": te}, "lstsq"
    if name.startswith("rmd17"):
        from harness import isolated_energies
        d = SHARED / "ethanol_rmd17"
        n = int(name.split("_")[1])
        tr, te = read(d / "train.xyz", ":"), read(d / "test_MD.xyz", ":")
        return ([tr[k] for k in np.linspace(0, len(tr) - 1, n).astype(int)],
                {"test_MD": [te[k] for k in np.linspace(0, len(te) - 1, 500).astype(int)]},
                isolated_energies(d / "isolated_atoms.xyz"))
    if name == "si":
        import harness as h
        tr, te = h.load_si(SHARED / "si_mlearn", None, None, virials=True)
        return tr, {"test": te}, "lstsq"
    raise ValueError(f"unknown set {name!r}")


def descriptor(variant):
    from gapkit import SOAP, Term
    from gapkit.descriptors import TwoBody
    if variant in ("default", "zeta2"):
        return None
    if variant == "soap":
        return SOAP()
    if variant == "noscale":
        from gapkit.gp.terms import default_terms
        return default_terms(SOAP())
    if variant in ("rc6", "rc6_r024"):
        from gapkit.gp.terms import default_soap, default_terms
        r0 = {"rc6": 2.0, "rc6_r024": 2.4}[variant]
        return default_terms(default_soap(r_cut=6.0, radial_scaling_r0=r0))
    if variant == "cw05":
        return SOAP(cutoff_width=0.5)
    if variant == "nl_10_8":
        return SOAP(n_max=10, l_max=8)
    if variant == "nl_6_4":
        return SOAP(n_max=6, l_max=4)
    if variant == "2b":
        return [Term(TwoBody(r_cut=5.0), zeta=1, n_sparse=50), Term(SOAP())]
    if variant == "cw05_2b":
        return [Term(TwoBody(r_cut=5.0), zeta=1, n_sparse=50), Term(SOAP(cutoff_width=0.5))]
    raise ValueError(f"unknown variant {variant!r}")


def errors(model, frames):
    from harness import model_maes
    m = model_maes(model, frames)
    return {"E_meV_atom": m["energy_mae_meV_atom"], "E_meV": m["energy_mae_meV"],
            "F_meV_A": m["force_mae_meV_A"]}


def reweighted(state, groups, w_mult):
    """Row factors and K_MM factor with the first term's weight times ``w_mult``."""
    from gapkit.gp import solver as gp
    from gapkit.gp import terms
    from gapkit.gp.solver import RowGroup
    if w_mult == 1.0:
        return state.terms, groups, state.kmm_cholesky
    t0 = state.terms[0]
    scale = np.ones(len(state.alpha) + 1)
    scale[t0.start:t0.start + len(t0.sparse_species)] = w_mult ** 2
    new_groups = {g: RowGroup(R=None if r.R is None else r.R * scale, n_rows=r.n_rows,
                              log_inv_w=r.log_inv_w) for g, r in groups.items()}
    new_terms = (terms.FittedTerm(t0.descriptor, t0.zeta, t0.weight * w_mult, t0.sparse_q,
                                  t0.sparse_species, t0.start),) + tuple(state.terms[1:])
    L = gp.cholesky_kmm(terms.kernel_mm(list(new_terms)), 1e-8)
    return new_terms, new_groups, L


def main(argv=None):
    from gapkit import GAP
    from gapkit.gp import solver as gp

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", required=True, choices=SETS)
    p.add_argument("--variant", default="default", choices=VARIANTS)
    p.add_argument("--e-mult", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0])
    p.add_argument("--delta-mult", type=float, nargs="+", default=[1.0])
    p.add_argument("--w-mult", type=float, nargs="+", default=[1.0])
    p.add_argument("--cache", type=Path,
                   default=Path.home() / ".cache/gapkit-bench/uncertainty_calibration")
    p.add_argument("--valid-fraction", type=float, default=0.0,
                   help="hold out this fraction of the training frames (evenly spaced) as "
                        "a 'valid' set scored at every grid point (choosing by held-out "
                        "error; default 0: train on all)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("gapkit.model.training").setLevel(logging.INFO)
    train, tests, e0 = load(args.set, args.cache)
    if args.valid_fraction > 0:
        n_valid = int(round(args.valid_fraction * len(train)))
        pick = set(np.linspace(0, len(train) - 1, n_valid).astype(int).tolist())
        tests = {**tests, "valid": [a for k, a in enumerate(train) if k in pick]}
        train = [a for k, a in enumerate(train) if k not in pick]
    kw = {"zeta": 2.0} if args.variant == "zeta2" else {}
    t0 = time.process_time()
    model = GAP(descriptor=descriptor(args.variant), e0=e0, calibrate=False, random_state=0,
                **kw).fit(train)
    out = {"set": args.set, "variant": args.variant, "n_train": len(train),
           "fit_cpu_s": time.process_time() - t0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "M": int(len(model.alpha_)), "delta_auto": model.delta_,
           "noise": {k.label: v for k, v in model.noise_.items()}, "grid": []}
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"resolve_grid_{os.getpid()}.npz"
    model.save(path)
    out["file_mb"] = path.stat().st_size / 1e6
    path.unlink()
    print(json.dumps({k: v for k, v in out.items() if k != "grid"}), flush=True)
    state, groups = model.state_, model._groups
    e_noise = {g: v for g, v in state.noise.items()}
    for wm, dm, em in itertools.product(args.w_mult, args.delta_mult, args.e_mult):
        t = time.process_time()
        new_terms, g2, L = reweighted(state, groups, wm)
        sig = {g: (v * em if g.kind == "energy" else v) for g, v in e_noise.items()}
        delta = state.delta * dm
        sol = gp.solve(g2, L, delta, sig)
        model.state_ = state.replace(terms=new_terms, alpha=sol.alpha, kmm_cholesky=L,
                                     posterior_factor=sol.R, delta=delta)
        row = {"w_mult": wm, "delta_mult": dm, "e_mult": em, "log_ev": sol.log_likelihood,
               "test": {k: errors(model, v) for k, v in tests.items()},
               "cpu_s": time.process_time() - t}
        out["grid"].append(row)
        print(f"w x{wm:g} delta x{dm:g} sigma_E x{em:g}:",
              {k: (round(v["E_meV_atom"], 4), round(v["E_meV"], 3), round(v["F_meV_A"], 2))
               for k, v in row["test"].items()}, flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
