"""Shared scaffolding of the benchmark scripts (not a benchmark itself).

The scripts in this folder import this module (``import harness``, it sits next to them)
and keep only their own science. It holds:

* command-line helpers: argument types and the options that several scripts share;
* data folders: ``--data-dir`` / ``$GAPKIT_SHARED_DATA`` / ``<repo>/../shared/data``, and
  the small readers of the rMD17 ethanol and mlearn Si sets used by more than one script;
* worker processes: a benchmark re-invokes itself with a hidden ``--worker`` flag so that
  the peak RSS of each fit is its own (:func:`launch_worker`, :func:`worker_main`),
  thread pinning through the environment, the host line, peak-RSS readers;
* timing: :func:`best_of` (in-process) and :func:`alternate_ab` (two commands, A B A B);
* reports: the gapkit-vs-QUIP comparison table and a markdown-table printer;
* QUIP: whether quippy / ``gap_fit`` are usable, their version, the training extxyz, the
  ``gap_fit`` command line and its runner;
* output: JSON results, settings, command line, temporary folders.

Nothing here imports numpy, ase or gapkit at import time, so a script's ``--help`` and its
thread settings (which must precede the numpy import) work before the heavy imports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED_DATA = REPO.parent / "shared" / "data"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ETHANOL_FILES = ("train.xyz", "test_MD.xyz", "isolated_atoms.xyz")
SI_FILES = ("train.xyz", "test.xyz")
#: mlearn's stress labels (kbar, VASP sign) and 1 eV/Å^3 in kbar.
STRESS_KEY = "mlearn_virial_stress"
KBAR_PER_EV_A3 = 1602.1766208


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


def add_data_dir_argument(p, name: str = "ethanol_rmd17", files=ETHANOL_FILES,
                          flag: str = "--data-dir") -> None:
    """The data-folder option, resolved by :func:`resolve_data_dir`."""
    p.add_argument(flag, type=Path, default=None,
                   help=f"folder with {', '.join(files)} (default: $GAPKIT_SHARED_DATA[/{name}], "
                        f"else <repo>/../shared/data/{name})")


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
# data folders and shared readers
# ----------------------------------------------------------------------------------
def resolve_data_dir(arg: Path | None, name: str, files=("train.xyz",)) -> tuple[Path, str]:
    """``arg``, else ``$GAPKIT_SHARED_DATA/name`` or ``$GAPKIT_SHARED_DATA`` itself (the first
    that holds ``files``), else ``<repo>/../shared/data/name``; and how it was chosen."""
    if arg is not None:
        return Path(arg).expanduser().resolve(), "--data-dir"
    env = os.environ.get("GAPKIT_SHARED_DATA")
    if env:
        base = Path(env).expanduser()
        for cand in (base / name, base):
            if all((cand / f).is_file() for f in files):
                return cand.resolve(), "$GAPKIT_SHARED_DATA"
        return (base / name).resolve(), "$GAPKIT_SHARED_DATA"
    return (SHARED_DATA / name).resolve(), "default"


def find_data_dir(arg: Path | None, name: str, files, what: str, alt: str = "") -> Path | None:
    """The folder of :func:`resolve_data_dir`, or ``None`` after printing which ``files`` it
    lacks, so that a script can exit 0 without the data. ``what``: "the mlearn Si folder"."""
    data_dir, how = resolve_data_dir(arg, name, files)
    missing = [f for f in files if not (data_dir / f).is_file()]
    if missing:
        print(f"Data not found: {data_dir} ({how}) lacks {', '.join(missing)}. Set --data-dir or "
              f"$GAPKIT_SHARED_DATA to {what}{alt}. Nothing to do.")
        return None
    return data_dir


def evenly_spaced(n_total: int, n: int | None) -> list[int]:
    """``n`` evenly spaced indices of ``range(n_total)`` (all when ``n`` is None or too big)."""
    import numpy as np
    if n is None or n >= n_total:
        return list(range(n_total))
    return sorted(set(np.round(np.linspace(0, n_total - 1, n)).astype(int).tolist()))


def reference_labels(frames):
    """Reference energies (array) and forces (list of arrays) of ``frames``."""
    import numpy as np
    E = np.array([a.get_potential_energy() for a in frames], dtype=np.float64)
    F = [np.array(a.get_forces(), dtype=np.float64) for a in frames]
    return E, F


def isolated_energies(path: Path) -> dict[str, float]:
    """Energies of the one-atom frames of ``path`` (rMD17 ``isolated_atoms.xyz``), by symbol."""
    from ase.io import read
    return {a.get_chemical_symbols()[0]: float(a.get_potential_energy())
            for a in read(str(path), index=":") if len(a) == 1}


def error_metrics(E_ref, F_ref, E_pred, F_pred) -> dict:
    """Energy MAE/RMSE in meV per structure, force MAE/RMSE in meV/Å per component."""
    import numpy as np
    dE = (np.asarray(E_pred) - np.asarray(E_ref)) * 1000.0
    dF = (np.concatenate([np.asarray(f).ravel() for f in F_pred])
          - np.concatenate([np.asarray(f).ravel() for f in F_ref])) * 1000.0
    return {"energy_mae": float(np.mean(np.abs(dE))), "energy_rmse": float(np.sqrt(np.mean(dE ** 2))),
            "force_mae": float(np.mean(np.abs(dF))), "force_rmse": float(np.sqrt(np.mean(dF ** 2))),
            "n_test_frames": int(len(dE)), "n_force_components": int(len(dF))}


def mlearn_matrix(values):
    """mlearn's six numbers (xx yy zz xy yz xz) as a symmetric 3x3 matrix (same units)."""
    import numpy as np
    xx, yy, zz, xy, yz, xz = np.asarray(values, dtype=np.float64).ravel()
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def load_si(data_dir: Path, n_train: int | None = None, n_test: int | None = None,
            virials: bool = True):
    """mlearn Si: evenly spaced training frames (with ``info["virial"]``, the GAP virial
    ``-stress * V`` in eV as a 3x3 matrix, from the kbar labels) and test frames. The files
    are ordered by config_type; evenly spaced frames keep every type."""
    from ase.io import read
    train_all = read(str(data_dir / "train.xyz"), index=":")
    test_all = read(str(data_dir / "test.xyz"), index=":")
    train = [train_all[k] for k in evenly_spaced(len(train_all), n_train)]
    test = [test_all[k] for k in evenly_spaced(len(test_all), n_test)]
    for a in train:
        a.info.pop("virial", None)
        if virials and STRESS_KEY in a.info:
            a.info["virial"] = mlearn_matrix(a.info[STRESS_KEY]) * a.get_volume() / KBAR_PER_EV_A3
    return train, test


