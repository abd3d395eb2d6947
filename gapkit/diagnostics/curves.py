"""Learning curves and capacity curves of GAP models.

A learning curve refits clones of a model on random training subsets of increasing
size and records, for every refit, the train and test errors, the mean predicted
uncertainties on the test set, the learned noise and the fit time
(:func:`learning_curve` → :class:`~gapkit.diagnostics.results.LearningCurve`);
:func:`label_curves` does so for models trained on energies only, forces only and
both, on the same subsets (:mod:`gapkit.diagnostics.label_sets`);
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
from gapkit.diagnostics import label_sets
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
#: Recorded besides :data:`METRICS`: the number of labels a refit was trained on.
EXTRA_METRICS = ("n_labels",)


def _split_frames(frames) -> tuple[list[Atoms], list[Atoms]]:
    """(structures, isolated atoms) of a frame list, a single Atoms or a path."""
    return split_isolated(as_frame_list(frames))


def _fit_and_score(model, train: list[Atoms], test: list[Atoms], with_std: bool,
                   eval_train: list[Atoms] | None = None, labels: str = "energy+forces") -> dict:
    """Fit ``model`` on ``train``; one value of every name in :data:`METRICS`.

    ``labels`` is the label set the model was configured for (:func:`label_sets.model_for`):
    a forces-only model gets its energy offsets refitted and no energy σ.
    """
    t0 = time.perf_counter()
    model.fit(train)
    if labels == "forces":
        label_sets.refit_offsets(model, train)
    dt = time.perf_counter() - t0
    fitted = [a for a in train if a.info.get("config_type") != "isolated_atom"]
    on_train = evaluate(model, eval_train if eval_train is not None else fitted, with_std=False)
    on_test = evaluate(model, test, with_std=with_std)
    stds = on_test.mean_stds()
    out = {f"train_{k}": on_train.errors[k] for k in ERROR_METRICS}
    out.update({f"test_{k}": on_test.errors[k] for k in ERROR_METRICS})
    out.update({f"test_{k}": stds[k] for k in STD_METRICS})
    if labels == "forces":  # the energy σ of a model without energy rows means nothing
        out.update({f"test_{k}": float("nan") for k in STD_METRICS if k.startswith("energy")})
    out["noise_energy"] = noise_level(model.noise_, "energy", float("nan"))
    out["noise_forces"] = noise_level(model.noise_, "forces", float("nan"))
    out["delta"] = float(model.delta_)
    out["n_sparse_points"] = float(len(model.alpha_))
    out["fit_time"] = float(dt)
    out["n_labels"] = float(label_sets.count_labels(fitted, labels, model))
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
def _check_sizes(sizes, n: int, n_iso: int) -> np.ndarray:
    """The sorted distinct sizes, checked against the pool size ``n``."""
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
                         f"({n} structures{', isolated atoms not counted' if n_iso else ''}); "
                         f"use sizes <= {n}")
    return sizes


def learning_curve(model: GAP, train: Frames, test: Frames, sizes: Sequence[int] | None = None, repeats: int = 3,
                   random_state: RandomStateLike = None, return_std: bool = True,
                   n_train_eval: int | None = None,
                   progress: bool | None = None, labels: str = "energy+forces") -> LearningCurve:
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
    labels : {"energy+forces", "energy", "forces"}, default "energy+forces"
        The labels every refit trains on (see :mod:`gapkit.diagnostics.label_sets`:
        ``"energy+forces"`` is the model as given; a forces-only model reports the
        energy error after refitted per-species offsets). :func:`label_curves`
        computes several label sets on the same subsets.

    Returns
    -------
    LearningCurve
        With ``meta["labels"]`` and the metric ``n_labels`` (labels used per refit:
        1 per energy, 3N per forces, 6 per virial).

    Raises
    ------
    ValueError
        If a size is larger than the training pool or not positive, ``repeats < 1``,
        or ``labels`` is not one label set.
    """
    names = label_sets.parse_labels(labels)
    if len(names) != 1:
        raise ValueError(f"learning_curve: labels must be one label set, got {names}; "
                         "use label_curves() for several")
    return label_curves(model, train, test, sizes=sizes, repeats=repeats, random_state=random_state,
                        return_std=return_std, n_train_eval=n_train_eval, progress=progress,
                        labels=names)[names[0]]


