"""``gapkit evaluate``: errors and calibration of a saved model on labelled extxyz files."""

from __future__ import annotations

import argparse
import json

from gapkit.cli.common import add_label_keys, format_errors
from gapkit.data import read_frames, split_isolated
from gapkit.diagnostics.evaluation import evaluate
from gapkit.model import GAP, load


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to an argparse ``subparsers`` object; returns it."""
    e = subparsers.add_parser("evaluate", help="errors (and calibration) of a model on labelled data")
    e.add_argument("model")
    e.add_argument("test", nargs="+")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--no-std", action="store_true", help="skip uncertainties (faster)")
    add_label_keys(e)
    return e


def report(model: GAP, frames: list, with_std: bool = True) -> dict:
    """The JSON object of ``gapkit evaluate --json``.

    Parameters
    ----------
    model : GAP
        A fitted model.
    frames : list of ase.Atoms
        Labelled structures.
    with_std : bool, default True
        Also predict standard deviations and report their calibration.

    Returns
    -------
    dict
        :func:`gapkit.metrics.error_metrics` (eV, eV/atom, eV/Å), ``noise`` (the
        model's ``noise_``) and, with ``with_std``, the calibration entries
        ``energy_*``/``forces_*`` of :meth:`~gapkit.diagnostics.evaluation.Evaluation.calibration`
        and ``energy_std_mean``, ``energy_std_epistemic_mean`` (eV per structure).
    """
    ev = evaluate(model, frames, with_std=with_std)
    out = dict(ev.errors)
    out["noise"] = model.noise_.labelled()
    if ev.std is not None:
        out.update(ev.calibration())
        stds = ev.mean_stds()
        out["energy_std_mean"] = stds["energy_std"]
        out["energy_std_epistemic_mean"] = stds["energy_std_epistemic"]
    return out


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit evaluate``: print the errors (or the JSON); returns 0."""
    model = load(args.model)
    for name in ("energy_key", "forces_key", "virial_key"):
        if getattr(args, name):
            setattr(model, name, getattr(args, name))
    frames = split_isolated(read_frames(args.test))[0]
    out = report(model, frames, with_std=not args.no_std)
    if args.json:
        print(json.dumps(out, indent=None, sort_keys=True, allow_nan=True))
    else:
        print(format_errors("test", out))
        if "energy_z_std" in out:
            print(f"calibration: energy z std {out['energy_z_std']:.2f}, 95% coverage "
                  f"{out['energy_coverage_95']:.2f}; forces z std {out.get('forces_z_std', float('nan')):.2f}, "
                  f"95% coverage {out.get('forces_coverage_95', float('nan')):.2f}")
    return 0
