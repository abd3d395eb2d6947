#!/usr/bin/env python
"""The compression term of the std (``gapkit.model.distance_variance``) on data made here.

Each model is ``GAP(...)`` at the defaults, fitted on the labelled MD sets that
``benchmarks/uncertainty_calibration.py`` makes and caches (GFN2-xTB ethanol at 500 K via
tblite; EMT Cu, 108-atom cell at 300 K). The shifted sets are made and labelled here from
held-out frames (30 for xTB, 10 for Cu per set):

``xtb``
    whole molecule scaled about its centre of mass by 0.85–1.1; one C–H bond (the first
    C's nearest H) scaled by 0.8–1.2; in distribution: 60 held-out 500 K frames.
``cu``
    cell and positions scaled by 0.9–1.03; a slab (the cell opened along z, 6 Å vacuum);
    in distribution: 15 held-out 300 K cells (energies per atom).

Every set is scored twice with the same model: with the compression term and without it
(``calibration.compression`` emptied): ZMS of energies and force components, 95 %
coverage, ENCE of forces with its simulated reference, and the AUROC of σ_E/atom
separating the set from the in-distribution frames. Models and labels are cached in
``--cache``; the labelled MD sets are read from ``--md-cache`` (made by
``uncertainty_calibration.py --part mild``).

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/uncertainty_compression.py \\
        --system xtb --system cu --json /tmp/uq_compression.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uncertainty_calibration as uc  # noqa: E402


def label(frames, make_calc):
    from ase.calculators.singlepoint import SinglePointCalculator
    out = []
    for a in frames:
        b = a.copy()
        b.calc = make_calc()
        e, f = b.get_potential_energy(), b.get_forces()
        c = b.copy()
        c.calc = SinglePointCalculator(c, energy=e, forces=f)
        out.append(c)
    return out


def cached(cache, name, make):
    from ase.io import read, write
    p = cache / f"{name}.xyz"
    if not p.is_file():
        write(str(p), make())
    return read(str(p), ":")


def xtb_calc():
    from tblite.ase import TBLite
    return TBLite(method="GFN2-xTB", verbosity=0)


def emt_calc():
    from ase.calculators.emt import EMT
    return EMT()


def scaled(frames, f):
    out = []
    for a in frames:
        b = a.copy()
        c = b.get_center_of_mass()
        b.positions = c + f * (b.positions - c)
        if b.pbc.any():
            b.set_cell(b.cell * f, scale_atoms=False)
        out.append(b)
    return out


def one_ch(frames, f):
    out = []
    for a in frames:
        b = a.copy()
        s = b.get_chemical_symbols()
        c = s.index("C")
        h = [i for i, x in enumerate(s) if x == "H"]
        k = h[int(np.argmin(b.get_distances(c, h)))]
        b.positions[k] = b.positions[c] + f * (b.positions[k] - b.positions[c])
        out.append(b)
    return out


def slab(frames):
    out = []
    for a in frames:
        b = a.copy()
        b.pbc = [True, True, False]
        b.center(vacuum=6.0, axis=2)
        out.append(b)
    return out


def scores(model, frames, ref_arr=None, per_atom=False):
    r, arr, _ = uc.set_metrics(model, frames, per_atom=per_atom, n_draws=50)
    keep = {k: r.get(k) for k in ("energy_zms", "forces_zms", "energy_coverage95",
                                  "forces_coverage95", "energy_mae", "forces_mae",
                                  "forces_ence", "forces_ence_reference",
                                  "forces_zms_by_species")}
    if ref_arr is not None:
        keep["auroc_vs_indist"] = uc.separation_auroc(arr["se_per_atom"], ref_arr["se_per_atom"])
    return keep, arr


def on_off(model, frames, ref_arr, per_atom=False):
    off = copy.copy(model)
    st = model.state_
    off.state_ = st.replace(calibration=replace(st.calibration, compression={}))
    return {"on": scores(model, frames, ref_arr, per_atom)[0],
            "off": scores(off, frames, ref_arr, per_atom)[0]}


def run_xtb(args):
    from gapkit import GAP
    from ase.io import read
    tr = read(str(args.md_cache / "xtb_500K_train.xyz"), ":")
    te = read(str(args.md_cache / "xtb_500K_test.xyz"), ":")
    model, _ = uc.fitted(args.cache, "xtb_500K", lambda: GAP(e0=uc.xtb_e0()), tr, args.refit)
    res = {"compression": model.calibration_.compression, "indist": on_off(model, te[:60], None)}
    ref_arr = scores(model, te[:60])[1]
    for f in (0.85, 0.9, 0.95, 1.05, 1.1):
        fr = cached(args.cache, f"xtb_scaled_{f}", lambda: label(scaled(te[60:90], f), xtb_calc))
        res[f"molecule scaled {f}"] = on_off(model, fr, ref_arr)
    for f in (0.8, 0.85, 0.9, 0.95, 1.1, 1.2):
        fr = cached(args.cache, f"xtb_oneCH_{f}", lambda: label(one_ch(te[90:120], f), xtb_calc))
        res[f"one C-H scaled {f}"] = on_off(model, fr, ref_arr)
    return res


def run_cu(args):
    from gapkit import GAP
    from ase.io import read
    tr = read(str(args.md_cache / "cu_300K_train.xyz"), ":")
    te = read(str(args.md_cache / "cu_300K_test.xyz"), ":")
    model, _ = uc.fitted(args.cache, "cu_300K", lambda: GAP(), tr, args.refit)
    res = {"compression": model.calibration_.compression,
           "indist": on_off(model, te[:15], None, True)}
    ref_arr = scores(model, te[:15], per_atom=True)[1]
    for f in (0.9, 0.95, 0.97, 1.03):
        fr = cached(args.cache, f"cu_scaled_{f}", lambda: label(scaled(te[15:25], f), emt_calc))
        res[f"cell scaled {f}"] = on_off(model, fr, ref_arr, True)
    fr = cached(args.cache, "cu_slab", lambda: label(slab(te[15:25]), emt_calc))
    res["slab"] = on_off(model, fr, ref_arr, True)
    return res


def print_table(out):
    print("| set | ZMS E on / off | ZMS F on / off | AUROC σE/atom on / off | E MAE | F MAE |")
    print("| --- | --- | --- | --- | --- | --- |")
    for system, res in out.items():
        for name, v in res.items():
            if name == "compression":
                continue
            on, off = v["on"], v["off"]
            print(f"| {system} {name} | {uc.fmt(on['energy_zms'])} / {uc.fmt(off['energy_zms'])} | "
                  f"{uc.fmt(on['forces_zms'])} / {uc.fmt(off['forces_zms'])} | "
                  f"{uc.fmt(on.get('auroc_vs_indist'))} / {uc.fmt(off.get('auroc_vs_indist'))} | "
                  f"{uc.fmt(on['energy_mae'])} | {uc.fmt(on['forces_mae'])} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", action="append", choices=("xtb", "cu"))
    p.add_argument("--cache", type=Path,
                   default=Path("~/.cache/gapkit-bench/uncertainty_compression").expanduser())
    p.add_argument("--md-cache", type=Path,
                   default=Path("~/.cache/gapkit-bench/uncertainty_calibration").expanduser())
    p.add_argument("--refit", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for system in args.system or ("xtb", "cu"):
        out[system] = {"xtb": run_xtb, "cu": run_cu}[system](args)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(uc.jsonable({"results": out, "fits": uc.FIT_META,
                                                      "git_head": uc._git("rev-parse", "HEAD")}),
                                        indent=1))


if __name__ == "__main__":
    main()