def add_si_model_arguments(p) -> None:
    """Data and model options of the mlearn Si GAP (``si_mlearn.py``, ``si_nve.py``)."""
    add_data_dir_argument(p, "si_mlearn", SI_FILES)
    p.add_argument("--n-train", type=int, default=None,
                   help="use N evenly spaced training cells (default: all 214)")
    p.add_argument("--r-cut", type=float, default=5.4, help="SOAP cutoff, Å")
    p.add_argument("--cutoff-width", type=float, default=1.0,
                   help="width of the cosine cutoff transition, Å (QUIP cutoff_transition_width)")
    p.add_argument("--n-max", type=int, default=8)
    p.add_argument("--l-max", type=int, default=8)
    p.add_argument("--sigma", type=float, default=0.5, help="atom Gaussian width, Å")
    p.add_argument("--zeta", type=float, default=4.0)
    p.add_argument("--delta", default="auto", help="kernel scale in eV, or 'auto' (gapkit's default)")
    p.add_argument("--n-sparse", type=int, default=1000, help="sparse points")
    add_sparse_method_argument(p)
    add_noise_arguments(p, 0.01, 0.05, 0.01)
    p.add_argument("--no-virials", action="store_true", help="train without the virials")
    p.add_argument("--e0", default="lstsq", help="gapkit e0: lstsq, zero, or a number (eV/atom)")
    p.add_argument("--jitter", type=float, default=1e-8,
                   help="K_MM jitter (gapkit jitter, QUIP sparse_jitter)")
    p.add_argument("--optimize", action="store_true",
                   help="gapkit: learn delta and the noises by type-II maximum likelihood "
                        "(QUIP then gets the learned values)")
    p.add_argument("--seed", type=int, default=0, help="random seed for both codes")


