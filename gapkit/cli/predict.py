"""``gapkit predict``: write a saved model's predictions (and uncertainties) to an extxyz."""

from __future__ import annotations

import argparse
import io

import numpy as np
from ase.io import write

from gapkit.cli.common import check_output_path
from gapkit.data import read_frames
from gapkit.diagnostics.evaluation import predict_with_std
from gapkit.model import load
from gapkit.uncertainty.flags import FlagThreshold
from gapkit.utils import atomic_write_bytes

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


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` sub-command to an argparse ``subparsers`` object; returns it."""
    p = subparsers.add_parser("predict", help="write predictions (and uncertainties) to an extxyz")
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--std", action="store_true", help="also write uncertainties")
    p.add_argument("--flag-threshold", default=None,
                   help="flag uncertain frames: 'forces=0.1' (eV/Å), 'energy=0.005' (eV/atom), "
                        "'3x' (3 x the model's reference std: the 98th percentile of the "
                        "per-atom calibrated epistemic std on its calibration set; the learned "
                        "noise for uncalibrated models), or a comma-separated mix")
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit predict``: predict, write the extxyz atomically; returns 0.

    Energies are written in eV, forces in eV/Å, stress in eV/Å³, under the
    ``gapkit_*`` keys of this module (the reference labels are kept).
    """
    check_output_path(args.output, inputs=[args.model, args.input])
    model = load(args.model)
    model.verbose = None  # progress bars as gapkit.progress decides (--progress)
    frames = read_frames(args.input)
    threshold = FlagThreshold.parse(args.flag_threshold) if args.flag_threshold else None
    pred, std = predict_with_std(model, frames, with_std=args.std or threshold is not None)
    flags = threshold.evaluate(std, frames, model.flag_reference()) if threshold else None
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
    buf = io.StringIO()
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
