"""Learning curves and capacity curves of GAP models.

A learning curve refits clones of a model on random training subsets of increasing
size and records, for every refit, the train and test errors, the mean predicted
uncertainties on the test set, the learned noise and the fit time
(:func:`learning_curve` → :class:`~gapkit.diagnostics.results.LearningCurve`);
``curve.diagnose()`` (:mod:`gapkit.diagnostics.diagnosis`) says what limits the model.
:func:`capacity_curve` is a validation curve over one model parameter (or a tuple
of parameters varied together), e.g. ``n_sparse`` or
``("descriptor__n_max", "descriptor__l_max")``.

Units: energies in eV per structure (``energy_*``) or eV/atom (``*_per_atom``),
forces in eV/Å, times in s. Everything here is deterministic given
``random_state`` (an int, a ``numpy.random.RandomState`` or None, as in
:func:`gapkit.utils.check_random_state`).
"""

from __future__ import annotations

import time
from os import PathLike
from typing import Sequence, Union

import numpy as np
from ase import Atoms
from sklearn.base import clone

from gapkit.data import as_frame_list, split_isolated
from gapkit.diagnostics.evaluation import evaluate
from gapkit.diagnostics.metric_names import ERROR_METRICS, METRICS, STD_METRICS
from gapkit.diagnostics.results import CapacityCurve, LearningCurve
from gapkit.model import GAP, noise_level
from gapkit.progress import progress_bar
from gapkit.utils import check_random_state, seeded_clone, to_jsonable

#: What ``train`` and ``test`` may be: structures, one structure, or extxyz path(s).
Frames = Union[Sequence[Atoms], Atoms, str, PathLike]
#: A seed, a legacy numpy ``RandomState`` or None (see :func:`gapkit.utils.check_random_state`).
RandomStateLike = Union[int, np.random.RandomState, None]


def _split_frames(frames) -> tuple[list[Atoms], list[Atoms]]:
    """(structures, isolated atoms) of a frame list, a single Atoms or a path."""
    return split_isolated(as_frame_list(frames))


def _fit_and_score(model, train: list[Atoms], test: list[Atoms], with_std: bool,
                   eval_train: list[Atoms] | None = None) -> dict:
    """Fit ``model`` on ``train``; one value of every name in :data:`METRICS`."""
    t0 = time.perf_counter()
    model.fit(train)
    dt = time.perf_counter() - t0
    fitted = [a for a in train if a.info.get("config_type") != "isolated_atom"]
    on_train = evaluate(model, eval_train if eval_train is not None else fitted, with_std=False)
    on_test = evaluate(model, test, with_std=with_std)
    stds = on_test.mean_stds()
    out = {f"train_{k}": on_train.errors[k] for k in ERROR_METRICS}
    out.update({f"test_{k}": on_test.errors[k] for k in ERROR_METRICS})
    out.update({f"test_{k}": stds[k] for k in STD_METRICS})
    out["noise_energy"] = noise_level(model.noise_, "energy", float("nan"))
    out["noise_forces"] = noise_level(model.noise_, "forces", float("nan"))
    out["delta"] = float(model.delta_)
    out["n_sparse_points"] = float(len(model.alpha_))
    out["fit_time"] = float(dt)
    return out


def _model_meta(model) -> dict:
    """The model's parameters as JSON-able values (the descriptor object left out)."""
    params = {}
    for k, v in model.get_params(deep=True).items():
        if k == "descriptor":
            continue
        params[k] = to_jsonable(v)
    return params


def _test_meta(test: list[Atoms]) -> dict:
    """Test-set size and mean atom counts (for the energy noise floor)."""
    nat = np.array([len(a) for a in test], dtype=np.float64)
    return {"n_test": len(test), "test_n_atoms_mean": float(nat.mean()),
            "test_inv_n_atoms_mean": float(np.mean(1.0 / nat))}


def _progress(total: int, desc: str, progress: bool | None):
    """A progress bar over ``total`` refits (:func:`gapkit.progress.progress_bar`:
    ``progress=None`` shows it in a terminal or Jupyter)."""
    return progress_bar(total=total, desc=desc, unit="fit", progress=progress)


# ----------------------------------------------------------------------------------
# learning curve
# ----------------------------------------------------------------------------------
def learning_curve(model: GAP, train: Frames, test: Frames, sizes: Sequence[int] | None = None, repeats: int = 3,
                   random_state: RandomStateLike = None, return_std: bool = True,
                   n_train_eval: int | None = None,
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
    random_state : int, numpy RandomState or None
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

    rs = check_random_state(random_state)
    values = {k: np.full((len(sizes), repeats), np.nan) for k in METRICS}
    last = None
    bar = _progress(len(sizes) * repeats, "learning curve", progress)
    try:
        for i, size in enumerate(sizes):
            for j in range(repeats):
                idx = np.sort(rs.choice(n, size=int(size), replace=False))
                subset = [pool[k] for k in idx]
                ev = None
                if n_train_eval is not None and size > n_train_eval:
                    ev = [subset[k] for k in np.sort(rs.choice(size, n_train_eval, replace=False))]
                m = seeded_clone(model, rs)
                res = _fit_and_score(m, subset + iso, test_frames, return_std, ev)
                for k, v in res.items():
                    values[k][i, j] = v
                last = m
                bar.set_postfix(N=int(size), test_F_rmse=f"{res['test_forces_rmse']:.3g}")
                bar.update(1)
    finally:
        bar.close()
    meta = {"n_pool": n, "n_isolated": len(iso), "repeats": repeats,
            "random_state": to_jsonable(random_state),  # a RandomState as its repr
            "return_std": bool(return_std), "model": type(model).__name__,
            "params": _model_meta(model), **_test_meta(test_frames)}
    return LearningCurve(sizes=sizes, metrics=values, meta=meta, model=last)


# ----------------------------------------------------------------------------------
# capacity (validation) curve
# ----------------------------------------------------------------------------------
def capacity_curve(model: GAP, train: Frames, test: Frames, param_name: str | tuple[str, ...],
                   values: Sequence, repeats: int = 1, random_state: RandomStateLike = None,
                   train_size: int | None = None, return_std: bool = True,
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
    random_state : int, numpy RandomState or None
        The only source of randomness (subsets and model seeds).
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
    rs = check_random_state(random_state)
    out = {k: np.full((len(values), repeats), np.nan) for k in METRICS}
    bar = _progress(len(values) * repeats, "capacity curve", progress)
    try:
        for i, v in enumerate(values):
            vv = tuple(v) if len(names) > 1 else (v,)
            for j in range(repeats):
                if train_size is not None:
                    idx = np.sort(rs.choice(n, size=int(train_size), replace=False))
                    subset = [pool[k] for k in idx]
                else:
                    subset = pool
                m = clone(model)
                m.set_params(**dict(zip(names, vv)))
                if repeats > 1 or m.random_state is None:
                    m.set_params(random_state=int(rs.randint(2 ** 31 - 1)))
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