def parse_delta(text):
    return "auto" if str(text).strip().lower() == "auto" else float(text)


def parse_e0(text):
    text = str(text).strip()
    return text if text in ("lstsq", "zero") else {"Si": float(text)}


def build_si_model(args, cutoff: str = "cosine", r_cut: float | None = None):
    """The gapkit GAP of the Si options (:func:`add_si_model_arguments`) in ``args``."""
    from gapkit import GAP, SOAP
    soap = SOAP(r_cut=args.r_cut if r_cut is None else r_cut, n_max=args.n_max,
                l_max=args.l_max, sigma=args.sigma, cutoff=cutoff, cutoff_width=args.cutoff_width)
    return GAP(soap, zeta=args.zeta, delta=parse_delta(args.delta), n_sparse=args.n_sparse,
               sparse_method=args.sparse_method, energy_noise=args.energy_noise,
               force_noise=args.force_noise, virial_noise=args.virial_noise,
               e0=parse_e0(args.e0), jitter=args.jitter, optimize=args.optimize,
               random_state=args.seed)


# ----------------------------------------------------------------------------------
# processes, threads, memory
# ----------------------------------------------------------------------------------
def maxrss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak RSS (MiB) of this process or, with ``RUSAGE_CHILDREN``, of its largest child."""
    r = resource.getrusage(who).ru_maxrss  # KiB on Linux, bytes on macOS
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def current_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) / 1024.0 for x in fh if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def threadpool_info() -> list | None:
    try:
        from threadpoolctl import threadpool_info as info
        return [{k: d.get(k) for k in ("internal_api", "num_threads")} for d in info()]
    except Exception:  # noqa: BLE001 - purely informational
        return None


def loadavg() -> float:
    return float(os.getloadavg()[0])


def worker_env(threads: int | None) -> tuple[dict, dict]:
    """Environment for subprocesses (``threads`` > 0 pins the BLAS/OpenMP threads) and the
    resulting thread variables."""
    env = dict(os.environ)
    if threads and threads > 0:
        for var in THREAD_VARS:
            env[var] = str(threads)
    return env, {v: env.get(v) for v in THREAD_VARS}


def set_thread_env(threads: int | None) -> dict:
    """Pin this process's BLAS/OpenMP threads (call before numpy is imported)."""
    env, pinned = worker_env(threads)
    os.environ.update({k: v for k, v in pinned.items() if v is not None})
    return pinned


def host_line(threads: dict) -> str:
    return (f"host: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}; thread env {threads}")


def host_fields(threads: dict | None = None) -> dict:
    """The host entries of a JSON result."""
    return {"host": platform.node(), "cpus": os.cpu_count(),
            "thread_env": threads if threads is not None else {v: os.environ.get(v) for v in THREAD_VARS}}


def worker_main(args, workers: dict, tool: str | None = None, finish=None) -> int:
    """Worker side of :func:`launch_worker`: the result of ``workers[args.worker](params)``
    with ``ok: True``, or ``ok: False`` and the error (printed, so that the driver reports
    it instead of crashing); ``finish(result)`` may add to it. Written to ``params["out"]``."""
    spec = json.loads(Path(args.worker_params).read_text())
    Path(spec["tmp"]).mkdir(parents=True, exist_ok=True)
    try:
        res = workers[args.worker](spec)
        res["ok"] = True
    except Exception as exc:  # noqa: BLE001 - report, do not crash the driver
        traceback.print_exc()
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
               "timed_out": isinstance(exc, QuipTimeout)}
        if tool is not None:
            res = {"tool": tool, **res}
    if finish is not None:
        finish(res)
    Path(spec["out"]).write_text(json.dumps(res))
    return 0 if res["ok"] else 1


