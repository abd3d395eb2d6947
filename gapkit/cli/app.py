"""Command-line interface: ``gapkit fit | evaluate | predict | learning-curve``.

The command-line modules (this one and the runner of ``learning-curve`` in
:mod:`gapkit.diagnostics`) are the only places that print.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from gapkit.diagnostics.curves import add_learning_curve_parser, run_learning_curve_cli

# Output keys written by ``gapkit predict``; they never overwrite reference labels.
PRED_ENERGY = "gapkit_energy"
PRED_FORCES = "gapkit_forces"
PRED_ENERGIES = "gapkit_energies"
PRED_STRESS = "gapkit_stress"
PRED_ENERGY_STD = "gapkit_energy_std"
PRED_FORCES_STD = "gapkit_forces_std"
PRED_ENERGY_STD_EPI = "gapkit_energy_std_epistemic"
PRED_FORCES_STD_EPI = "gapkit_forces_std_epistemic"
PRED_FLAGGED = "gapkit_flagged"
PRED_FLAGGED_ATOMS = "gapkit_flagged_atoms"


def _parse_n_sparse(text: str):
    """``1000`` or ``C:1000,H:2000,O:500``."""
    text = str(text)
    if ":" not in text:
        return int(text)
    out = {}
    for part in text.split(","):
        sym, val = part.split(":")
        out[sym.strip()] = int(val)
    return out


def _e0_arg(text: str):
    return text


def _add_label_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-key", default=None,
                   help="info key of the reference energy (default: calculator results, then 'energy')")
    p.add_argument("--forces-key", default=None,
                   help="array key of the reference forces (default: calculator results, then 'forces')")
    p.add_argument("--virial-key", default=None, help="info key of the reference virial (eV)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The SOAP, GP and label flags shared by ``fit`` and ``learning-curve``."""
    p.add_argument("--e0", default=None, type=_e0_arg,
                   help="'lstsq', 'zero', 'isolated' (single-atom frames in TRAIN) or a path to an "
                        "isolated-atoms extxyz (default: lstsq; data/isolated_atoms.xyz for the default data)")
    p.add_argument("--descriptor", default="soap", choices=["soap", "acsf"],
                   help="many-body descriptor: SOAP (default) or Behler-Parrinello ACSF")
    p.add_argument("--two-body", type=int, default=0, metavar="N",
                   help="add a 2-body (distance) term with N sparse points per species at "
                        "zeta=1, i.e. GAP's 2b+SOAP (default 0: none)")
    p.add_argument("--r-cut", type=float, default=5.0, help="descriptor cutoff, Å (default 5.0)")
    p.add_argument("--n-max", type=int, default=8, help="SOAP radial functions (default 8)")
    p.add_argument("--l-max", type=int, default=6, help="SOAP angular channels (default 6)")
    p.add_argument("--sigma", type=float, default=0.5, help="SOAP Gaussian width, Å (default 0.5)")
    p.add_argument("--zeta", type=float, default=4.0, help="kernel exponent (default 4)")
    p.add_argument("--delta", default="auto", help="signal scale in eV, or 'auto' (default)")
    p.add_argument("--n-sparse", type=_parse_n_sparse, default=1000,
                   help="sparse points per species: N or C:1000,H:2000 (default 1000)")
    p.add_argument("--sparse-method", default="cur", choices=["cur", "random", "fps"])
    p.add_argument("--energy-noise", type=float, default=0.001, help="eV per sqrt(atom) (default 0.001)")
    p.add_argument("--force-noise", type=float, default=0.02, help="eV/Å (default 0.02)")
    p.add_argument("--virial-noise", type=float, default=0.1, help="eV per sqrt(atom) (default 0.1)")
    p.add_argument("--optimize", action="store_true",
                   help="learn delta and the noises by maximum marginal likelihood")
    _add_label_keys(p)


def resolve_training_files(train, test, e0, announce: bool = True):
    """Training files, test files and E0 spec, falling back to the default data."""
    train = list(train or [])
    if not train:
        train, default_test, iso = _default_data()
        test = default_test if test is None else test
        e0 = e0 or (iso if Path(iso).is_file() else "lstsq")
        if announce:
            print(f"Using the default data: {train[0]}")
    return train, test, e0 or "lstsq"


