"""``gapkit fit``: fit a GAP on extxyz files (or the default data) and save it."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from gapkit._version import __version__
from gapkit.cli.common import (add_model_arguments, check_output_path, model_from_args,
                               resolve_training_files)
from gapkit.cli.config import DEFAULTS_ATTR, add_config_arguments, config_of, resolve
from gapkit.cli.evaluate import breakdown_report, format_report, read_test_files
from gapkit.cli.info import config_type_lines
from gapkit.data import read_frames, split_isolated
from gapkit.data.reference import parse_e0
from gapkit.diagnostics.evaluation import evaluate
from gapkit.utils import to_jsonable


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``fit`` sub-command to an argparse ``subparsers`` object; returns it."""
    f = subparsers.add_parser("fit", help="fit a GAP (no arguments: the default data shipped in data/)")
    f.add_argument("train", nargs="*", help="training extxyz files (default: data/train.xyz)")
    f.add_argument("-o", "--output", default="gapkit_model.npz", help="model file to write")
    f.add_argument("--test", nargs="*", default=None,
                   help="test extxyz files (default with the default data: data/test.xyz); "
                        "errors per file and per config_type, with stresses")
    f.add_argument("--errors-json", default=None, metavar="FILE",
                   help="also write the train and test errors (the error keys of gapkit "
                        "evaluate --json: by_file, by_config_type, stress_mae, ...) to FILE")
    f.add_argument("--valid", nargs="*", default=None, metavar="VAL.xyz",
                   help="calibrate the std on these frames (never trained on) instead of a "
                        "held-out --valid-fraction of the training frames")
    add_model_arguments(f)
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_config_arguments(f)
    return f


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit fit``: fit, print train (and test) errors, save; returns 0.

    With ``--config FILE`` the flags not given on the command line come from the file;
    ``--dump-config`` prints the resolved config (JSON) and returns without fitting.
    """
    if hasattr(args, DEFAULTS_ATTR):
        args = resolve(args)
    if getattr(args, "dump_config", False):
        print(json.dumps(to_jsonable(config_of(args)), indent=2))
        return 0
    train, test, e0 = resolve_training_files(args.train, args.test, args.e0)
    e0 = parse_e0(e0)  # a method, a path, or SYMBOL:eV,... (ValueError: a one-line usage error)
    check_output_path(args.output, inputs=[*train, *(test or []), *(args.valid or [])])
    per_file = [read_frames([path]) for path in train]
    frames = [atoms for file_frames in per_file for atoms in file_frames]
    model = model_from_args(args, e0)  # bars: gapkit.progress (--progress/--no-progress)
    t0 = time.perf_counter()
    model.fit(frames, valid=read_frames(args.valid) if args.valid else None)
    dt = time.perf_counter() - t0
    M = len(model.alpha_)
    print(f"Fitted on {len(frames)} structures in {dt:.1f} s: M = {M} sparse points, "
          f"delta = {model.delta_:.4g} eV, noise = "
          + ", ".join(f"{k.label} {v:.3g}" for k, v in model.noise_.items()))
    cal = model.calibration_
    print(f"std calibrated on {cal.source}" if cal.calibrated else
          "std not calibrated (raw DTC): use --valid FILE, more data, or gapkit recalibrate")
    for line in config_type_lines(cal.as_dict()["config_types"], cal.config_type_key):
        print(f"  {line}")
    train_frames = split_isolated(frames)[0]
    errors = {"train": breakdown_report(evaluate(model, train_frames, with_std=False))}
    print(format_report("train", errors["train"]).split("\n")[0])
    if test:
        test_frames, sources = read_test_files(test)
        errors["test"] = breakdown_report(evaluate(model, test_frames, with_std=False,
                                                   sources=sources))
        print(format_report("test", errors["test"]))
    if args.errors_json:
        Path(args.errors_json).write_text(json.dumps(to_jsonable(errors), sort_keys=True,
                                                     allow_nan=False))
    model.extra_ = {**model.extra_, "provenance": provenance(args, train, per_file)}
    path = model.save(args.output)
    print(f"Model written to {path}")
    return 0


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(args: argparse.Namespace, train: list[str], per_file: list[list]) -> dict:
    """What made a model: the command line, the resolved flags, the gapkit version and
    each training (and validation) file with its SHA-256 and number of frames.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``gapkit fit`` flags.
    train : list of str
        The training files, as resolved (the default data included).
    per_file : list of list of ase.Atoms
        The frames read from each training file.

    Returns
    -------
    dict
        JSON-able; stored as ``model.extra_["provenance"]``.
    """
    def record(path, n):
        return {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "n_frames": n}

    config = config_of(args)
    return {"command": list(sys.argv), "gapkit_version": __version__,
            "config": config,
            "training_files": [record(p, len(f)) for p, f in zip(train, per_file)],
            "validation_files": [record(p, None) for p in (args.valid or [])]}
