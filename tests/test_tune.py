"""gapkit tune: a time-budgeted search by validation error that writes a fit config."""

import json
import warnings

import pytest

from gapkit.cli.app import main
from gapkit.model.tuning import DEFAULTS, tune

TINY = {"r_cut": [3.5, 4.0], "sigma": [0.5], "n_max": [3, 4], "l_max": [2, 3],
        "zeta": [2.0, 4.0], "n_sparse": [40]}
BASE = {"r_cut": 4.0, "sigma": 0.5, "n_max": 4, "l_max": 3, "zeta": 4.0, "n_sparse": 40,
        "two_body": 10, "radial_scaling": 4.0}


@pytest.fixture(scope="module")
def result(train_frames):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tune(train_frames, time_budget=4.0, n_frames=24, space=TINY, base=BASE,
                    max_trials=4, random_state=0)


def test_tune_returns_the_setting_with_the_lowest_validation_error(result):
    assert 1 <= len(result.trials) <= 4
    assert result.trials[0]["settings"] == BASE and result.trials[0]["score"] == 1.0
    scores = [t["score"] for t in result.trials]
    best = result.trials[scores.index(min(scores))]
    assert result.best == best["settings"]
    # the score is the mean RMSE ratio to the first trial
    t, ref = best["valid"], result.trials[0]["valid"]
    assert best["score"] == pytest.approx(0.5 * (t["energy_rmse_per_atom"] / ref["energy_rmse_per_atom"]
                                                 + t["forces_rmse"] / ref["forces_rmse"]))
    assert set(result.best) == set(DEFAULTS)
    assert result.n_train + result.n_valid == 24


def test_the_written_config_is_read_by_fit(result, tmp_path, capsys):
    cfg = result.write_config(tmp_path / "tuned.json")
    assert json.loads(cfg.read_text()) == result.best
    assert main(["fit", "--config", str(cfg), "--dump-config"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    for key in ("r_cut", "sigma", "n_max", "l_max", "zeta", "two_body", "radial_scaling"):
        assert dumped[key] == result.best[key]
    assert dumped["n_sparse"] == result.best["n_sparse"]


def test_cli_tune_prints_the_table_and_writes_the_config(tmp_path, capsys):
    out = tmp_path / "t.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["tune", "--time-budget", "1", "--n-frames", "12", "--max-trials", "1",
                     "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 trials on 9 training / 3 validation frames" in text and "Chosen (*)" in text
    assert json.loads(out.read_text()) == DEFAULTS


def test_bad_tune_arguments_raise(train_frames):
    with pytest.raises(ValueError, match="time_budget must be a positive number"):
        tune(train_frames, time_budget=0)
    with pytest.raises(ValueError, match="unknown settings \\['cutoff'\\]"):
        tune(train_frames, space={"cutoff": [4.0]})
    with pytest.raises(ValueError, match="space\\['zeta'\\] must be a non-empty list"):
        tune(train_frames, space={"zeta": []})
    with pytest.raises(ValueError, match="cannot be split"):
        tune(train_frames[:3], n_frames=3)


def test_the_time_budget_stops_the_search_after_the_first_trial(train_frames):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tune(train_frames, time_budget=1e-6, n_frames=12, space=TINY, base=BASE)
    assert len(res.trials) == 1 and res.best == BASE
