"""Learning curves, capacity curves and a bias–variance diagnosis for GAP models.

A learning curve refits clones of a model on random training subsets of increasing
size and records, for every refit, the train and test errors, the mean predicted
uncertainties on the test set, the learned noise and the fit time
(:func:`learning_curve` → :class:`LearningCurve`). :func:`diagnose` reads such a
curve and says what limits the model:

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

:func:`capacity_curve` is a validation curve over one model parameter (or a tuple
of parameters varied together), e.g. ``n_sparse`` or
``("descriptor__n_max", "descriptor__l_max")``.

Units: energies in eV per structure (``energy_*``) or eV/atom (``*_per_atom``),
forces in eV/Å, times in s. Everything here is deterministic given
``random_state``.

The command ``gapkit learning-curve`` is provided by
:func:`add_learning_curve_parser` and :func:`run_learning_curve_cli`.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from gapkit.utils import to_jsonable
from gapkit.uncertainty.calibration import noise_level
from sklearn.base import clone
from tqdm.auto import tqdm

# ----------------------------------------------------------------------------------
# metric names and units
# ----------------------------------------------------------------------------------
ERROR_METRICS = ("energy_mae", "energy_rmse", "energy_mae_per_atom", "energy_rmse_per_atom",
                 "forces_mae", "forces_rmse")
STD_METRICS = ("energy_std_per_atom", "energy_std_epistemic_per_atom", "forces_std",
               "forces_std_epistemic")
OTHER_METRICS = ("noise_energy", "noise_forces", "delta", "n_sparse_points", "fit_time")
METRICS = (tuple(f"train_{m}" for m in ERROR_METRICS) + tuple(f"test_{m}" for m in ERROR_METRICS)
           + tuple(f"test_{m}" for m in STD_METRICS) + OTHER_METRICS)

#: Human-readable name and unit of every recorded quantity (without train_/test_).
METRIC_INFO = {
    "energy_mae": ("energy MAE", "eV"),
    "energy_rmse": ("energy RMSE", "eV"),
    "energy_mae_per_atom": ("energy MAE", "eV/atom"),
    "energy_rmse_per_atom": ("energy RMSE", "eV/atom"),
    "forces_mae": ("force MAE", "eV/Å"),
    "forces_rmse": ("force RMSE", "eV/Å"),
    "energy_std_per_atom": ("mean predicted energy σ", "eV/atom"),
    "energy_std_epistemic_per_atom": ("mean epistemic energy σ", "eV/atom"),
    "forces_std": ("mean predicted force σ", "eV/Å"),
    "forces_std_epistemic": ("mean epistemic force σ", "eV/Å"),
    "noise_energy": ("learned energy noise σ_E", "eV/√atom"),
    "noise_forces": ("learned force noise σ_F", "eV/Å"),
    "delta": ("signal scale δ", "eV"),
    "n_sparse_points": ("sparse points M", ""),
    "fit_time": ("fit time", "s"),
}

# ----------------------------------------------------------------------------------
# diagnosis thresholds (documented in diagnose())
# ----------------------------------------------------------------------------------
NOISE_RATIO = 1.5      # test error <= 1.5 x noise floor            -> "noise"
BIAS_FLOOR_RATIO = 2.0  # test error >= 2 x noise floor: "well above the floor"
SLOPE_FALLING = -0.2   # log-log slope <= -0.2: "still falling clearly"
SLOPE_FLAT = -0.1      # log-log slope  > -0.1: "plateau"
GAP_LARGE = 1.5        # test / train >= 1.5: "large gap"; below: "train close to test"
N_LAST = 3             # the slope uses the last 3 sizes


def _rng(random_state) -> np.random.Generator:
    """A numpy Generator from None, an int, a Generator or a legacy RandomState."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2 ** 31 - 1))
    return np.random.default_rng(random_state)


def _split_frames(frames) -> tuple[list, list]:
    from gapkit.data import as_frame_list, split_isolated

    return split_isolated(as_frame_list(frames))


