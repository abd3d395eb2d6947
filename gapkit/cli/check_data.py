"""``gapkit check-data``: which reference labels are wrong (K-fold outlier scores,
energy–force consistency, duplicates, label statistics, unit sanity)."""

from __future__ import annotations

import argparse
import json

from gapkit.data import LabelKeys, read_frames
from gapkit.diagnostics.check_data import THRESHOLD, check_data, worst_frames
from gapkit.utils import to_jsonable


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``check-data`` sub-command to an argparse ``subparsers`` object; returns it."""
    p = subparsers.add_parser("check-data", help="find wrong reference labels in training data")
    p.add_argument("train", nargs="+", help="labelled extxyz files (frames indexed over all, in order)")
    p.add_argument("--e0", default="lstsq",
                   help="'lstsq' (default), 'isolated' (single-atom frames in the input) or a "
                        "path to an isolated-atoms extxyz")
    p.add_argument("--energy-key", default=None, help="info key of the reference energy")
    p.add_argument("--forces-key", default=None, help="array key of the reference forces")
    p.add_argument("--order-key", default=None,
                   help="info key giving the trajectory order (default: the input order)")
    p.add_argument("--folds", type=int, default=5, help="K-fold splits over structures (default 5)")
    p.add_argument("--max-train", type=int, default=200,
                   help="largest number of training frames per fold model (default 200)")
    p.add_argument("--n-sparse", type=int, default=60,
                   help="sparse points per species of the fold models (default 60)")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"flag frames whose score is above this, in σ (default {THRESHOLD:g})")
    p.add_argument("--top", type=int, default=10, help="rows of the worst-frames table (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, metavar="PATH", help="write the sorted scores plot")
    return p


def plot_scores(report: dict, path: str) -> None:
    """Sorted frame scores (log scale) with the threshold line; flagged frames in red.

    Parameters
    ----------
    report : dict
        What :func:`gapkit.diagnostics.check_data` returns.
    path : str
        Image file to write (format from its suffix).
    """
    from matplotlib.figure import Figure  # lazily, like gapkit.plotting

    rows = report["frames"]
    s = [max(r["score"], 1e-3) for r in rows]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.semilogy(range(1, len(s) + 1), s, ".", ms=3, color="0.3", label="frames")
    bad = [(i + 1, v) for i, (v, r) in enumerate(zip(s, rows)) if r["flagged"]]
    if bad:
        ax.semilogy(*zip(*bad), "o", mfc="none", color="C3", label="flagged")
    ax.axhline(report["threshold"], color="C3", ls="--", lw=1, label=f"threshold {report['threshold']:g} σ")
    ax.set_xlabel("rank")
    ax.set_ylabel("score (K-fold residual / σ)")
    ax.set_title(f"{report['n_flagged']} of {report['n_frames']} frames flagged")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _fmt(x, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def run(args: argparse.Namespace) -> int:
    """Run ``gapkit check-data``; returns 0."""
    frames = read_frames(args.train)
    keys = LabelKeys(energy=args.energy_key, forces=args.forces_key)
    report = check_data(frames, e0=args.e0, keys=keys, n_folds=args.folds, max_train=args.max_train,
                        n_sparse=args.n_sparse, threshold=args.threshold, order_key=args.order_key,
                        random_state=args.seed)
    if args.plot:
        plot_scores(report, args.plot)
    if args.json:
        print(json.dumps(to_jsonable(report), allow_nan=False))
        return 0
    print(f"{report['n_flagged']} of {report['n_frames']} frames flagged (score > "
          f"{report['threshold']:g} σ, {report['fold_model']['n_folds']}-fold residuals; "
          f"{report['wall_time']:.0f} s)")
    print(f"{'index':>6} {'config_type':<20} {'score':>8} {'E':>8} {'F':>8}  reason")
    for r in worst_frames(report, args.top):
        print(f"{r['index']:>6} {r['config_type'][:20]:<20} {r['score']:>8.2f} "
              f"{r['energy_score']:>8.2f} {r['force_score']:>8.2f}  {r['reason']}")
    print(f"energy-force consistency: {report['consistency']['message']}")
    for p in report["consistency"]["pairs"]:
        print(f"  frames {p['first']} -> {p['second']}: |ΔE + W| = {abs(p['residual']):.3g} eV "
              f"(step {p['step']:.3g} Å)")
    print(f"duplicates: {len(report['duplicates'])} exact, {len(report['near_duplicates'])} near "
          f"(every coordinate within {report['duplicate_tol']:g} Å)")
    for d in report["duplicates"][:10]:
        print(f"  frame {d['second']} repeats frame {d['first']}")
    print("config_type            frames   E/atom mean (eV)  std (meV)  |F| mean (eV/Å)")
    for name, row in report["statistics"]["config_types"].items():
        std = row.get("energy_per_atom_std")
        print(f"  {name[:20]:<20} {row['n_frames']:>6}   {_fmt(row.get('energy_per_atom_mean'), '.4f'):>16}  "
              f"{_fmt(None if std is None else 1000 * std, '.1f'):>9}  {_fmt(row['force_mean'], '.3f'):>15}")
    print("species  atoms  |F| mean  std  max (eV/Å)")
    for sym, row in report["statistics"]["species"].items():
        print(f"  {sym:<6} {row['n_atoms']:>6}  {row['force_mean']:.3f}  {row['force_std']:.3f}  "
              f"{row['force_max']:.3f}")
    u = report["units"]
    print(f"units: energy spread {_fmt(u['energy_spread'], '.4g')} eV/atom, RMS force "
          f"{_fmt(u['force_rms'], '.4g')} eV/Å, ratio {_fmt(u['force_energy_ratio'], '.3g')}")
    for w in u["warnings"]:
        print(f"  warning: {w}")
    if args.plot:
        print(f"Wrote {args.plot}")
    return 0
