"""Command line (argument types, the options several scripts share) and output (command
line, settings, JSON results, temporary folders)."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def new_parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def parse_species_counts(text: str) -> dict[str, int]:
    """``"C:1000,H:2000,O:1000"`` -> ``{"C": 1000, "H": 2000, "O": 1000}``."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            sym, n = item.split(":")
            out[sym.strip()] = int(n)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad --n-sparse entry '{item}': expected SYMBOL:COUNT, e.g. C:1000,H:2000,O:1000") from None
        if out[sym.strip()] <= 0:
            raise argparse.ArgumentTypeError(f"--n-sparse count for {sym} must be positive")
    if not out:
        raise argparse.ArgumentTypeError("--n-sparse is empty")
    return out


def int_list(text: str) -> list[int]:
    """``"25,50,100"`` -> ``[25, 50, 100]`` (positive integers, in the given order)."""
    try:
        out = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return out


def add_soap_arguments(p, n_max: int, l_max: int, r_cut: float = 5.0) -> None:
    """``--r-cut --n-max --l-max --sigma --zeta``."""
    p.add_argument("--r-cut", type=float, default=r_cut, help="SOAP cutoff, Å")
    p.add_argument("--n-max", type=int, default=n_max)
    p.add_argument("--l-max", type=int, default=l_max)
    p.add_argument("--sigma", type=float, default=0.5, help="SOAP atom Gaussian width, Å")
    p.add_argument("--zeta", type=float, default=4.0, help="kernel exponent")


def add_noise_arguments(p, energy: float, force: float, virial: float | None = None) -> None:
    """``--energy-noise --force-noise`` (and ``--virial-noise``)."""
    p.add_argument("--energy-noise", type=float, default=energy, help="eV per sqrt(atom)")
    p.add_argument("--force-noise", type=float, default=force, help="eV/Å")
    if virial is not None:
        p.add_argument("--virial-noise", type=float, default=virial, help="eV per sqrt(atom)")


def add_sparse_method_argument(p, default: str = "cur", quip_note: bool = True) -> None:
    p.add_argument("--sparse-method", choices=("cur", "random", "fps"), default=default,
                   help="gapkit sparse-point selection"
                        + (" (QUIP always uses cur_points)" if quip_note else ""))


def add_run_arguments(p, quip: bool = True, keep_tmp: bool = True, json_out: bool = True,
                      workers=None) -> None:
    """``--threads`` (default 1), and ``--no-quip``, ``--json OUT``, ``--keep-tmp``; with
    ``workers`` (the kinds) the hidden ``--worker KIND --worker-params FILE`` of
    :func:`launch_worker`."""
    if workers is not None:
        p.add_argument("--worker", choices=workers, default=None, help=argparse.SUPPRESS)
        p.add_argument("--worker-params", type=Path, default=None, help=argparse.SUPPRESS)
    if quip:
        p.add_argument("--no-quip", action="store_true", help="skip the QUIP gap_fit comparison")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP/OPENBLAS/MKL_NUM_THREADS of the fits and predictions; 0 keeps the "
                        "environment. One thread by default: timings are then reproducible on a "
                        "shared machine (multi-threaded BLAS on small per-structure matrices "
                        "slowed gapkit 4-8x when other jobs were running)")
    if json_out:
        p.add_argument("--json", type=Path, default=None, metavar="OUT",
                       help="also write the results as JSON to OUT")
    if keep_tmp:
        p.add_argument("--keep-tmp", action="store_true",
                       help="keep the temporary directory (training xyz, gap_fit log, gp.xml)")


# ----------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------
def command_line(script: Path, argv: list[str], say: bool = True) -> str:
    """``python script argv`` as one shell line, printed as ``command: ...`` unless not ``say``."""
    line = shlex.join([sys.executable, str(script), *argv])
    if say:
        print("command: " + line, flush=True)
    return line


def settings(args) -> dict:
    """``vars(args)`` for JSON: paths as strings, without the hidden worker options."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if not k.startswith("worker")}


def save_results(path: Path | None, results: dict, indent: int = 2, say: str = "\nresults written to"
                 ) -> None:
    """Write ``results`` as JSON to ``path`` (if given) and say so."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=indent, default=str))
        if say:
            print(f"{say} {path}")


@contextmanager
def temp_dir(prefix: str, keep: bool = False, say=print):
    """A temporary folder, removed afterwards unless ``keep`` (then ``say`` where it is)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            say(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