def _evaluate(model, frames: list, prefix: str, with_std: bool) -> dict:
    """Error metrics (and mean predicted stds) of ``model`` on ``frames``."""
    from gapkit.metrics import error_metrics

    if with_std:
        pred, std = model.predict(frames, return_std=True)
    else:
        pred, std = model.predict(frames), None
    m = error_metrics(pred, frames, model.label_keys)
    out = {f"{prefix}_{k}": m[k] for k in ERROR_METRICS}
    if prefix == "test":
        nat = np.array([len(a) for a in frames], dtype=np.float64)
        if std is not None:
            out["test_energy_std_per_atom"] = float(np.mean(std.energy / nat))
            out["test_energy_std_epistemic_per_atom"] = float(np.mean(std.energy_epistemic / nat))
            if std.forces is not None:
                out["test_forces_std"] = float(np.mean(np.concatenate([s.ravel() for s in std.forces])))
                out["test_forces_std_epistemic"] = float(np.mean(
                    np.concatenate([s.ravel() for s in std.forces_epistemic])))
        for k in STD_METRICS:
            out.setdefault(f"test_{k}", float("nan"))
    return out


def _fit_and_score(model, train: list, test: list, with_std: bool, eval_train: list | None = None) -> dict:
    t0 = time.perf_counter()
    model.fit(train)
    dt = time.perf_counter() - t0
    fitted = [a for a in train if a.info.get("config_type") != "isolated_atom"]
    out = _evaluate(model, eval_train if eval_train is not None else fitted, "train", False)
    out.update(_evaluate(model, test, "test", with_std))
    out["noise_energy"] = noise_level(model.noise_, "energy", float("nan"))
    out["noise_forces"] = noise_level(model.noise_, "forces", float("nan"))
    out["delta"] = float(model.delta_)
    out["n_sparse_points"] = float(len(model.alpha_))
    out["fit_time"] = float(dt)
    return out


def _float(v) -> float:
    if v is None or v == "":
        return float("nan")
    return float(v)


