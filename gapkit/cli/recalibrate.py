"""``gapkit recalibrate``: calibrate a saved model's std on labelled validation frames."""

from __future__ import annotations

import argparse

from gapkit.cli.common import add_label_keys, apply_label_keys, check_output_path
from gapkit.data import read_frames, split_isolated
from gapkit.model import load


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``recalibrate`` sub-command to an argparse ``subparsers`` object; returns it."""
    p = subparsers.add_parser(
        "recalibrate", help="fit the std calibration of a model on labelled validation frames")
    p.add_argument("model", help="model file (.npz)")
    p.add_argument("valid", nargs="+", help="labelled validation extxyz files (not trained on)")
    p.add_argument("-o", "--output", required=True, help="recalibrated model file to write")
    p.add_argument("--keep-nystrom", action="store_true",
                   help="keep the raw Nyström term (conservative far from the data)")
    add_label_keys(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit recalibrate``: recalibrate and save to ``-o``; returns 0."""
    check_output_path(args.output, inputs=[args.model, *args.valid])
    model = load(args.model)
    model.verbose = None  # progress bars as gapkit.progress decides (--progress)
    apply_label_keys(model, args)
    frames = split_isolated(read_frames(args.valid))[0]
    model.recalibrate(frames, keep_nystrom=args.keep_nystrom)
    cal = model.calibration_
    path = model.save(args.output)
    ref = cal.reference
    print(f"Calibrated on {cal.source}: Nyström exponent {cal.energy.exponent:.3g}; flag "
          f"reference std {ref.get('forces', float('nan')):.3g} eV/Å (forces), "
          f"{ref.get('energy_per_atom', float('nan')):.3g} eV (local energies)")
    print(f"Model written to {path}")
    return 0
