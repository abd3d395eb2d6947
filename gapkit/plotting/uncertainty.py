"""Uncertainty plots: calibration curves, reliability diagrams, ``|error|`` against σ, σ along an MD run.

Units: those of the values (eV/Å for forces by default), time in fs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from gapkit.model import noise_level
from gapkit.plotting.style import diagonal, flat, new_axes, nice_log
from gapkit.uncertainty.calibration import observed_coverage
from gapkit.uncertainty.metrics import binned_rmse_rmv, checked, ence, equal_count_bins
from gapkit.utils import check_random_state
from gapkit.uncertainty.flags import FlagThreshold

if TYPE_CHECKING:  # matplotlib itself is imported lazily
    from matplotlib.axes import Axes


def calibration(errors: np.ndarray | Sequence[np.ndarray], std: np.ndarray | Sequence[np.ndarray],
                ax: Axes | None = None, label: str | None = None, color: str | None = None) -> Axes:
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
    e, s = checked(flat(errors), flat(std), flatten=True)
    ax = new_axes(ax, (4.4, 4.2))
    levels = np.linspace(0.0, 1.0, 101)
    obs = observed_coverage(e / s, levels)
    area = float(np.mean(np.abs(obs[1:-1] - levels[1:-1])))
    first = not getattr(ax, "_gapkit_calibration", False)
    if first:
        diagonal(ax, 0, 1, label="ideal")
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


def error_vs_sigma(errors: np.ndarray | Sequence[np.ndarray], std: np.ndarray | Sequence[np.ndarray],
                   ax: Axes | None = None, unit: str = "eV/Å", label: str | None = None,
                   n_bins: int = 10, max_points: int = 20000) -> Axes:
    """``|error|`` against predicted σ on log–log axes.

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
    e, s = np.abs(flat(errors)), flat(std)
    if e.shape != s.shape:
        raise ValueError(f"errors and std differ in size: {e.shape} vs {s.shape}")
    ok = np.isfinite(e) & np.isfinite(s) & (s > 0)
    e, s = e[ok], s[ok]
    if e.size == 0:
        raise ValueError("error_vs_sigma: no finite values with σ > 0")
    ax = new_axes(ax, (4.6, 4.2))
    pos = e[e > 0]
    floor = float(pos.min()) if pos.size else 1e-12
    ep = np.maximum(e, floor)
    idx = np.arange(len(e))
    if len(idx) > max_points:
        idx = np.linspace(0, len(e) - 1, max_points).astype(int)
    ax.scatter(s[idx], ep[idx], s=5 if len(idx) > 2000 else 10, alpha=0.35, lw=0, color="#1f77b4",
               label=label or f"values (n = {len(e)})", rasterized=len(idx) > 3000)
    be, bs = binned_rmse_rmv(e, s, equal_count_bins(s, max(1, min(n_bins, len(e) // 5 or 1))))
    ax.plot(bs, be, "o-", color="#d62728", lw=1.6, ms=5, label="binned RMSE vs RMS σ")
    lo = min(s.min(), np.percentile(ep, 1)) / 1.5
    hi = max(s.max(), ep.max()) * 1.5
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1.0, label="|error| = σ")
    ax.plot([lo, hi], [1.96 * lo, 1.96 * hi], color="0.3", lw=1.0, ls="--", label="|error| = 1.96σ")
    return _log_log(ax, (s.min() / 1.3, s.max() * 1.3), (max(lo, np.percentile(ep, 0.5) / 1.5), hi),
                    f"predicted σ ({unit})", f"|error| ({unit})", "Error vs predicted uncertainty")


def reliability(errors: np.ndarray | Sequence[np.ndarray], std: np.ndarray | Sequence[np.ndarray],
                n_bins: int = 10, ax: Axes | None = None, unit: str = "eV/Å",
                label: str | None = None, color: str | None = None, n_draws: int = 200,
                random_state=0) -> Axes:
    """Reliability diagram: RMSE against RMS σ in equal-count σ bins (log–log).

    The values are sorted by σ and cut into ``n_bins`` equally populated bins
    (:func:`gapkit.uncertainty.metrics.equal_count_bins`); every bin gives a point
    ``(RMV, RMSE)`` with ``RMV = sqrt(mean σ²)``. A calibrated σ puts the points on the
    diagonal, up to the scatter of a finite bin: the grey band is the 5–95 % range of
    the bin RMSE when the errors are drawn from ``N(0, σ²)`` with the same σ and bins
    (``n_draws`` draws). Points above the band: σ too small there; below: too large.

    Parameters
    ----------
    errors, std : array or list of arrays
        Prediction minus reference and predicted total σ (flattened, same size, σ > 0).
    n_bins : int, default 10
    ax : matplotlib Axes, optional
    unit : str, default "eV/Å"
        Unit of the values, for the axis labels.
    label : str, optional
        Legend entry of the binned points (the ENCE is appended).
    color : str, optional
        Colour of the binned points.
    n_draws : int, default 200
        Draws of errors from a calibrated σ for the band.
    random_state : int, RandomState or None, default 0
        Seed of those draws.

    Returns
    -------
    matplotlib Axes
    """
    e, s = checked(flat(errors), flat(std), flatten=True)
    bins = equal_count_bins(s, n_bins)
    rmse, rmv = binned_rmse_rmv(e, s, bins)
    rng = check_random_state(random_state)
    sims = np.array([binned_rmse_rmv(rng.standard_normal(s.size) * s, s, bins)[0]
                     for _ in range(int(n_draws))])
    low, high = np.percentile(sims, [5.0, 95.0], axis=0)
    ax = new_axes(ax, (4.6, 4.2))
    ax.fill_between(rmv, low, high, color="0.6", alpha=0.3, lw=0,
                    label="calibrated σ: 5–95 % of bin RMSE")
    name = label or "binned RMSE"
    ax.plot(rmv, np.maximum(rmse, np.finfo(float).tiny), "o-", color=color or "#d62728", lw=1.6,
            ms=5, label=f"{name} (ENCE {ence(e, s, n_bins):.3f})")
    pos = rmse[rmse > 0]
    lo = min(rmv.min(), low.min(), pos.min() if pos.size else rmv.min()) / 1.3
    hi = max(rmv.max(), high.max(), rmse.max()) * 1.3
    diagonal(ax, lo, hi, label="RMSE = RMS σ")
    return _log_log(ax, (lo, hi), (lo, hi), f"RMS predicted σ per bin ({unit})",
                    f"RMSE per bin ({unit})", "Reliability")


def _log_log(ax: Axes, xlim: tuple[float, float], ylim: tuple[float, float], xlabel: str,
             ylabel: str, title: str) -> Axes:
    """Finish a log–log panel: limits, labels, grid, legend (upper left) and title."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    nice_log(ax.xaxis)
    nice_log(ax.yaxis)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=11)
    return ax


def sigma_trajectory(values: np.ndarray | Sequence[float] | Sequence[dict],
                     threshold: float | FlagThreshold | None = None, ax: Axes | None = None,
                     time: Sequence[float] | None = None,
                     label: str = "max epistemic force σ (eV/Å)", noise: dict | None = None,
                     log: bool = True, flagged: Sequence[bool] | None = None,
                     marks: dict | None = None) -> Axes:
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
                thr = float(threshold.relative) * noise_level(noise, "forces", float("nan"))
        else:
            thr = float(threshold)
    if flagged is None and thr is not None:
        flagged = v > thr
    ax = new_axes(ax, (6.4, 3.4))
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
        nice_log(ax.yaxis)
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("time (fs)" if time is not None else "MD step")
    ax.set_ylabel(label)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    ax.set_title("Uncertainty along the trajectory", fontsize=11)
    return ax
