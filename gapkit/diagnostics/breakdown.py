"""Errors of one prediction broken down by input file and by ``config_type``, with stresses.

:func:`frame_errors` compares a prediction with the labels frame by frame (energy,
force and stress differences); :func:`group_metrics` turns any subset of frames into
the metric dict of :data:`GROUP_KEYS`; :func:`breakdown` does it for every value of a
per-frame tag (the file a frame came from, its ``config_type``).
:class:`gapkit.diagnostics.evaluation.Evaluation` (``by_file``, ``by_config_type``)
and ``gapkit evaluate`` / ``gapkit fit --test`` use them.

Units
-----
Energies in eV per structure (``energy_*``) and eV/atom (``energy_*_per_atom``);
forces in eV/Å over Cartesian force components; **stresses in GPa** over the six
Voigt components (xx, yy, zz, yz, xz, xy) of the frames that have a stress or virial
label (the reference stress is ``-virial / V`` of :func:`gapkit.data.get_labels`, the
predicted one the model's analytic stress); ZMS ``mean((error / σ)²)`` of the total
predicted σ (energies per structure, force components), ideal 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.units import GPa

from gapkit.data import LabelKeys, get_labels
from gapkit.uncertainty.metrics import zms

__all__ = ["GROUP_KEYS", "STRESS_UNIT", "FrameErrors", "frame_errors", "group_metrics",
           "breakdown"]

#: Unit of every stress error reported here.
STRESS_UNIT = "GPa"
#: The keys of :func:`group_metrics` (fixed: scripts rely on these names).
GROUP_KEYS = ("n_structures", "n_atoms", "energy_mae", "energy_rmse", "energy_mae_per_atom",
              "energy_rmse_per_atom", "forces_mae", "forces_rmse", "n_force_components",
              "stress_mae", "stress_rmse", "n_stress", "energy_zms", "forces_zms")


@dataclass
class FrameErrors:
    """Per-frame errors of a prediction (prediction minus reference).

    Attributes
    ----------
    energy : ndarray of shape (n_frames,)
        Energy errors, eV per structure.
    n_atoms : ndarray of shape (n_frames,)
    forces : list of (ndarray of shape (n_atoms_k, 3) or None)
        Force errors, eV/Å; None where a frame has no reference forces (or none were
        predicted).
    stress : list of (ndarray of shape (6,) or None)
        Voigt stress errors, GPa; None where a frame has no stress/virial label or no
        predicted stress.
    energy_std : ndarray of shape (n_frames,) or None
        Total predicted σ of the energies (eV).
    forces_std : list of (ndarray of shape (n_atoms_k, 3)) or None
        Total predicted σ of the force components (eV/Å).
    config_types : list of str
        ``config_type`` of every frame (``"default"`` when absent).
    """

    energy: np.ndarray
    n_atoms: np.ndarray
    forces: list
    stress: list
    energy_std: np.ndarray | None
    forces_std: list | None
    config_types: list


def frame_errors(pred, frames: Sequence[Atoms], keys: LabelKeys | None = None,
                 std=None) -> FrameErrors:
    """Per-frame errors of a :class:`gapkit.model.Prediction` against the labels.

    Parameters
    ----------
    pred : Prediction
        ``energy`` (n_frames,), eV; ``forces`` (list of (n_atoms_k, 3), eV/Å) or None;
        ``stress`` (n_frames, 6) in ASE's Voigt order, eV/Å³ (NaN rows where not
        predicted) or None.
    frames : sequence of ase.Atoms
        The labelled structures (energies required; forces and virials/stresses
        optional).
    keys : LabelKeys, optional
        Where the labels are (the model's ``label_keys``).
    std : PredictionStd, optional
        Predicted σ; its total energy and force σ enter the ZMS.

    Returns
    -------
    FrameErrors

    Raises
    ------
    ValueError
        If the prediction does not have one energy per frame, or a label is missing
        or malformed (see :func:`gapkit.data.get_labels`).
    """
    frames = list(frames)
    energy = np.asarray(pred.energy, dtype=np.float64).reshape(-1)
    if energy.shape[0] != len(frames):
        raise ValueError(f"the prediction has {energy.shape[0]} energies for {len(frames)} "
                         "frames")
    de, n_atoms, df, ds, ct = [], [], [], [], []
    for k, atoms in enumerate(frames):
        lab = get_labels(atoms, keys, index=k, require_forces=False)
        de.append(energy[k] - lab.energy)
        n_atoms.append(len(atoms))
        ct.append(lab.config_type)
        f_pred = None if pred.forces is None else pred.forces[k]
        df.append(None if lab.forces is None or f_pred is None
                  else np.asarray(f_pred, dtype=np.float64).reshape(-1, 3) - lab.forces)
        s_pred = None if pred.stress is None else np.asarray(pred.stress[k], dtype=np.float64)
        if lab.virial is None or s_pred is None or not np.all(np.isfinite(s_pred)):
            ds.append(None)
            continue
        s_ref = -lab.virial / atoms.get_volume()          # eV/Å³, ASE sign
        s_ref = np.array([s_ref[0, 0], s_ref[1, 1], s_ref[2, 2], s_ref[1, 2], s_ref[0, 2],
                          s_ref[0, 1]])
        ds.append((s_pred - s_ref) / GPa)
    e_std = f_std = None
    if std is not None:
        e_std = np.asarray(std.energy, dtype=np.float64)
        if std.forces is not None:
            f_std = [np.broadcast_to(np.reshape(s, (len(a), -1)), (len(a), 3))
                     for s, a in zip(std.forces, frames)]
    return FrameErrors(np.array(de, dtype=np.float64), np.array(n_atoms, dtype=np.float64),
                       df, ds, e_std, f_std, ct)


def _mae_rmse(x: np.ndarray) -> tuple[float, float]:
    return float(np.mean(np.abs(x))), float(np.sqrt(np.mean(x ** 2)))


def group_metrics(fe: FrameErrors, index: Sequence[int] | None = None) -> dict:
    """Error metrics of a subset of the frames of ``fe``.

    Parameters
    ----------
    fe : FrameErrors
    index : sequence of int, optional
        The frames (default: all).

    Returns
    -------
    dict
        Every key of :data:`GROUP_KEYS`: ``n_structures``, ``n_atoms``,
        ``energy_mae``/``energy_rmse`` (eV per structure),
        ``energy_mae_per_atom``/``energy_rmse_per_atom`` (eV/atom),
        ``forces_mae``/``forces_rmse`` (eV/Å per component; NaN without forces),
        ``n_force_components``, ``stress_mae``/``stress_rmse`` (GPa per Voigt
        component; None without stress labels), ``n_stress`` (frames with one),
        ``energy_zms``/``forces_zms`` (None without σ or without forces).
    """
    idx = np.arange(len(fe.energy)) if index is None else np.asarray(index, dtype=int)
    if idx.size == 0:
        raise ValueError("group_metrics needs at least one frame")
    de = fe.energy[idx]
    nat = fe.n_atoms[idx]
    out = dict.fromkeys(GROUP_KEYS)
    out.update(n_structures=int(idx.size), n_atoms=int(nat.sum()))
    out["energy_mae"], out["energy_rmse"] = _mae_rmse(de)
    out["energy_mae_per_atom"], out["energy_rmse_per_atom"] = _mae_rmse(de / nat)
    with_f = [k for k in idx if fe.forces[k] is not None]
    if with_f:
        df = np.concatenate([fe.forces[k].ravel() for k in with_f])
        out["forces_mae"], out["forces_rmse"] = _mae_rmse(df)
        out["n_force_components"] = int(df.size)
    else:
        out.update(forces_mae=float("nan"), forces_rmse=float("nan"), n_force_components=0)
    with_s = [k for k in idx if fe.stress[k] is not None]
    out["n_stress"] = len(with_s)
    if with_s:
        out["stress_mae"], out["stress_rmse"] = _mae_rmse(
            np.concatenate([fe.stress[k] for k in with_s]))
    if fe.energy_std is not None:
        out["energy_zms"] = zms(de, fe.energy_std[idx])
        if with_f and fe.forces_std is not None:
            out["forces_zms"] = zms(df, np.concatenate([fe.forces_std[k].ravel()
                                                        for k in with_f]))
    return out


def breakdown(fe: FrameErrors, tags: Sequence[str]) -> dict[str, dict]:
    """:func:`group_metrics` for every distinct value of a per-frame tag.

    Parameters
    ----------
    fe : FrameErrors
    tags : sequence of str, one per frame
        E.g. the file each frame came from, or ``fe.config_types``.

    Returns
    -------
    dict
        Tag to :func:`group_metrics`, in order of first appearance.

    Raises
    ------
    ValueError
        If there is not one tag per frame.
    """
    tags = [str(t) for t in tags]
    if len(tags) != len(fe.energy):
        raise ValueError(f"{len(tags)} tags for {len(fe.energy)} frames: give one per frame")
    order = list(dict.fromkeys(tags))
    return {t: group_metrics(fe, [k for k, s in enumerate(tags) if s == t]) for t in order}