def launch_worker(script: Path, kind: str, params: dict, wdir: Path, env: dict,
                  timeout: float | None = None, quiet: bool = False, tool: str | None = None) -> dict:
    """Run ``script --worker kind --worker-params wdir/params.json`` in its own process (so
    that its peak RSS is its own) and read the JSON result it writes to ``wdir/result.json``;
    adds ``worker_wall_s`` and the 1-min load average before and after. After ``timeout`` s
    the worker's process group is killed. ``quiet``: the caller prints the progress."""
    tool = tool or kind
    wdir.mkdir(parents=True, exist_ok=True)
    out, pfile = wdir / "result.json", wdir / "params.json"
    pfile.write_text(json.dumps(dict(params, out=str(out), tmp=str(wdir))))
    cmd = [sys.executable, str(script), "--worker", kind, "--worker-params", str(pfile)]
    load_before = loadavg()
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] running {tool} ...", flush=True)
    t0 = time.perf_counter()
    # a new session only when it may have to be killed: else Ctrl-C reaches the worker too
    proc = subprocess.Popen(cmd, cwd=wdir, env=env, start_new_session=timeout is not None)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group only
        proc.wait()
        rc = None
    wall = time.perf_counter() - t0
    load_after = loadavg()
    if out.is_file():
        res = json.loads(out.read_text())
    else:
        res = {"tool": tool, "ok": False, "error": f"killed after --worker-timeout {timeout:g} s"
               if rc is None else f"worker exited {rc} without a result"}
    res.update(worker_wall_s=wall, loadavg_1min_before_after=[load_before, load_after])
    if not quiet:
        status = "ok" if res.get("ok") else "FAILED: " + str(res.get("error", "?"))
        print(f"[{time.strftime('%H:%M:%S')}] {tool} done in {wall:.1f} s wall ({status}); "
              f"1-min load average {load_before:.2f} before, {load_after:.2f} after "
              f"(the worker itself adds up to ~1-2 on this {os.cpu_count()}-CPU host)", flush=True)
    return res


# ----------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------
def best_of(fn, repeats: int) -> tuple[float, list[float], list[float]]:
    """Best wall time of ``repeats`` calls of ``fn`` (after the caller's warm-up), the
    individual times and the 1-min load averages before/after."""
    times = []
    l0 = loadavg()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, [l0, loadavg()]


def alternate_ab(cmd_a: list[str], cmd_b: list[str], rounds: int = 5, threads: int = 1,
                 cwd: Path | None = None) -> dict:
    """Wall time of two commands run alternately, A B A B ... (``rounds`` >= 5 pairs), each a
    fresh process with ``threads`` BLAS/OpenMP threads (through the environment), so that a
    drift of the machine's load hits both alike. Per command: median, min, max, all times."""
    env, _ = worker_env(threads)
    times = {"a": [], "b": []}
    for _ in range(max(5, rounds)):
        for key, cmd in (("a", cmd_a), ("b", cmd_b)):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
            times[key].append(time.perf_counter() - t0)
    out = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "times_s": v}
           for k, v in times.items()}
    out["ratio_b_over_a"] = out["b"]["median_s"] / out["a"]["median_s"]
    return out


# ----------------------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------------------
def num(x, fmt: str) -> str:
    """``format(x, fmt)``, or "-" for None and NaN."""
    return "-" if x is None or (isinstance(x, float) and x != x) else format(x, fmt)


