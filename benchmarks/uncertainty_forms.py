#!/usr/bin/env python
"""Forms of the std calibration compared on the same fitted models (issue #11).

Each set's model is fitted once with gapkit's defaults (``GAP(e0=...).fit(train)``: the
default held-out split calibrates it, and its rows are added back); the raw variance
terms and errors of the held-out frames (those the calibration saw) and of the test sets
are kept, and every form of ``gapkit.model.calibration.fit_calibration`` is fitted on the
same held-out terms and applied to the same final model's test terms:

``s6``
    the form of session 6: one Nyström exponent for every block, the knee at the
    largest validation ``rho``, posterior power 1;
``own``
    an exponent per block (energies, forces of each species);
``knee``
    ``own`` with the knee fitted between the largest validation ``rho`` and 1;
``s7``
    ``knee`` with the posterior power map (the default of session 7);
``s7_anchor``
    ``s7`` with the final model's power maps anchored on its own posterior scale
    (``gapkit.model.calibration_transfer.anchored``, ratio 1 - held-out fraction);
``small_p1``, ``small_p1_beta``
    ``s7``, but blocks with fewer than ``MIN_BLOCK_ITEMS`` (100) validation items (the
    energies of fewer than 100 frames, a rare species) keep power 1 (``_beta``: and take
    the item-weighted mean exponent of the other blocks);
``anchor_small``, ``default``
    ``small_p1`` / ``small_p1_beta`` anchored: ``default`` is the default since session 8.

Printed per form and set: energy ZMS, 95 % coverage and ENCE with its simulated
reference (a perfectly calibrated σ of the same shape), force ZMS (per species),
coverage, ENCE [reference], AUROC of the worst 10 % of per-atom |ΔF| [reference mean,
p5], and the separation AUROC of σ_E/atom from the first test set. Exact force stds.

Sets: ``xtb`` (GFN2-xTB ethanol 500 K MD made here, 300 train; test: an independent
500 K run, and 1000 K), ``cu`` (EMT Cu 300 K, 60 cells; 300 K and 600 K), ``eth``
(rMD17 ethanol, 800 train; 200 ``test_MD`` frames, H removal, dimers, normal modes:
heavy, ~5 GB), ``si`` (mlearn Si AIMD + Elastic; test cells of the same kinds, vacancy
and surface cells), ``al`` (EMT Al made here: 60 cells at 400 K; 30 cells at 400 K
and 800 K), ``pkg`` (the packaged default data: 200 train, 70 test frames).
``split:<first test>`` is the split (calibration) model on the first test set: what
the calibration misses there is not a transfer from the split to the final model.
``3x``: fraction of frames flagged by ``FlagThreshold(relative=3)``. The xTB/EMT
frames are those of ``uncertainty_calibration.py`` (same seeds; read from its
``--cache`` when there). ``--terms DIR`` keeps each set's terms, so forms can be
compared again without refitting.

Example::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/uncertainty_forms.py \\
        --set xtb --set cu --cache /tmp/calcache
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

FORMS = {"s6": dict(exponents="shared", free_knee=False, free_power=False, min_items=0),
         "own": dict(exponents="block", free_knee=False, free_power=False, min_items=0),
         "knee": dict(exponents="block", free_knee=True, free_power=False, min_items=0),
         "s7": dict(min_items=0),
         "s7_anchor": dict(min_items=0, anchor=True),
         "small_p1": dict(small_exponent=False),
         "small_p1_beta": dict(),
         "anchor_small": dict(small_exponent=False, anchor=True),
         "default": dict(anchor=True)}


class Captured:
    """The fitted state's numbers that :func:`fit_calibration` and ``collect_std`` read."""

    def __init__(self, st, calibration=None):
        self.delta = st.delta
        self._noise = {k: st.noise_level(k) for k in ("energy", "forces")}
        self.calibration = st.calibration if calibration is None else calibration

    def noise_level(self, kind):
        return self._noise[kind]

    def replace(self, calibration):
        out = Captured.__new__(Captured)
        out.delta, out._noise, out.calibration = self.delta, self._noise, calibration
        return out


def _terms(st, frames):
    """Raw variance terms (exact forces where labelled) and errors of state ``st``."""
    from gapkit.model.calibration import validation_parts
    from gapkit.model.prediction import predict_batch
    parts, de, df = [], [], []
    for k, a in enumerate(frames):
        try:
            f = a.get_forces()
        except Exception:  # noqa: BLE001 - energies-only frames
            f = None
        p = predict_batch(st, [a], f is not None, False, f is not None, offset=k)[0]
        parts.append(validation_parts(st, a, p, f))
        de.append(p.energy - a.get_potential_energy())
        df.append(None if f is None else p.forces - f)
    return dict(state=Captured(st), numbers=[a.numbers for a in frames], parts=parts,
                e_err=np.array(de), f_err=df)


