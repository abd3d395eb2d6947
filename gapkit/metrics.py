"""Error metrics of predictions against reference labels."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from gapkit.data import LabelKeys, get_labels


def reference_arrays(frames: Sequence[Atoms], keys: LabelKeys | None = None) -> dict:
    """Reference energies (n_frames,), atom counts, and forces (list, None where absent)."""
    E, F, N = [], [], []
    for k, atoms in enumerate(frames):
        lab = get_labels(atoms, keys, index=k, require_forces=False)
        E.append(lab.energy)
        F.append(lab.forces)
        N.append(len(atoms))
    return {"energy": np.array(E), "forces": F, "n_atoms": np.array(N)}


def error_metrics(pred, frames: Sequence[Atoms], keys: LabelKeys | None = None) -> dict:
    """Energy and force errors of a :class:`gapkit.model.Prediction`.

    Returns
    -------
    dict
        ``n_structures``, ``n_atoms``, ``energy_mae``, ``energy_rmse`` (eV per
        structure), ``energy_mae_per_atom``, ``energy_rmse_per_atom`` (eV/atom),
        ``forces_mae``, ``forces_rmse`` (eV/Å per component; NaN when no frame has
        forces) and ``n_force_components``.
    """
    ref = reference_arrays(frames, keys)
    de = pred.energy - ref["energy"]
    de_pa = de / ref["n_atoms"]
    out = {
        "n_structures": int(len(frames)),
        "n_atoms": int(ref["n_atoms"].sum()),
        "energy_mae": float(np.mean(np.abs(de))),
        "energy_rmse": float(np.sqrt(np.mean(de ** 2))),
        "energy_mae_per_atom": float(np.mean(np.abs(de_pa))),
        "energy_rmse_per_atom": float(np.sqrt(np.mean(de_pa ** 2))),
    }
    df = [(p - r).ravel() for p, r in zip(pred.forces or [], ref["forces"]) if r is not None]
    if df:
        df = np.concatenate(df)
        out.update(forces_mae=float(np.mean(np.abs(df))), forces_rmse=float(np.sqrt(np.mean(df ** 2))),
                   n_force_components=int(df.size))
    else:
        out.update(forces_mae=float("nan"), forces_rmse=float("nan"), n_force_components=0)
    return out
