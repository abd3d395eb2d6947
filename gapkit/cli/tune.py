"""``gapkit tune``: choose r_cut, sigma, n_max, l_max, zeta (and sparse counts) by
validation error on a subsample, within a time budget; writes a ``fit --config`` file."""

from __future__ import annotations

import argparse

from gapkit.cli.common import add_label_keys, check_output_path, resolve_training_files
from gapkit.data import read_frames
from gapkit.data.reference import parse_e0
from gapkit.model.tuning import SPACE, tune


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``tune`` sub-command to an argparse ``subparsers`` object; returns it."""
    p = subparsers.add_parser(
        "tune", help="search descriptor settings by validation error on a subsample and "
                     "write them as a config for gapkit fit --config")
    p.add_argument("train", nargs="*", help="training extxyz files (default: data/train.xyz)")
    p.add_argument("-o", "--output", default="gapkit_tuned.json",
                   help="config file to write (JSON; default gapkit_tuned.json)")
    p.add_argument("--time-budget", type=float, default=300.0, metavar="SECONDS",
                   help="wall time for the search; trials start while time is left "
                        "(default 300)")
    p.add_argument("--n-frames", type=int, default=100,
                   help="frames of the subsample, training plus validation (default 100)")
    p.add_argument("--valid-fraction", type=float, default=0.25,
                   help="fraction of the subsample that scores the trials (default 0.25)")
    p.add_argument("--max-trials", type=int, default=None, help="at most this many trials")
    p.add_argument("--e0", default=None,
                   help="E0 of every trial, as for gapkit fit (default: lstsq; the isolated "
                        "atoms of the default data)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_label_keys(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit tune``: search, print the table of trials, write the config."""
    train, _, e0 = resolve_training_files(args.train, None, args.e0)
    check_output_path(args.output, inputs=train)
    frames = read_frames(train)
    gap_params = {"e0": parse_e0(e0), "energy_key": args.energy_key,
                  "forces_key": args.forces_key, "virial_key": args.virial_key,
                  "stress_key": args.stress_key, "use_virials": not args.no_virials}
    result = tune(frames, time_budget=args.time_budget, n_frames=args.n_frames,
                  valid_fraction=args.valid_fraction, max_trials=args.max_trials,
                  gap_params=gap_params, random_state=args.seed)
    keys = list(SPACE)
    print(f"{len(result.trials)} trials on {result.n_train} training / {result.n_valid} "
          f"validation frames (budget {result.time_budget:g} s); score = mean validation "
          "RMSE ratio to trial 0 (lower is better)")
    head = ["#", *keys, "E meV/atom", "F meV/Å", "score", "s"]
    print(" | ".join(f"{h:>10}" for h in head))
    for k, t in enumerate(result.trials):
        s, v = t["settings"], t["valid"]
        mark = "*" if s == result.best else ""
        cells = [f"{k}{mark}", *[str(s[key]) for key in keys],
                 f"{1e3 * v['energy_rmse_per_atom']:.3f}", f"{1e3 * v['forces_rmse']:.1f}",
                 f"{t['score']:.3f}", f"{t['seconds']:.1f}"]
        print(" | ".join(f"{c:>10}" for c in cells))
    path = result.write_config(args.output)
    print(f"Chosen (*): {result.best}")
    print(f"Config written to {path}: gapkit fit TRAIN --config {path}")
    return 0