def print_comparison(rows: list, g: dict | None, q: dict | None, published: dict,
                     pub_fmt: str = ".2f", width: int = 10) -> None:
    """Side-by-side table of a gapkit and a QUIP worker result: ``rows`` of
    ``(label, key, format)``; the ratio column is gapkit/QUIP."""
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
        print(f"{label:30s} {num(gv, fmt):>{width}s} {num(qv, fmt):>{width}s} "
              f"{num(ratio, '.2f'):>12s} {num(published.get(key), pub_fmt):>14s}")


def print_markdown_table(head, rows, align: list[str] | None = None) -> None:
    """A markdown table; without ``align`` the columns are padded to equal widths."""
    rows = [[str(c).replace("|", "/") for c in r] for r in rows]
    if align is not None:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join(align) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(str(r[i])) for r in rows + [list(head)]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


# ----------------------------------------------------------------------------------
# QUIP (quippy, gap_fit)
# ----------------------------------------------------------------------------------
class QuipTimeout(RuntimeError):
    """gap_fit ran past its timeout (reported, not an error of the benchmark)."""


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


def quip_version() -> str:
    """quippy's version (``quippy.__version__``, else the quippy-ase distribution's)."""
    try:
        import quippy
        return quippy.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        from importlib.metadata import version
        return version("quippy-ase")
    except Exception:  # noqa: BLE001
        return "?"


def _fmt(x: float) -> str:
    return repr(float(x))


def write_quip_xyz(frames, path: Path, periodic: bool, cutoff: float = 0.0,
                   config_type: str | None = None) -> None:
    """Extended XYZ for gap_fit with ``energy=``, ``virial=`` (9 values, eV, where
    ``info["virial"]`` has it), ``config_type`` (``config_type``, else the frame's) and a
    ``forces`` column, written by hand so that the keys are exactly those gap_fit is told to
    read (ASE 3.23+ keeps labels in a SinglePointCalculator and may rename them). Molecules
    (``periodic=False``) without a cell get a cubic box with no image within ``cutoff``."""
    import numpy as np
    pbc = "T T T" if periodic else "F F F"
    with open(path, "w") as fh:
        for a in frames:
            pos = a.get_positions()
            cell = np.asarray(a.get_cell())
            if not periodic and np.linalg.matrix_rank(cell) < 3:
                cell = np.eye(3) * float(np.ptp(pos, axis=0).max() + 2 * cutoff + 10.0)
            lattice = " ".join(_fmt(x) for x in cell.ravel())
            extra = ""
            if "virial" in a.info:
                v = np.asarray(a.info["virial"], dtype=float).reshape(3, 3)
                extra = ' virial="' + " ".join(_fmt(x) for x in v.ravel()) + '"'
            ct = config_type or a.info.get("config_type", "default")
            fh.write(f"{len(a)}\n")
            fh.write(f'Lattice="{lattice}" Properties=species:S:1:pos:R:3:forces:R:3 '
                     f'energy={_fmt(a.get_potential_energy())}{extra} config_type={ct} '
                     f'pbc="{pbc}"\n')
            f = np.asarray(a.get_forces(), dtype=np.float64)
            for s, r, g in zip(a.get_chemical_symbols(), pos, f):
                fh.write(f"{s} " + " ".join(f"{x:.12f}" for x in r) + " "
                         + " ".join(f"{x:.12f}" for x in g) + "\n")


def cap_sparse_counts(train, spec) -> dict[str, int]:
    """Per-species sparse counts for gap_fit (``spec``: one count, or SYMBOL: count), capped
    at the environments of that species in ``train`` (gapkit caps the same way; gap_fit
    would not). Ordered by atomic number."""
    from collections import Counter
    from ase.data import atomic_numbers
    avail = Counter(s for a in train for s in a.get_chemical_symbols())
    out = {}
    for sym in sorted(avail, key=atomic_numbers.__getitem__):
        if isinstance(spec, dict) and sym not in spec:
            raise ValueError(f"--quip-n-sparse/--n-sparse has no count for species {sym}")
        out[sym] = min(int(spec[sym] if isinstance(spec, dict) else spec), int(avail[sym]))
    return out


