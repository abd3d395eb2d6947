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
``default``
    ``knee`` with the posterior power map (the default since session 7).

Printed per form and set: energy ZMS, 95 % coverage and ENCE with its simulated
reference (a perfectly calibrated σ of the same shape), force ZMS (per species),
coverage, ENCE [reference], AUROC of the worst 10 % of per-atom |ΔF| [reference mean,
p5], and the separation AUROC of σ_E/atom from the first test set. Exact force stds.

Sets: ``xtb`` (GFN2-xTB ethanol 500 K MD made here, 300 train; test: an independent
500 K run, and 1000 K), ``cu`` (EMT Cu 300 K, 60 cells; 300 K and 600 K), ``eth``
(rMD17 ethanol, 800 train; 200 ``test_MD`` frames, H removal, dimers, normal modes:
heavy, ~5 GB). The xTB/EMT frames are those of ``uncertainty_calibration.py`` (same
seeds; read from its ``--cache`` when there).

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

FORMS = {"s6": dict(exponents="shared", free_knee=False, free_power=False),
         "own": dict(exponents="block", free_knee=False, free_power=False),
         "knee": dict(exponents="block", free_knee=True, free_power=False),
         "default": dict()}


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


def _terms(model, frames):
    """Raw variance terms (exact forces where labelled) and errors of the final model."""
    from gapkit.model.calibration import validation_parts
    from gapkit.model.prediction import predict_batch
    st = model.state_
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
                    e_err=np.asarray(e_err), f_err=f_err, source=source)
        return orig(state, frames, parts, e_err, f_err, source, **kw)

    tr.fit_calibration = keep
    try:
        model = make().fit(train)
    finally:
        tr.fit_calibration = orig
    return held, {name: _terms(model, fr) for name, fr in tests.items()}


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
    out = {"energy_zms": m.zms(de, se), "energy_coverage95": m.coverage(de, se, 0.95),
           "sigma_e_per_atom": (std.energy / nat).tolist()}
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
    s = f"  {name:10s} E ZMS {r['energy_zms']:.3f} cov {r['energy_coverage95']:.3f}"
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


def main(argv=None):
    from gapkit.model.calibration import fit_calibration
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", choices=("xtb", "cu", "eth", "si"),
                   help="set(s) (default: xtb and cu)")
    p.add_argument("--cache", type=Path,
                   default=Path.home() / ".cache/gapkit-bench/uncertainty_calibration")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    out = {}
    for name in args.set or ["xtb", "cu"]:
        make, train, tests, per_atom = sets(name, args.cache)
        held, test_terms = fit_and_capture(make, train, tests)
        print(f"== {name}: calibrated on {held['source']}", flush=True)
        out[name] = {}
        for form, kw in FORMS.items():
            cal = fit_calibration(held["state"], _frames(held["numbers"]), held["parts"],
                                  held["e_err"], held["f_err"], held["source"], **kw)
            print(f" {form}", flush=True)
            res = {"held-out": evaluate(held, cal, per_atom)}
            line("held-out", res["held-out"], None)
            first = None
            for tname, t in test_terms.items():
                res[tname] = evaluate(t, cal, per_atom)
                line(tname, res[tname], first)
                first = res[tname]["sigma_e_per_atom"] if first is None else first
            for r in res.values():
                r.pop("sigma_e_per_atom", None)
            out[name][form] = res
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
