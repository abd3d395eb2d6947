"""Matplotlib figures for fitted models, learning curves and uncertainties.

Every function draws into ``ax`` (a new figure when ``ax`` is None), returns the
axes and never calls ``plt.show()``. Units: energies eV (or eV/atom), forces eV/Å,
time fs. Matplotlib is imported lazily, so ``import gapkit`` does not need it.

Functions
---------
parity            predicted against reference energies or forces, optional σ bars
learning_curve    train/test error against training-set size (log–log) with the noise floor
capacity_curve    train/test error against a model parameter
calibration       observed against expected coverage of the predicted intervals
error_vs_sigma    |error| against predicted σ (log–log), with binned RMSE
sigma_trajectory  σ along an MD run, with the flag threshold
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

COLORS = {"train": "#1f77b4", "test": "#d62728", "floor": "0.35", "sigma": "#2ca02c"}
_ELEMENT_COLORS = {"H": "#7f7f7f", "C": "#1f77b4", "N": "#9467bd", "O": "#d62728", "Si": "#ff7f0e"}


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------
def _axes(ax, figsize=(5.0, 4.0)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _flat(x) -> np.ndarray:
    """Flatten an array or a list of arrays (per-structure values) to 1-D float."""
    if isinstance(x, (list, tuple)) and len(x) and np.ndim(x[0]) > 0:
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in x])
    return np.asarray(x, dtype=np.float64).ravel()


def _nice_log(axis) -> None:
    """Log axis with ticks at 1, 2, 5 x 10^k written as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _stat_box(ax, text: str, loc: str = "upper left") -> None:
    x, ha = (0.03, "left") if "left" in loc else (0.97, "right")
    y, va = (0.97, "top") if "upper" in loc else (0.03, "bottom")
    ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=9,
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.7", alpha=0.9))


def _diagonal(ax, lo, hi, **kw) -> None:
    kw = {"color": "0.4", "lw": 1.0, "ls": "--", "zorder": 0, **kw}
    ax.plot([lo, hi], [lo, hi], **kw)


# ----------------------------------------------------------------------------------
# parity
# ----------------------------------------------------------------------------------
def parity(pred, frames, property: str = "energy", std=None, ax=None, per_atom: bool = False,
           center: bool = True, keys=None, max_points: int = 20000):
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
    from gapkit.metrics import reference_arrays

    if property not in ("energy", "forces"):
        raise ValueError(f"property must be 'energy' or 'forces', got {property!r}")
    ax = _axes(ax, (4.6, 4.4))
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
            s = _flat([sf[k] for k in keep]) if isinstance(sf, (list, tuple)) else _flat(sf)
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
            color = _ELEMENT_COLORS.get(g, color)
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
    _diagonal(ax, lo, hi)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"reference {what} ({unit})")
    ax.set_ylabel(f"predicted {what} ({unit})")
    scale, u = (1000.0, "meV" + unit[2:]) if rmse < 0.1 else (1.0, unit)
    _stat_box(ax, f"MAE  {scale * mae:.3g} {u}\nRMSE {scale * rmse:.3g} {u}\n"
                  f"n = {len(x)}" + (" (±σ bars)" if s is not None else ""))
    if len(uniq) > 1 or property == "forces":
        ax.legend(loc="lower right", fontsize=8, markerscale=max(1.0, float(np.sqrt(25.0 / size))),
                  frameon=True)
    ax.set_title("Energy parity" if property == "energy" else "Force parity", fontsize=11)
    return ax


# ----------------------------------------------------------------------------------
# learning and capacity curves
# ----------------------------------------------------------------------------------
_SIGMA_FOR = {"forces_rmse": "test_forces_std", "forces_mae": "test_forces_std",
              "energy_rmse_per_atom": "test_energy_std_per_atom",
              "energy_mae_per_atom": "test_energy_std_per_atom"}


def _band(ax, x, mean, std, color, label, marker="o", ls="-"):
    ok = np.isfinite(mean)
    ax.plot(x[ok], mean[ok], marker=marker, ls=ls, color=color, label=label, lw=1.6, ms=5)
    sd = np.nan_to_num(std[ok])
    if np.any(sd > 0):
        lower = np.maximum(mean[ok] - sd, mean[ok] * 0.05)
        ax.fill_between(x[ok], lower, mean[ok] + sd, color=color, alpha=0.18, lw=0)


def _check_metric(metric: str) -> str:
    from gapkit.diagnostics.curves import ERROR_METRICS

    metric = metric.removeprefix("test_").removeprefix("train_")
    if metric not in ERROR_METRICS:
        raise ValueError(f"metric must be one of {ERROR_METRICS}, got {metric!r}")
    return metric