def gap_fit_command(train_xyz: Path, gp_xml: Path, soap: dict, n_sparse: dict[str, int],
                    e0: dict[str, float], sigmas, jitter: float, seed: int,
                    virials: bool = False, sparse_method: str = "cur_points") -> list[str]:
    """gap_fit with one SOAP block per centre species (so that ``n_sparse`` counts per
    species as in gapkit). ``soap``: r_cut, cutoff_width, n_max, l_max, sigma, zeta, delta;
    ``sigmas``: default_sigma energy, forces (, virial).

    Inside ``gap={...}`` a list value needs *double* braces (``species_Z={{1 6 8}}``): the
    outer level is stripped when the command line is parsed, and with single braces
    soap_initialise sees ``species_Z=1 6 8`` and fails with "Number of value fields wrong".
    ``add_species=F`` is needed too, otherwise QUIP replaces each block by one per species.
    """
    from ase.data import atomic_numbers
    zs = sorted(atomic_numbers[s] for s in n_sparse)
    species = sorted(n_sparse, key=atomic_numbers.__getitem__)
    zlist = " ".join(str(z) for z in zs)
    blocks = [f"soap cutoff={soap['r_cut']} cutoff_transition_width={soap['cutoff_width']} "
              f"n_max={soap['n_max']} l_max={soap['l_max']} atom_sigma={soap['sigma']} "
              f"zeta={soap['zeta']:g} delta={_fmt(soap['delta'])} covariance_type=dot_product "
              f"sparse_method={sparse_method} n_sparse={n_sparse[s]} central_weight=1.0 "
              f"add_species=F n_species={len(zs)} species_Z={{{{{zlist}}}}} Z={z}"
              for s, z in zip(species, zs)]
    sig = list(sigmas) + [0.0] * (3 - len(sigmas))
    return gap_fit_executable() + [
        f"at_file={train_xyz}",
        "gap={" + " : ".join(blocks) + "}",
        "default_sigma={" + " ".join(_fmt(x) for x in sig) + " 0.0}",
        "e0={" + ":".join(f"{s}:{_fmt(e0[s])}" for s in species) + "}",
        "energy_parameter_name=energy",
        "force_parameter_name=forces",
        *(["virial_parameter_name=virial"] if virials else []),
        f"sparse_jitter={jitter}",
        "do_copy_at_file=F",
        "sparse_separate_file=F",
        f"rnd_seed={seed + 1}",  # QUIP treats rnd_seed<0 as "random"; keep it > 0
        f"gp_file={gp_xml}",
    ]


def run_gap_fit(cmd: list[str], cwd: Path, gp_xml: Path, timeout: float | None = None) -> dict:
    """Run gap_fit (log in ``cwd/gap_fit.log``): wall time, peak RSS of the binary
    (``RUSAGE_CHILDREN``; the caller must have no larger child before), the load average
    during the fit. Raises :class:`QuipTimeout` after ``timeout`` s, RuntimeError on failure."""
    log = cwd / "gap_fit.log"
    before = maxrss_mib(resource.RUSAGE_CHILDREN)
    l0 = loadavg()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise QuipTimeout(f"gap_fit did not finish within --quip-timeout {timeout:g} s (peak "
                              f"RSS so far {maxrss_mib(resource.RUSAGE_CHILDREN):.0f} MiB)") from None
    fit_s = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or not gp_xml.is_file():
        raise RuntimeError(f"gap_fit failed (exit {proc.returncode}); command:\n  "
                           + shlex.join(cmd) + "\nlast lines of its log:\n"
                           + "\n".join(text.splitlines()[-40:]))
    return {"fit_time_s": fit_s, "fit_peak_rss_mib": maxrss_mib(resource.RUSAGE_CHILDREN),
            "children_peak_rss_before_fit_mib": before, "fit_load": [l0, loadavg()],
            "gap_fit_command": shlex.join(cmd), "gap_fit_log_lines": len(text.splitlines())}


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
