"""``gapkit learning-curve``: errors against training-set size, with a bias/variance/noise diagnosis.

Writes ``OUTDIR/learning_curve.csv``, ``learning_curve.json`` (with the diagnosis and
the power-law extrapolation ``err = a N^-b + c``) and, unless ``--no-plots``,
``learning_curve.png`` (with the fit and its band) and ``parity.png`` (the model of
the largest size on the test set); prints a table of the errors and the diagnosis.

``--labels energy,forces,energy+forces`` fits models trained on energies only, forces
only and both (:func:`gapkit.diagnostics.label_curves`, same subsets); the curves of
``energy`` and ``forces`` go to ``learning_curve_energy.*`` / ``learning_curve_forces.*``
and the comparison against configurations and labels to ``learning_labels.png``.
``--target-forces`` / ``--target-energy`` read the training structures needed off the
extrapolation (or say that the target is below the floor); ``--json`` prints one JSON
object instead of the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gapkit import plotting
from gapkit.cli.common import add_model_arguments, model_from_args, resolve_training_files
from gapkit.data import read_frames, split_isolated
from gapkit.diagnostics.curves import label_curves
from gapkit.diagnostics.diagnosis import Diagnosis
from gapkit.diagnostics.evaluation import predict_with_std
from gapkit.diagnostics.label_sets import LABEL_SETS, parse_labels
from gapkit.diagnostics.results import LearningCurve
from gapkit.utils import check_random_state, to_jsonable


def _parse_sizes(text: str) -> list[int]:
    """``"25,50,100"`` -> ``[25, 50, 100]``."""
    try:
        out = [int(s) for s in str(text).replace(" ", "").split(",") if s]
    except ValueError:
        raise ValueError(f"--sizes must be comma-separated integers, e.g. 25,50,100, got {text!r}") from None
    if not out:
        raise ValueError("--sizes is empty")
    return out


def _sizes_type(text: str) -> list[int]:
    """:func:`_parse_sizes` for argparse (a bad value is a usage error)."""
    try:
        return _parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _labels_type(text: str) -> list[str]:
    """:func:`gapkit.diagnostics.label_sets.parse_labels` for argparse."""
    try:
        return parse_labels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _target_type(text: str) -> float:
    """A positive target error for argparse."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"a target must be a positive error, got {text!r}")
    return v


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``learning-curve`` sub-command to an argparse ``subparsers`` object.

    Returns the new sub-parser. Its handler is :func:`run`.
    """
    p = subparsers.add_parser(
        "learning-curve",
        help="errors against training-set size, with a bias/variance/noise diagnosis",
        description="Refit on random training subsets of increasing size and write "
                    "OUTDIR/learning_curve.csv, learning_curve.json (with the diagnosis), "
                    "learning_curve.png and parity.png (largest size). No TRAIN: the default data.")
    p.add_argument("train", nargs="*", help="training extxyz files (default: data/train.xyz)")
    p.add_argument("--test", nargs="*", default=None,
                   help="test extxyz files (required with TRAIN; default data: data/test.xyz)")
    p.add_argument("--sizes", type=_sizes_type, default=None,
                   help="comma-separated training-set sizes, e.g. 25,50,100,200 "
                        "(default: 5 sizes log-spaced up to the whole training set)")
    p.add_argument("--repeats", type=int, default=3, help="random subsets per size (default 3)")
    p.add_argument("-o", "--output", default="learning_curve", help="output folder (default learning_curve)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-test", type=int, default=None,
                   help="evaluate on a random subset of at most this many test structures")
    p.add_argument("--no-std", action="store_true", help="skip predicted uncertainties (faster)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    p.add_argument("--labels", type=_labels_type, default=["energy+forces"],
                   help="comma-separated label sets to train on, of "
                        f"{', '.join(LABEL_SETS)} (default energy+forces); several give "
                        "learning_labels.png, curves against configurations and labels")
    p.add_argument("--target-forces", type=_target_type, default=None, metavar="EV_PER_A",
                   help="target test force RMSE (eV/Å): training structures needed, from the "
                        "fit a N^-b + c, or 'below the floor'")
    p.add_argument("--target-energy", type=_target_type, default=None, metavar="EV_PER_ATOM",
                   help="target test energy RMSE per atom (eV/atom), as --target-forces")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (diagnoses, extrapolations, files) instead of the table")
    add_model_arguments(p)
    return p


def _write_figures(curve: LearningCurve, diag: Diagnosis, test_frames: list, with_std: bool,
                   out: Path) -> list[Path]:
    """``learning_curve.png`` and ``parity.png`` in ``out``; returns their paths."""
    from matplotlib.figure import Figure  # lazily, like gapkit.plotting

    fig = Figure(figsize=(9.5, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    metric_f = "forces_rmse" if diag.metric.startswith("forces") else diag.metric
    ext = diag.extrapolations
    plotting.learning_curve(curve, metric=metric_f, ax=ax1, extrapolation=ext.get(metric_f))
    plotting.learning_curve(curve, metric="energy_rmse_per_atom", ax=ax2,
                            extrapolation=ext.get("energy_rmse_per_atom"))
    fig.suptitle(f"Diagnosis: {diag.verdict}")
    fig.savefig(out / "learning_curve.png", dpi=150)

    has_forces = np.isfinite(curve.mean("test_forces_rmse")).any()
    pred, std = predict_with_std(curve.model, test_frames, with_std)
    fig = Figure(figsize=(9.5, 4.2) if has_forces else (4.8, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 2 if has_forces else 1))
    plotting.parity(pred, test_frames, "energy", std=std, ax=axes[0], per_atom=True)
    if has_forces:
        plotting.parity(pred, test_frames, "forces", ax=axes[1])
    fig.suptitle(f"Test set, model trained on N={int(curve.sizes[-1])} structures")
    fig.savefig(out / "parity.png", dpi=150)
    return [out / "learning_curve.png", out / "parity.png"]


def _print_table(curve: LearningCurve, dt: float | None = None) -> None:
    """The mean errors per size: forces in meV/Å, energies in meV/atom, fit time in s."""
    labels = curve.meta.get("labels", "energy+forces")
    head = f"Learning curve ({labels})" + (f": {len(curve.sizes)} sizes x {curve.repeats} repeats "
                                          f"in {dt:.1f} s" if dt is not None else "")
    print(f"{head} (pool {curve.meta['n_pool']} structures, test {curve.meta['n_test']})")
    print(f"{'N':>6} {'labels':>8} {'train F RMSE':>13} {'test F RMSE':>12} {'test E RMSE':>12} "
          f"{'σ_F noise':>10} {'fit s':>6}")
    n_labels = curve.mean("n_labels") if "n_labels" in curve.metrics else np.full(len(curve.sizes), np.nan)
    for i, s in enumerate(curve.sizes):
        print(f"{int(s):>6} {n_labels[i]:>8.0f} {1000 * curve.mean('train_forces_rmse')[i]:>13.1f} "
              f"{1000 * curve.mean('test_forces_rmse')[i]:>12.1f} "
              f"{1000 * curve.mean('test_energy_rmse_per_atom')[i]:>12.2f} "
              f"{1000 * curve.mean('noise_forces')[i]:>10.1f} {curve.mean('fit_time')[i]:>6.1f}")
    print("(force errors in meV/Å, energy in meV/atom)")


def _stem(labels: str) -> str:
    """Output file stem of a label set: ``learning_curve`` for energy+forces."""
    return "learning_curve" if labels == "energy+forces" else f"learning_curve_{labels}"


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit learning-curve``; returns the exit code (0 on success).

    Raises
    ------
    ValueError
        Without test structures, with ``--repeats < 1``, with sizes larger than the
        training set, or a label set the model cannot train on (``forces`` with
        ``--optimize``).
    """
    train, test, e0 = resolve_training_files(args.train, args.test, args.e0)
    if not test:
        raise ValueError("learning-curve needs labelled test structures: pass --test FILE...")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    train_frames = read_frames(train)
    test_frames = split_isolated(read_frames(test))[0]
    if args.max_test is not None and len(test_frames) > args.max_test:
        rs = check_random_state(args.seed)
        keep = np.sort(rs.choice(len(test_frames), args.max_test, replace=False))
        test_frames = [test_frames[k] for k in keep]
    model = model_from_args(args, e0)
    targets = {k: v for k, v in (("forces_rmse", args.target_forces),
                                 ("energy_rmse_per_atom", args.target_energy)) if v is not None}
    t0 = time.perf_counter()
    curves = label_curves(model, train_frames, test_frames, sizes=args.sizes, repeats=args.repeats,
                          random_state=args.seed, return_std=not args.no_std, labels=args.labels,
                          progress=None)  # gapkit.progress: --progress/--no-progress
    dt = time.perf_counter() - t0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written, diags = [], {}
    for name, curve in curves.items():
        diags[name] = curve.diagnose(targets=targets)
        written += [curve.to_csv(out / f"{_stem(name)}.csv"),
                    curve.to_json(out / f"{_stem(name)}.json", diagnosis=diags[name])]
    primary = "energy+forces" if "energy+forces" in curves else next(iter(curves))
    if not args.no_plots:
        written += _write_figures(curves[primary], diags[primary], test_frames, not args.no_std, out)
        if len(curves) > 1:
            fig = plotting.label_curves_figure(curves, targets=targets)
            fig.savefig(out / "learning_labels.png", dpi=150)
            written.append(out / "learning_labels.png")
    if args.json:
        print(json.dumps(to_jsonable({
            "time_s": dt, "labels": list(curves), "targets": targets,
            "curves": {name: {"sizes": c.sizes, "n_labels": c.mean("n_labels"),
                              "test_forces_rmse": c.mean("test_forces_rmse"),
                              "test_energy_rmse_per_atom": c.mean("test_energy_rmse_per_atom"),
                              "diagnosis": diags[name].to_dict()} for name, c in curves.items()},
            "written": [str(p) for p in written]}), allow_nan=False))
        return 0
    for k, (name, curve) in enumerate(curves.items()):
        _print_table(curve, dt if k == 0 else None)
        print(f"Diagnosis{f' ({name})' if len(curves) > 1 else ''}: {diags[name].message}")
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0
