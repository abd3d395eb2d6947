"""Learning-curve extrapolation: a power law with a floor, its uncertainty, and a target.

The mean test error over repeats is fitted by

.. math:: \\mathrm{err}(N) = a N^{-b} + c, \\qquad a \\ge 0,\\ 0 \\le b \\le 4,\\ c \\ge 0,

by least squares of the relative residuals ``(fit - err) / err`` (the log-space fit for
small residuals: every size weighs the same on a log–log plot). For a fixed ``b`` the
best ``a`` and ``c`` are a weighted linear least-squares problem (with ``c = 0`` when the
unconstrained floor is negative), so ``b`` is found on a grid of :data:`N_GRID` values in
``[0, B_MAX]`` refined by a parabola, for all bootstrap replicates at once. ``c``
is the asymptotic floor: the error that more data of the same kind, with the same
model, does not remove (label noise plus model bias). With five sizes or fewer the
three parameters are barely determined (``b`` and ``c`` trade off), which is what the
interval is for.

The uncertainty is a bootstrap of the whole fit: each replicate resamples, at every
size, the repeats with replacement (the spread between random training subsets) and
multiplies each size's mean by ``exp(±r_i)``, the fit's own log residual at that size
with a random sign (a wild bootstrap over sizes: the scatter of the sizes about the
law, which the repeats do not show when they are few). Both parts together are
conservative. Intervals are percentiles over replicates (``level``, default 95 %).

For a target error ``T`` the frames needed are ``N* = (a / (T - c))**(1/b)``; the
verdict (:attr:`Extrapolation.verdict`) is

``"reached"``
    the measured mean error at the largest size is already at or below ``T``;
``"reachable"``
    ``T > c`` and fewer than ``(1 - level)/2`` of the replicates put the floor at or
    above ``T``: ``N*`` with its interval;
``"unreachable within the interval"``
    ``T > c``, but enough replicates have a floor at or above ``T`` that the upper
    end of the interval of ``N*`` is infinite;
``"below the floor"``
    ``T <= c``: this model will not reach it with more data of this kind.

Units: errors in the metric's unit (eV/Å for forces, eV/atom for per-atom energies),
``N`` in training structures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from gapkit.diagnostics.metric_names import METRIC_INFO, error_metric
from gapkit.utils import check_random_state, to_jsonable

#: Bounds of the exponent ``b``.
B_MAX = 4.0
#: Grid values of ``b`` in ``[0, B_MAX]``.
N_GRID = 801
#: Bootstrap replicates by default.
N_BOOT = 200
#: Beyond this many times the largest measured size an ``N*`` is called a rough estimate.
FAR_FACTOR = 10.0
VERDICTS = ("reached", "reachable", "unreachable within the interval", "below the floor")


@dataclass(frozen=True)
class PowerLaw:
    """``err(N) = a N**-b + c`` (``a`` and ``c`` in the unit of the error)."""

    a: float
    b: float
    c: float

    def __call__(self, n) -> np.ndarray:
        """The error at ``n`` training structures (array-like)."""
        return self.a * np.asarray(n, dtype=np.float64) ** (-self.b) + self.c

    def frames_for(self, target: float) -> float:
        """Training structures at which the law reaches ``target``; ``inf`` if ``target <= c``."""
        if target <= self.c or self.b <= 0 or self.a <= 0:
            return float("inf") if target <= self.c else 1.0
        with np.errstate(over="ignore"):
            return float(np.power(self.a / (target - self.c), 1.0 / self.b))

    def __str__(self) -> str:
        return f"{self.a:.4g} N^-{self.b:.3f} + {self.c:.4g}"


def _fit_ac(x: np.ndarray, Y: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Best ``a >= 0, c >= 0`` of each row of ``Y`` (shape (R, n)) for exponents ``b``.

    ``b`` has shape (R, G) (G exponents per row); returns ``a``, ``c`` and the cost
    ``sum ((a x**-b + c - y) / y)**2``, each of shape (R, G).
    """
    w = 1.0 / Y ** 2                                   # (R, n)
    phi = x[None, None, :] ** (-b[..., None])          # (R, G, n)
    wy = (w * Y)[:, None, :]
    s_pp = np.einsum("rgn,rn->rg", phi ** 2, w)
    s_p1 = np.einsum("rgn,rn->rg", phi, w)
    s_11 = w.sum(axis=1)[:, None]
    s_py = np.einsum("rgn,rgn->rg", phi, np.broadcast_to(wy, phi.shape))
    s_1y = wy.sum(axis=2)
    det = s_pp * s_11 - s_p1 ** 2
    with np.errstate(all="ignore"):
        a = (s_11 * s_py - s_p1 * s_1y) / det
        c = (s_pp * s_1y - s_p1 * s_py) / det
        neg_c = ~(c >= 0)                              # also a singular det
        a = np.where(neg_c, s_py / s_pp, a)
        c = np.where(neg_c, 0.0, c)
        neg_a = ~(a > 0)                               # a rising curve: a flat fit
        a = np.where(neg_a, 0.0, a)
        c = np.where(neg_a, np.maximum(s_1y / s_11, 0.0), c)
    fit = a[..., None] * phi + c[..., None]
    cost = np.einsum("rgn,rn->rg", (fit - Y[:, None, :]) ** 2, w)
    return a, c, cost


