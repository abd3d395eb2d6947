"""Shared look of the gapkit figures: colours, axes creation, log ticks, stat boxes.

Matplotlib is imported lazily (inside the functions), so importing
:mod:`gapkit.plotting` does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis

#: Colours of the train and test curves, the noise floor and the predicted σ.
COLORS = {"train": "#1f77b4", "test": "#d62728", "floor": "0.35", "sigma": "#2ca02c"}
#: Colours of force components by element in parity plots.
ELEMENT_COLORS = {"H": "#7f7f7f", "C": "#1f77b4", "N": "#9467bd", "O": "#d62728", "Si": "#ff7f0e"}


def new_axes(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.0)) -> Axes:
    """``ax``, or the axes of a new figure of ``figsize`` (inches) when it is None."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def flat(x: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Flatten an array or a list of arrays (per-structure values) to 1-D float."""
    if isinstance(x, (list, tuple)) and len(x) and np.ndim(x[0]) > 0:
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in x])
    return np.asarray(x, dtype=np.float64).ravel()


def nice_log(axis: Axis) -> None:
    """Log axis with ticks at 1, 2, 5 x 10^k written as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def stat_box(ax: Axes, text: str, loc: str = "upper left") -> None:
    """A boxed text in a corner of ``ax`` (``loc``: "upper left", "lower right", ...)."""
    x, ha = (0.03, "left") if "left" in loc else (0.97, "right")
    y, va = (0.97, "top") if "upper" in loc else (0.03, "bottom")
    ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=9,
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.7", alpha=0.9))


def diagonal(ax: Axes, lo: float, hi: float, **kw) -> None:
    """The dashed line y = x from ``lo`` to ``hi`` (``kw``: matplotlib line properties)."""
    kw = {"color": "0.4", "lw": 1.0, "ls": "--", "zorder": 0, **kw}
    ax.plot([lo, hi], [lo, hi], **kw)


def x_ticks_at(ax: Axes, x: Sequence[float], labels: Sequence[str]) -> None:
    """Major x ticks exactly at ``x`` with ``labels``, and no minor ticks."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
