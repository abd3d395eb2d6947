"""Parity plots: predicted against reference energies or force components.

Units: energies eV (or eV/atom with ``per_atom``), forces eV/Å.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from gapkit.data import LabelKeys
from gapkit.metrics import reference_arrays
from gapkit.model import Prediction, PredictionStd
from gapkit.plotting.style import ELEMENT_COLORS, diagonal, flat, new_axes, stat_box

if TYPE_CHECKING:  # matplotlib itself is imported lazily
    from matplotlib.axes import Axes


def parity(pred: Prediction, frames: Sequence[Atoms], property: str = "energy",
           std: PredictionStd | np.ndarray | None = None, ax: Axes | None = None,
           per_atom: bool = False, center: bool = True, keys: LabelKeys | None = None,
           max_points: int = 20000) -> Axes:
    """Predicted against reference values of a test set.

    Parameters
    ----------
    pred : gapkit.Prediction
        ``model.predict(frames)``.
    frames : list of ase.Atoms
        The labelled structures ``pred`` was made for.
    property : {"energy", "forces"}
        Total energies (one point per structure) or force components (one point per
        component, coloured by element).
    std : gapkit.PredictionStd or array, optional
        Draw ±σ error bars (the total std of ``PredictionStd``, or an array matching
        the plotted points).
    ax : matplotlib Axes, optional
    per_atom : bool, default False
        Energies divided by the number of atoms (eV/atom).
    center : bool, default True
        Energies only: subtract, per chemical formula, the mean reference energy from
        reference and prediction, so that different molecules share one axis.
    keys : gapkit.LabelKeys, optional
        Where the reference labels are stored.
    max_points : int, default 20000
        Plot at most this many force components (an even subsample; the MAE/RMSE in
        the corner use all).

    Returns
    -------
    matplotlib Axes
    """
    if property not in ("energy", "forces"):
        raise ValueError(f"property must be 'energy' or 'forces', got {property!r}")
    ax = new_axes(ax, (4.6, 4.4))
    ref = reference_arrays(frames, keys)
    if property == "energy":
        x = np.asarray(ref["energy"], dtype=np.float64)
        y = np.asarray(pred.energy, dtype=np.float64)
        s = None
        if std is not None:
            s = np.asarray(std.energy if hasattr(std, "energy") else std, dtype=np.float64).ravel()
        n = ref["n_atoms"].astype(np.float64)
        if per_atom:
            x, y = x / n, y / n
            s = None if s is None else s / n
        groups = np.array([a.get_chemical_formula() for a in frames])
        if center:
            for g in np.unique(groups):
                sel = groups == g
                shift = x[sel].mean()
                x[sel] -= shift
                y[sel] -= shift
        unit = "eV/atom" if per_atom else "eV"
        what = "energy" + (" − formula mean" if center else "")
        labels = groups
    else:
        keep = [k for k, f in enumerate(ref["forces"]) if f is not None]
        if not keep:
            raise ValueError("parity: none of the frames has reference forces")
        x = np.concatenate([np.asarray(ref["forces"][k]).ravel() for k in keep])
        y = np.concatenate([np.asarray(pred.forces[k]).ravel() for k in keep])
        s = None
        if std is not None:
            sf = std.forces if hasattr(std, "forces") else std
            s = flat([sf[k] for k in keep]) if isinstance(sf, (list, tuple)) else flat(sf)
        labels = np.concatenate([np.repeat(frames[k].get_chemical_symbols(), 3) for k in keep])
        unit = "eV/Å"
        what = "force component"
    err = y - x
    mae, rmse = float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err ** 2)))

    idx = np.arange(len(x))
    if len(idx) > max_points:
        idx = np.linspace(0, len(x) - 1, max_points).astype(int)
    size = 14 if len(idx) <= 300 else (6 if len(idx) <= 3000 else 2)
    alpha = 0.8 if len(idx) <= 300 else 0.45
    uniq = list(dict.fromkeys(labels[idx].tolist()))
    # biggest group first, so that the smaller ones stay visible on top
    counts = {g: int(np.sum(labels[idx] == g)) for g in uniq}
    order = sorted(uniq, key=lambda g: -counts[g])
    cycle = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for g in order:
        c = uniq.index(g)
        sel = idx[labels[idx] == g]
        color = cycle[c % len(cycle)]
        if property == "forces":
            color = ELEMENT_COLORS.get(g, color)
        if s is not None:
            ax.errorbar(x[sel], y[sel], yerr=s[sel], fmt="none", ecolor=color, alpha=0.35,
                        lw=0.8, zorder=1)
        ax.scatter(x[sel], y[sel], s=size, color=color, alpha=alpha, lw=0, zorder=2,
                   label=f"{g} ({len(sel)})" if len(uniq) > 1 or property == "forces" else None,
                   rasterized=len(idx) > 3000)
    lo = float(min(x.min(), y.min()))
    hi = float(max(x.max(), y.max()))
    pad = 0.04 * (hi - lo if hi > lo else 1.0)
    lo, hi = lo - pad, hi + pad
    diagonal(ax, lo, hi)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"reference {what} ({unit})")
    ax.set_ylabel(f"predicted {what} ({unit})")
    scale, u = (1000.0, "meV" + unit[2:]) if rmse < 0.1 else (1.0, unit)
    stat_box(ax, f"MAE  {scale * mae:.3g} {u}\nRMSE {scale * rmse:.3g} {u}\n"
                  f"n = {len(x)}" + (" (±σ bars)" if s is not None else ""))
    if len(uniq) > 1 or property == "forces":
        ax.legend(loc="lower right", fontsize=8, markerscale=max(1.0, float(np.sqrt(25.0 / size))),
                  frameon=True)
    ax.set_title("Energy parity" if property == "energy" else "Force parity", fontsize=11)
    return ax
