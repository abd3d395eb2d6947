"""Descriptor settings chosen by validation error: :func:`tune` (``gapkit tune``).

A random search on a subsample, within a time budget:

1. ``n_frames`` frames (default 100) are drawn from the training frames (isolated
   atoms are kept aside for E0) and split into a training part and a validation part
   (``valid_fraction``, default 0.25).
2. The first trial is the default settings (or the ``base`` ones); the others are
   drawn without repetition from the grid :data:`SPACE` (``r_cut``, ``sigma``,
   ``n_max``, ``l_max``, ``zeta``, ``n_sparse``, ``two_body`` and ``radial_scaling``),
   each a fit of the model ``gapkit fit`` builds from them (the default SOAP + 2-body
   model of :func:`gapkit.gp.terms.default_terms` with the SOAP of
   :func:`gapkit.gp.terms.default_soap`, the 2-body cutoff following ``r_cut``;
   ``two_body=0``: SOAP alone; ``radial_scaling`` the SOAP's exponent ``m``, ``r0``
   2 Å, 0: no scaling) on the training part with the validation frames scored, until the time budget (seconds of wall time) or
   ``max_trials`` is used up. The first trial always runs; a trial that starts
   before the budget ends runs to its end.
3. The score of a trial is the mean, over energy per atom and force components, of
   its validation RMSE divided by the first trial's (energies only without forces):
   ``score < 1`` is better than the defaults. The trial with the lowest score wins.

On a subsample more sparse points always help (every environment is the exact
local GP), so the default grid keeps ``n_sparse="auto"``, the data-scaled rule of
:mod:`gapkit.model.sparse_counts`, which already weighs accuracy against the file
and memory budget on the full data; give ``space={"n_sparse": [...]}`` to search
counts. The 2-body term keeps its default count (``two_body``
:data:`~gapkit.gp.terms.DEFAULT_TWO_BODY_SPARSE`; ``space={"two_body": [0, 50]}``
also tries SOAP alone), and so does the radial scaling (``space={"radial_scaling":
[0, 4]}`` also tries SOAP without it). Fits during the search are not calibrated
(``calibrate=False``).

:meth:`TuneResult.write_config` writes the chosen settings as a JSON config that
``gapkit fit --config`` reads (keys ``r_cut``, ``sigma``, ``n_max``, ``l_max``,
``zeta``, ``n_sparse``, ``two_body``, ``radial_scaling``).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from gapkit.data import as_frame_list, split_isolated
from gapkit.gp.terms import (DEFAULT_RADIAL_SCALING, DEFAULT_TWO_BODY_SPARSE, default_soap,
                              default_terms)
from gapkit.metrics import error_metrics
from gapkit.model.estimator import GAP
from gapkit.progress import progress_bar
from gapkit.utils import atomic_write_bytes, check_random_state

__all__ = ["SPACE", "DEFAULTS", "TuneResult", "tune"]

logger = logging.getLogger(__name__)

#: The default search grid.
SPACE = {"r_cut": (4.0, 5.0, 6.0), "sigma": (0.3, 0.4, 0.5, 0.6), "n_max": (6, 8, 10),
         "l_max": (4, 6, 8), "zeta": (2.0, 4.0, 6.0), "n_sparse": ("auto",),
         "two_body": (DEFAULT_TWO_BODY_SPARSE,), "radial_scaling": (DEFAULT_RADIAL_SCALING,)}
#: The settings of the first trial (gapkit's defaults).
DEFAULTS = {"r_cut": 5.0, "sigma": 0.5, "n_max": 8, "l_max": 6, "zeta": 4.0, "n_sparse": "auto",
            "two_body": DEFAULT_TWO_BODY_SPARSE, "radial_scaling": DEFAULT_RADIAL_SCALING}
_SOAP_KEYS = ("r_cut", "sigma", "n_max", "l_max", "radial_scaling")


@dataclass
class TuneResult:
    """What :func:`tune` tried and chose.

    Attributes
    ----------
    best : dict
        The chosen settings (keys of :data:`DEFAULTS`).
    trials : list of dict
        One row per trial, in order: ``settings``, ``valid`` (``energy_rmse_per_atom``
        eV/atom, ``forces_rmse`` eV/Å, their MAEs), ``score`` and ``seconds``.
    n_train, n_valid : int
        Frames of the subsample used to fit and to score.
    time_budget : float
        Seconds allowed.
    """

    best: dict
    trials: list = field(default_factory=list)
    n_train: int = 0
    n_valid: int = 0
    time_budget: float = 0.0

    def config(self) -> dict:
        """The chosen settings as ``gapkit fit --config`` keys."""
        return dict(self.best)

    def write_config(self, path: str | Path) -> Path:
        """Write :meth:`config` as JSON to ``path`` (atomically); returns the path."""
        atomic_write_bytes(path, (json.dumps(self.config(), indent=2) + "\n").encode())
        return Path(path)


def _grid(space: dict, first: dict, rng) -> list[dict]:
    """``first``, then the grid points of ``space`` in random order (no repeats)."""
    keys = list(DEFAULTS)
    values = [list(space.get(k, (first[k],))) for k in keys]
    points = [dict(zip(keys, p)) for p in itertools.product(*values)]
    points = [p for p in points if p != first]
    order = rng.permutation(len(points))
    return [dict(first)] + [points[i] for i in order]


def _check_space(space: dict) -> None:
    unknown = sorted(set(space) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"tune: unknown settings {unknown} in space; known: {list(DEFAULTS)}")
    for k, v in space.items():
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or not list(v):
            raise ValueError(f"tune: space[{k!r}] must be a non-empty list of values, got {v!r}")


def tune(frames: Sequence[Atoms] | str, *, time_budget: float = 300.0,
         n_frames: int = 100, valid_fraction: float = 0.25, space: dict | None = None,
         base: dict | None = None, max_trials: int | None = None, gap_params: dict | None = None,
         random_state=0, progress: bool | None = None) -> TuneResult:
    """Search descriptor and kernel settings by validation error on a subsample.

    Parameters
    ----------
    frames : list of ase.Atoms or path
        Labelled training frames (energies, and forces where available).
    time_budget : float, default 300
        Seconds of wall time for the search; trials start while time is left.
    n_frames : int, default 100
        Frames of the subsample (training plus validation part).
    valid_fraction : float, default 0.25
        Fraction of the subsample that scores the trials.
    space : dict, optional
        Values per setting (keys of :data:`DEFAULTS`); missing keys take
        :data:`SPACE`'s (``None``: :data:`SPACE`).
    base : dict, optional
        Settings of the first trial (default :data:`DEFAULTS`); the scores are
        relative to it.
    max_trials : int, optional
        At most this many trials.
    gap_params : dict, optional
        Other :class:`~gapkit.GAP` parameters of every trial (``e0``, noises, label
        keys, ...).
    random_state : int, RandomState or None
        Subsample, split and order of the grid.
    progress : bool, optional
        A bar over the trials (see :func:`gapkit.progress.progress_bar`).

    Returns
    -------
    TuneResult

    Raises
    ------
    ValueError
        For a time budget that is not positive, too few frames for a split, unknown
        settings or empty value lists.
    """
    if not (isinstance(time_budget, (int, float)) and time_budget > 0):
        raise ValueError(f"tune: time_budget must be a positive number of seconds, "
                         f"got {time_budget!r}")
    if not 0 < float(valid_fraction) < 1:
        raise ValueError(f"tune: valid_fraction must be between 0 and 1, got {valid_fraction!r}")
    if max_trials is not None and int(max_trials) < 1:
        raise ValueError(f"tune: max_trials must be at least 1, got {max_trials!r}")
    space = {**SPACE, **(space or {})}
    _check_space(space)
    first = {**DEFAULTS, **(base or {})}
    _check_space({k: [v] for k, v in first.items()})
    rng = check_random_state(random_state)
    mols, iso = split_isolated(as_frame_list(frames))
    species = sorted({int(z) for a in mols for z in a.numbers})
    pick = rng.permutation(len(mols))[: int(n_frames)]
    sub = [mols[i] for i in pick]
    n_val = int(round(valid_fraction * len(sub)))
    if n_val < 2 or len(sub) - n_val < 2:
        raise ValueError(f"tune: {len(sub)} frames cannot be split into training and "
                         f"validation parts (valid_fraction={valid_fraction}): give more frames")
    train, valid = iso + sub[n_val:], sub[:n_val]
    points = _grid(space, first, rng)
    if max_trials is not None:
        points = points[: int(max_trials)]
    symbols = [chemical_symbols[z] for z in species]
    params = {"random_state": 0, **(gap_params or {}), "calibrate": False}
    t_start = time.perf_counter()
    trials: list[dict] = []
    ref = None
    with progress_bar(total=len(points), desc="tune", unit="trial", progress=progress) as bar:
        for k, settings in enumerate(points):
            if k and time.perf_counter() - t_start > time_budget:
                break
            t0 = time.perf_counter()
            soap = default_soap(species=symbols, **{s: settings[s] for s in _SOAP_KEYS})
            model = GAP(default_terms(soap, settings["two_body"]), zeta=settings["zeta"],
                        n_sparse=settings["n_sparse"], **params)
            model.fit(train)
            err = error_metrics(model.predict(valid), valid, model.label_keys)
            valid_err = {key: err[key] for key in ("energy_rmse_per_atom", "forces_rmse",
                                                   "energy_mae_per_atom", "forces_mae")}
            if ref is None:
                ref = valid_err
            ratios = [valid_err["energy_rmse_per_atom"] / max(ref["energy_rmse_per_atom"], 1e-300)]
            if np.isfinite(valid_err["forces_rmse"]) and np.isfinite(ref["forces_rmse"]):
                ratios.append(valid_err["forces_rmse"] / max(ref["forces_rmse"], 1e-300))
            trials.append({"settings": dict(settings), "valid": valid_err,
                           "score": float(np.mean(ratios)),
                           "seconds": time.perf_counter() - t0})
            logger.info("tune trial %d: %s score %.4g (E %.4g eV/atom, F %.4g eV/Å)", k,
                        settings, trials[-1]["score"], valid_err["energy_rmse_per_atom"],
                        valid_err["forces_rmse"])
            bar.update(1)
    best = min(trials, key=lambda t: t["score"])["settings"]
    logger.info("tune: %d trials in %.1f s; chose %s", len(trials),
                time.perf_counter() - t_start, best)
    return TuneResult(best=best, trials=trials, n_train=len(train) - len(iso),
                      n_valid=len(valid), time_budget=float(time_budget))