def label_curves(model: GAP, train: Frames, test: Frames, sizes: Sequence[int] | None = None,
                 repeats: int = 3, random_state: RandomStateLike = None, return_std: bool = True,
                 n_train_eval: int | None = None, progress: bool | None = None,
                 labels: str | Sequence[str] = label_sets.LABEL_SETS) -> dict[str, LearningCurve]:
    """Learning curves of models trained on energies, forces, or both, on the same subsets.

    Every (size, repeat) draws one random subset and one model seed, and each label set
    is fitted on that same subset with that same seed, so the curves differ only in the
    labels used. Parameters as in :func:`learning_curve`; ``labels`` is a
    comma-separated string or a sequence of names of
    :data:`~gapkit.diagnostics.label_sets.LABEL_SETS` (default all three).

    Returns
    -------
    dict of str -> LearningCurve
        One curve per label set, in the order given. ``curve.mean("n_labels")`` is the
        x axis of a curve against labels.

    Raises
    ------
    ValueError
        As :func:`learning_curve`, and for an unknown label set or one the model
        cannot train on (``"forces"`` with ``optimize=True``).
    """
    names = label_sets.parse_labels(labels)
    pool, iso = _split_frames(train)
    test_frames, _ = _split_frames(test)
    if not pool:
        raise ValueError("learning_curve: the training set has no structures (besides isolated atoms)")
    n = len(pool)
    sizes = _check_sizes(sizes, n, len(iso))
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"learning_curve: repeats must be >= 1, got {repeats}")
    for name in names:  # configuration errors before any fit
        label_sets.model_for(model, name)

    rs = check_random_state(random_state)
    keys = METRICS + EXTRA_METRICS
    values = {name: {k: np.full((len(sizes), repeats), np.nan) for k in keys} for name in names}
    last = {}
    bar = _progress(len(sizes) * repeats * len(names), "learning curve", progress)
    try:
        for i, size in enumerate(sizes):
            for j in range(repeats):
                idx = np.sort(rs.choice(n, size=int(size), replace=False))
                subset = [pool[k] for k in idx]
                ev = None
                if n_train_eval is not None and size > n_train_eval:
                    ev = [subset[k] for k in np.sort(rs.choice(size, n_train_eval, replace=False))]
                seeded = seeded_clone(model, rs)
                for name in names:
                    m = label_sets.model_for(seeded, name)
                    res = _fit_and_score(m, subset + iso, test_frames, return_std, ev, labels=name)
                    for k, v in res.items():
                        values[name][k][i, j] = v
                    last[name] = m
                    bar.set_postfix(N=int(size), labels=name,
                                    test_F_rmse=f"{res['test_forces_rmse']:.3g}")
                    bar.update(1)
    finally:
        bar.close()
    meta = {"n_pool": n, "n_isolated": len(iso), "repeats": repeats,
            "random_state": to_jsonable(random_state),  # a RandomState as its repr
            "return_std": bool(return_std), "model": type(model).__name__,
            "params": _model_meta(model), **_test_meta(test_frames)}
    out = {}
    for name in names:
        meta_l = dict(meta, labels=name)
        if name != "energy+forces":
            meta_l["params"] = _model_meta(label_sets.model_for(model, name))
        out[name] = LearningCurve(sizes=sizes, metrics=values[name], meta=meta_l, model=last[name])
    return out


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
    out = {k: np.full((len(values), repeats), np.nan) for k in METRICS + EXTRA_METRICS}
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