def fit_and_capture(make, train, tests):
    """Fit ``make()`` on ``train`` (default split), keeping the held-out terms."""
    import gapkit.model.training as tr
    held = {}
    orig = tr.fit_calibration

    def keep(state, frames, parts, e_err, f_err, source, **kw):
        held.update(state=Captured(state), numbers=[a.numbers for a in frames], parts=parts,
                    e_err=np.asarray(e_err), f_err=f_err, source=source, split_state=state)
        return orig(state, frames, parts, e_err, f_err, source, **kw)

    tr.fit_calibration = keep
    try:
        model = make().fit(train)
    finally:
        tr.fit_calibration = orig
    split = held.pop("split_state")
    out = {name: _terms(model.state_, fr) for name, fr in tests.items()}
    # the split (calibration) model on the first test set: separates what the
    # calibration misses on unseen frames from what does not transfer to the final model
    first = next(iter(tests))
    out[f"split:{first}"] = _terms(split, tests[first])
    return held, out


def _frames(numbers):
    from ase import Atoms
    return [Atoms(numbers=z) for z in numbers]


def evaluate(t, cal, per_atom, n_draws=200):
    from gapkit.model.variance import collect_std
    from gapkit.uncertainty import metrics as m
    has_f = all(p.forces is not None for p in t["parts"])
    std = collect_std(t["state"].replace(calibration=cal), t["parts"], _frames(t["numbers"]),
                      forces=has_f)
    nat = np.array([len(z) for z in t["numbers"]], dtype=float)
    de, se = (t["e_err"] / nat, std.energy / nat) if per_atom else (t["e_err"], std.energy)
    from gapkit.uncertainty.flags import FlagThreshold
    score = FlagThreshold(relative=3.0).structure_scores(std, _frames(t["numbers"]), cal.reference)
    out = {"energy_zms": m.zms(de, se), "energy_coverage95": m.coverage(de, se, 0.95),
           "sigma_e_per_atom": (std.energy / nat).tolist(),
           "flagged_3x": float(np.mean(score > 1))}
    if len(de) >= 10:
        out["energy_ence"] = m.ence(de, se)
        out["energy_ence_reference"] = m.reference(m.ence, se, n_draws, 0)
    if has_f:
        fe = np.concatenate([f.reshape(-1, 3) for f in t["f_err"]])
        fs = np.concatenate([np.reshape(s, (-1, 3)) for s in std.forces])
        num = np.concatenate(t["numbers"])
        out.update({
            "forces_zms": m.zms(fe, fs), "forces_zms_by_species": m.zms_by_species(fe, fs, num),
            "forces_coverage95": m.coverage(fe, fs, 0.95), "forces_ence": m.forces_ence(fe, fs),
            "forces_ence_reference": m.reference(m.forces_ence, fs, n_draws, 0),
            "forces_auroc_worst10": m.auroc_worst(*m.atom_norms(fe, fs)),
            "forces_auroc_worst10_reference": m.reference(
                lambda e, s: m.auroc_worst(*m.atom_norms(e, s)), fs, n_draws, 0)})
    return out


def line(name, r, ref_sigma):
    from sklearn.metrics import roc_auc_score
    s = (f"  {name:10s} 3x {r['flagged_3x']:.3f} E ZMS {r['energy_zms']:.3f}"
         f" cov {r['energy_coverage95']:.3f}")
    if "energy_ence" in r:
        s += f" ENCE {r['energy_ence']:.3f} [{r['energy_ence_reference'][0]:.3f}]"
    if ref_sigma is not None:
        a, b = np.asarray(r["sigma_e_per_atom"]), np.asarray(ref_sigma)
        auc = roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])
        r["auroc_sigma_e_vs_first_test"] = float(auc)
        s += f" AUROC σE/atom vs first test {auc:.3f}"
    if "forces_zms" in r:
        sp = " ".join(f"{k} {v:.3f}" for k, v in r["forces_zms_by_species"].items())
        s += (f" | F ZMS {r['forces_zms']:.3f} ({sp}) cov {r['forces_coverage95']:.3f}"
              f" ENCE {r['forces_ence']:.3f} [{r['forces_ence_reference'][0]:.3f}]"
              f" AUROC10 {r['forces_auroc_worst10']:.3f}"
              f" [{r['forces_auroc_worst10_reference'][0]:.3f}, p5"
              f" {r['forces_auroc_worst10_reference'][1]:.3f}]")
    print(s, flush=True)


def _emt_al(temperature, n_frames, seed):
    """Langevin MD of a 108-atom fcc Al cell under EMT, as ``uc.emt_md`` does for Cu."""
    import uncertainty_calibration as uc
    from ase.build import bulk
    from ase.calculators.emt import EMT
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((3, 3, 3))
    atoms.calc = EMT()
    return uc.sample_md(atoms, temperature, n_frames, seed, f"Al_{temperature:.0f}K", 20, 500,
                        2.0, friction=0.01)


