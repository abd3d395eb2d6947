#!/usr/bin/env python
"""Δ-learning benchmark: GFN2-xTB (tblite) as the baseline for PBE ethanol (rMD17).

What it does
------------
1. Labels with GFN2-xTB (``tblite.ase.TBLite``) the training frames used and the test
   frames, and caches the labels outside the repository (``--cache``, default
   ``~/.cache/gapkit/xtb_rmd17``; one ``.npz`` per data file, keyed by the file's SHA-1,
   the xTB settings and the frame index), so that reruns do not call tblite again.
2. Learning curves: for each size in ``--sizes`` (nested subsets of a random permutation
   of ``train.xyz``; ``--repeats`` permutations, seeds ``--seed``, ``--seed`` + 1, ...) it fits

   * a plain GAP on the PBE labels, and
   * a Δ-GAP, ``GAP(baseline=xtb)``: the GP learns PBE − GFN2-xTB (energies and forces)
     and the prediction adds GFN2-xTB back,

   with the same descriptor, kernel, sparse counts, noises and ``delta``. E0 is the same
   in both (``--e0``, default the PBE ``isolated_atoms.xyz``; for the Δ-GAP gapkit then
   subtracts the xTB energy of each isolated atom, so its E0 is PBE(atom) − xTB(atom)).
3. Errors on ``test_MD`` (in distribution) and on the out-of-distribution (OOD) sets
   ``test_H_removal.xyz`` (hydroxyl H pulled off, energies only), ``test_dimers.xyz``
   (energies only) and the methanol frames of ``test_eth_meth.xyz`` (energies and
   forces): energy MAE per structure (meV) and per atom (meV/atom), force MAE (meV/Å),
   for GFN2-xTB alone, the plain GAP and the Δ-GAP at every size (mean over the repeats;
   for the dimers also the MAE after removing each pair type's mean error, i.e. the error
   of the shape of each binding curve). Prints markdown tables, writes JSON (``--out``,
   every repeat) and a log-log learning-curve figure (``--plot``).

The baseline calculator
-----------------------
``XTB`` below is ``TBLite(method="GFN2-xTB")`` with three fixed choices:

* multiplicity: the lowest spin from the electron-count parity (singlet for an even
  count, doublet for an odd one: the CH and OH dimers and the isolated H atom). GFN2-xTB
  here has no spin-polarisation term; tblite gives the same energy for an odd count with
  uhf 0 or 1, so this only makes the choice explicit. Higher spin is never tried, so the
  baseline is one potential-energy surface;
* every single point starts from tblite's default guess (``_res`` is cleared), so a
  result does not depend on which structure was computed before;
* if the SCF does not converge in 250 cycles it is retried with mixer damping 0.1 and
  300 cycles, then with the EEQ guess. These are convergence aids only: when both
  converge they agree to ~1e-8 eV. Frames that still fail (stretched open-shell dimers
  beyond ~3 Å) are dropped from the test set for every model, and counted.

The learning curves use ``GAP(baseline=CachedXTB(...))``: an ASE calculator that returns
the cached xTB labels of a structure (looked up by its atomic numbers and positions) and
calls ``XTB`` for anything else (the isolated atoms of E0). That is the public Δ-learning
path of gapkit with tblite replaced by its cache. Once per run (``--check-n``, default the
largest size, first repeat) the Δ-GAP is also fitted with ``GAP(baseline=XTB())`` --
tblite called live -- and its predictions on every test set are compared with the cached
model's (they must agree to 1e-8 eV and 1e-8 eV/Å); that repeat's errors in the JSON and
the tables are the live model's.

GFN2-xTB alone is reported as the N = 0 limit of the Δ-GAP: xTB plus, per atom, the
difference of the PBE and xTB isolated-atom energies (PBE/def2-SVP is all-electron and
xTB is valence-only, so the baseline does *not* absorb the atomic energies). For the C2H6O
sets also with one constant added instead (the mean residual over the training frames).

Everything but ``--out``/``--plot`` stays in memory or in the cache. BLAS/OpenMP threads
default to 1 (``--threads``). The default run (6 sizes up to 800, 3 repeats, all 1000
test_MD frames, all frames of the OOD sets) took 9-10 min on the shared 2-core machine,
of which ~2 min are the first-time xTB labels (mostly the non-converging dimers).

Example (quick check)::

    python benchmarks/delta_xtb_ethanol.py --sizes 25,50 --n-test 50 --n-ood 20
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import harness as h
from harness import REPO, THREAD_VARS, evenly_spaced as evenly

SCRIPT = Path(__file__).resolve()
CORE_FILES = h.ETHANOL_FILES
OOD_FILES = {"methanol": "test_eth_meth.xyz", "H_removal": "test_H_removal.xyz",
             "dimers": "test_dimers.xyz"}
SET_ORDER = ("test_MD", "methanol", "H_removal", "dimers")
XTB_METHOD = "GFN2-xTB"
# SCF attempts: (label, extra TBLite parameters). Only convergence aids, never a spin change.
XTB_ATTEMPTS = (("default", {}),
                ("damped", {"mixer_damping": 0.1, "max_iterations": 300}),
                ("eeq-guess", {"guess": "eeq"}))
CACHE_VERSION = 1


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = h.new_parser(
        "Δ-learning on rMD17 ethanol: GAP on PBE vs GAP on PBE − GFN2-xTB "
        "(tblite baseline); learning curves in and out of distribution.")
    h.add_data_dir_argument(p)
    p.add_argument("--cache", type=Path, default=Path("~/.cache/gapkit/xtb_rmd17"),
                   help="folder for the cached GFN2-xTB labels (keep it outside the repository)")
    p.add_argument("--sizes", type=h.int_list, default="25,50,100,200,400,800",
                   help="training-set sizes: nested subsets of one permutation of train.xyz")
    p.add_argument("--repeats", type=int, default=3,
                   help="learning curves on this many random permutations (seeds seed, seed+1, "
                        "...); the tables give the mean, the JSON every repeat")
    p.add_argument("--n-test", type=int, default=1000, help="evenly spaced test_MD.xyz frames")
    p.add_argument("--n-ood", type=int, default=1000,
                   help="at most this many evenly spaced frames of each OOD set (methanol "
                        "frames of test_eth_meth.xyz, test_H_removal.xyz, test_dimers.xyz)")
    h.add_soap_arguments(p, n_max=6, l_max=4)
    p.add_argument("--delta", type=float, default=1.0, help="kernel scale, eV (both models)")
    p.add_argument("--n-sparse", type=h.parse_species_counts, default="C:300,H:600,O:300",
                   help="sparse points per species, capped at the environments available")
    h.add_sparse_method_argument(p, quip_note=False)
    h.add_noise_arguments(p, 0.001, 0.02)
    p.add_argument("--e0", choices=("isolated", "lstsq"), default="isolated",
                   help="per-species E0 of both models: the PBE isolated atoms (the Δ-GAP "
                        "subtracts their xTB energies), or least squares on the training "
                        "energies (rank-deficient here: every training frame is C2H6O, so the "
                        "methanol and dimer energies are then meaningless)")
    p.add_argument("--optimize", action="store_true",
                   help="learn delta and the noises of each model by type-II ML instead of "
                        "using the same fixed values for both")
    p.add_argument("--check-n", type=int, default=None,
                   help="training size at which the first repeat's Δ-GAP is refitted with live "
                        "tblite and compared with the cached baseline (default: the largest size; "
                        "0: skip)")
    p.add_argument("--seed", type=int, default=0, help="permutation and sparse-point seed")
    h.add_run_arguments(p, quip=False, keep_tmp=False, json_out=False)
    p.add_argument("--out", type=Path, default=Path("/tmp/delta_xtb_ethanol.json"),
                   help="JSON results")
    p.add_argument("--plot", type=Path, default=Path("/tmp/delta_xtb_ethanol.png"),
                   help="learning-curve figure (PNG); 'none' to skip")
    return p




# ----------------------------------------------------------------------------------
# GFN2-xTB baseline, label cache
# ----------------------------------------------------------------------------------
def make_xtb_class():
    """``XTB`` and ``CachedXTB`` (defined lazily so that the script imports without tblite)."""
    import numpy as np
    from ase.calculators.calculator import Calculator, CalculationFailed, all_changes
    from tblite.ase import TBLite

    class XTB(TBLite):
        """GFN2-xTB; lowest-spin multiplicity by electron parity; fresh SCF guess for every
        structure; convergence retries (``XTB_ATTEMPTS``). ``attempts_used`` counts them."""

        def __init__(self, **kwargs):
            kwargs.setdefault("method", XTB_METHOD)
            kwargs.setdefault("verbosity", 0)
            super().__init__(**kwargs)
            self.attempts_used = {label: 0 for label, _ in XTB_ATTEMPTS}
            self.n_calls = 0

        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            atoms = atoms if atoms is not None else self.atoms
            charge = int(round(float(atoms.get_initial_charges().sum())))
            mult = 1 + (int(atoms.numbers.sum()) - charge) % 2
            base = {k: self.default_parameters[k]
                    for k in ("mixer_damping", "max_iterations", "guess")}
            last = None
            for label, extra in XTB_ATTEMPTS:
                want = {"multiplicity": mult, **base, **extra}
                if any(self.parameters.get(k) != v for k, v in want.items()):
                    self.parameters.update(want)
                    self._xtb = None  # rebuild the API object with the new settings
                    system_changes = list(all_changes)
                self._res = None      # no restart from the previous structure's density
                try:
                    super().calculate(atoms, properties, system_changes)
                except CalculationFailed as err:
                    last = err
                    self._xtb = None
                    system_changes = list(all_changes)
                    continue
                self.attempts_used[label] += 1
                self.n_calls += 1
                return
            self.n_calls += 1
            raise last

    def frame_key(atoms) -> bytes:
        h = hashlib.sha1(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
        return h.digest()

    class CachedXTB(Calculator):
        """Cached GFN2-xTB labels by (numbers, positions); ``XTB`` for anything else."""

        implemented_properties = ["energy", "free_energy", "forces"]

        def __init__(self, table: dict, fallback=None, **kwargs):
            super().__init__(**kwargs)
            self.table = table
            self.fallback = fallback
            self.hits = 0
            self.misses = 0

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            hit = self.table.get(frame_key(self.atoms))
            if hit is None:
                self.misses += 1
                if self.fallback is None:
                    self.fallback = XTB()
                a = self.atoms.copy()
                a.calc = self.fallback
                e, f = float(a.get_potential_energy()), np.array(a.get_forces())
            else:
                self.hits += 1
                e, f = hit
            self.results = {"energy": e, "free_energy": e, "forces": np.array(f, copy=True)}

    return XTB, CachedXTB, frame_key


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def xtb_tag() -> str:
    try:
        from importlib.metadata import version
        ver = version("tblite")
    except Exception:  # noqa: BLE001
        ver = "unknown"
    attempts = ";".join(f"{label}{sorted(extra.items())}" for label, extra in XTB_ATTEMPTS)
    h = hashlib.sha1(f"{XTB_METHOD}|{ver}|{attempts}|v{CACHE_VERSION}".encode()).hexdigest()[:8]
    return f"gfn2-tblite{ver}-{h}"


class LabelCache:
    """GFN2-xTB energies and forces of the frames of one data file, by frame index.

    ``status``: 0 not computed, 1 converged, -1 SCF failed (kept, so that reruns do not try
    again). The file name holds the data file's SHA-1 and the xTB settings tag.
    """

    def __init__(self, root: Path, data_file: Path, n_frames: int, max_atoms: int):
        import numpy as np

        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{data_file.stem}-{_sha1_file(data_file)[:12]}-{xtb_tag()}.npz"
        self.status = np.zeros(n_frames, dtype=np.int8)
        self.energy = np.full(n_frames, np.nan)
        self.forces = np.full((n_frames, max_atoms, 3), np.nan)
        self.n_loaded = 0
        if self.path.is_file():
            with np.load(self.path) as z:
                if (z["status"].shape == self.status.shape
                        and z["forces"].shape == self.forces.shape):
                    self.status = z["status"].copy()
                    self.energy = z["energy"].copy()
                    self.forces = z["forces"].copy()
                    self.n_loaded = int(np.count_nonzero(self.status))

    def save(self) -> None:
        import numpy as np

        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, status=self.status, energy=self.energy, forces=self.forces)
        os.replace(tmp, self.path)

    def label(self, frames, indices, xtb) -> dict:
        """Compute the missing labels of ``frames[i]`` for ``i`` in ``indices``."""
        import numpy as np

        todo = [i for i in indices if self.status[i] == 0]
        t0 = time.perf_counter()
        n_fail = 0
        for k, i in enumerate(todo):
            a = frames[i].copy()
            a.calc = xtb
            try:
                e, f = float(a.get_potential_energy()), np.array(a.get_forces())
                self.status[i], self.energy[i] = 1, e
                self.forces[i, :len(a)] = f
            except Exception:  # noqa: BLE001 - CalculationFailed, or tblite input errors
                self.status[i] = -1
                n_fail += 1
            if (k + 1) % 200 == 0:
                self.save()
        if todo:
            self.save()
        return {"computed": len(todo), "failed_now": n_fail,
                "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------
def load_sets(data_dir: Path, args, notes: list) -> dict:
    """{name: (path, all frames of the file, candidate indices)}."""
    import numpy as np
    from ase.io import read

    out = {}
    train = read(str(data_dir / "train.xyz"), index=":")
    n_max = max(args.sizes)
    if n_max > len(train):
        raise SystemExit(f"--sizes up to {n_max} but train.xyz has {len(train)} frames")
    orders = [np.random.default_rng(args.seed + r).permutation(len(train))[:n_max].tolist()
              for r in range(args.repeats)]
    out["train"] = (data_dir / "train.xyz", train, sorted(set().union(*orders)))
    out["orders"] = orders
    test = read(str(data_dir / "test_MD.xyz"), index=":")
    out["test_MD"] = (data_dir / "test_MD.xyz", test, evenly(len(test), args.n_test))
    for name, fn in OOD_FILES.items():
        path = data_dir / fn
        if not path.is_file():
            notes.append(f"{fn} missing: OOD set {name} skipped")
            continue
        frames = read(str(path), index=":")
        pool = [i for i, a in enumerate(frames) if len(a) == 6] if name == "methanol" \
            else list(range(len(frames)))
        out[name] = (path, frames, [pool[j] for j in evenly(len(pool), args.n_ood)])
    return out


def copy_with_labels(atoms, energy, forces):
    """A copy of ``atoms`` carrying exactly the given labels (SinglePointCalculator)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    a = atoms.copy()
    a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
    return a


