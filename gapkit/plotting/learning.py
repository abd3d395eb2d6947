"""Learning curves per label set and their power-law extrapolation.

:func:`extrapolation` draws a fitted ``err(N) = a N**-b + c`` with its bootstrap band,
its floor and a target; :func:`label_curves` the test error of models trained on
energies, forces or both against configurations or against labels, and
:func:`label_curves_figure` the whole comparison: one row per error (forces, energies),
a column against training configurations (with the extrapolations) and a column
against the number of labels (1 per energy, 3N per forces).

Units: those of the metric (eV/Å for forces, eV/atom for per-atom energies); sizes in
structures, labels in numbers of scalar labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from gapkit.diagnostics.extrapolation import Extrapolation
from gapkit.diagnostics.metric_names import METRIC_INFO, error_metric
from gapkit.diagnostics.results import LearningCurve
from gapkit.plotting.style import COLORS, new_axes, nice_log, x_ticks_at

if TYPE_CHECKING:  # matplotlib itself is imported lazily
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours and markers of the label sets.
LABEL_STYLE = {"energy": ("#9467bd", "s"), "forces": ("#ff7f0e", "^"),
               "energy+forces": (COLORS["test"], "o")}


def extrapolation(ext: Extrapolation, ax: Axes | None = None, color: str = "0.2",
                  n_max: float | None = None, label: str | None = "fit",
                  show_floor: bool = True, show_target: bool = True) -> Axes:
    """The fitted law with its bootstrap band, the floor ``c`` and the target.

    Parameters
    ----------
    ext : Extrapolation
    ax : matplotlib Axes, optional
    color : str
    n_max : float, optional
        Draw the law up to this many structures (default: 3x the largest size, or up
        to 1.5 ``N*`` of a reachable target, whichever is larger, at most 1000x).
    label : str or None
        Legend entry of the law (the formula is appended).
    show_floor, show_target : bool
        The floor (dotted) and the target (dash-dotted, with ``N*`` marked).

    Returns
    -------
    matplotlib Axes
    """
    ax = new_axes(ax)
    lo_n = float(ext.sizes[0])
    hi_n = 3.0 * float(ext.sizes[-1])
    if ext.frames_needed is not None and np.isfinite(ext.frames_needed):
        hi_n = max(hi_n, 1.5 * ext.frames_needed)
    hi_n = min(hi_n, 1000.0 * float(ext.sizes[-1])) if n_max is None else float(n_max)
    n = np.geomspace(lo_n, hi_n, 120)
    text = f"{ext.law.a:.3g} N^-{ext.law.b:.2f} + {ext.law.c:.2g}"
    ax.plot(n, ext.law(n), color=color, lw=1.2, ls="--",
            label=None if label is None else f"{label}: {text}")
    if ext.samples is not None and len(ext.samples):
        lo, hi = ext.band(n)
        ax.fill_between(n, np.maximum(lo, 1e-12), hi, color=color, alpha=0.12, lw=0)
    if show_floor and ext.law.c > 0:
        ax.axhline(ext.law.c, color=color, ls=":", lw=1.0)
    if show_target and ext.target is not None:
        ax.axhline(ext.target, color="0.3", ls="-.", lw=0.9)
        if ext.frames_needed is not None and np.isfinite(ext.frames_needed) \
                and ext.frames_needed <= hi_n:
            ax.plot([ext.frames_needed], [ext.target], marker="*", ms=11, color=color, ls="none")
    return ax


def _x_values(curve: LearningCurve, x: str) -> np.ndarray:
    if x == "configurations":
        return np.asarray(curve.sizes, dtype=np.float64)
    if "n_labels" not in curve.metrics:
        raise ValueError("this curve has no n_labels: compute it with gapkit.diagnostics.label_curves")
    return curve.mean("n_labels")


def label_curves(curves: dict, metric: str = "forces_rmse", x: str = "configurations",
                 ax: Axes | None = None, extrapolations: dict | None = None) -> Axes:
    """Test error of each label set against training configurations or labels, log–log.

    Parameters
    ----------
    curves : dict of str -> LearningCurve
        As returned by :func:`gapkit.diagnostics.label_curves`.
    metric : str, default "forces_rmse"
        An error metric without the ``test_`` prefix.
    x : {"configurations", "labels"}
        The x axis: training structures, or the number of labels used.
    ax : matplotlib Axes, optional
    extrapolations : dict of str -> Extrapolation, optional
        Fits to draw with each label set (only with ``x="configurations"``).

    Returns
    -------
    matplotlib Axes

    Raises
    ------
    ValueError
        For an unknown ``x`` or metric, or ``x="labels"`` with a curve without ``n_labels``.
    """
    metric = error_metric(metric)
    if x not in ("configurations", "labels"):
        raise ValueError(f"x must be 'configurations' or 'labels', got {x!r}")
    ax = new_axes(ax)
    for name, curve in curves.items():
        color, marker = LABEL_STYLE.get(name, ("0.3", "o"))
        xv = _x_values(curve, x)
        mean, std = curve.mean(f"test_{metric}"), curve.std(f"test_{metric}")
        ok = np.isfinite(mean) & (mean > 0)
        ax.errorbar(xv[ok], mean[ok], yerr=np.nan_to_num(std[ok]), color=color, marker=marker,
                    ms=5, lw=1.5, capsize=2, label=name)
        ext = (extrapolations or {}).get(name)
        if ext is not None and x == "configurations":
            extrapolation(ext, ax=ax, color=color, label=None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    nice_log(ax.yaxis)
    if x == "configurations":
        sizes = sorted({int(n) for c in curves.values() for n in c.sizes})
        x_ticks_at(ax, sizes, [str(n) for n in sizes])
    else:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    name, unit = METRIC_INFO[metric]
    ax.set_xlabel("training configurations N" if x == "configurations"
                  else "labels used (1 per energy, 3N per forces)")
    ax.set_ylabel(f"test {name} ({unit})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax


def label_curves_figure(curves: dict, metrics: Sequence[str] = ("forces_rmse", "energy_rmse_per_atom"),
                        targets: dict | None = None, extrapolate: bool = True,
                        n_boot: int = 200, random_state=0) -> Figure:
    """The label-set comparison: rows per metric; against configurations and against labels.

    Parameters
    ----------
    curves : dict of str -> LearningCurve
        From :func:`gapkit.diagnostics.label_curves`.
    metrics : sequence of str
        One row each (default forces and per-atom energies).
    targets : dict of str -> float, optional
        Target errors by metric, drawn with the extrapolations.
    extrapolate : bool, default True
        Draw each curve's fitted law and band (curves with at least 3 sizes).
    n_boot, random_state
        Of the extrapolations.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    metrics = [error_metric(m) for m in metrics]
    fig = Figure(figsize=(10, 3.8 * len(metrics)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(metrics), 2, squeeze=False))
    for row, metric in zip(axes, metrics):
        exts = {}
        if extrapolate:
            for name, c in curves.items():
                m = c.mean(f"test_{metric}")
                if np.count_nonzero(np.isfinite(m) & (m > 0)) >= 3:
                    exts[name] = c.extrapolate(metric, target=(targets or {}).get(metric),
                                               n_boot=n_boot, random_state=random_state)
        label_curves(curves, metric, "configurations", ax=row[0], extrapolations=exts)
        label_curves(curves, metric, "labels", ax=row[1])
        row[0].set_title(f"{METRIC_INFO[metric][0]} against configurations"
                         + (" (dashed: a N^-b + c, band 95 %)" if exts else ""), fontsize=10)
        row[1].set_title(f"{METRIC_INFO[metric][0]} against labels", fontsize=10)
    return fig