def sets(name, cache):
    import uncertainty_calibration as uc
    from gapkit import GAP
    cache.mkdir(parents=True, exist_ok=True)
    if name == "xtb":
        args = argparse.Namespace(cache=cache)
        s, _ = uc.xtb_sets(args)
        e0 = uc.xtb_e0()
        return (lambda: GAP(e0=e0), s["xtb_500K_train"],
                {"500K": s["xtb_500K_test"], "1000K": s["xtb_1000K_test"]}, False)
    if name == "pkg":  # the packaged default data (xTB ethanol + methanol, made here)
        return (lambda: GAP(e0=uc.xtb_e0()), uc.read(REPO / "data" / "train.xyz"),
                {"test": uc.read(REPO / "data" / "test.xyz")}, False)
    if name == "al":  # EMT Al (not a set of the other benchmarks): 400 K, tests 400 / 800 K
        al = {}
        for n, T, k, seed in (("al_400K_train", 400, 60, 21), ("al_400K_test", 400, 30, 22),
                              ("al_800K_test", 800, 30, 23)):
            al[n], _ = uc.cached_frames(cache, n, lambda: _emt_al(T, k, seed))
        return GAP, al["al_400K_train"], {"400K": al["al_400K_test"],
                                          "800K": al["al_800K_test"]}, True
    if name == "cu":
        cu = {}
        for n, T, k, seed in (("cu_300K_train", 300, 60, 11), ("cu_300K_test", 300, 30, 12),
                              ("cu_600K_test", 600, 30, 13)):
            cu[n], _ = uc.cached_frames(cache, n, lambda: uc.emt_md(T, k, seed, False))
        return GAP, cu["cu_300K_train"], {"300K": cu["cu_300K_test"],
                                          "600K": cu["cu_600K_test"]}, True
    if name == "si":  # trained on AIMD + Elastic cells; vacancies and surfaces are far
        d = uc.SHARED / "si_mlearn"
        train_all, test_all = uc.read(d / "train.xyz"), uc.read(d / "test.xyz")
        for a in train_all + test_all:
            a.info.pop("mlearn_virial_stress", None)
        keep = ("AIMD-NVT", "Elastic")
        tests = {"test": [a for a in test_all if a.info["config_type"] in keep]}
        for ct in ("Vacancy", "Surface"):
            tests[ct] = [a for a in test_all + train_all if a.info["config_type"] == ct]
        return GAP, [a for a in train_all if a.info["config_type"] in keep], tests, True
    d = uc.SHARED / "ethanol_rmd17"
    train = uc.read(d / "train.xyz")
    e0 = uc.isolated_e0(d / "isolated_atoms.xyz", {"H", "C", "O"})
    test = uc.read(d / "test_MD.xyz")
    tests = {"test_MD": [test[k] for k in uc.evenly(len(test), 200)]}
    for n in ("H_removal", "dimers", "norm_mode_874", "norm_mode_3005"):
        tests[n] = uc.read(d / f"test_{n}.xyz")
    return lambda: GAP(e0=e0), train[:800], tests, False


def captured(name, args):
    """Held-out and test terms of set ``name``, from ``args.terms`` when pickled there."""
    import pickle
    path = None if args.terms is None else args.terms / f"{name}.pkl"
    if path is not None and path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    make, train, tests, per_atom = sets(name, args.cache)
    out = (*fit_and_capture(make, train, tests), per_atom)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            pickle.dump(out, fh)
    return out


def main(argv=None):
    from gapkit.model.calibration import fit_calibration
    from gapkit.model.calibration_transfer import anchored
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", choices=("xtb", "cu", "eth", "si", "pkg", "al"),
                   help="set(s) (default: xtb and cu)")
    p.add_argument("--cache", type=Path,
                   default=Path.home() / ".cache/gapkit-bench/uncertainty_calibration")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--terms", type=Path, default=None,
                   help="folder of pickled held-out and test terms per set: read when there "
                        "(no refit), else written after the fit")
    p.add_argument("--form", action="append", choices=tuple(FORMS),
                   help="form(s) to compare (default: all)")
    args = p.parse_args(argv)
    out = {}
    for name in args.set or ["xtb", "cu"]:
        held, test_terms, per_atom = captured(name, args)
        print(f"== {name}: calibrated on {held['source']}", flush=True)
        out[name] = {}
        for form in args.form or FORMS:
            kw = dict(FORMS[form])
            anchor = kw.pop("anchor", False)
            cal = fit_calibration(held["state"], _frames(held["numbers"]), held["parts"],
                                  held["e_err"], held["f_err"], held["source"], **kw)
            # the final model's calibration: the power maps anchored on its own V_P
            n_val, n_all = (int(w) for w in held["source"].split(":")[1].split()[:3:2])
            final = anchored(cal, (n_all - n_val) / n_all) if anchor else cal
            print(f" {form}: " + "; ".join(
                f"{k} β {v.exponent:.2f} knee {v.knee:.2g} p {v.posterior_power:.2f} s_P "
                f"{v.posterior:.3g} s_A {v.aleatoric:.3g}"
                for k, v in [("E", cal.energy), *cal.forces.items()]), flush=True)
            res = {"held-out": evaluate(held, cal, per_atom)}
            line("held-out", res["held-out"], None)
            first = None
            for tname, t in test_terms.items():
                res[tname] = evaluate(t, cal if tname.startswith("split:") else final, per_atom)
                line(tname, res[tname], first)
                first = res[tname]["sigma_e_per_atom"] if first is None else first
            for r in res.values():
                r.pop("sigma_e_per_atom", None)
            out[name][form] = res
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
