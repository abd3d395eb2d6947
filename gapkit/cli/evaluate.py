"""``gapkit evaluate``: errors and calibration of a saved model on labelled extxyz files."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gapkit.cli.common import add_label_keys, apply_label_keys, format_errors
from gapkit.data import read_frames, split_isolated
from gapkit.diagnostics.evaluation import calibration_warnings, evaluate
from gapkit.model import GAP, load
from gapkit.utils import to_jsonable

#: What the warnings of a clearly off σ suggest (``{model}``: the model file).
RECALIBRATE_HINT = ("recalibrate on labelled held-out data: gapkit recalibrate {model} VAL.xyz "
                    "-o OUT")


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
        model's ``noise_``), ``calibrated`` (bool) and ``calibration_source`` (str or
        None) of ``model.calibration_``, every key of
        :data:`~gapkit.diagnostics.evaluation.CALIBRATION_REPORT_KEYS` (see
        :meth:`~gapkit.diagnostics.evaluation.Evaluation.calibration`) and
        ``energy_std_mean``, ``energy_std_epistemic_mean`` (eV per structure); the
        uncertainty entries are None without ``with_std`` and the ``forces_*`` ones
        when no structure has reference forces. Values may be NaN (e.g. a Spearman
        correlation of a constant σ); :func:`gapkit.utils.to_jsonable` makes them null.
    """
    ev = evaluate(model, frames, with_std=with_std)
    out = dict(ev.errors)
    out["noise"] = model.noise_.labelled()
    cal = model.calibration_
    out["calibrated"] = bool(cal.calibrated)
    out["calibration_source"] = cal.source
    out.update(ev.calibration())
    stds = ev.mean_stds() if ev.std is not None else {}
    out["energy_std_mean"] = stds.get("energy_std")
    out["energy_std_epistemic_mean"] = stds.get("energy_std_epistemic")
    return out


def _num(x, fmt: str = ".2f") -> str:
    return format(x, fmt) if x is not None and np.isfinite(x) else "n/a"


def _with_ref(out: dict, key: str) -> str:
    ref = out.get(f"{key}_reference")
    if not ref:
        return _num(out.get(key))
    mean, low, high = ref
    return f"{_num(out.get(key))} (calibrated σ: {_num(mean)} [{_num(low)}, {_num(high)}])"


def format_calibration(out: dict) -> str:
    """Lines of the calibration entries of :func:`report` for the terminal output."""
    source = out.get("calibration_source") or "not calibrated (raw GP variance)"
    lines = [f"calibration: {source}",
             f"  energy: z std {_num(out['energy_z_std'])}, ZMS {_num(out['energy_zms'])}, "
             f"95% coverage {_num(out['energy_coverage_95'])}, ENCE {_with_ref(out, 'energy_ence')}, "
             f"Spearman {_with_ref(out, 'energy_spearman')}, "
             f"AUROC worst 10% {_with_ref(out, 'energy_auroc_worst10')}"]
    if out.get("forces_z_std") is not None:
        species = ", ".join(f"{s} {_num(v)}" for s, v in (out["forces_zms_by_species"] or {}).items())
        lines.append(f"  forces: z std {_num(out['forces_z_std'])}, ZMS {_num(out['forces_zms'])} "
                     f"({species}), 95% coverage {_num(out['forces_coverage_95'])}, "
                     f"per-atom ENCE {_with_ref(out, 'forces_ence')}, "
                     f"per-atom Spearman {_with_ref(out, 'forces_spearman')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit evaluate``: print the errors (or the JSON); returns 0.

    Warns on stderr (``gapkit evaluate: warning: ...``) when the energy or force z std
    lies outside :data:`~gapkit.diagnostics.evaluation.Z_STD_RANGE`.
    """
    model = load(args.model)
    apply_label_keys(model, args)
    frames = split_isolated(read_frames(args.test))[0]
    out = report(model, frames, with_std=not args.no_std)
    for msg in calibration_warnings(out):
        print(f"gapkit evaluate: warning: {msg}; {RECALIBRATE_HINT.format(model=args.model)}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(to_jsonable(out), indent=None, sort_keys=True, allow_nan=False))
    else:
        print(format_errors("test", out))
        if out["energy_z_std"] is not None:
            print(format_calibration(out))
    return 0
