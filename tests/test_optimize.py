"""optimize=True never hurts: bounded evidence, checked against the defaults on held-out rows."""

import warnings

import numpy as np
import pytest

from gapkit import GAP, SOAP, load
from gapkit.model import training
from gapkit.model.hyperparameters import (NOISE_BOUNDS, choose_hyperparameters, noise_bounds,
                                          validation_rmse)

from conftest import SMALL_SOAP


@pytest.fixture(scope="module")
def over_smoothing_case(train_frames):
    """24 frames, 200 sparse points per species: with the noise bounds removed the
    evidence explains model error as noise (sigma_F ~ 10x the default)."""
    est = GAP(SOAP(**SMALL_SOAP), n_sparse=200, random_state=0, calibrate=False)
    train, val = training.split_validation(train_frames[:24], 0.3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state, groups, val_groups = training.fit_with_valid_rows(est, train, True, None, val, None)
    sigmas = {g: training.initial_noise(est, g.kind) for g in groups}
    return est, state, groups, val_groups, sigmas


def test_evidence_without_bounds_over_smooths_and_the_choice_keeps_the_defaults(
        over_smoothing_case):
    _, state, groups, val_groups, sigmas = over_smoothing_case
    choice = choose_hyperparameters(groups, state.kmm_cholesky, 1.0, sigmas, val_groups,
                                    bounds={})
    rows = {r["name"]: r for r in choice.report["candidates"]}
    default, evidence = rows["default"]["valid_rmse"], rows["evidence"]["valid_rmse"]
    # the construct: the unbounded evidence optimum is worse than the defaults ...
    assert rows["evidence"]["noise"]["forces"] > 5 * sigmas[next(g for g in sigmas
                                                                  if g.kind == "forces")]
    assert evidence["forces"] > 1.03 * default["forces"]
    # ... and the choice is never worse than the defaults in any label kind
    chosen = rows[choice.report["chosen"]]["valid_rmse"]
    assert all(chosen[k] <= default[k] * (1 + 1e-12) for k in default)
    assert choice.report["method"] == "validation"


def test_validation_rmse_equals_the_prediction_error(over_smoothing_case, train_frames):
    est, state, groups, val_groups, _ = over_smoothing_case
    _, val = training.split_validation(train_frames[:24], 0.3, 0)
    model = GAP(SOAP(**SMALL_SOAP))
    model.state_ = state
    pred = model.predict(val)
    f_err = np.concatenate([p - a.get_forces() for p, a in zip(pred.forces, val)]).ravel()
    rmse = validation_rmse(val_groups, state.alpha, state.delta)
    assert rmse["forces"] == pytest.approx(np.sqrt(np.mean(f_err ** 2)), rel=1e-8)
    e_err = [(p - a.get_potential_energy()) / np.sqrt(len(a)) for p, a in zip(pred.energy, val)]
    assert rmse["energy"] == pytest.approx(np.sqrt(np.mean(np.square(e_err))), rel=1e-8)


def test_noise_bounds_are_relative_to_the_defaults_and_the_labels(over_smoothing_case):
    _, state, groups, _, sigmas = over_smoothing_case
    b = noise_bounds(groups, 2.0, sigmas)
    assert b["delta"] == (pytest.approx(0.2), pytest.approx(200.0))
    for g, s0 in sigmas.items():
        lo, hi = b[g]
        assert lo == pytest.approx(NOISE_BOUNDS[0] * s0)
        assert s0 <= hi <= NOISE_BOUNDS[1] * s0 + 1e-15


def test_gap_optimize_reports_its_choice_and_is_not_worse_on_the_split(train_frames, tmp_path):
    frames = train_frames[:30]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GAP(SOAP(**SMALL_SOAP), n_sparse=100, random_state=0, optimize=True,
                    valid_fraction=0.3).fit(frames)
    rep = model.extra_["hyperparameters"]
    assert rep["method"] == "validation"
    rows = {r["name"]: r for r in rep["candidates"]}
    assert set(rows) == {"default", "evidence", "midpoint"}
    chosen, default = rows[rep["chosen"]]["valid_rmse"], rows["default"]["valid_rmse"]
    assert all(chosen[k] <= default[k] * (1 + 1e-12) for k in default)
    assert model.delta_ == pytest.approx(rows[rep["chosen"]]["delta"])
    for label, (lo, hi) in rep["bounds"].items():
        if label != "delta":
            assert lo * (1 - 1e-9) <= model.noise_[label] <= hi * (1 + 1e-9)
    # stored with the model
    assert load(model.save(tmp_path / "m.npz")).extra_["hyperparameters"]["chosen"] == rep["chosen"]


def test_optimize_without_a_validation_split_warns_and_takes_the_bounded_evidence(train_frames):
    with pytest.warns(UserWarning, match="cannot calibrate .* or check the optimised"):
        model = GAP(SOAP(**SMALL_SOAP), n_sparse=20, random_state=0,
                    optimize=True).fit(train_frames[:4])
    assert model.extra_["hyperparameters"]["method"] == "evidence"
    assert model.extra_["hyperparameters"]["chosen"] == "evidence"
