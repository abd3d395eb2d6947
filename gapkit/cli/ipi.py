"""``gapkit ipi``: serve a saved model to i-PI over a UNIX or TCP socket (see :mod:`gapkit.ipi`)."""

from __future__ import annotations

import argparse

from ase.io import read

from gapkit.ipi import DEFAULT_PREFIX, serve, socket_path
from gapkit.model import load
from gapkit.uncertainty.flags import FlagThreshold


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``ipi`` sub-command to an argparse ``subparsers`` object; returns it."""
    p = subparsers.add_parser(
        "ipi", help="serve a model to i-PI (energies, forces, virial; σ and flags in the extras)")
    p.add_argument("model", help="model file (gapkit fit -o)")
    p.add_argument("--structure", required=True,
                   help="the structure i-PI runs (xyz/extxyz/any ASE format, same atom order): "
                        "gives the species and whether the cell is periodic")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unix", default=None, metavar="NAME",
                       help="i-PI's UNIX socket <address> (file PREFIX+NAME; an absolute path "
                            "is the socket file)")
    where.add_argument("--port", type=int, default=None, help="TCP port (default 31415)")
    p.add_argument("--host", default="localhost", help="TCP host (default localhost)")
    p.add_argument("--sockets-prefix", default=DEFAULT_PREFIX,
                   help=f"i-PI's sockets_prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--no-std", action="store_true",
                   help="send no uncertainties in the extras (faster)")
    p.add_argument("--flag-threshold", default=None,
                   help="also send flags: 'forces=0.1' (eV/Å), 'energy=0.005' (eV/atom), '3x'")
    p.add_argument("--connect-timeout", type=float, default=60.0,
                   help="seconds to wait for i-PI's socket (default 60)")
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit ipi``: serve until i-PI ends the run; returns 0."""
    model = load(args.model)
    atoms = read(args.structure, 0)
    threshold = FlagThreshold.parse(args.flag_threshold) if args.flag_threshold else None
    port = 31415 if args.port is None else args.port
    where = (socket_path(args.unix, args.sockets_prefix) if args.unix is not None
             else f"{args.host}:{port}")
    print(f"gapkit ipi: {len(atoms)} atoms, waiting for i-PI at {where}", flush=True)
    n = serve(model, atoms, unix=args.unix, host=args.host, port=port,
              sockets_prefix=args.sockets_prefix, compute_std=not args.no_std,
              flag_threshold=threshold, connect_timeout=args.connect_timeout)
    print(f"gapkit ipi: i-PI ended the run after {n} configurations")
    return 0
