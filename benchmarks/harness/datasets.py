"""Paths, data folders and the readers of the shared DFT sets (rMD17 ethanol, mlearn Si).

A data folder is ``--data-dir``, else ``$GAPKIT_SHARED_DATA/<name>`` or
``$GAPKIT_SHARED_DATA`` itself (the first that holds the files), else
``<repo>/../shared/data/<name>`` (:func:`resolve_data_dir`, :func:`find_data_dir`).
numpy and ase are imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
SHARED_DATA = REPO.parent / "shared" / "data"
ETHANOL_FILES = ("train.xyz", "test_MD.xyz", "isolated_atoms.xyz")
SI_FILES = ("train.xyz", "test.xyz")
#: mlearn's stress labels (kbar, VASP sign) and 1 eV/Å^3 in kbar.
STRESS_KEY = "mlearn_virial_stress"
KBAR_PER_EV_A3 = 1602.1766208


# ----------------------------------------------------------------------------------
# data folders
# ----------------------------------------------------------------------------------
def add_data_dir_argument(p, name: str = "ethanol_rmd17", files=ETHANOL_FILES,
                          flag: str = "--data-dir") -> None:
    """The data-folder option, resolved by :func:`resolve_data_dir`."""
    p.add_argument(flag, type=Path, default=None,
                   help=f"folder with {', '.join(files)} (default: $GAPKIT_SHARED_DATA[/{name}], "
                        f"else <repo>/../shared/data/{name})")


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


# ----------------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------------
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


def model_maes(model, frames) -> dict:
    """Test MAEs of ``model`` on labelled ``frames``: energy in meV/atom and meV per
    structure, force components in meV/Å."""
    import numpy as np
    E = np.array([a.get_potential_energy() for a in frames])
    n = np.array([len(a) for a in frames])
    F = np.concatenate([a.get_forces().ravel() for a in frames])
    p = model.predict(frames)
    return {"energy_mae_meV_atom": float(1e3 * np.mean(np.abs(p.energy - E) / n)),
            "energy_mae_meV": float(1e3 * np.mean(np.abs(p.energy - E))),
            "force_mae_meV_A": float(1e3 * np.mean(np.abs(p.forces_flat.ravel() - F)))}


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