def _fit_many(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``(a, b, c)`` of the fit to every row of ``Y`` (shape (R, n)), shape (R, 3)."""
    grid = np.linspace(0.0, B_MAX, N_GRID)
    R = Y.shape[0]
    _, _, cost = _fit_ac(x, Y, np.broadcast_to(grid, (R, grid.size)))
    k = np.clip(np.argmin(cost, axis=1), 1, grid.size - 2)
    rows = np.arange(R)
    c0, c1, c2 = cost[rows, k - 1], cost[rows, k], cost[rows, k + 1]
    h = grid[1] - grid[0]
    with np.errstate(all="ignore"):
        step = 0.5 * h * (c0 - c2) / (c0 - 2 * c1 + c2)
    step = np.where(np.isfinite(step), np.clip(step, -h, h), 0.0)
    cand = np.stack([grid[k], np.clip(grid[k] + step, 0.0, B_MAX)], axis=1)  # (R, 2)
    a, c, cst = _fit_ac(x, Y, cand)
    best = np.argmin(cst, axis=1)
    return np.stack([a[rows, best], cand[rows, best], c[rows, best]], axis=1)


def fit_power_law(sizes, errors) -> PowerLaw:
    """Fit ``a N**-b + c`` to errors against training-set sizes.

    Parameters
    ----------
    sizes : array_like of shape (n_sizes,)
        Training structures, at least 3 distinct positive sizes.
    errors : array_like of shape (n_sizes,) or (n_sizes, repeats)
        Positive errors; a 2-d array is averaged over repeats (NaNs ignored).

    Returns
    -------
    PowerLaw

    Raises
    ------
    ValueError
        With fewer than 3 sizes of finite positive error, or mismatched shapes.
    """
    x, y, _ = _prepare(sizes, errors)
    return PowerLaw(*(float(v) for v in _fit_many(x, y[None, :])[0]))


def _prepare(sizes, errors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sizes, mean errors, per-repeat errors of shape (n, r)) of the usable sizes."""
    x = np.asarray(sizes, dtype=np.float64).ravel()
    e = np.asarray(errors, dtype=np.float64)
    e = e.reshape(len(e), -1) if e.ndim else e.reshape(1, 1)
    if e.shape[0] != x.size:
        raise ValueError(f"power-law fit: {x.size} sizes but errors of shape {e.shape}")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        e = np.where(np.isfinite(e) & (e > 0), e, np.nan)
        y = np.nanmean(e, axis=1)
    ok = np.isfinite(y) & (x > 0)
    if np.count_nonzero(ok) < 3 or np.unique(x[ok]).size < 3:
        raise ValueError(f"power-law fit: needs at least 3 sizes with a finite positive error, "
                         f"got {int(np.count_nonzero(ok))} (sizes {x.tolist()})")
    return x[ok], y[ok], e[ok]


@dataclass
class Extrapolation:
    """A fitted learning-curve law, its floor and, with a target, the frames needed.

    Attributes
    ----------
    metric : str
        The error fitted, e.g. ``"forces_rmse"``.
    law : PowerLaw
        The fit to the mean test errors.
    a_interval, b_interval, floor_interval : tuple of float
        Bootstrap intervals of ``a``, ``b`` and the floor ``c`` at ``level``.
    level : float
    sizes, errors : ndarray of shape (n_sizes,)
        The sizes and mean errors fitted.
    target : float or None
        The target error (unit of the metric).
    frames_needed : float or None
        ``N*`` of the fitted law (``inf`` when the target is below the floor).
    frames_interval : tuple of float or None
        Bootstrap interval of ``N*`` (``inf`` upper end: not reached by every replicate).
    fraction_unreachable : float or None
        Share of replicates whose floor is at or above the target.
    verdict : str or None
        One of :data:`VERDICTS` (None without a target).
    message : str
    samples : ndarray of shape (n_boot, 3)
        ``(a, b, c)`` of every replicate (not written by :meth:`to_dict`).
    """

    metric: str
    law: PowerLaw
    a_interval: tuple
    b_interval: tuple
    floor_interval: tuple
    level: float
    sizes: np.ndarray
    errors: np.ndarray
    target: float | None = None
    frames_needed: float | None = None
    frames_interval: tuple | None = None
    fraction_unreachable: float | None = None
    verdict: str | None = None
    message: str = ""
    samples: np.ndarray = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.message

    @property
    def floor(self) -> float:
        """The asymptotic error ``c`` (unit of the metric)."""
        return self.law.c

    def band(self, n, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap interval of ``err(n)``, each of the shape of ``n``."""
        q = (1 - (self.level if level is None else level)) / 2
        a, b, c = (self.samples[:, k, None] for k in range(3))
        n = np.asarray(n, dtype=np.float64)
        vals = a * n.ravel()[None, :] ** (-b) + c
        lo, hi = np.quantile(vals, [q, 1 - q], axis=0)
        return lo.reshape(n.shape), hi.reshape(n.shape)

    def to_dict(self) -> dict:
        """Plain JSON-able values (``inf`` and NaN become None); the replicates left out."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("samples", "law")}
        d["law"] = {"a": self.law.a, "b": self.law.b, "c": self.law.c, "formula": "a * N**-b + c"}
        d["n_boot"] = 0 if self.samples is None else int(len(self.samples))
        return to_jsonable(d)


def _g(v: float) -> str:
    """``v`` to 3 significant digits, with round-off below 1e-12 written as 0."""
    return "0" if abs(v) < 1e-12 else f"{v:.3g}"


def _quantiles(v: np.ndarray, q: float) -> tuple[float, float]:
    """The ``q`` and ``1 - q`` quantiles of ``v``, which may hold ``inf`` (no interpolation)."""
    v = np.sort(np.asarray(v, dtype=np.float64))
    lo = v[int(np.floor(q * (len(v) - 1)))]
    hi = v[int(np.ceil((1 - q) * (len(v) - 1)))]
    return float(lo), float(hi)


def _bootstrap(x, y, e, law: PowerLaw, n_boot: int, rs) -> np.ndarray:
    """``(a, b, c)`` of ``n_boot`` replicates (see the module docstring)."""
    resid = np.log(law(x)) - np.log(y)
    Y = np.empty((n_boot, len(y)))
    for i, row in enumerate(e):
        vals = row[np.isfinite(row)]
        Y[:, i] = vals[rs.randint(len(vals), size=(n_boot, len(vals)))].mean(axis=1)
    Y *= np.exp(resid[None, :] * rs.choice([-1.0, 1.0], size=(n_boot, len(y))))
    return _fit_many(x, Y)


def extrapolate_errors(sizes, errors, metric: str = "forces_rmse", target: float | None = None,
                       n_boot: int = N_BOOT, level: float = 0.95,
                       random_state=0) -> Extrapolation:
    """Fit ``a N**-b + c`` to test errors with a bootstrap interval, and read off a target.

    Parameters
    ----------
    sizes : array_like of shape (n_sizes,)
        Training structures (at least 3 sizes).
    errors : array_like of shape (n_sizes, repeats)
        Test errors per size and repeat, unit of ``metric``.
    metric : str, default "forces_rmse"
        The name of the error (for messages and units).
    target : float, optional
        Target error in the metric's unit (eV/Å for forces, eV/atom per-atom energies).
    n_boot : int, default 200
        Bootstrap replicates.
    level : float, default 0.95
        Level of the intervals.
    random_state : int, numpy RandomState or None, default 0
        The bootstrap's only source of randomness.

    Returns
    -------
    Extrapolation

    Raises
    ------
    ValueError
        For fewer than 3 usable sizes, a target that is not a positive number,
        ``n_boot < 10`` or ``level`` outside (0, 1).
    """
    metric = error_metric(metric, "extrapolate: metric")
    if target is not None and not (np.isfinite(float(target)) and float(target) > 0):
        raise ValueError(f"extrapolate: target must be a positive error, got {target!r}")
    if int(n_boot) < 10:
        raise ValueError(f"extrapolate: n_boot must be >= 10, got {n_boot!r}")
    if not 0 < float(level) < 1:
        raise ValueError(f"extrapolate: level must be in (0, 1), got {level!r}")
    x, y, e = _prepare(sizes, errors)
    law = PowerLaw(*(float(v) for v in _fit_many(x, y[None, :])[0]))
    samples = _bootstrap(x, y, e, law, int(n_boot), check_random_state(random_state))
    q = (1 - float(level)) / 2

    def interval(v):
        return _quantiles(v, q)

    ext = Extrapolation(metric=metric, law=law, a_interval=interval(samples[:, 0]),
                        b_interval=interval(samples[:, 1]), floor_interval=interval(samples[:, 2]),
                        level=float(level), sizes=x, errors=y, samples=samples)
    name, unit = METRIC_INFO[metric]
    lines = [f"{name}: err(N) = {law} {unit}; floor c = {_g(law.c)} {unit} "
             f"({100 * level:.0f} % interval {_g(ext.floor_interval[0])}–{_g(ext.floor_interval[1])})"
             f", exponent b = {law.b:.2f} ({ext.b_interval[0]:.2f}–{ext.b_interval[1]:.2f})"]
    if x.size < 4:
        lines.append("only 3 sizes: the law goes through every point, its interval comes from "
                     "the repeats alone")
    if target is not None:
        _read_target(ext, float(target), samples, q, lines)
    ext.message = "\n".join(lines)
    return ext


def _read_target(ext: Extrapolation, target: float, samples, q: float, lines: list) -> None:
    """Fill the target fields of ``ext`` and add its sentence to ``lines``."""
    law, unit = ext.law, METRIC_INFO[ext.metric][1]
    n_max, err_max = float(ext.sizes[-1]), float(ext.errors[-1])
    needed = np.array([PowerLaw(*s).frames_for(target) for s in samples])
    ext.target = target
    ext.frames_needed = law.frames_for(target)
    ext.fraction_unreachable = float(np.mean(~np.isfinite(needed)))
    ext.frames_interval = _quantiles(needed, q)
    fl_lo, fl_hi = ext.floor_interval
    if err_max <= target:
        ext.verdict = "reached"
        lines.append(f"target {target:.3g} {unit}: reached (the mean error at N={n_max:.0f} is "
                     f"{err_max:.3g}); the law puts it at N ≈ {ext.frames_needed:.0f}")
    elif target <= law.c:
        ext.verdict = "below the floor"
        lines.append(f"target {target:.3g} {unit}: below the floor ({law.c:.3g}, interval "
                     f"{_g(fl_lo)}–{_g(fl_hi)}): more data of this kind will not reach it with "
                     "this model; it needs more capacity or better labels")
    elif not np.isfinite(ext.frames_interval[1]):
        ext.verdict = "unreachable within the interval"
        lines.append(f"target {target:.3g} {unit}: N ≈ {ext.frames_needed:.0f} by the fitted law, "
                     f"but {100 * ext.fraction_unreachable:.0f} % of the bootstrap fits put the floor "
                     f"at or above it (floor interval {_g(fl_lo)}–{_g(fl_hi)}): it may be "
                     "unreachable with more data alone")
    else:
        ext.verdict = "reachable"
        lo, hi = ext.frames_interval
        lines.append(f"target {target:.3g} {unit}: N ≈ {ext.frames_needed:.0f} training structures "
                     f"({100 * ext.level:.0f} % interval {lo:.0f}–{hi:.0f})")
    if ext.verdict in ("reachable", "unreachable within the interval") \
            and ext.frames_needed > FAR_FACTOR * n_max:
        lines.append(f"N* is {ext.frames_needed / n_max:.0f}x the largest measured size "
                     f"({n_max:.0f}): a rough estimate")


def extrapolate(curve, metric: str = "forces_rmse", target: float | None = None,
                n_boot: int = N_BOOT, level: float = 0.95, random_state=0) -> Extrapolation:
    """:func:`extrapolate_errors` of the test errors of a learning curve.

    Parameters
    ----------
    curve : LearningCurve
        With at least 3 sizes.
    metric : str, default "forces_rmse"
        An error metric (the ``test_`` values are fitted).
    target, n_boot, level, random_state
        As in :func:`extrapolate_errors`.

    Returns
    -------
    Extrapolation
    """
    metric = error_metric(metric, "extrapolate: metric")
    return extrapolate_errors(curve.sizes, curve.metrics[f"test_{metric}"], metric, target=target,
                              n_boot=n_boot, level=level, random_state=random_state)
