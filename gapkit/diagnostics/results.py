"""Result containers of learning and capacity curves: :class:`LearningCurve`, :class:`CapacityCurve`.

Both hold ``metrics``, a dict that maps a name of :data:`~gapkit.diagnostics.metric_names.METRICS`
to an array of shape (n_points, repeats), give means and spreads over repeats, and
read and write tidy CSV and JSON (one row per point and repeat). A learning curve also
knows its noise floor, its :func:`~gapkit.diagnostics.diagnosis.diagnose` and its
power-law extrapolation (:mod:`~gapkit.diagnostics.extrapolation`). A learning curve of
one label set (:func:`~gapkit.diagnostics.curves.label_curves`) has ``meta["labels"]``
and the metric ``n_labels``.

Units: energies in eV per structure (``energy_*``) or eV/atom (``*_per_atom``),
forces in eV/Å, times in s.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from gapkit.diagnostics.diagnosis import N_LAST, Diagnosis, diagnose
from gapkit.diagnostics.extrapolation import N_BOOT, Extrapolation, extrapolate_errors
from gapkit.diagnostics.metric_names import ERROR_METRICS, error_metric
from gapkit.utils import to_jsonable


def _float(v) -> float:
    """A CSV/JSON cell as a float: empty or None is NaN."""
    if v is None or v == "":
        return float("nan")
    return float(v)


class _Curve:
    """Shared behaviour: ``metrics`` maps a name to an array of shape (n_points, repeats)."""

    metrics: dict
    meta: dict

    def _x_columns(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def repeats(self) -> int:
        """Refits per point (the second axis of every metric array)."""
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

    def to_csv(self, path: str | PathLike) -> Path:
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

    def to_json(self, path: str | PathLike) -> Path:
        """Write ``{"data": to_dict(), "meta": ..., ...}`` as strict JSON (NaN -> null)."""
        path = Path(path)
        path.write_text(json.dumps(to_jsonable(self._json_payload()), indent=1, allow_nan=False))
        return path

    @staticmethod
    def _read_csv(path: str | PathLike) -> dict:
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
    """Result of :func:`gapkit.diagnostics.curves.learning_curve`.

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

    def diagnose(self, metric: str | None = None, n_last: int = N_LAST,
                 targets: dict | None = None, n_boot: int = N_BOOT, random_state=0) -> Diagnosis:
        """Bias / variance / noise diagnosis with the power-law extrapolation (and targets);
        see :func:`gapkit.diagnostics.diagnosis.diagnose`."""
        return diagnose(self, metric=metric, n_last=n_last, targets=targets, n_boot=n_boot,
                        random_state=random_state)

    def extrapolate(self, metric: str = "forces_rmse", target: float | None = None,
                    n_boot: int = N_BOOT, level: float = 0.95, random_state=0) -> Extrapolation:
        """Fit ``a N**-b + c`` to the test errors; see
        :func:`gapkit.diagnostics.extrapolation.extrapolate_errors`."""
        metric = error_metric(metric, "extrapolate: metric")
        return extrapolate_errors(self.sizes, self.metrics[f"test_{metric}"], metric, target=target,
                                  n_boot=n_boot, level=level, random_state=random_state)

    def _json_payload(self, diagnosis: Diagnosis | None = None) -> dict:
        out = {"data": self.to_dict(), "meta": self.meta}
        try:
            out["diagnosis"] = (diagnosis or self.diagnose()).to_dict()
        except ValueError as exc:  # e.g. no finite test error
            out["diagnosis"] = {"kind": "unclear", "message": str(exc)}
        return out

    def to_json(self, path: str | PathLike, diagnosis: Diagnosis | None = None) -> Path:
        """Write ``{"data": to_dict(), "meta": ..., "diagnosis": ...}`` as strict JSON.

        ``diagnosis`` (e.g. one with targets) is written instead of ``diagnose()``'s.
        """
        path = Path(path)
        path.write_text(json.dumps(to_jsonable(self._json_payload(diagnosis)), indent=1,
                                   allow_nan=False))
        return path

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
    def from_csv(cls, path: str | PathLike, meta: dict | None = None) -> "LearningCurve":
        """Read a file written by :meth:`to_csv` (``meta`` is not in the CSV)."""
        return cls.from_dict(cls._read_csv(path), meta=meta)

    @classmethod
    def from_json(cls, path: str | PathLike) -> "LearningCurve":
        """Read a file written by :meth:`to_json`, with its ``meta``."""
        payload = json.loads(Path(path).read_text())
        return cls.from_dict(payload["data"], meta=payload.get("meta"))


@dataclass
class CapacityCurve(_Curve):
    """Result of :func:`gapkit.diagnostics.curves.capacity_curve`: metrics against a model parameter.

    Attributes
    ----------
    param_name : str or tuple of str
        The ``set_params`` name(s) varied.
    param_values : list
        The values tried (tuples when ``param_name`` is a tuple).
    metrics : dict of str -> ndarray of shape (n_values, repeats)
        As in :class:`LearningCurve`.
    meta : dict
        The model's parameters, data sizes and test-set atom counts.
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
    def param_names(self) -> tuple[str, ...]:
        """``param_name`` as a tuple (of one name for a single parameter)."""
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
    def from_dict(cls, d: dict, param_name: str | tuple[str, ...],
                  meta: dict | None = None) -> "CapacityCurve":
        """Inverse of :meth:`to_dict` (values may be strings, as read from a CSV)."""
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
    def from_csv(cls, path: str | PathLike, param_name: str | tuple[str, ...],
                 meta: dict | None = None) -> "CapacityCurve":
        """Read a file written by :meth:`to_csv`; ``param_name`` names its x columns."""
        return cls.from_dict(cls._read_csv(path), param_name, meta=meta)