# ----------------------------------------------------------------------------------
# result containers
# ----------------------------------------------------------------------------------
class _Curve:
    """Shared behaviour: ``metrics`` maps a name to an array of shape (n_points, repeats)."""

    metrics: dict
    meta: dict

    def _x_columns(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def repeats(self) -> int:
        first = next(iter(self.metrics.values()))
        return int(first.shape[1])

    def __getattr__(self, name):
        # curve.test_forces_rmse -> the raw (n_points, repeats) array
        metrics = self.__dict__.get("metrics")
        if metrics is not None and name in metrics:
            return metrics[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute or metric {name!r}")

    def _get(self, metric: str) -> np.ndarray:
        if metric not in self.metrics:
            raise KeyError(f"unknown metric {metric!r}; available: {sorted(self.metrics)}")
        return np.asarray(self.metrics[metric], dtype=np.float64)

    def mean(self, metric: str) -> np.ndarray:
        """Mean over repeats of ``metric`` (NaNs ignored), shape (n_points,)."""
        v = self._get(metric)
        with np.errstate(all="ignore"):
            ok = np.isfinite(v).any(axis=1)
            out = np.full(v.shape[0], np.nan)
            out[ok] = np.nanmean(v[ok], axis=1)
        return out

    def std(self, metric: str) -> np.ndarray:
        """Standard deviation over repeats of ``metric`` (0 for one repeat), shape (n_points,)."""
        v = self._get(metric)
        out = np.full(v.shape[0], np.nan)
        ok = np.isfinite(v).any(axis=1)
        out[ok] = np.nanstd(v[ok], axis=1)
        return out

    def to_dict(self) -> dict:
        """Tidy columns, one entry per (point, repeat): a dict of lists.

        JSON-able with the standard library, and ``pandas.DataFrame(curve.to_dict())``
        gives a tidy table. Missing values are ``nan`` floats.
        """
        xcols = self._x_columns()
        n, r = next(iter(self.metrics.values())).shape
        out = {k: [v[i] for i in range(n) for _ in range(r)] for k, v in xcols.items()}
        out["repeat"] = [j for _ in range(n) for j in range(r)]
        for k, v in self.metrics.items():
            out[k] = [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
        return out

    def to_csv(self, path) -> Path:
        """Write one row per (point, repeat); returns the path."""
        path = Path(path)
        d = self.to_dict()
        cols = list(d)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for row in zip(*(d[c] for c in cols)):
                w.writerow(["" if isinstance(v, float) and not math.isfinite(v) else v for v in row])
        return path

    def _json_payload(self) -> dict:
        return {"data": self.to_dict(), "meta": self.meta}

    def to_json(self, path) -> Path:
        """Write ``{"data": to_dict(), "meta": ..., ...}`` as strict JSON (NaN -> null)."""
        path = Path(path)
        path.write_text(json.dumps(to_jsonable(self._json_payload()), indent=1, allow_nan=False))
        return path

    @staticmethod
    def _read_csv(path) -> dict:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        cols = rows[0]
        return {c: [r[i] for r in rows[1:]] for i, c in enumerate(cols)}

    @staticmethod
    def _metric_arrays(d: dict, skip: set, n: int, r: int) -> dict:
        return {k: np.array([_float(x) for x in v], dtype=np.float64).reshape(n, r)
                for k, v in d.items() if k not in skip}


@dataclass
class LearningCurve(_Curve):
    """Result of :func:`learning_curve`.

    Attributes
    ----------
    sizes : ndarray of int, shape (n_sizes,)
        Training-set sizes (structures, isolated atoms not counted).
    metrics : dict of str -> ndarray of shape (n_sizes, repeats)
        Raw per-repeat values; see :data:`METRICS` and :data:`METRIC_INFO` for
        names and units (``train_*``/``test_*`` errors, ``test_*std*`` mean
        predicted stds, ``noise_energy``/``noise_forces`` learned noise,
        ``delta``, ``n_sparse_points``, ``fit_time``). Also readable as attributes:
        ``curve.test_forces_rmse``.
    meta : dict
        The model's parameters, data sizes, ``random_state`` and test-set atom
        counts (used for the energy noise floor).
    model : GAP or None
        The last model fitted at the largest size (not saved by ``to_*``).
    """

    sizes: np.ndarray
    metrics: dict
    meta: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.sizes = np.asarray(self.sizes, dtype=int)
        self.metrics = {k: np.asarray(v, dtype=np.float64).reshape(len(self.sizes), -1)
                        for k, v in self.metrics.items()}

    def _x_columns(self) -> dict:
        return {"size": [int(s) for s in self.sizes]}

    def noise_floor(self, metric: str = "forces_rmse") -> np.ndarray:
        """The error a perfect model would make on the test labels, per size, shape (n_sizes,).

        From the learned noise (mean over repeats): ``sigma_F`` for ``forces_rmse``;
        ``sigma_E sqrt(<N>)`` for ``energy_rmse`` and ``sigma_E sqrt(<1/N>)`` for
        ``energy_rmse_per_atom`` (a structure of N atoms has energy noise
        ``sigma_E sqrt(N)``), with ``<.>`` over the test set; MAE floors are the
        Gaussian ``sqrt(2/pi)`` times the RMSE floor. NaN for other metrics.
        """
        metric = metric.removeprefix("train_").removeprefix("test_")
        kind = "forces" if metric.startswith("forces") else "energy"
        if not metric.endswith(("_mae", "_rmse", "_mae_per_atom", "_rmse_per_atom")) or \
                metric not in ERROR_METRICS:
            return np.full(len(self.sizes), np.nan)
        sigma = self.mean(f"noise_{kind}")
        if kind == "energy":
            if metric.endswith("per_atom"):
                sigma = sigma * np.sqrt(self.meta.get("test_inv_n_atoms_mean", np.nan))
            else:
                sigma = sigma * np.sqrt(self.meta.get("test_n_atoms_mean", np.nan))
        if "_mae" in metric:
            sigma = sigma * np.sqrt(2 / np.pi)
        return sigma

    def diagnose(self, metric: str | None = None, n_last: int = N_LAST) -> "Diagnosis":
        """Bias / variance / noise diagnosis; see :func:`diagnose`."""
        return diagnose(self, metric=metric, n_last=n_last)

    def _json_payload(self) -> dict:
        out = {"data": self.to_dict(), "meta": self.meta}
        try:
            out["diagnosis"] = self.diagnose().to_dict()
        except ValueError as exc:  # e.g. no finite test error
            out["diagnosis"] = {"kind": "unclear", "message": str(exc)}
        return out

    @classmethod
    def from_dict(cls, d: dict, meta: dict | None = None) -> "LearningCurve":
        """Inverse of :meth:`to_dict` (values may be strings, as read from a CSV)."""
        size = [int(float(s)) for s in d["size"]]
        sizes = list(dict.fromkeys(size))
        n = len(sizes)
        r = len(size) // n
        metrics = cls._metric_arrays(d, {"size", "repeat"}, n, r)
        return cls(sizes=np.array(sizes), metrics=metrics, meta=dict(meta or {}))

    @classmethod
    def from_csv(cls, path, meta: dict | None = None) -> "LearningCurve":
        return cls.from_dict(cls._read_csv(path), meta=meta)

    @classmethod
    def from_json(cls, path) -> "LearningCurve":
        payload = json.loads(Path(path).read_text())
        return cls.from_dict(payload["data"], meta=payload.get("meta"))


@dataclass
class CapacityCurve(_Curve):
    """Result of :func:`capacity_curve`: metrics against a model parameter.

    Attributes
    ----------
    param_name : str or tuple of str
    param_values : list
        The values tried (tuples when ``param_name`` is a tuple).
    metrics : dict of str -> ndarray of shape (n_values, repeats)
        As in :class:`LearningCurve`.
    meta : dict
    """

    param_name: object
    param_values: list
    metrics: dict
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.param_values = [tuple(v) if isinstance(v, (list, tuple)) else v
                             for v in self.param_values]
        n = len(self.param_values)
        self.metrics = {k: np.asarray(v, dtype=np.float64).reshape(n, -1)
                        for k, v in self.metrics.items()}

    @property
    def param_names(self) -> tuple:
        return tuple(self.param_name) if isinstance(self.param_name, (list, tuple)) else (self.param_name,)

    @property
    def labels(self) -> list[str]:
        """The parameter values as short strings (for plot ticks)."""
        return [" / ".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
                for v in self.param_values]

    def _x_columns(self) -> dict:
        names = self.param_names
        cols = {}
        for j, name in enumerate(names):
            cols[name] = [(v[j] if isinstance(v, tuple) else v) for v in self.param_values]
        return {k: [to_jsonable(x) for x in v] for k, v in cols.items()}

    def best(self, metric: str = "test_forces_rmse"):
        """The parameter value with the lowest mean ``metric``."""
        return self.param_values[int(np.nanargmin(self.mean(metric)))]

    @classmethod
    def from_dict(cls, d: dict, param_name, meta: dict | None = None) -> "CapacityCurve":
        names = tuple(param_name) if isinstance(param_name, (list, tuple)) else (param_name,)

        def conv(x):
            if isinstance(x, str):
                for f in (int, float):
                    try:
                        return f(x)
                    except ValueError:
                        pass
            return x

        rows = list(zip(*(d[nm] for nm in names)))
        keys = list(dict.fromkeys(tuple(conv(x) for x in row) for row in rows))
        n = len(keys)
        r = len(rows) // n
        values = [k if len(names) > 1 else k[0] for k in keys]
        metrics = cls._metric_arrays(d, set(names) | {"repeat"}, n, r)
        return cls(param_name=param_name, param_values=values, metrics=metrics, meta=dict(meta or {}))

    @classmethod
    def from_csv(cls, path, param_name, meta: dict | None = None) -> "CapacityCurve":
        return cls.from_dict(cls._read_csv(path), param_name, meta=meta)


# ----------------------------------------------------------------------------------
# learning curve
# ----------------------------------------------------------------------------------
def _model_meta(model) -> dict:
    params = {}
    for k, v in model.get_params(deep=True).items():
        if k == "descriptor":
            continue
        params[k] = to_jsonable(v)
    return params


def _test_meta(test: list) -> dict:
    nat = np.array([len(a) for a in test], dtype=np.float64)
    return {"n_test": len(test), "test_n_atoms_mean": float(nat.mean()),
            "test_inv_n_atoms_mean": float(np.mean(1.0 / nat))}


def _progress(total: int, desc: str, progress):
    return tqdm(total=total, desc=desc, disable=None if progress is None else not progress)


def _seeded_clone(model, rng: np.random.Generator):
    m = clone(model)
    if getattr(m, "random_state", None) is None:
        m.set_params(random_state=int(rng.integers(2 ** 31 - 1)))
    return m


def learning_curve(model, train, test, sizes: Sequence[int] | None = None, repeats: int = 3,
                   random_state=None, return_std: bool = True, n_train_eval: int | None = None,
                   progress: bool | None = None) -> LearningCurve:
    """Refit clones of ``model`` on random training subsets of increasing size.

    Parameters
    ----------
    model : GAP
        An (unfitted) estimator; it is cloned (``sklearn.base.clone``) for every refit.
        If its ``random_state`` is None each clone gets a seed drawn from
        ``random_state`` here, so the whole curve is reproducible.
    train : list of ase.Atoms
        The training pool. ``config_type=isolated_atom`` frames are added to every
        subset (for ``e0="isolated"``) and not counted in the sizes.
    test : list of ase.Atoms
        Labelled test structures (isolated atoms are dropped).
    sizes : sequence of int, optional
        Training-set sizes; default 5 sizes log-spaced from ``min(10, n)`` to the
        pool size ``n``. Each must be in ``1..n``.
    repeats : int, default 3
        Random subsets (without replacement) per size.
    random_state : int, numpy Generator, RandomState or None
        The only source of randomness (subsets and, if needed, model seeds).
    return_std : bool, default True
        Also record the mean predicted (total and epistemic) stds on the test set.
        Costs roughly one extra training pass over the test set per refit.
    n_train_eval : int, optional
        Evaluate the training error on at most this many structures of each subset
        (default all).
    progress : bool, optional
        Progress bar over refits; ``None`` (default) shows it on a terminal only.

    Returns
    -------
    LearningCurve

    Raises
    ------
    ValueError
        If a size is larger than the training pool or not positive, or ``repeats < 1``.
    """
    pool, iso = _split_frames(train)
    test_frames, _ = _split_frames(test)
    if not pool:
        raise ValueError("learning_curve: the training set has no structures (besides isolated atoms)")
    n = len(pool)
    if sizes is None:
        sizes = np.unique(np.geomspace(min(10, n), n, 5).round().astype(int))
    sizes = np.asarray(list(sizes))
    if sizes.size == 0:
        raise ValueError("learning_curve: sizes is empty")
    if not np.all(np.equal(np.mod(sizes, 1), 0)):
        raise ValueError(f"learning_curve: sizes must be whole numbers of structures, got {sizes.tolist()}")
    sizes = np.unique(sizes.astype(int))
    if sizes[0] < 1:
        raise ValueError(f"learning_curve: sizes must be >= 1, got {sizes.tolist()}")
    too_big = sizes[sizes > n]
    if too_big.size:
        raise ValueError(f"learning_curve: size(s) {too_big.tolist()} larger than the training set "
                         f"({n} structures{', isolated atoms not counted' if iso else ''}); "
                         f"use sizes <= {n}")
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"learning_curve: repeats must be >= 1, got {repeats}")

    rng = _rng(random_state)
    values = {k: np.full((len(sizes), repeats), np.nan) for k in METRICS}
    last = None
    bar = _progress(len(sizes) * repeats, "learning curve", progress)
    try:
        for i, size in enumerate(sizes):
            for j in range(repeats):
                idx = np.sort(rng.choice(n, size=int(size), replace=False))
                subset = [pool[k] for k in idx]
                ev = None
                if n_train_eval is not None and size > n_train_eval:
                    ev = [subset[k] for k in np.sort(rng.choice(size, n_train_eval, replace=False))]
                m = _seeded_clone(model, rng)
                res = _fit_and_score(m, subset + iso, test_frames, return_std, ev)
                for k, v in res.items():
                    values[k][i, j] = v
                last = m
                bar.set_postfix(N=int(size), test_F_rmse=f"{res['test_forces_rmse']:.3g}")
                bar.update(1)
    finally:
        bar.close()
    meta = {"n_pool": n, "n_isolated": len(iso), "repeats": repeats,
            "random_state": to_jsonable(random_state) if not isinstance(
                random_state, (np.random.Generator, np.random.RandomState)) else repr(random_state),
            "return_std": bool(return_std), "model": type(model).__name__,
            "params": _model_meta(model), **_test_meta(test_frames)}
    return LearningCurve(sizes=sizes, metrics=values, meta=meta, model=last)


# ----------------------------------------------------------------------------------
# capacity (validation) curve
# ----------------------------------------------------------------------------------
def capacity_curve(model, train, test, param_name, values: Sequence, repeats: int = 1,
                   random_state=None, train_size: int | None = None, return_std: bool = True,
                   progress: bool | None = None) -> CapacityCurve:
    """Refit ``model`` for each value of a parameter: a validation curve.

    Parameters
    ----------
    model : GAP
    train, test : list of ase.Atoms
    param_name : str or tuple of str
        A ``set_params`` name such as ``"n_sparse"`` or ``"descriptor__n_max"``, or a
        tuple of names varied together, e.g. ``("descriptor__n_max",
        "descriptor__l_max")`` with ``values=[(4, 3), (6, 4), (8, 6)]``.
    values : sequence
        Parameter values (tuples for a tuple ``param_name``).
    repeats : int, default 1
        Refits per value. Repeats differ in the model seed (sparse-point selection)
        and, with ``train_size``, in the training subset.
    random_state : int, Generator or None
    train_size : int, optional
        Train every refit on a random subset of this size (default: the whole set).
    return_std : bool, default True

    Returns
    -------
    CapacityCurve
    """
    pool, iso = _split_frames(train)
    test_frames, _ = _split_frames(test)
    names = tuple(param_name) if isinstance(param_name, (list, tuple)) else (param_name,)
    values = list(values)
    if not values:
        raise ValueError("capacity_curve: values is empty")
    valid = model.get_params(deep=True)
    for nm in names:
        if nm not in valid:
            raise ValueError(f"capacity_curve: {type(model).__name__} has no parameter {nm!r}")
    for v in values:
        if len(names) > 1 and (not isinstance(v, (list, tuple)) or len(v) != len(names)):
            raise ValueError(f"capacity_curve: each value must be a tuple of {len(names)} "
                             f"for param_name={names}, got {v!r}")
    n = len(pool)
    if train_size is not None and not 1 <= int(train_size) <= n:
        raise ValueError(f"capacity_curve: train_size {train_size} must be in 1..{n}")
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"capacity_curve: repeats must be >= 1, got {repeats}")
    rng = _rng(random_state)
    out = {k: np.full((len(values), repeats), np.nan) for k in METRICS}
    bar = _progress(len(values) * repeats, "capacity curve", progress)
    try:
        for i, v in enumerate(values):
            vv = tuple(v) if len(names) > 1 else (v,)
            for j in range(repeats):
                if train_size is not None:
                    idx = np.sort(rng.choice(n, size=int(train_size), replace=False))
                    subset = [pool[k] for k in idx]
                else:
                    subset = pool
                m = clone(model)
                m.set_params(**dict(zip(names, vv)))
                if repeats > 1 or m.random_state is None:
                    m.set_params(random_state=int(rng.integers(2 ** 31 - 1)))
                res = _fit_and_score(m, subset + iso, test_frames, return_std)
                for k, val in res.items():
                    out[k][i, j] = val
                bar.update(1)
    finally:
        bar.close()
    meta = {"n_pool": n, "train_size": train_size, "repeats": repeats,
            "param_name": list(names) if len(names) > 1 else names[0],
            "params": _model_meta(model), **_test_meta(test_frames)}
    return CapacityCurve(param_name=param_name, param_values=values, metrics=out, meta=meta)


# ----------------------------------------------------------------------------------
# diagnosis
# ----------------------------------------------------------------------------------
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

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return to_jsonable(self.__dict__)


def diagnose(curve: LearningCurve, metric: str | None = None, n_last: int = N_LAST) -> Diagnosis:
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

    Returns
    -------
    Diagnosis
    """
    if metric is None:
        has_forces = np.isfinite(curve.mean("test_forces_rmse")).any()
        metric = "forces_rmse" if has_forces else "energy_rmse_per_atom"
    metric = metric.removeprefix("test_").removeprefix("train_")
    if metric not in ERROR_METRICS:
        raise ValueError(f"diagnose: metric must be one of {ERROR_METRICS}, got {metric!r}")
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
    return Diagnosis(kind=kind, metric=metric, slope=slope, gap_ratio=float(gap), floor_ratio=fr,
                     test_error=T, train_error=t, noise_floor=f,
                     sizes_used=[int(s) for s in sizes_ok[-k:]], reasons=reasons, message=message,
                     leaning=kind if kind != "unclear" else leaning)


# ----------------------------------------------------------------------------------
# command line: gapkit learning-curve
# ----------------------------------------------------------------------------------
def _parse_sizes(text: str) -> list[int]:
    try:
        out = [int(s) for s in str(text).replace(" ", "").split(",") if s]
    except ValueError:
        raise ValueError(f"--sizes must be comma-separated integers, e.g. 25,50,100, got {text!r}") from None
    if not out:
        raise ValueError("--sizes is empty")
    return out


def add_learning_curve_parser(subparsers):
    """Add the ``learning-curve`` sub-command to an argparse ``subparsers`` object.

    Returns the new sub-parser. Its handler is :func:`run_learning_curve_cli`.
    """
    import argparse

    from gapkit.cli.app import add_model_arguments

    def sizes_type(text):
        try:
            return _parse_sizes(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p = subparsers.add_parser(
        "learning-curve",
        help="errors against training-set size, with a bias/variance/noise diagnosis",
        description="Refit on random training subsets of increasing size and write "
                    "OUTDIR/learning_curve.csv, learning_curve.json (with the diagnosis), "
                    "learning_curve.png and parity.png (largest size). No TRAIN: the default data.")
    p.add_argument("train", nargs="*", help="training extxyz files (default: data/train.xyz)")
    p.add_argument("--test", nargs="*", default=None,
                   help="test extxyz files (required with TRAIN; default data: data/test.xyz)")
    p.add_argument("--sizes", type=sizes_type, default=None,
                   help="comma-separated training-set sizes, e.g. 25,50,100,200 "
                        "(default: 5 sizes log-spaced up to the whole training set)")
    p.add_argument("--repeats", type=int, default=3, help="random subsets per size (default 3)")
    p.add_argument("-o", "--output", default="learning_curve", help="output folder (default learning_curve)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-test", type=int, default=None,
                   help="evaluate on a random subset of at most this many test structures")
    p.add_argument("--no-std", action="store_true", help="skip predicted uncertainties (faster)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
    add_model_arguments(p)
    return p


def _diagnosis_title(diag: Diagnosis) -> str:
    if diag.kind != "unclear":
        return f"Diagnosis: {diag.kind}-limited"
    return "Diagnosis: unclear" + (f", leaning to {diag.leaning}" if diag.leaning else "")


def _save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=150)


def run_learning_curve_cli(args) -> int:
    """Handler of ``gapkit learning-curve``; returns the exit code (0 on success)."""
    from gapkit.cli.app import model_from_args, resolve_training_files
    from gapkit.data import read_frames, split_isolated

    train, test, e0 = resolve_training_files(args.train, args.test, args.e0)
    if not test:
        raise ValueError("learning-curve needs labelled test structures: pass --test FILE...")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    train_frames = read_frames(train)
    test_frames = split_isolated(read_frames(test))[0]
    rng = np.random.default_rng(args.seed)
    if args.max_test is not None and len(test_frames) > args.max_test:
        keep = np.sort(rng.choice(len(test_frames), args.max_test, replace=False))
        test_frames = [test_frames[k] for k in keep]
    model = model_from_args(args, e0)
    t0 = time.perf_counter()
    curve = learning_curve(model, train_frames, test_frames, sizes=args.sizes, repeats=args.repeats,
                           random_state=args.seed, return_std=not args.no_std,
                           progress=True if getattr(args, "verbose", False) else None)
    dt = time.perf_counter() - t0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written = [curve.to_csv(out / "learning_curve.csv"), curve.to_json(out / "learning_curve.json")]
    diag = curve.diagnose()

    if not args.no_plots:
        from matplotlib.figure import Figure

        from gapkit import plotting

        fig = Figure(figsize=(9.5, 4), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        metric_f = "forces_rmse" if diag.metric.startswith("forces") else diag.metric
        plotting.learning_curve(curve, metric=metric_f, ax=ax1)
        plotting.learning_curve(curve, metric="energy_rmse_per_atom", ax=ax2)
        fig.suptitle(_diagnosis_title(diag))
        _save_figure(fig, out / "learning_curve.png")
        written.append(out / "learning_curve.png")

        m = curve.model
        has_forces = np.isfinite(curve.mean("test_forces_rmse")).any()
        if args.no_std:
            pred, std = m.predict(test_frames), None
        else:
            pred, std = m.predict(test_frames, return_std=True)
        fig = Figure(figsize=(9.5, 4.2) if has_forces else (4.8, 4.2), layout="constrained")
        axes = fig.subplots(1, 2 if has_forces else 1)
        axes = np.atleast_1d(axes)
        plotting.parity(pred, test_frames, "energy", std=std, ax=axes[0], per_atom=True)
        if has_forces:
            plotting.parity(pred, test_frames, "forces", ax=axes[1])
        fig.suptitle(f"Test set, model trained on N={int(curve.sizes[-1])} structures")
        _save_figure(fig, out / "parity.png")
        written.append(out / "parity.png")

    print(f"Learning curve: {len(curve.sizes)} sizes x {curve.repeats} repeats in {dt:.1f} s "
          f"(pool {curve.meta['n_pool']} structures, test {curve.meta['n_test']})")
    unit_e = "meV/atom"
    print(f"{'N':>6} {'train F RMSE':>13} {'test F RMSE':>12} {'test E RMSE':>12} "
          f"{'σ_F noise':>10} {'fit s':>6}")
    for i, s in enumerate(curve.sizes):
        print(f"{int(s):>6} {1000 * curve.mean('train_forces_rmse')[i]:>13.1f} "
              f"{1000 * curve.mean('test_forces_rmse')[i]:>12.1f} "
              f"{1000 * curve.mean('test_energy_rmse_per_atom')[i]:>12.2f} "
              f"{1000 * curve.mean('noise_forces')[i]:>10.1f} {curve.mean('fit_time')[i]:>6.1f}")
    print(f"(force errors in meV/Å, energy in {unit_e})")
    print(f"Diagnosis: {diag.message}")
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0
