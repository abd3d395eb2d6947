"""Learning and capacity curves: train and test errors with ±1 std bands, the noise floor and,
optionally, the power-law extrapolation (:mod:`gapkit.plotting.learning`).

Units: those of the metric (eV/Å for forces, eV/atom or eV for energies); sizes in
structures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gapkit.diagnostics.extrapolation import Extrapolation
from gapkit.diagnostics.metric_names import METRIC_INFO, error_metric
from gapkit.diagnostics.results import CapacityCurve, LearningCurve
from gapkit.plotting.learning import extrapolation as draw_extrapolation
from gapkit.plotting.style import COLORS, new_axes, nice_log, x_ticks_at

if TYPE_CHECKING:  # matplotlib itself is imported lazily
    from matplotlib.axes import Axes

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


def _train_test_bands(ax, x, curve, metric: str) -> None:
    for part in ("train", "test"):
        _band(ax, x, curve.mean(f"{part}_{metric}"), curve.std(f"{part}_{metric}"), COLORS[part], part)


def learning_curve(curve: LearningCurve, metric: str = "forces_rmse", ax: Axes | None = None,
                   show_floor: bool = True, show_sigma: bool = True,
                   extrapolation: Extrapolation | None = None) -> Axes:
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
    extrapolation : Extrapolation, optional
        A fit of this metric (``curve.extrapolate(metric)`` or from
        ``curve.diagnose().extrapolations``): the law ``a N^-b + c`` (dashed), its
        bootstrap band, the floor and the target, drawn up to 3x the largest size (or
        to the frames needed for the target).

    Returns
    -------
    matplotlib Axes
    """
    metric = error_metric(metric)
    ax = new_axes(ax)
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
    if extrapolation is not None:
        if extrapolation.metric != metric:
            raise ValueError(f"the extrapolation is of {extrapolation.metric}, not {metric}")
        draw_extrapolation(extrapolation, ax=ax, color=COLORS["test"], label="fit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    nice_log(ax.yaxis)
    x_ticks_at(ax, x, [f"{int(v)}" for v in x])
    if len(x) > 1 and extrapolation is None:
        ax.set_xlim(x[0] / 1.15, x[-1] * 1.15)
    name, unit = METRIC_INFO[metric]
    ax.set_xlabel("training structures N")
    ax.set_ylabel(f"{name} ({unit})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Learning curve ({curve.repeats} repeat{'s' if curve.repeats != 1 else ''})",
                 fontsize=11)
    return ax


def capacity_curve(curve: CapacityCurve, metric: str = "forces_rmse", ax: Axes | None = None,
                   show_floor: bool = True) -> Axes:
    """Train and test error against a model parameter (a :class:`CapacityCurve`).

    Numeric scalar parameters get a log x axis; tuples are shown as categories.

    Returns
    -------
    matplotlib Axes
    """
    metric = error_metric(metric)
    ax = new_axes(ax)
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
    x_ticks_at(ax, x, curve.labels)
    ax.set_yscale("log")
    nice_log(ax.yaxis)
    name, unit = METRIC_INFO[metric]
    ax.set_xlabel(" / ".join(n.removeprefix("descriptor__") for n in curve.param_names))
    ax.set_ylabel(f"{name} ({unit})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Capacity curve", fontsize=11)
    return ax
