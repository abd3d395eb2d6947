"""A bias–variance–noise diagnosis of a learning curve.

:func:`diagnose` reads a :class:`~gapkit.diagnostics.curves.LearningCurve` and says
what limits the model:

``"noise"``
    the test error sits at the noise floor of the reference data (the learned or
    assumed label noise, ``model.noise_``): more data or capacity will not help.
``"bias"``
    the test error has stopped falling, the training error is close to it and both
    are well above the noise floor: the model cannot represent the data, it needs
    more capacity (larger ``n_max``/``l_max``, a longer cutoff, more sparse points).
``"variance"``
    the test error is still falling clearly with the training-set size and sits well
    above the training error: the model needs more data (or more regularisation).
``"unclear"``
    the signs disagree; the message says which way they lean.

Every diagnosis also extrapolates the curve (:mod:`gapkit.diagnostics.extrapolation`):
the law ``err(N) = a N**-b + c`` fitted to the test errors, its floor ``c`` with a
bootstrap interval and, for target errors, the training structures needed or the
verdict that the target is below the floor.

Units: errors and noise floors in the unit of the metric read (eV/Å for forces,
eV/atom for per-atom energies); slopes and ratios are dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gapkit.diagnostics.extrapolation import N_BOOT, Extrapolation, extrapolate_errors
from gapkit.diagnostics.metric_names import METRIC_INFO, error_metric
from gapkit.utils import to_jsonable

# thresholds of the rules (documented in diagnose())
NOISE_RATIO = 1.5      # test error <= 1.5 x noise floor            -> "noise"
BIAS_FLOOR_RATIO = 2.0  # test error >= 2 x noise floor: "well above the floor"
SLOPE_FALLING = -0.2   # log-log slope <= -0.2: "still falling clearly"
SLOPE_FLAT = -0.1      # log-log slope  > -0.1: "plateau"
GAP_LARGE = 1.5        # test / train >= 1.5: "large gap"; below: "train close to test"
N_LAST = 3             # the slope uses the last 3 sizes


class CurveLike(Protocol):
    """What :func:`diagnose` reads of a learning curve (a ``LearningCurve`` is one)."""

    sizes: np.ndarray
    meta: dict
    metrics: dict

    def mean(self, metric: str) -> np.ndarray:
        """Mean over repeats of ``metric``, shape (n_sizes,)."""

    def noise_floor(self, metric: str = "forces_rmse") -> np.ndarray:
        """The error of a perfect model on the test labels, shape (n_sizes,)."""


@dataclass
class Diagnosis:
    """What limits a model, read off a :class:`LearningCurve`.

    Attributes
    ----------
    kind : {"bias", "variance", "noise", "unclear"}
    metric : str
        The error that was read (``forces_rmse``, or ``energy_rmse_per_atom`` without forces).
    slope : float
        Log–log slope of the mean test error against the training-set size over the
        last sizes (NaN with one size).
    gap_ratio : float
        Test error / train error at the largest size.
    floor_ratio : float
        Test error / noise floor at the largest size.
    test_error, train_error, noise_floor : float
        The values at the largest size, in the metric's unit.
    sizes_used : list of int
        The sizes the slope was fitted over.
    reasons : list of str
    message : str
        A human summary with the reasons and what to do.
    leaning : str or None
        For ``kind="unclear"``: the kind the signs lean to (``"variance"``: more data
        or regularisation would help most; ``"bias"``: more capacity), else ``None``.
        Equal to ``kind`` otherwise.
    extrapolations : dict of str -> Extrapolation
        The power-law extrapolation of the test error of ``metric`` and of every metric
        given a target, keyed by metric (empty with fewer than 3 sizes).
    """

    kind: str
    metric: str
    slope: float
    gap_ratio: float
    floor_ratio: float
    test_error: float
    train_error: float
    noise_floor: float
    sizes_used: list
    reasons: list
    message: str
    leaning: str | None = None
    extrapolations: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    @property
    def verdict(self) -> str:
        """A short verdict: ``"bias-limited"``, or ``"unclear, leaning to variance"``."""
        if self.kind != "unclear":
            return f"{self.kind}-limited"
        return "unclear" + (f", leaning to {self.leaning}" if self.leaning else "")

    def to_dict(self) -> dict:
        """The attributes as plain JSON-able values (NaN and inf -> None)."""
        d = {k: v for k, v in self.__dict__.items() if k != "extrapolations"}
        d["extrapolations"] = {k: e.to_dict() for k, e in self.extrapolations.items()}
        return to_jsonable(d)


def _extrapolations(curve: CurveLike, metric: str, targets: dict, n_boot: int,
                    random_state) -> dict[str, Extrapolation]:
    """Extrapolations of ``metric`` and of every metric of ``targets`` (none under 3 sizes)."""
    usable = np.isfinite(curve.mean(f"test_{metric}")) & (curve.mean(f"test_{metric}") > 0)
    if np.count_nonzero(usable) < 3:
        return {}
    out = {}
    for m in dict.fromkeys([metric, *targets]):
        if not (np.isfinite(curve.mean(f"test_{m}")) & (curve.mean(f"test_{m}") > 0)).sum() >= 3:
            continue
        out[m] = extrapolate_errors(curve.sizes, curve.metrics[f"test_{m}"], m, target=targets.get(m),
                                    n_boot=n_boot, random_state=random_state)
    return out


def diagnose(curve: CurveLike, metric: str | None = None, n_last: int = N_LAST,
             targets: dict | None = None, n_boot: int = N_BOOT,
             random_state=0) -> Diagnosis:
    """Say whether a model is bias-, variance- or noise-limited.

    The test error ``T``, train error ``t`` and noise floor ``f`` (see
    :meth:`LearningCurve.noise_floor`) are the means over repeats at the largest
    size; ``slope`` is the least-squares slope of ``log T`` against ``log N`` over the
    last ``n_last`` sizes. With ``floor_ratio = T/f`` and ``gap_ratio = T/t``, the
    rules are tried in order:

    1. **noise**: ``floor_ratio <= 1.5`` (:data:`NOISE_RATIO`): the test error is
       within 50 % of what a perfect model would make on the noisy labels.
    2. **variance**: ``slope <= -0.2`` (:data:`SLOPE_FALLING`) and
       ``gap_ratio >= 1.5`` (:data:`GAP_LARGE`): still improving with data and
       fitting the training set much better than the test set.
    3. **bias**: ``slope > -0.1`` (:data:`SLOPE_FLAT`), ``gap_ratio < 1.5`` and
       ``floor_ratio >= 2`` (:data:`BIAS_FLOOR_RATIO`): plateaued, train and test
       errors alike, and well above the floor.
    4. otherwise **unclear**, with the leaning in the message.

    A learning-curve slope of about -0.5 is what an unbiased model gains from more
    data in the asymptotic regime; -0.1 means a 10x larger training set cuts the
    error by only ~20 %.

    Caveat: the floor is ``model.noise_``, which is *learned* only with
    ``optimize=True``; otherwise it is the assumed ``energy_noise``/``force_noise``.
    A learned noise also absorbs model error that the GP cannot represent, so "noise"
    on noiseless (DFT) labels can still hide a capacity limit: a
    :func:`capacity_curve` tells them apart.

    Parameters
    ----------
    curve : LearningCurve
    metric : str, optional
        ``"forces_rmse"`` (default when the test set has forces) or another error
        metric such as ``"energy_rmse_per_atom"`` (the fallback).
    n_last : int, default 3
    targets : dict of str -> float, optional
        Target test errors by metric, e.g. ``{"forces_rmse": 0.012,
        "energy_rmse_per_atom": 0.001}`` (eV/Å, eV/atom): each is extrapolated
        (:func:`~gapkit.diagnostics.extrapolation.extrapolate_errors`) and the training
        structures needed, or "below the floor", are in ``extrapolations`` and the message.
    n_boot : int, default 200
        Bootstrap replicates of the extrapolation.
    random_state : int, numpy RandomState or None, default 0
        Seed of the bootstrap (the diagnosis is deterministic by default).

    Returns
    -------
    Diagnosis

    Raises
    ------
    ValueError
        For an unknown metric (also in ``targets``), a target that is not a positive
        number, or a curve without a finite test error.
    """
    if metric is None:
        has_forces = np.isfinite(curve.mean("test_forces_rmse")).any()
        metric = "forces_rmse" if has_forces else "energy_rmse_per_atom"
    metric = error_metric(metric, "diagnose: metric")
    targets = {error_metric(k, "diagnose: targets key"): v for k, v in (targets or {}).items()}
    for k, v in targets.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not (np.isfinite(v) and v > 0):
            raise ValueError(f"diagnose: the target of {k} must be a positive error, got {v!r}")
    test = curve.mean(f"test_{metric}")
    train = curve.mean(f"train_{metric}")
    floor = curve.noise_floor(metric)
    sizes = np.asarray(curve.sizes, dtype=np.float64)
    ok = np.isfinite(test) & (test > 0)
    if not ok.any():
        raise ValueError(f"diagnose: no finite test {metric} in the curve")
    sizes_ok, test_ok = sizes[ok], test[ok]
    k = max(2, int(n_last))
    x, y = np.log(sizes_ok[-k:]), np.log(test_ok[-k:])
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")
    last = np.nonzero(ok)[0][-1]
    T, t, f = float(test[last]), float(train[last]), float(floor[last])
    gap = T / t if t > 0 else float("inf")
    fr = T / f if (np.isfinite(f) and f > 0) else float("nan")
    unit = METRIC_INFO[metric][1]
    name = METRIC_INFO[metric][0]
    n_big = int(sizes[last])
    noise_learned = bool(curve.meta.get("params", {}).get("optimize", False))
    floor_word = "learned noise floor" if noise_learned else "noise floor (assumed noise, optimize=False)"

    reasons = [
        f"test {name} {T:.3g} {unit} at N={n_big}, train {t:.3g} {unit} (test/train = {gap:.2f})",
        (f"log–log slope of the test error over N={[int(s) for s in sizes_ok[-k:]]}: {slope:.2f}"
         if np.isfinite(slope) else "only one size: no slope"),
        (f"{floor_word} {f:.3g} {unit}: test error = {fr:.2f} x floor" if np.isfinite(fr)
         else "no noise floor available"),
    ]
    falling = np.isfinite(slope) and slope <= SLOPE_FALLING
    flat = np.isfinite(slope) and slope > SLOPE_FLAT
    big_gap = gap >= GAP_LARGE
    leaning = None
    if np.isfinite(fr) and fr <= NOISE_RATIO:
        kind = "noise"
        advice = ("Noise-limited: the test error is at the noise floor of the reference data; "
                  "more data or capacity will not lower it much. Better labels (tighter "
                  "convergence, consistent settings) would.")
        if noise_learned:
            advice += (" Note that a learned noise also absorbs model error the GP cannot "
                       "represent: if the labels are noiseless (DFT), check with a capacity_curve "
                       "over n_max/l_max whether more capacity still lowers the error.")
        else:
            advice += " The floor is the assumed noise; fit with optimize=True to learn it."
    elif falling and big_gap:
        kind = "variance"
        advice = ("Variance-limited: the test error is still falling with N and the model fits "
                  "its training set much better than the test set. It needs more data (or more "
                  "regularisation: larger energy_noise/force_noise, or optimize=True).")
    elif flat and not big_gap and (not np.isfinite(fr) or fr >= BIAS_FLOOR_RATIO):
        kind = "bias"
        advice = ("Bias-limited: the test error has plateaued, the train error is close to it and "
                  "both are well above the noise floor. It needs more capacity: larger n_max/l_max, "
                  "a longer r_cut, more sparse points (n_sparse).")
    else:
        kind = "unclear"
        if falling and not big_gap:
            leaning = "variance"
            lean = ("leaning to variance: the test error still falls clearly with N, so more "
                    "data helps; but train and test errors are close, so the model may soon "
                    "also need more capacity (check with a capacity_curve, or extend the curve).")
        elif flat and big_gap:
            leaning = "variance"
            lean = ("the test error has plateaued although the train–test gap is large: more "
                    "regularisation (larger force_noise, optimize=True) or a train/test "
                    "distribution shift; more data of the same kind will not help much.")
        elif flat:
            leaning = "bias"
            lean = ("leaning to bias: the test error has plateaued close to, but not at, the "
                    "noise floor: a little more capacity may help.")
        elif not np.isfinite(slope):
            lean = "one size only: compute the curve at several sizes."
        else:
            lean = (f"the test error falls slowly (slope {slope:.2f}, between {SLOPE_FALLING} and "
                    f"{SLOPE_FLAT}): both more data and more capacity may help; extend the curve.")
        advice = "Unclear: " + lean
    message = advice + "\n  - " + "\n  - ".join(reasons)
    extrap = _extrapolations(curve, metric, targets, n_boot, random_state)
    if extrap:
        message += "\nExtrapolation (err = a N^-b + c, bootstrap intervals):\n  - " + "\n  - ".join(
            e.message.replace("\n", "\n    ") for e in extrap.values())
    return Diagnosis(kind=kind, metric=metric, slope=slope, gap_ratio=float(gap), floor_ratio=fr,
                     test_error=T, train_error=t, noise_floor=f,
                     sizes_used=[int(s) for s in sizes_ok[-k:]], reasons=reasons, message=message,
                     leaning=kind if kind != "unclear" else leaning, extrapolations=extrap)
