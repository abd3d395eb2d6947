"""``gapkit evaluate``: errors and calibration of a saved model on labelled extxyz files."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gapkit.cli.common import add_label_keys, apply_label_keys, format_errors
from gapkit.data import read_frames, split_isolated
from gapkit.diagnostics.breakdown import STRESS_UNIT
from gapkit.diagnostics.evaluation import Evaluation, calibration_warnings, evaluate
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


def read_test_files(paths: list[str]) -> tuple[list, list[str]]:
    """The labelled frames of each file (isolated atoms left out) and, per frame, the
    file it came from (the path as given).

    Raises
    ------
    ValueError
        If no file has a frame other than isolated atoms.
    """
    frames, sources = [], []
    for path in paths:
        part = split_isolated(read_frames([path]))[0]
        frames += part
        sources += [str(path)] * len(part)
    if not frames:
        raise ValueError(f"no frames to evaluate in {list(paths)} (only isolated atoms, or "
                         "empty files)")
    return frames, sources


def report(model: GAP, frames: list, with_std: bool = True,
           sources: list[str] | None = None) -> dict:
    """The JSON object of ``gapkit evaluate --json``.

    Parameters
    ----------
    model : GAP
        A fitted model.
    frames : list of ase.Atoms
        Labelled structures.
    with_std : bool, default True
        Also predict standard deviations and report their calibration.
    sources : list of str, optional
        The file of each frame (keys of ``by_file``).

    Returns
    -------
    dict
        :func:`gapkit.metrics.error_metrics` (eV, eV/atom, eV/Å), ``stress_mae``,
        ``stress_rmse`` (GPa per Voigt component, None without stress labels),
        ``n_stress``, ``by_file`` (file name to the same error keys, see
        :func:`gapkit.diagnostics.breakdown.group_metrics`, with ``energy_zms`` and
        ``forces_zms``), ``by_config_type`` (config_type to the same), ``noise`` (the
        model's ``noise_``), ``calibrated`` (bool) and ``calibration_source`` (str or
        None) of ``model.calibration_``, every key of
        :data:`~gapkit.diagnostics.evaluation.CALIBRATION_REPORT_KEYS` (see
        :meth:`~gapkit.diagnostics.evaluation.Evaluation.calibration`) and
        ``energy_std_mean``, ``energy_std_epistemic_mean`` (eV per structure); the
        uncertainty entries are None without ``with_std`` and the ``forces_*`` ones
        when no structure has reference forces. Values may be NaN (e.g. a Spearman
        correlation of a constant σ); :func:`gapkit.utils.to_jsonable` makes them null.
    """
    ev = evaluate(model, frames, with_std=with_std, sources=sources)
    out = breakdown_report(ev)
    out["noise"] = model.noise_.labelled()
    cal = model.calibration_
    out["calibrated"] = bool(cal.calibrated)
    out["calibration_source"] = cal.source
    out.update(ev.calibration())
    stds = ev.mean_stds() if ev.std is not None else {}
    out["energy_std_mean"] = stds.get("energy_std")
    out["energy_std_epistemic_mean"] = stds.get("energy_std_epistemic")
    return out


def breakdown_report(ev: Evaluation) -> dict:
    """``ev.errors`` with ``by_file`` and ``by_config_type`` added (the error part of
    :func:`report`, shared with ``gapkit fit --test``)."""
    return {**ev.errors, "by_file": ev.by_file(), "by_config_type": ev.by_config_type()}


#: Columns of :func:`format_breakdown`: header, key, scale, format.
_COLUMNS = (("N", "n_structures", 1, "d"), ("E MAE", "energy_mae_per_atom", 1000, ".2f"),
            ("E RMSE", "energy_rmse_per_atom", 1000, ".2f"), ("E MAE", "energy_mae", 1000, ".2f"),
            ("E RMSE", "energy_rmse", 1000, ".2f"), ("F MAE", "forces_mae", 1000, ".1f"),
            ("F RMSE", "forces_rmse", 1000, ".1f"), ("S MAE", "stress_mae", 1, ".3f"),
            ("S RMSE", "stress_rmse", 1, ".3f"), ("ZMS E", "energy_zms", 1, ".2f"),
            ("ZMS F", "forces_zms", 1, ".2f"))
_UNITS = ("", "meV/at", "meV/at", "meV", "meV", "meV/Å", "meV/Å", STRESS_UNIT, STRESS_UNIT,
          "", "")


def format_breakdown(title: str, groups: dict[str, dict]) -> str:
    """A table of :func:`breakdown_report`'s ``by_file`` or ``by_config_type``: one row
    per group with N, energy MAE/RMSE per atom and per structure (meV), force MAE/RMSE
    per component (meV/Å), stress MAE/RMSE (GPa) and the ZMS of σ ("n/a" where a group
    lacks them; the stress and ZMS columns only when some group has them)."""
    width = max([len(title)] + [len(str(g)) for g in groups])
    # stress and ZMS columns only when some group has them
    cols = [(c, u) for c, u in zip(_COLUMNS, _UNITS)
            if not c[1].startswith(("stress", "energy_zms", "forces_zms"))
            or any(m.get(c[1]) is not None for m in groups.values())]
    head = f"{title:<{width}}" + "".join(f" {c[0]:>8}" for c, _ in cols)
    unit = f"{'':<{width}}" + "".join(f" {u:>8}" for _, u in cols)
    rows = [head, unit.rstrip()]
    for name, m in groups.items():
        cells = []
        for (_, key, scale, fmt), _ in cols:
            v = m.get(key)
            ok = v is not None and np.isfinite(v) and not (key.startswith("forces")
                                                          and not m.get("n_force_components"))
            cells.append(format(v * scale if fmt != "d" else int(v), fmt) if ok else "n/a")
        rows.append(f"{name:<{width}}" + "".join(f" {c:>8}" for c in cells))
    return "\n".join(rows)


def format_report(name: str, out: dict) -> str:
    """The error line of ``name``, the stress errors and the per-file (when more than
    one file) and per-config_type tables of :func:`breakdown_report`."""
    lines = [format_errors(name, out)]
    if out.get("stress_mae") is not None:
        lines[0] += (f" | S MAE {out['stress_mae']:.3f} {STRESS_UNIT} "
                     f"(RMSE {out['stress_rmse']:.3f}, {out['n_stress']} cells)")
    if len(out.get("by_file") or {}) > 1:
        lines.append(format_breakdown("file", out["by_file"]))
    if out.get("by_config_type"):
        lines.append(format_breakdown("config_type", out["by_config_type"]))
    return "\n".join(lines)


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
    model.verbose = None  # progress bars as gapkit.progress decides (--progress)
    apply_label_keys(model, args)
    frames, sources = read_test_files(args.test)
    out = report(model, frames, with_std=not args.no_std, sources=sources)
    for msg in calibration_warnings(out):
        print(f"gapkit evaluate: warning: {msg}; {RECALIBRATE_HINT.format(model=args.model)}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(to_jsonable(out), indent=None, sort_keys=True, allow_nan=False))
    else:
        print(format_report("test", out))
        if out["energy_z_std"] is not None:
            print(format_calibration(out))
    return 0