def _train_test_bands(ax, x, curve, metric: str) -> None:
    for part in ("train", "test"):
        _band(ax, x, curve.mean(f"{part}_{metric}"), curve.std(f"{part}_{metric}"), COLORS[part], part)


def learning_curve(curve, metric: str = "forces_rmse", ax=None, show_floor: bool = True,
                   show_sigma: bool = True):
    """Train and test error against training-set size, log–log, with ±1 std bands.

    Parameters
    ----------
    curve : gapkit.diagnostics.LearningCurve
    metric : str, default "forces_rmse"
        An error metric without the ``train_``/``test_`` prefix: ``forces_rmse``,
        ``forces_mae``, ``energy_rmse_per_atom``, ``energy_rmse``, ...
    ax : matplotlib Axes, optional
    show_floor : bool, default True
        The noise floor from the learned noise (dashed): the error a perfect model
        makes on the noisy labels.
    show_sigma : bool, default True
        The mean predicted total σ on the test set (dotted), when recorded.

    Returns
    -------
    matplotlib Axes
    """
    from gapkit.diagnostics.curves import METRIC_INFO

    metric = _check_metric(metric)
    ax = _axes(ax)
    x = np.asarray(curve.sizes, dtype=np.float64)
    _train_test_bands(ax, x, curve, metric)
    if show_sigma and metric in _SIGMA_FOR and _SIGMA_FOR[metric] in curve.metrics:
        sig = curve.mean(_SIGMA_FOR[metric])
        if np.isfinite(sig).any():
            ax.plot(x, sig, ls=":", marker=".", color=COLORS["sigma"], lw=1.4,
                    label="mean predicted σ (test)")
    if show_floor:
        floor = curve.noise_floor(metric)
        if np.isfinite(floor).any():
            learned = bool(curve.meta.get("params", {}).get("optimize", False))
            kind = "σ_F" if metric.startswith("forces") else "σ_E"
            ax.plot(x, floor, ls="--", color=COLORS["floor"], lw=1.2,
                    label=f"noise floor ({'learned' if learned else 'assumed'} {kind})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _nice_log(ax.yaxis)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{int(v)}" for v in x])
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(x) > 1:
        ax.set_xlim(x[0] / 1.15, x[-1] * 1.15)
    name, unit = METRIC_INFO[metric]
    ax.set_xlabel("training structures N")
    ax.set_ylabel(f"{name} ({unit})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Learning curve ({curve.repeats} repeat{'s' if curve.repeats != 1 else ''})",
                 fontsize=11)
    return ax


def capacity_curve(curve, metric: str = "forces_rmse", ax=None, show_floor: bool = True):
    """Train and test error against a model parameter (a :class:`CapacityCurve`).

    Numeric scalar parameters get a log x axis; tuples are shown as categories.

    Returns
    -------
    matplotlib Axes
    """
    from gapkit.diagnostics.curves import METRIC_INFO

    metric = _check_metric(metric)
    ax = _axes(ax)
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                  and v > 0 for v in curve.param_values)
    n = len(curve.param_values)
    x = np.asarray(curve.param_values, dtype=np.float64) if numeric else np.arange(n, dtype=np.float64)
    _train_test_bands(ax, x, curve, metric)
    if show_floor and metric.startswith("forces"):
        floor = curve.mean("noise_forces") * (np.sqrt(2 / np.pi) if "mae" in metric else 1.0)
        if np.isfinite(floor).any():
            learned = bool(curve.meta.get("params", {}).get("optimize", False))
            ax.plot(x, floor, ls="--", color=COLORS["floor"], lw=1.2,
                    label=f"noise floor ({'learned' if learned else 'assumed'} σ_F)")
    if numeric:
        ax.set_xscale("log")
        if len(x) > 1:
            ax.set_xlim(x.min() / 1.15, x.max() * 1.15)
    else:
        ax.set_xlim(-0.4, len(x) - 0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(curve.labels)
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    _nice_log(ax.yaxis)
    name, unit = METRIC_INFO[metric]
    ax.set_xlabel(" / ".join(n.removeprefix("descriptor__") for n in curve.param_names))
    ax.set_ylabel(f"{name} ({unit})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Capacity curve", fontsize=11)
    return ax


# ----------------------------------------------------------------------------------
# uncertainty
# ----------------------------------------------------------------------------------
def calibration(errors, std, ax=None, label: str | None = None, color: str | None = None):
    """Observed against expected coverage of the central Gaussian intervals ``±z σ``.

    A calibrated model lies on the diagonal; below it the intervals are too narrow
    (over-confident), above it too wide.

    Parameters
    ----------
    errors : array or list of arrays
        Prediction minus reference (any shape; flattened).
    std : array or list of arrays
        Predicted total σ, same shape as ``errors``.
    ax : matplotlib Axes, optional
    label : str, optional
        Legend entry (call again on the same axes to add another set).

    Returns
    -------
    matplotlib Axes
    """
    from gapkit.uncertainty.calibration import observed_coverage

    e, s = _flat(errors), _flat(std)
    if e.shape != s.shape:
        raise ValueError(f"errors and std differ in size: {e.shape} vs {s.shape}")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("std must be finite and positive")
    ax = _axes(ax, (4.4, 4.2))
    levels = np.linspace(0.0, 1.0, 101)
    obs = observed_coverage(e / s, levels)
    area = float(np.mean(np.abs(obs[1:-1] - levels[1:-1])))
    first = not getattr(ax, "_gapkit_calibration", False)
    if first:
        _diagonal(ax, 0, 1, label="ideal")
        ax.text(0.97, 0.04, "over-confident", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color="0.45")
        ax.text(0.03, 0.96, "under-confident", transform=ax.transAxes, ha="left", va="top",
                fontsize=8, color="0.45")
        ax._gapkit_calibration = True
    name = f"{label}: " if label else ""
    line, = ax.plot(levels, obs, lw=1.8, color=color, label=f"{name}miscal. area {area:.3f}")
    ax.fill_between(levels, levels, obs, color=line.get_color(), alpha=0.12, lw=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("expected coverage of ±zσ interval (fraction)")
    ax.set_ylabel("observed coverage (fraction)")
    # the legend goes to the side of the diagonal the curves leave free
    ax._gapkit_balance = getattr(ax, "_gapkit_balance", 0.0) + float(np.mean(obs - levels))
    if ax._gapkit_balance <= 0:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.92))
    else:
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 0.08))
    ax.set_title("Calibration", fontsize=11)
    return ax


