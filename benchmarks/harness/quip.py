"""QUIP: whether quippy / ``gap_fit`` are usable, their version, the training extxyz,
the ``gap_fit`` command line and its runner. quippy, numpy and ase are imported inside
the functions."""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from .host import loadavg, maxrss_mib


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