# ----------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------
def errors(E_pred, F_pred, E_ref, F_ref, n_atoms, groups=None) -> dict:
    """MAE/RMSE in meV (per structure), meV/atom and meV/Å. With ``groups`` (one label per
    frame, e.g. the dimer pair type) also ``energy_mae_centred``: the MAE after removing
    each group's mean error, i.e. the error of the shape of each curve."""
    import numpy as np

    dE = (np.asarray(E_pred) - np.asarray(E_ref)) * 1e3
    out = {"energy_mae": float(np.mean(np.abs(dE))),
           "energy_rmse": float(np.sqrt(np.mean(dE ** 2))),
           "energy_mae_per_atom": float(np.mean(np.abs(dE) / n_atoms)),
           "n_frames": int(len(dE))}
    if groups is not None:
        groups = np.asarray(groups)
        c = dE.copy()
        out["energy_mae_by_group"] = {}
        for g in sorted(set(groups.tolist())):
            m = groups == g
            out["energy_mae_by_group"][g] = float(np.mean(np.abs(dE[m])))
            c[m] -= dE[m].mean()
        out["energy_mae_centred"] = float(np.mean(np.abs(c)))
    if F_ref is not None:
        dF = np.concatenate([(np.asarray(p) - r).ravel() for p, r in zip(F_pred, F_ref)]) * 1e3
        out["force_mae"] = float(np.mean(np.abs(dF)))
        out["force_rmse"] = float(np.sqrt(np.mean(dF ** 2)))
    return out