def error_vs_sigma(errors, std, ax=None, unit: str = "eV/Å", label: str | None = None,
                   n_bins: int = 10, max_points: int = 20000):
    """|error| against predicted σ on log–log axes.

    Points are individual values; the line with markers is the RMSE of the errors
    in ``n_bins`` equally populated σ bins, which a calibrated model puts on the
    ``|error| = σ`` reference line. The dashed line is ``|error| = 1.96 σ`` (95 %).

    Parameters
    ----------
    errors, std : array or list of arrays
        Prediction minus reference and predicted σ (flattened).
    ax : matplotlib Axes, optional
    unit : str, default "eV/Å"
        Unit of the values, for the axis labels.
    label : str, optional
        Legend entry of the points.

    Returns
    -------
    matplotlib Axes
    """
    e, s = np.abs(_flat(errors)), _flat(std)
    if e.shape != s.shape:
        raise ValueError(f"errors and std differ in size: {e.shape} vs {s.shape}")
    ok = np.isfinite(e) & np.isfinite(s) & (s > 0)
    e, s = e[ok], s[ok]
    if e.size == 0:
        raise ValueError("error_vs_sigma: no finite values with σ > 0")
    ax = _axes(ax, (4.6, 4.2))
    pos = e[e > 0]
    floor = float(pos.min()) if pos.size else 1e-12
    ep = np.maximum(e, floor)
    idx = np.arange(len(e))
    if len(idx) > max_points:
        idx = np.linspace(0, len(e) - 1, max_points).astype(int)
    ax.scatter(s[idx], ep[idx], s=5 if len(idx) > 2000 else 10, alpha=0.35, lw=0, color="#1f77b4",
               label=label or f"values (n = {len(e)})", rasterized=len(idx) > 3000)
    order = np.argsort(s)
    bins = [b for b in np.array_split(order, max(1, min(n_bins, len(e) // 5 or 1))) if len(b)]
    bs = np.array([np.sqrt(np.mean(s[b] ** 2)) for b in bins])
    be = np.array([np.sqrt(np.mean(e[b] ** 2)) for b in bins])
    ax.plot(bs, be, "o-", color="#d62728", lw=1.6, ms=5, label="binned RMSE vs RMS σ")
    lo = min(s.min(), np.percentile(ep, 1)) / 1.5
    hi = max(s.max(), ep.max()) * 1.5
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1.0, label="|error| = σ")
    ax.plot([lo, hi], [1.96 * lo, 1.96 * hi], color="0.3", lw=1.0, ls="--", label="|error| = 1.96σ")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _nice_log(ax.xaxis)
    _nice_log(ax.yaxis)
    ax.set_xlim(s.min() / 1.3, s.max() * 1.3)
    ax.set_ylim(max(lo, np.percentile(ep, 0.5) / 1.5), hi)
    ax.set_xlabel(f"predicted σ ({unit})")
    ax.set_ylabel(f"|error| ({unit})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Error vs predicted uncertainty", fontsize=11)
    return ax


def sigma_trajectory(values, threshold=None, ax=None, time: Sequence[float] | None = None,
                     label: str = "max epistemic force σ (eV/Å)", noise: dict | None = None,
                     log: bool = True, flagged: Sequence[bool] | None = None,
                     marks: dict | None = None):
    """Predicted σ along an MD trajectory, with the flag threshold.

    Parameters
    ----------
    values : array of shape (n_steps,), or a ``GAPCalculator.flag_log``
        One σ per step. A flag log (list of dicts) gives its
        ``max_forces_std_epistemic`` and ``flagged`` entries.
    threshold : float or gapkit.FlagThreshold, optional
        Drawn as a dashed horizontal line. A ``FlagThreshold`` uses its ``forces``
        value, or ``relative * noise["forces"]`` when only ``relative`` is set.
    ax : matplotlib Axes, optional
    time : array of shape (n_steps,), optional
        Time of every step in fs (default: the step index).
    label : str
        Y-axis label (with its unit).
    noise : dict, optional
        ``model.noise_``, to resolve a relative threshold; also drawn as a dotted line
        (the aleatoric σ_F) when given.
    log : bool, default True
        Logarithmic y axis.
    flagged : sequence of bool, optional
        Which steps were flagged (default: from the flag log, else ``values > threshold``).
    marks : dict of str -> float, optional
        Vertical annotated lines, e.g. ``{"heating starts": 100}`` (in x units).

    Returns
    -------
    matplotlib Axes
    """
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], dict):
        log_entries = values
        values = np.array([d["max_forces_std_epistemic"] for d in log_entries], dtype=np.float64)
        if flagged is None and all("flagged" in d for d in log_entries):
            flagged = np.array([bool(d["flagged"]) for d in log_entries])
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("sigma_trajectory: no values")
    x = np.arange(len(v), dtype=np.float64) if time is None else np.asarray(time, dtype=np.float64)
    if x.shape != v.shape:
        raise ValueError(f"time has {x.size} entries but values has {v.size}")
    thr = None
    if threshold is not None:
        if hasattr(threshold, "forces") or hasattr(threshold, "relative"):
            if getattr(threshold, "forces", None) is not None:
                thr = float(threshold.forces)
            elif getattr(threshold, "relative", None) is not None and noise:
                from gapkit.uncertainty.calibration import noise_level

                thr = float(threshold.relative) * noise_level(noise, "forces", float("nan"))
        else:
            thr = float(threshold)
    if flagged is None and thr is not None:
        flagged = v > thr
    ax = _axes(ax, (6.4, 3.4))
    ax.plot(x, v, color="#1f77b4", lw=1.4, label="σ")
    if flagged is not None:
        fl = np.asarray(flagged, dtype=bool)
        if fl.any():
            ax.scatter(x[fl], v[fl], s=12, color="#d62728", zorder=3,
                       label=f"flagged ({int(fl.sum())} of {len(fl)})")
            k = int(np.argmax(fl))
            ax.axvline(x[k], color="#d62728", lw=0.8, ls=":")
            ax.annotate(f"first flag\n{'t' if time is not None else 'step'} = {x[k]:g}",
                        xy=(x[k], 1), xycoords=("data", "axes fraction"), xytext=(4, -4),
                        textcoords="offset points", ha="left", va="top", fontsize=8,
                        color="#d62728")
    if thr is not None:
        ax.axhline(thr, color="#d62728", lw=1.2, ls="--", label=f"flag threshold {thr:.3g}")
    if noise:
        from gapkit.uncertainty.calibration import noise_level

        sf = noise_level(noise, "forces", float("nan"))
        if np.isfinite(sf):
            ax.axhline(sf, color="0.4", lw=1.0, ls=":", label=f"aleatoric σ_F {sf:.3g}")
    for text, pos in (marks or {}).items():
        ax.axvline(pos, color="0.3", lw=0.8, ls="-.")
        ax.annotate(text, xy=(pos, 0.02), xycoords=("data", "axes fraction"), xytext=(-4, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.3",
                    rotation=90)
    if log and np.all(v > 0):
        ax.set_yscale("log")
        _nice_log(ax.yaxis)
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("time (fs)" if time is not None else "MD step")
    ax.set_ylabel(label)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    ax.set_title("Uncertainty along the trajectory", fontsize=11)
    return ax
