#!/usr/bin/env python
"""Benchmark gapkit against QUIP's ``gap_fit`` on revised MD17 ethanol.

Trains both codes with matched SOAP/GP settings on the first ``--n-train`` frames of
``train.xyz`` (E0 from ``isolated_atoms.xyz``) and tests on the first ``--n-test``
frames of ``test_MD.xyz``. Reported per tool:

* energy MAE / RMSE, meV per structure; force MAE / RMSE, meV/Å per component;
* fit wall time and the peak resident set size (RSS) of the fit;
* prediction cost (energies + forces of the test set), µs per atom.

Each tool runs in its own subprocess (this script re-invoked with a hidden
``--worker gapkit|quip`` flag), so the peak RSS figures are measured separately:

* gapkit: ``ru_maxrss`` of the worker process itself, read right after ``fit``
  (it therefore includes the Python interpreter, numpy/ase/dscribe and the data;
  the worker's RSS before ``fit`` is reported as the baseline);
* QUIP: ``ru_maxrss`` of ``RUSAGE_CHILDREN`` in the worker, whose only child
  up to that point is the ``gap_fit`` executable.

Both workers run with ``--threads`` BLAS/OpenMP threads (default 1; ``0`` keeps the
environment). The 1-minute load average before and after each worker is printed:
timings taken while other jobs run are not comparable.

Everything is written into a temporary directory; nothing goes into the
repository unless ``--json`` points there. Seeds are fixed (``--seed``).

Example::

    python benchmarks/ethanol_rmd17.py --n-train 100 --n-test 100 \\
        --n-sparse C:200,H:400,O:100 --quip-n-sparse 100

Published reference (GAP on rMD17 ethanol, 1000 training configurations):
energy MAE 3.5 meV, force MAE 18.1 meV/Å.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ethanol_rmd17"
DATA_FILES = ("train.xyz", "test_MD.xyz", "isolated_atoms.xyz")
PUBLISHED = {"name": "GAP (published, rMD17, N=1000)", "energy_mae": 3.5, "force_mae": 18.1}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def parse_species_counts(text: str) -> dict[str, int]:
    """``"C:1000,H:2000,O:1000"`` -> ``{"C": 1000, "H": 2000, "O": 1000}``."""
    out = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
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


def parse_quip_n_sparse(text: str):
    text = str(text).strip()
    if text == "same":
        return "same"
    if ":" in text:
        return parse_species_counts(text)
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--quip-n-sparse must be an integer, SYMBOL:COUNT,... or 'same', got '{text}'") from None
    if n <= 0:
        raise argparse.ArgumentTypeError("--quip-n-sparse must be positive")
    return n


def quip_sparse_counts(args, train) -> dict[str, int]:
    """Per-species n_sparse for gap_fit, capped at the number of environments of that
    species in the training set (gapkit caps the same way; gap_fit would not)."""
    from collections import Counter

    from ase.data import atomic_numbers

    avail = Counter(s for a in train for s in a.get_chemical_symbols())
    spec = args.n_sparse if args.quip_n_sparse == "same" else args.quip_n_sparse
    out = {}
    for sym in sorted(avail, key=atomic_numbers.__getitem__):
        if isinstance(spec, dict):
            if sym not in spec:
                raise ValueError(f"--quip-n-sparse/--n-sparse has no count for species {sym}")
            want = spec[sym]
        else:
            want = int(spec)
        out[sym] = min(int(want), int(avail[sym]))
    return out


def add_data_dir_argument(p: argparse.ArgumentParser) -> None:
    """``--data-dir``, resolved by :func:`resolve_data_dir` (shared by the rMD17 scripts)."""
    p.add_argument("--data-dir", type=Path, default=None,
                   help="rMD17 ethanol folder with train.xyz, test_MD.xyz, isolated_atoms.xyz "
                        "(default: $GAPKIT_SHARED_DATA[/ethanol_rmd17], else "
                        "<repo>/../shared/data/ethanol_rmd17)")


def add_soap_arguments(p: argparse.ArgumentParser, n_max: int, l_max: int) -> None:
    """``--r-cut --n-max --l-max --sigma --zeta`` (shared by the rMD17 scripts)."""
    p.add_argument("--r-cut", type=float, default=5.0, help="SOAP cutoff, Å")
    p.add_argument("--n-max", type=int, default=n_max)
    p.add_argument("--l-max", type=int, default=l_max)
    p.add_argument("--sigma", type=float, default=0.5, help="SOAP atom Gaussian width, Å")
    p.add_argument("--zeta", type=float, default=4.0, help="kernel exponent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="gapkit vs QUIP gap_fit on rMD17 ethanol (accuracy, fit time, peak RSS, "
                    "prediction cost).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n-train", type=int, default=1000, help="first N frames of train.xyz")
    p.add_argument("--n-test", type=int, default=1000, help="first N frames of test_MD.xyz")
    add_data_dir_argument(p)
    p.add_argument("--n-sparse", type=parse_species_counts, default="C:1000,H:2000,O:1000",
                   help="gapkit sparse points per species, SYMBOL:COUNT,...")
    p.add_argument("--sparse-method", choices=("cur", "random", "fps"), default="cur",
                   help="gapkit sparse-point selection (QUIP always uses cur_points)")
    add_soap_arguments(p, n_max=8, l_max=6)
    p.add_argument("--cutoff-transition-width", type=float, default=1.0,
                   help="QUIP only: width of the cosine cutoff transition, Å")
    p.add_argument("--delta", type=float, default=1.0, help="kernel scale, eV")
    p.add_argument("--energy-noise", type=float, default=0.001, help="eV per sqrt(atom)")
    p.add_argument("--force-noise", type=float, default=0.02, help="eV/Å")
    p.add_argument("--jitter", type=float, default=1e-8,
                   help="K_MM jitter (gapkit jitter, QUIP sparse_jitter)")
    p.add_argument("--quip-n-sparse", type=parse_quip_n_sparse, default="300",
                   help="QUIP sparse points per species (one SOAP block per centre species): "
                        "a count for every species, SYMBOL:COUNT,..., or 'same' for --n-sparse")
    p.add_argument("--no-quip", action="store_true", help="skip the QUIP gap_fit comparison")
    p.add_argument("--seed", type=int, default=0, help="random seed for both codes")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP/OPENBLAS/MKL_NUM_THREADS for both workers; 0 inherits the "
                        "environment. One thread by default: the timings are then reproducible "
                        "on a shared machine (multi-threaded BLAS on small per-structure "
                        "matrices slowed gapkit 4-8x when other jobs were running)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="also write the results as JSON to OUT")
    p.add_argument("--no-warmup", action="store_true",
                   help="do not run one untimed prediction before timing the test set")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temporary directory (training xyz, gap_fit log, gp.xml)")
    # hidden worker interface
    p.add_argument("--worker", choices=("gapkit", "quip"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-tmp", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def resolve_data_dir(arg: Path | None) -> tuple[Path, str]:
    if arg is not None:
        return arg.expanduser().resolve(), "--data-dir"
    env = os.environ.get("GAPKIT_SHARED_DATA")
    if env:
        base = Path(env).expanduser()
        for cand in (base / "ethanol_rmd17", base):
            if (cand / "train.xyz").is_file():
                return cand.resolve(), "$GAPKIT_SHARED_DATA"
        return (base / "ethanol_rmd17").resolve(), "$GAPKIT_SHARED_DATA"
    return DEFAULT_DATA.resolve(), "default"


# ----------------------------------------------------------------------------------
# shared worker helpers
# ----------------------------------------------------------------------------------
def find_data_dir(arg: Path | None, files) -> Path | None:
    """The rMD17 ethanol folder (see :func:`resolve_data_dir`), or ``None`` after printing
    which of ``files`` are missing, so that a script can exit cleanly without the data."""
    data_dir, how = resolve_data_dir(arg)
    missing = [f for f in files if not (data_dir / f).is_file()]
    if missing:
        print(f"Data not found: {data_dir} ({how}) lacks {', '.join(missing)}. Set --data-dir or "
              "$GAPKIT_SHARED_DATA to the rMD17 ethanol folder. Nothing to do.")
        return None
    return data_dir


def _maxrss_mib(who: int) -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    r = resource.getrusage(who).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def _current_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def load_data(data_dir: Path, n_train: int, n_test: int):
    """Training and test frames with reference labels copied out of the calculators."""
    from ase.io import read

    train = read(str(data_dir / "train.xyz"), index=f":{n_train}")
    test = read(str(data_dir / "test_MD.xyz"), index=f":{n_test}")
    if len(train) < n_train:
        print(f"warning: train.xyz has only {len(train)} frames (< {n_train})", file=sys.stderr)
    if len(test) < n_test:
        print(f"warning: test_MD.xyz has only {len(test)} frames (< {n_test})", file=sys.stderr)
    return train, test


def reference_labels(frames):
    import numpy as np

    E = np.array([a.get_potential_energy() for a in frames], dtype=np.float64)
    F = [np.array(a.get_forces(), dtype=np.float64) for a in frames]
    return E, F


def isolated_energies(path: Path) -> dict[str, float]:
    from ase.io import read

    out = {}
    for a in read(str(path), index=":"):
        if len(a) == 1:
            out[a.get_chemical_symbols()[0]] = float(a.get_potential_energy())
    return out


def error_metrics(E_ref, F_ref, E_pred, F_pred) -> dict:
    import numpy as np

    dE = (np.asarray(E_pred) - np.asarray(E_ref)) * 1000.0  # meV per structure
    dF = (np.concatenate([np.asarray(f).ravel() for f in F_pred])
          - np.concatenate([np.asarray(f).ravel() for f in F_ref])) * 1000.0  # meV/Å
    return {"energy_mae": float(np.mean(np.abs(dE))), "energy_rmse": float(np.sqrt(np.mean(dE ** 2))),
            "force_mae": float(np.mean(np.abs(dF))), "force_rmse": float(np.sqrt(np.mean(dF ** 2))),
            "n_test_frames": int(len(dE)), "n_force_components": int(len(dF))}


def _threadpool_info() -> list | None:
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("internal_api", "num_threads")} for d in threadpool_info()]
    except Exception:  # noqa: BLE001 - purely informational
        return None


# ----------------------------------------------------------------------------------
# gapkit worker
# ----------------------------------------------------------------------------------
def worker_gapkit(args, data_dir: Path) -> dict:
    import numpy as np

    from ase.data import chemical_symbols

    import gapkit
    from gapkit.descriptors import SOAP
    from gapkit.model import GAP

    train, test = load_data(data_dir, args.n_train, args.n_test)
    E_ref, F_ref = reference_labels(test)
    n_test_atoms = int(sum(len(a) for a in test))
    rss_before = _current_rss_mib()
    peak_before = _maxrss_mib(resource.RUSAGE_SELF)

    model = GAP(SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=args.sigma),
                zeta=args.zeta, delta=args.delta, n_sparse=dict(args.n_sparse),
                sparse_method=args.sparse_method, energy_noise=args.energy_noise,
                force_noise=args.force_noise, jitter=args.jitter,
                e0=str(data_dir / "isolated_atoms.xyz"), random_state=args.seed, verbose=False)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    fit_peak = _maxrss_mib(resource.RUSAGE_SELF)

    warm_s = None
    if not args.no_warmup:  # one untimed structure: lazy initialisation, caches
        t0 = time.perf_counter()
        model.predict(test[:1])
        warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(test)
    pred_s = time.perf_counter() - t0
    metrics = error_metrics(E_ref, F_ref, pred.energy, pred.forces)
    n_sparse_used = {chemical_symbols[z]: int(np.sum(model.sparse_species_ == z))
                     for z in model.species_}
    return {
        "tool": "gapkit", "version": getattr(gapkit, "__version__", "?"),
        "fit_time_s": fit_s, "fit_peak_rss_mib": fit_peak,
        "rss_before_fit_mib": rss_before, "peak_rss_before_fit_mib": peak_before,
        "predict_time_s": pred_s, "predict_us_per_atom": pred_s / n_test_atoms * 1e6,
        "predict_warmup_ms": None if warm_s is None else warm_s * 1e3,
        "predict_peak_rss_mib": _maxrss_mib(resource.RUSAGE_SELF),
        "n_test_atoms": n_test_atoms, "n_train_frames": len(train),
        "n_sparse": n_sparse_used, "n_features": int(model.descriptor_.n_features),
        "e0": {str(k): float(v) for k, v in model.e0_.values.items()},
        "delta": float(model.delta_), "log_marginal_likelihood": float(model.log_marginal_likelihood_),
        "threadpools": _threadpool_info(), **metrics,
    }


# ----------------------------------------------------------------------------------
# QUIP worker
# ----------------------------------------------------------------------------------
def gap_fit_executable() -> list[str]:
    """The compiled gap_fit binary shipped with quippy (avoids the Python console wrapper,
    so the RSS and time are the Fortran program's own); else ``gap_fit`` on PATH."""
    try:
        import quippy
        exe = Path(quippy.__path__[0]) / "gap_fit"
        if exe.is_file() and os.access(exe, os.X_OK):
            return [str(exe)]
    except Exception:  # noqa: BLE001
        pass
    exe = shutil.which("gap_fit")
    if exe is None:
        raise RuntimeError("gap_fit not found (neither in the quippy package nor on PATH)")
    return [exe]


def _fmt(x: float) -> str:
    return repr(float(x))


def write_quip_xyz(frames, path: Path, cutoff: float) -> None:
    """Extended XYZ with ``energy=`` in the comment line and a ``forces`` column.

    Written by hand so that the keys are exactly what gap_fit is told to read (ASE 3.23+
    keeps energies/forces in a SinglePointCalculator and may rename them on output).
    Frames without a cell get a cubic box large enough that no periodic image is within
    the cutoff; ``pbc`` is always written as "F F F" (finite molecules).
    """
    import numpy as np

    with open(path, "w") as fh:
        for a in frames:
            e = float(a.get_potential_energy())
            f = np.asarray(a.get_forces(), dtype=np.float64)
            pos = a.get_positions()
            cell = np.asarray(a.get_cell())
            if np.linalg.matrix_rank(cell) < 3:
                L = float(np.ptp(pos, axis=0).max() + 2 * cutoff + 10.0)
                cell = np.eye(3) * L
            lattice = " ".join(_fmt(x) for x in cell.ravel())
            fh.write(f"{len(a)}\n")
            fh.write(f'Lattice="{lattice}" Properties=species:S:1:pos:R:3:forces:R:3 '
                     f'energy={_fmt(e)} config_type=train pbc="F F F"\n')
            for s, r, g in zip(a.get_chemical_symbols(), pos, f):
                fh.write(f"{s} " + " ".join(f"{x:.12f}" for x in r) + " "
                         + " ".join(f"{x:.12f}" for x in g) + "\n")


def quip_gap_string(args, species_z: list[int], n_sparse: dict[str, int]) -> str:
    """One SOAP block per centre species, so that n_sparse counts per species as in gapkit.

    Inside ``gap={...}`` a list value needs *double* braces (``species_Z={{1 6 8}}``):
    the outer level is stripped when the command line is parsed, and with single braces
    soap_initialise sees ``species_Z=1 6 8`` and fails with "Number of value fields wrong".
    ``add_species=F`` is needed too, otherwise QUIP replaces each block by one per species.
    """
    from ase.data import chemical_symbols

    zs = " ".join(str(z) for z in species_z)
    blocks = []
    for z in species_z:
        blocks.append(
            f"soap cutoff={args.r_cut} cutoff_transition_width={args.cutoff_transition_width} "
            f"n_max={args.n_max} l_max={args.l_max} atom_sigma={args.sigma} zeta={args.zeta:g} "
            f"delta={args.delta} covariance_type=dot_product sparse_method=cur_points "
            f"n_sparse={n_sparse[chemical_symbols[z]]} central_weight=1.0 add_species=F "
            f"n_species={len(species_z)} species_Z={{{{{zs}}}}} Z={z}")
    return "{" + " : ".join(blocks) + "}"


def quip_command(args, train_xyz: Path, gp_xml: Path, e0: dict[str, float],
                 species_z: list[int], n_sparse: dict[str, int]) -> list[str]:
    from ase.data import chemical_symbols

    e0_str = "{" + ":".join(f"{chemical_symbols[z]}:{_fmt(e0[chemical_symbols[z]])}"
                            for z in species_z) + "}"
    return gap_fit_executable() + [
        f"at_file={train_xyz}",
        f"gap={quip_gap_string(args, species_z, n_sparse)}",
        f"default_sigma={{{args.energy_noise} {args.force_noise} 0.0 0.0}}",
        f"e0={e0_str}",
        "energy_parameter_name=energy",
        "force_parameter_name=forces",
        f"sparse_jitter={args.jitter}",
        "do_copy_at_file=F",
        "sparse_separate_file=F",
        f"rnd_seed={args.seed + 1}",  # QUIP treats rnd_seed<0 as "random"; keep it > 0
        f"gp_file={gp_xml}",
    ]


def quip_version() -> str:
    """quippy's version (``quippy.__version__``, else the quippy-ase distribution's)."""
    try:
        import quippy
        version = getattr(quippy, "__version__", None)
    except Exception:  # noqa: BLE001
        version = None
    if version is None:
        try:
            from importlib.metadata import version as _v
            version = _v("quippy-ase")
        except Exception:  # noqa: BLE001
            version = "?"
    return version


def worker_quip(args, data_dir: Path, tmp: Path) -> dict:
    import numpy as np

    train, test = load_data(data_dir, args.n_train, args.n_test)
    E_ref, F_ref = reference_labels(test)
    n_test_atoms = int(sum(len(a) for a in test))
    e0 = isolated_energies(data_dir / "isolated_atoms.xyz")
    species_z = sorted({int(z) for a in train for z in a.numbers})

    train_xyz = tmp / "quip_train.xyz"
    gp_xml = tmp / "gp.xml"
    log = tmp / "gap_fit.log"
    write_quip_xyz(train, train_xyz, args.r_cut)
    n_sparse = quip_sparse_counts(args, train)
    cmd = quip_command(args, train_xyz, gp_xml, e0, species_z, n_sparse)

    children_before = _maxrss_mib(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp)
    fit_s = time.perf_counter() - t0
    fit_peak = _maxrss_mib(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or not gp_xml.is_file():
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"gap_fit failed (exit {proc.returncode}); command:\n  "
                           + shlex.join(cmd) + "\nlast lines of its log:\n" + "\n".join(tail))
    log_text = log.read_text(errors="replace")

    from quippy.potential import Potential

    pot = Potential(param_filename=str(gp_xml))
    frames = [a.copy() for a in test]  # copies drop the reference calculators
    warm_s = None
    if not args.no_warmup:  # one untimed structure: lazy initialisation, caches
        w = test[0].copy()
        t0 = time.perf_counter()
        w.calc = pot
        w.get_potential_energy()
        w.get_forces()
        warm_s = time.perf_counter() - t0
    E_pred = np.empty(len(frames))
    F_pred = []
    t0 = time.perf_counter()
    for k, a in enumerate(frames):
        a.calc = pot
        E_pred[k] = a.get_potential_energy()
        F_pred.append(np.array(a.get_forces()))
    pred_s = time.perf_counter() - t0
    metrics = error_metrics(E_ref, F_ref, E_pred, F_pred)
    return {
        "tool": "quip", "version": quip_version(),
        "fit_time_s": fit_s, "fit_peak_rss_mib": fit_peak,
        "children_peak_rss_before_fit_mib": children_before,
        "predict_time_s": pred_s, "predict_us_per_atom": pred_s / n_test_atoms * 1e6,
        "predict_warmup_ms": None if warm_s is None else warm_s * 1e3,
        "predict_peak_rss_mib": _maxrss_mib(resource.RUSAGE_SELF),
        "n_test_atoms": n_test_atoms, "n_train_frames": len(train),
        "n_sparse": n_sparse,
        "gap_fit_command": shlex.join(cmd),
        "gap_fit_log_lines": len(log_text.splitlines()),
        **metrics,
    }


def run_worker(args) -> int:
    data_dir, _ = resolve_data_dir(args.data_dir)
    tmp = args.worker_tmp or Path(tempfile.mkdtemp(prefix=f"gapkit_bench_{args.worker}_"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if args.worker == "gapkit":
            res = worker_gapkit(args, data_dir)
        else:
            res = worker_quip(args, data_dir, tmp)
        res["ok"] = True
    except Exception as exc:  # report, do not crash the driver
        import traceback
        traceback.print_exc()
        res = {"tool": args.worker, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if args.worker_out is not None:
        args.worker_out.write_text(json.dumps(res, indent=2))
    else:
        print(json.dumps(res, indent=2))
    return 0 if res["ok"] else 1


# ----------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------
def quippy_available() -> tuple[bool, str]:
    try:
        from quippy.potential import Potential  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return False, f"quippy not importable ({type(exc).__name__}: {exc})"
    try:
        gap_fit_executable()
    except RuntimeError as exc:
        return False, str(exc)
    return True, ""


def quip_status(no_quip: bool) -> tuple[bool, str]:
    """Whether to run QUIP, and a note saying why or why not."""
    if no_quip:
        return False, "disabled (--no-quip)"
    ok, why = quippy_available()
    return ok, "enabled" if ok else f"skipped: {why}"


def worker_env(threads: int | None) -> tuple[dict, dict]:
    """Environment for worker processes (``threads`` > 0 pins the BLAS/OpenMP threads)
    and the resulting thread variables."""
    env = dict(os.environ)
    if threads and threads > 0:
        for var in THREAD_VARS:
            env[var] = str(threads)
    return env, {v: env.get(v) for v in THREAD_VARS}


def host_line(threads: dict) -> str:
    return (f"host: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}; thread env {threads}")


def save_results(path: Path | None, results: dict) -> None:
    """Write ``results`` as JSON to ``path`` (if given) and say so."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
        print(f"\nresults written to {path}")


def remove_tmp(tmp: Path, keep: bool) -> None:
    if keep:
        print(f"temporary files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def launch(tool: str, argv: list[str], tmp: Path, env: dict) -> dict:
    out = tmp / f"{tool}_result.json"
    wtmp = tmp / tool
    wtmp.mkdir(exist_ok=True)
    cmd = [sys.executable, str(SCRIPT), *argv, "--worker", tool, "--worker-out", str(out),
           "--worker-tmp", str(wtmp)]
    return run_worker_process(tool, cmd, out, wtmp, env)


def run_worker_process(tool: str, cmd: list[str], out: Path, cwd: Path, env: dict) -> dict:
    """Run one benchmark worker in its own process (so its peak RSS is its own) and read
    the JSON result it writes to ``out``; adds the wall time and the load average."""
    print(f"[{time.strftime('%H:%M:%S')}] running {tool} ...", flush=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    if out.is_file():
        res = json.loads(out.read_text())
    else:
        res = {"tool": tool, "ok": False, "error": f"worker exited {proc.returncode} without a result"}
    res["worker_wall_s"] = wall
    res["loadavg_1min_before_after"] = [load_before, load_after]
    status = "ok" if res.get("ok") else "FAILED: " + res.get("error", "?")
    print(f"[{time.strftime('%H:%M:%S')}] {tool} done in {wall:.1f} s wall ({status}); "
          f"1-min load average {load_before:.2f} before, {load_after:.2f} after "
          f"(the worker itself adds up to ~1-2 on this {os.cpu_count()}-CPU host)", flush=True)
    return res


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_comparison(rows: list, g: dict | None, q: dict | None, published: dict,
                     pub_fmt: str = ".2f", width: int = 10) -> None:
    """Side-by-side table of two worker results: ``rows`` of ``(label, key, format)``;
    the ratio column is gapkit/QUIP."""
    g = g if g and g.get("ok") else None
    q = q if q and q.get("ok") else None
    head = (f"{'':30s} {'gapkit':>{width}s} {'QUIP':>{width}s} {'gapkit/QUIP':>12s} "
            f"{'published GAP':>14s}")
    print(head)
    print("-" * len(head))
    for label, key, fmt in rows:
        gv = g.get(key) if g else None
        qv = q.get(key) if q else None
        ratio = gv / qv if (gv is not None and qv) else None
        print(f"{label:30s} {_num(gv, fmt):>{width}s} {_num(qv, fmt):>{width}s} "
              f"{_num(ratio, '.2f'):>12s} {_num(published.get(key), pub_fmt):>14s}")


def print_table(g: dict | None, q: dict | None) -> None:
    rows = [  # (label, key, format)
        ("energy MAE  [meV/structure]", "energy_mae", ".2f"),
        ("energy RMSE [meV/structure]", "energy_rmse", ".2f"),
        ("force MAE   [meV/Å]", "force_mae", ".2f"),
        ("force RMSE  [meV/Å]", "force_rmse", ".2f"),
        ("fit wall time [s]", "fit_time_s", ".1f"),
        ("fit peak RSS [MiB]", "fit_peak_rss_mib", ".0f"),
        ("predict E+F [µs/atom]", "predict_us_per_atom", ".1f"),
        ("predict warm-up, 1 frame [ms]", "predict_warmup_ms", ".1f"),
        ("predict process peak RSS [MiB]", "predict_peak_rss_mib", ".0f"),
        ("worker wall time [s]", "worker_wall_s", ".1f"),
    ]
    print_comparison(rows, g, q, PUBLISHED, pub_fmt=".1f", width=11)
    g_ok = g if g and g.get("ok") else None
    q_ok = q if q and q.get("ok") else None
    if g_ok:
        print(f"\ngapkit: sparse points {g_ok['n_sparse']}, {g_ok['n_features']} features; "
              f"RSS before fit {_num(g_ok['rss_before_fit_mib'], '.0f')} MiB (interpreter + "
              f"libraries + data), so the fit itself added "
              f"~{g_ok['fit_peak_rss_mib'] - g_ok['peak_rss_before_fit_mib']:.0f} MiB")
    if q_ok:
        print(f"QUIP:   sparse points {q_ok['n_sparse']}; peak RSS is the gap_fit binary alone")
    if g_ok and q_ok:
        print(f"test set: {g_ok['n_test_frames']} frames, {g_ok['n_test_atoms']} atoms, "
              f"{g_ok['n_force_components']} force components")
    for r in (g, q):
        if r and not r.get("ok"):
            print(f"{r['tool']} FAILED: {r.get('error')}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)

    print("command: " + shlex.join([sys.executable, *sys.argv]) if argv == sys.argv[1:]
          else "command: " + shlex.join([sys.executable, str(SCRIPT), *argv]))
    data_dir, how = resolve_data_dir(args.data_dir)
    missing = [f for f in DATA_FILES if not (data_dir / f).is_file()]
    if missing:
        print(f"Data not found: {data_dir} ({how}) lacks {', '.join(missing)}. Set --data-dir or "
              "$GAPKIT_SHARED_DATA to the rMD17 ethanol folder. Nothing to do.")
        return 0
    if args.n_train < 1 or args.n_test < 1:
        parser.error("--n-train and --n-test must be >= 1")

    do_quip, quip_note = quip_status(args.no_quip)
    env, threads = worker_env(args.threads)
    print(f"data: {data_dir} ({how})")
    print(host_line(threads))
    print(f"settings: n_train={args.n_train} n_test={args.n_test} r_cut={args.r_cut} "
          f"n_max={args.n_max} l_max={args.l_max} sigma={args.sigma} zeta={args.zeta:g} "
          f"delta={args.delta} energy_noise={args.energy_noise} force_noise={args.force_noise} "
          f"jitter={args.jitter} seed={args.seed}")
    print(f"gapkit: n_sparse={args.n_sparse} sparse_method={args.sparse_method}")
    print(f"QUIP:   {quip_note}; n_sparse={args.quip_n_sparse} per species (cur_points), "
          f"cutoff_transition_width={args.cutoff_transition_width}")
    print(flush=True)

    # The workers get the user's arguments minus the driver-only ones, and the data
    # folder as an absolute path (they run inside the temporary directory).
    fwd = []
    skip_next = False
    for a in argv:
        if skip_next:
            skip_next = False
            continue
        if a in ("--json", "--data-dir"):
            skip_next = True
            continue
        if a == "--keep-tmp" or a.startswith(("--json=", "--data-dir=")):
            continue
        fwd.append(a)
    fwd += ["--data-dir", str(data_dir)]

    tmp = Path(tempfile.mkdtemp(prefix="gapkit_bench_"))
    results = {"command": shlex.join([sys.executable, str(SCRIPT), *argv]),
               "data_dir": str(data_dir), "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(args).items()
                                                        if not k.startswith("worker")},
               "thread_env": threads, "host": platform.node(), "cpus": os.cpu_count(),
               "published": PUBLISHED}
    try:
        g = launch("gapkit", fwd, tmp, env)
        q = launch("quip", fwd, tmp, env) if do_quip else None
        if q and q.get("ok"):
            print("\ngap_fit command: " + q["gap_fit_command"])
        print()
        print_table(g, q)
        results.update(gapkit=g, quip=q)
        save_results(args.json, results)
    finally:
        remove_tmp(tmp, args.keep_tmp)
    ok = g.get("ok") and (q is None or q.get("ok"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