def model_from_args(args, e0, verbose: bool = False):
    """A :class:`gapkit.GAP` configured from the flags of :func:`add_model_arguments`."""
    from gapkit.descriptors import ACSF, SOAP, TwoBody
    from gapkit.model.estimator import GAP
    from gapkit.gp.terms import Term

    delta = args.delta if args.delta == "auto" else float(args.delta)
    if getattr(args, "descriptor", "soap") == "acsf":
        descriptor = ACSF(r_cut=args.r_cut)
    else:
        descriptor = SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=args.sigma)
    if getattr(args, "two_body", 0) > 0:
        descriptor = [Term(TwoBody(r_cut=args.r_cut), zeta=1, n_sparse=args.two_body),
                      Term(descriptor)]
    return GAP(descriptor,
               zeta=args.zeta, delta=delta, n_sparse=args.n_sparse,
               sparse_method=args.sparse_method, energy_noise=args.energy_noise,
               force_noise=args.force_noise, virial_noise=args.virial_noise, e0=e0,
               optimize=args.optimize, energy_key=args.energy_key, forces_key=args.forces_key,
               virial_key=args.virial_key, random_state=args.seed, verbose=verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapkit", description="Gaussian Approximation Potentials on DScribe SOAP.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a GAP (no arguments: the default data shipped in data/)")
    f.add_argument("train", nargs="*", help="training extxyz files (default: data/train.xyz)")
    f.add_argument("-o", "--output", default="gapkit_model.npz", help="model file to write")
    f.add_argument("--test", nargs="*", default=None,
                   help="test extxyz files (default with the default data: data/test.xyz)")
    add_model_arguments(f)
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    e = sub.add_parser("evaluate", help="errors (and calibration) of a model on labelled data")
    e.add_argument("model")
    e.add_argument("test", nargs="+")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--no-std", action="store_true", help="skip uncertainties (faster)")
    _add_label_keys(e)

    p = sub.add_parser("predict", help="write predictions (and uncertainties) to an extxyz")
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--std", action="store_true", help="also write uncertainties")
    p.add_argument("--flag-threshold", default=None,
                   help="flag uncertain frames: 'forces=0.1' (eV/Å), 'energy=0.005' (eV/atom), "
                        "'3x' (3 x learned noise), or a comma-separated mix")
    add_learning_curve_parser(sub)
    return parser


def _default_data():
    from gapkit.data import default_data_dir

    d = default_data_dir()
    return [str(d / "train.xyz")], [str(d / "test.xyz")], str(d / "isolated_atoms.xyz")


def _fmt_errors(name: str, m: dict) -> str:
    s = (f"{name:>5}: {m['n_structures']} structures | E MAE {1000 * m['energy_mae']:.2f} meV "
         f"(RMSE {1000 * m['energy_rmse']:.2f}), {1000 * m['energy_mae_per_atom']:.2f} meV/atom")
    if m.get("n_force_components"):
        s += f" | F MAE {1000 * m['forces_mae']:.1f} meV/Å (RMSE {1000 * m['forces_rmse']:.1f})"
    return s


def cmd_fit(args) -> int:
    from gapkit.data import read_frames, split_isolated
    from gapkit.metrics import error_metrics

    train, test, e0 = resolve_training_files(args.train, args.test, args.e0)
    frames = read_frames(train)
    model = model_from_args(args, e0, verbose=args.verbose)
    t0 = time.perf_counter()
    model.fit(frames)
    dt = time.perf_counter() - t0
    M = len(model.alpha_)
    print(f"Fitted on {len(frames)} structures in {dt:.1f} s: M = {M} sparse points, "
          f"delta = {model.delta_:.4g} eV, noise = "
          + ", ".join(f"{k} {v:.3g}" for k, v in model.noise_.items()))
    train_frames = split_isolated(frames)[0]
    print(_fmt_errors("train", error_metrics(model.predict(train_frames), train_frames, model.label_keys)))
    if test:
        test_frames = split_isolated(read_frames(test))[0]
        print(_fmt_errors("test", error_metrics(model.predict(test_frames), test_frames, model.label_keys)))
    path = model.save(args.output)
    print(f"Model written to {path}")
    return 0


def evaluate_model(model, frames, with_std: bool = True) -> dict:
    """Error and calibration metrics of ``model`` on labelled ``frames`` (the JSON of
    ``gapkit evaluate --json``)."""
    from gapkit.metrics import error_metrics, reference_arrays
    from gapkit.uncertainty.calibration import calibration_metrics

    if with_std:
        pred, std = model.predict(frames, return_std=True)
    else:
        pred, std = model.predict(frames), None
    out = error_metrics(pred, frames, model.label_keys)
    out["noise"] = dict(model.noise_)
    if std is not None:
        ref = reference_arrays(frames, model.label_keys)
        ce = calibration_metrics(pred.energy - ref["energy"], std.energy)
        out.update({f"energy_{k}": v for k, v in _calib_names(ce).items()})
        fe = [(p - r).ravel() for p, r in zip(pred.forces, ref["forces"]) if r is not None]
        if fe:
            fs = [s.ravel() for s, r in zip(std.forces, ref["forces"]) if r is not None]
            cf = calibration_metrics(np.concatenate(fe), np.concatenate(fs))
            out.update({f"forces_{k}": v for k, v in _calib_names(cf).items()})
        out["energy_std_mean"] = float(np.mean(std.energy))
        out["energy_std_epistemic_mean"] = float(np.mean(std.energy_epistemic))
    return out


def _calib_names(c: dict) -> dict:
    return {"z_mean": c["z_mean"], "z_std": c["z_std"], "nll": c["nll"],
            "coverage_68": c["coverage_68"], "coverage_95": c["coverage_95"],
            "miscalibration_area": c["miscalibration_area"], "spearman": c["spearman"]}


def cmd_evaluate(args) -> int:
    from gapkit.data import read_frames, split_isolated
    from gapkit.model.model_file import load

    model = load(args.model)
    for name in ("energy_key", "forces_key", "virial_key"):
        if getattr(args, name):
            setattr(model, name, getattr(args, name))
    frames = split_isolated(read_frames(args.test))[0]
    out = evaluate_model(model, frames, with_std=not args.no_std)
    if args.json:
        print(json.dumps(out, indent=None, sort_keys=True, allow_nan=True))
    else:
        print(_fmt_errors("test", out))
        if "energy_z_std" in out:
            print(f"calibration: energy z std {out['energy_z_std']:.2f}, 95% coverage "
                  f"{out['energy_coverage_95']:.2f}; forces z std {out.get('forces_z_std', float('nan')):.2f}, "
                  f"95% coverage {out.get('forces_coverage_95', float('nan')):.2f}")
    return 0


def cmd_predict(args) -> int:
    from ase.io import write

    from gapkit.data import read_frames
    from gapkit.model.model_file import load
    from gapkit.uncertainty.flags import FlagThreshold

    model = load(args.model)
    frames = read_frames(args.input)
    threshold = FlagThreshold.parse(args.flag_threshold) if args.flag_threshold else None
    want_std = args.std or threshold is not None
    if want_std:
        pred, std = model.predict(frames, return_std=True)
    else:
        pred, std = model.predict(frames), None
    flags = threshold.evaluate(std, frames, model.noise_) if threshold else None
    for k, atoms in enumerate(frames):
        atoms.info[PRED_ENERGY] = float(pred.energy[k])
        atoms.arrays[PRED_FORCES] = pred.forces[k]
        atoms.arrays[PRED_ENERGIES] = pred.energies[k]
        if pred.stress is not None and np.all(np.isfinite(pred.stress[k])):
            atoms.info[PRED_STRESS] = pred.stress[k]
        if std is not None:
            atoms.info[PRED_ENERGY_STD] = float(std.energy[k])
            atoms.info[PRED_ENERGY_STD_EPI] = float(std.energy_epistemic[k])
            atoms.arrays[PRED_FORCES_STD] = std.forces[k]
            atoms.arrays[PRED_FORCES_STD_EPI] = std.forces_epistemic[k]
        if flags is not None:
            atoms.info[PRED_FLAGGED] = bool(flags.structures[k])
            atoms.arrays[PRED_FLAGGED_ATOMS] = flags.atoms[k].astype(int)
    from gapkit.utils import atomic_write_bytes
    import io as _io

    buf = _io.StringIO()
    write(buf, frames, format="extxyz")
    atomic_write_bytes(args.output, buf.getvalue().encode())
    print(f"Wrote predictions for {len(frames)} structures to {args.output} "
          f"(keys {PRED_ENERGY}, {PRED_FORCES}, {PRED_ENERGIES}"
          + (f", {PRED_ENERGY_STD}, {PRED_FORCES_STD}" if std is not None else "") + ")")
    if flags is not None:
        s = flags.summary()
        print(f"Flagged {s['n_flagged_structures']} of {s['n_structures']} structures "
              f"({s['n_flagged_atoms']} atoms) above {args.flag_threshold}: "
              f"indices {s['flagged_indices'][:20]}{' ...' if len(s['flagged_indices']) > 20 else ''}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    handlers = {"fit": cmd_fit, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "learning-curve": run_learning_curve_cli}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"gapkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