# ----------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------
def _f(x, fmt=".1f") -> str:
    return "–" if x is None else format(x, fmt)


def table(results: dict, cols: list[tuple[str, str, str]], title: str, fmt: str) -> str:
    """Markdown table: one row per model and size, a plain and a Δ column per (set, key, header);
    the better of each pair in bold."""
    sizes = sorted(int(n) for n in results["curves"])
    cols = [c for c in cols if results["xtb"].get(c[0], {}).get(c[1]) is not None]
    if not cols:
        return ""
    lines = [f"**{title}**", "",
             "| model | " + " | ".join(f"{h} plain | {h} Δ" for _, _, h in cols) + " |",
             "| --- | " + " | ".join("---: | ---:" for _ in cols) + " |"]
    row = ["GFN2-xTB alone (+ΔE0)"]
    for s, key, _ in cols:
        row += ["", _f(results["xtb"][s].get(key), fmt)]
    lines.append("| " + " | ".join(row) + " |")
    if any(results["xtb"][s].get(key + "_shifted") is not None for s, key, _ in cols):
        row = ["GFN2-xTB + constant"]
        for s, key, _ in cols:
            row += ["", _f(results["xtb"][s].get(key + "_shifted"), fmt)]
        lines.append("| " + " | ".join(row) + " |")
    for n in sizes:
        cur = results["curves"][str(n)]
        row = [f"N = {n}"]
        for s, key, _ in cols:
            p, d = cur["plain"]["errors"][s].get(key), cur["delta"]["errors"][s].get(key)
            best = d is not None and p is not None and d < p
            row += [_f(p, fmt), ("**" + _f(d, fmt) + "**") if best else _f(d, fmt)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(results: dict, sets: list[str], path: Path) -> None:
    """Two log-log panels: energy MAE per atom and force MAE against N; Δ-GAP solid, plain GAP
    dashed (mean over the repeats, band: min to max), GFN2-xTB alone dotted (energies: plus
    the training-set constant for the C2H6O sets test_MD and H_removal, else plus ΔE0); one
    colour per test set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    sizes = sorted(int(n) for n in results["curves"])
    cur = results["curves"]
    colors = {"test_MD": "#1f77b4", "methanol": "#2ca02c", "H_removal": "#ff7f0e",
              "dimers": "#d62728", "dimers, centred per pair": "#9467bd"}
    # (label, set, key, divide by): dimers centred per atom = per dimer / 2
    series = {"energy_mae_per_atom": [(s, s, "energy_mae_per_atom", 1.0) for s in sets],
              "force_mae": [(s, s, "force_mae", 1.0) for s in sets]}
    if "dimers" in sets:
        series["energy_mae_per_atom"].append(
            ("dimers, centred per pair", "dimers", "energy_mae_centred", 2.0))
    panels = [("energy_mae_per_atom", "energy MAE (meV/atom)", "energies"),
              ("force_mae", "force MAE (meV/Å)", "forces (sets with force labels)")]
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.8), layout="constrained")
    used = []
    for ax, (panel, ylabel, title) in zip(axes, panels):
        for label, s, key, div in series[panel]:
            if results["xtb"][s].get(key) is None:
                continue
            c = colors.get(label, "k")
            used.append(label)
            for kind, style in (("plain", dict(ls="--", marker="o", mfc="white")),
                                ("delta", dict(ls="-", marker="s"))):
                mean, lo, hi = ([cur[str(n)][kind][stat][s][key] / div for n in sizes]
                                for stat in ("errors", "errors_min", "errors_max"))
                ax.plot(sizes, mean, color=c, ms=5, **style)
                ax.fill_between(sizes, lo, hi, color=c, alpha=0.10, lw=0)
            # xTB alone: with the constant fitted on the training frames where there is one
            # (C2H6O sets), else + ΔE0
            xtb = results["xtb"][s].get(key + "_shifted", results["xtb"][s][key])
            ax.axhline(xtb / div, color=c, ls=":", lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training frames N (rMD17 ethanol, PBE)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=colors.get(lab, "k"), lw=2, label=lab)
               for lab in dict.fromkeys(used)]
    handles += [Line2D([], [], color="0.3", ls="-", marker="s", label="Δ-GAP (PBE − GFN2-xTB)"),
                Line2D([], [], color="0.3", ls="--", marker="o", mfc="white", label="plain GAP"),
                Line2D([], [], color="0.3", ls=":",
                       label="GFN2-xTB alone\n(+ constant for C2H6O sets,\n else + ΔE0)")]
    fig.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ----------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    h.set_thread_env(args.threads)
    command = h.command_line(SCRIPT, argv)

    data_dir = h.find_data_dir(args.data_dir, "ethanol_rmd17", CORE_FILES,
                               "the rMD17 ethanol folder")
    if data_dir is None:
        return 0
    try:
        import tblite.ase  # noqa: F401
    except ImportError as err:
        print(f"tblite is not importable ({err}); install it with pip install -e '.[xtb]'. "
              "Nothing to do.")
        return 0

    import numpy as np
    from ase.data import chemical_symbols

    from gapkit import GAP, SOAP

    XTB, CachedXTB, frame_key = make_xtb_class()
    t_start = time.perf_counter()
    timing, notes = {}, []
    load0 = os.getloadavg()[0]
    log(f"data: {data_dir}; host {platform.node()}, {os.cpu_count()} CPUs, "
        f"1-min load {load0:.2f}; threads {[os.environ.get(v) for v in THREAD_VARS]}")

    # ---------------------------------------------------------------- data + xTB labels
    t0 = time.perf_counter()
    raw = load_sets(data_dir, args, notes)
    timing["read data"] = time.perf_counter() - t0
    cache_root = args.cache.expanduser().resolve()
    if REPO in cache_root.parents or cache_root == REPO:
        print(f"warning: --cache {cache_root} is inside the repository", file=sys.stderr)
    xtb = XTB()
    table_ = {}
    sets, xtb_info = {}, {}
    t0 = time.perf_counter()
    orders = raw.pop("orders")
    for name, (path, frames, idx) in raw.items():
        cache = LabelCache(cache_root, path, len(frames), max(len(a) for a in frames))
        st = cache.label(frames, idx, xtb)
        ok = [i for i in idx if cache.status[i] == 1]
        failed = [i for i in idx if cache.status[i] == -1]
        xtb_info[name] = {"file": path.name, "cache": str(cache.path), "candidates": len(idx),
                          "converged": len(ok), "failed": len(failed),
                          "computed_now": st["computed"], "seconds_now": st["seconds"],
                          "from_cache": len(idx) - st["computed"]}
        if failed:
            desc = [f"{frames[i].get_chemical_formula()}@{frames[i].info['distance']:.2f}Å"
                    if "distance" in frames[i].info else str(i) for i in failed]
            xtb_info[name]["failed_frames"] = desc
            groups = {}
            for i in failed:
                a = frames[i]
                key = a.info.get("config_type", a.get_chemical_formula())
                groups.setdefault(key, []).append(float(a.info.get("distance", np.nan)))
            what = ", ".join(f"{k} {len(v)}" + (f" ({min(v):.2f}–{max(v):.2f} Å)"
                                                if np.isfinite(v).all() else "")
                             for k, v in groups.items())
            notes.append(f"{name}: GFN2-xTB SCF failed for {len(failed)}/{len(idx)} frames, "
                         f"dropped for every model (list in the JSON): {what}")
        log(f"xTB {name}: {len(ok)}/{len(idx)} converged ({st['computed']} computed in "
            f"{st['seconds']:.1f} s, {len(idx) - st['computed']} from cache {cache.path.name})")
        sel = []
        for i in ok:
            a = frames[i]
            n = len(a)
            E_x, F_x = float(cache.energy[i]), cache.forces[i, :n].copy()
            table_[frame_key(a)] = (E_x, F_x)
            has_f = "forces" in (a.calc.results if a.calc is not None else {})
            sel.append({"atoms": a, "index": i, "E": float(a.get_potential_energy()),
                        "F": np.array(a.get_forces()) if has_f else None, "E_xtb": E_x,
                        "F_xtb": F_x})
        sets[name] = sel
    timing["GFN2-xTB labels (new ones only)"] = time.perf_counter() - t0
    xtb_info["attempts_used_now"] = dict(xtb.attempts_used)

    train_all = sets.pop("train")
    by_index = {r["index"]: r for r in train_all}
    orders = [[by_index[i] for i in o if i in by_index] for o in orders]
    if min(len(o) for o in orders) < max(args.sizes):
        notes.append("some training frames did not converge in xTB: fewer than max(--sizes) left")
    test_names = [s for s in SET_ORDER if s in sets]

    # ---------------------------------------------------------------- models
    iso_path = str(data_dir / "isolated_atoms.xyz")
    e0 = iso_path if args.e0 == "isolated" else "lstsq"

    def make(baseline=None, seed=args.seed):
        return GAP(SOAP(r_cut=args.r_cut, n_max=args.n_max, l_max=args.l_max, sigma=args.sigma),
                   zeta=args.zeta, delta=args.delta, n_sparse=dict(args.n_sparse),
                   sparse_method=args.sparse_method, energy_noise=args.energy_noise,
                   force_noise=args.force_noise, e0=e0, optimize=args.optimize,
                   baseline=baseline, random_state=seed)

    # GFN2-xTB alone = the N = 0 limit of the Δ-GAP: xTB + sum_i [E_PBE(atom) - E_xTB(atom)]
    iso_pbe = {}
    from ase.io import read
    for a in read(iso_path, index=":"):
        if len(a) == 1:
            iso_pbe[int(a.numbers[0])] = float(a.get_potential_energy())
    species = sorted({int(z) for r in train_all for z in r["atoms"].numbers})
    from ase import Atoms
    iso_xtb = {}
    for z in species:
        a = Atoms(numbers=[z])
        a.calc = XTB()
        iso_xtb[z] = float(a.get_potential_energy())
    de0 = {z: iso_pbe[z] - iso_xtb[z] for z in species}
    mean_shift = float(np.mean([r["E"] - r["E_xtb"] - sum(de0[z] for z in r["atoms"].numbers)
                                for r in train_all]))

    refs = {}
    for s in test_names:
        rows = sets[s]
        refs[s] = {"E": np.array([r["E"] for r in rows]),
                   "F": None if any(r["F"] is None for r in rows) else [r["F"] for r in rows],
                   "n": np.array([len(r["atoms"]) for r in rows], dtype=float),
                   "frames": [r["atoms"] for r in rows],
                   "groups": [str(r["atoms"].info.get("config_type")) for r in rows]
                   if s == "dimers" else None}
    results = {"command": command, "data_dir": str(data_dir), **h.host_fields(),
               "settings": h.settings(args),
               "xtb": {}, "xtb_labels": xtb_info, "curves": {}, "notes": notes,
               "e0_pbe_isolated": {chemical_symbols[z]: iso_pbe[z] for z in species},
               "e0_xtb_isolated": {chemical_symbols[z]: iso_xtb[z] for z in species},
               "xtb_mean_shift_on_train_eV": mean_shift}
    for s in test_names:
        rows = sets[s]
        E = np.array([r["E_xtb"] + sum(de0[int(z)] for z in r["atoms"].numbers) for r in rows])
        F = None if refs[s]["F"] is None else [r["F_xtb"] for r in rows]
        results["xtb"][s] = errors(E, F, refs[s]["E"], refs[s]["F"], refs[s]["n"],
                                   refs[s]["groups"])
        if s in ("test_MD", "H_removal"):  # same composition as training: a constant shift
            d = np.abs(E + mean_shift - refs[s]["E"]) * 1e3
            results["xtb"][s]["energy_mae_shifted"] = float(np.mean(d))
            results["xtb"][s]["energy_mae_per_atom_shifted"] = float(np.mean(d / refs[s]["n"]))
    log("GFN2-xTB alone: " + "; ".join(
        f"{s} E {results['xtb'][s]['energy_mae']:.0f} meV" +
        (f", F {results['xtb'][s]['force_mae']:.0f} meV/Å"
         if "force_mae" in results["xtb"][s] else "")
        for s in test_names))

    def evaluate(model) -> tuple[dict, dict]:
        out, raw_pred = {}, {}
        for s in test_names:
            forces = refs[s]["F"] is not None
            p = model.predict(refs[s]["frames"], forces=forces)
            raw_pred[s] = (np.asarray(p.energy), p.forces if forces else None)
            out[s] = errors(p.energy, p.forces, refs[s]["E"], refs[s]["F"], refs[s]["n"],
                            refs[s]["groups"])
        return out, raw_pred

    def fit_and_evaluate(model, train) -> tuple[float, dict, dict, float]:
        """Fit, then predict every test set: (fit s, errors, raw predictions, predict s)."""
        t0 = time.perf_counter()
        model.fit(train)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        errs, pred = evaluate(model)
        return t_fit, errs, pred, time.perf_counter() - t0

    def summary(model) -> dict:
        return {"delta": float(model.delta_),
                "noise": {k: float(v) for k, v in model.noise_.labelled().items()},
                "n_sparse": {chemical_symbols[z]: int(np.sum(model.sparse_species_ == z))
                             for z in model.species_},
                "e0": {chemical_symbols[z]: float(v) for z, v in model.e0_.values.items()}}

    cached = CachedXTB(table_)
    check_n = max(args.sizes) if args.check_n is None else args.check_n
    final_models = {}
    per_repeat = {str(n): {"plain": [], "delta": []} for n in args.sizes}
    for rep_i, order in enumerate(orders):
        seed = args.seed + rep_i
        for n in args.sizes:
            train = [copy_with_labels(r["atoms"], r["E"], r["F"]) for r in order[:n]]
            for kind, baseline in (("plain", None), ("delta", cached)):
                model = make(baseline, seed)
                t_fit, errs, pred, t_pred = fit_and_evaluate(model, train)
                per_repeat[str(n)][kind].append({"seed": seed, "n_train": len(train),
                                                 "errors": errs, "fit_s": t_fit,
                                                 "predict_s": t_pred, **summary(model)})
                if n == check_n and rep_i == 0:
                    final_models[kind] = (model, pred, train)
                log(f"rep {rep_i} N={n:4d} {kind:5s}: fit {t_fit:6.1f} s, "
                    f"predict {t_pred:5.1f} s | "
                    + "; ".join(f"{s} E {errs[s]['energy_mae']:.1f} meV" +
                                (f" F {errs[s]['force_mae']:.1f}" if "force_mae" in errs[s] else "")
                                for s in test_names) + f" | load {os.getloadavg()[0]:.1f}")
    results["cached_baseline_calls"] = {"hits": cached.hits, "misses": cached.misses}

    def aggregate() -> None:
        """Mean, min and max over the repeats of every error; timings averaged."""
        for n, kinds in per_repeat.items():
            entry = {"n_train": kinds["plain"][0]["n_train"]}
            for kind, runs in kinds.items():
                agg = {"errors": {}, "errors_min": {}, "errors_max": {}}
                for s in test_names:
                    keys = [k for k, v in runs[0]["errors"][s].items() if isinstance(v, float)]
                    for stat, fn in (("errors", np.mean), ("errors_min", np.min),
                                     ("errors_max", np.max)):
                        agg[stat][s] = {k: float(fn([r["errors"][s][k] for r in runs]))
                                        for k in keys}
                agg["fit_s_mean"] = float(np.mean([r["fit_s"] for r in runs]))
                agg["predict_s_mean"] = float(np.mean([r["predict_s"] for r in runs]))
                agg["repeats"] = runs
                entry[kind] = agg
            results["curves"][n] = entry

    # ---------------------------------------------------------------- live tblite check
    if check_n and check_n in args.sizes:
        train = final_models["delta"][2]
        live = XTB()
        model = make(live, args.seed)
        t_fit, errs, pred, t_pred = fit_and_evaluate(model, train)
        ref_pred = final_models["delta"][1]
        dE = max(float(np.max(np.abs(pred[s][0] - ref_pred[s][0]))) for s in test_names)
        dF = max([float(np.max(np.abs(np.vstack(pred[s][1]) - np.vstack(ref_pred[s][1]))))
                  for s in test_names if pred[s][1] is not None] or [0.0])
        dalpha = float(np.max(np.abs(model.alpha_ - final_models["delta"][0].alpha_)))
        ok = dE < 1e-8 and dF < 1e-8
        results["live_check"] = {"n_train": check_n, "max_abs_energy_diff_eV": dE,
                                 "max_abs_force_diff_eV_per_A": dF, "max_abs_alpha_diff": dalpha,
                                 "passed_1e-8": ok, "fit_s": t_fit, "predict_s": t_pred,
                                 "tblite_calls": live.n_calls,
                                 "attempts_used": dict(live.attempts_used), "errors": errs}
        log(f"live tblite Δ-GAP at N={check_n}: fit {t_fit:.1f} s, predict {t_pred:.1f} s, "
            f"{live.n_calls} tblite calls; max |ΔE| vs cached baseline {dE:.2e} eV, "
            f"max |ΔF| {dF:.2e} eV/Å, max |Δα| {dalpha:.2e} -> {'OK' if ok else 'MISMATCH'}")
        # the first repeat's Δ-GAP at this size is the live-tblite model
        per_repeat[str(check_n)]["delta"][0].update(errors=errs,
                                                    baseline="live tblite (GAP(baseline=XTB()))")
        if not ok:
            notes.append("live tblite and cached-baseline Δ-GAP predictions differ by more "
                         "than 1e-8")
    aggregate()
    timing["total"] = time.perf_counter() - t_start
    results["timing_s"] = timing
    results["loadavg_1min_start_end"] = [load0, os.getloadavg()[0]]

    # ---------------------------------------------------------------- report
    print()
    print(f"Settings: SOAP r_cut {args.r_cut} Å, n_max {args.n_max}, l_max {args.l_max}, "
          f"σ_atom {args.sigma} Å, ζ {args.zeta:g}, δ {args.delta} eV"
          f"{' (then optimised)' if args.optimize else ''}, σ_E {args.energy_noise} eV/√atom, "
          f"σ_F {args.force_noise} eV/Å, n_sparse {args.n_sparse} ({args.sparse_method}, "
          "capped), "
          f"E0 {args.e0}; test sets: " + ", ".join(f"{s} {len(sets[s])}" for s in test_names)
          + f"; mean over {len(orders)} random training permutations (bold: the better of plain "
          "and Δ)")
    print()
    energy_cols = [(s, "energy_mae", s) for s in test_names]
    if "dimers" in test_names:
        energy_cols.append(("dimers", "energy_mae_centred", "dimers, centred per pair"))
    for cols, title, fmt in (
            (energy_cols, "Energy MAE, meV per structure", ".1f"),
            ([(s, "energy_mae_per_atom", s) for s in test_names], "Energy MAE, meV/atom", ".2f"),
            ([(s, "force_mae", s) for s in test_names], "Force MAE, meV/Å", ".1f")):
        t = table(results, cols, title, fmt)
        if t:
            print(t)
            print()
    print(f"GFN2-xTB alone (+ΔE0): xTB + sum over atoms of E_PBE(atom) - E_xTB(atom), the N = 0 "
          f"limit of the Δ-GAP. GFN2-xTB + constant: xTB + ΔE0 + {mean_shift:.3f} eV, the mean "
          f"residual over the {len(train_all)} training frames used (only for C2H6O sets).")
    n_fit = sum(r["fit_s"] for v in results["curves"].values() for k in ("plain", "delta")
                for r in v[k]["repeats"])
    print(f"\nfits {n_fit:.0f} s in all; total {timing['total']:.0f} s; 1-min load "
          f"{load0:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    for note in notes:
        print("note: " + note)
    h.save_results(args.out, results, say="results written to")
    if args.plot and str(args.plot).lower() != "none":
        plot(results, test_names, args.plot)
        print(f"figure written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
