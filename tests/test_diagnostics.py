"""Learning curves, capacity curves, the bias/variance/noise diagnosis and its CLI."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from ase.io import write
from conftest import SMALL_SOAP
from sklearn.base import clone
from sklearn.model_selection import ShuffleSplit, cross_validate
from sklearn.model_selection import learning_curve as sk_learning_curve
from threadpoolctl import threadpool_limits

from gapkit import GAP, SOAP
from gapkit import diagnostics as D
from gapkit.cli import app as cli
from gapkit.cli import learning_curve as lc_cli


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas():
    # tiny matrices: threads only cost time, badly so on a small machine shared with other jobs
    with threadpool_limits(limits=1):
        yield


def tiny_gap(**kw):
    kw.setdefault("n_sparse", 20)
    kw.setdefault("random_state", 0)
    return GAP(SOAP(**SMALL_SOAP), **kw)


@pytest.fixture(scope="module")
def pool(train_frames):
    return train_frames[::10]  # 20 frames, ethanol and methanol


@pytest.fixture(scope="module")
def test_set(test_frames):
    return test_frames[::18]  # 4 frames, ethanol and methanol


@pytest.fixture(scope="module")
def curve(pool, test_set):
    return D.learning_curve(tiny_gap(), pool, test_set, sizes=(5, 10), repeats=2, random_state=0,
                            progress=False)


# ----------------------------------------------------------------------------------
# learning curve
# ----------------------------------------------------------------------------------
def test_learning_curve_shapes_and_values(curve, pool):
    assert curve.sizes.tolist() == [5, 10]
    assert curve.repeats == 2
    assert set(D.METRICS) <= set(curve.metrics)
    for name, v in curve.metrics.items():
        assert v.shape == (2, 2), name
        assert np.all(np.isfinite(v)), name
    for split in ("train", "test"):
        for m in D.ERROR_METRICS:
            assert np.all(curve.metrics[f"{split}_{m}"] > 0)
        assert np.all(curve.metrics[f"{split}_forces_mae"] <= curve.metrics[f"{split}_forces_rmse"])
    # a 9-atom ethanol has a 9x larger per-structure energy error than per atom at most
    assert np.all(curve.test_energy_rmse_per_atom < curve.test_energy_rmse)
    # total std >= epistemic std; the assumed noise is what the model was given
    assert np.all(curve.test_forces_std >= curve.test_forces_std_epistemic)
    assert np.all(curve.test_energy_std_per_atom >= curve.test_energy_std_epistemic_per_atom)
    np.testing.assert_allclose(curve.noise_forces, 0.02)
    np.testing.assert_allclose(curve.noise_energy, 0.001)
    assert np.all(curve.fit_time > 0)
    assert np.all(curve.n_sparse_points >= 1)
    assert curve.mean("test_forces_rmse").shape == (2,)
    assert np.all(curve.std("test_forces_rmse") >= 0)
    assert curve.meta["n_pool"] == len(pool) and curve.meta["n_test"] == 4
    assert hasattr(curve.model, "alpha_")  # the last model of the largest size
    with pytest.raises(KeyError, match="unknown metric"):
        curve.mean("nope")


def test_learning_curve_is_reproducible(pool, test_set):
    kw = dict(sizes=[4], repeats=1, random_state=3, return_std=False, progress=False)
    a = D.learning_curve(GAP(SOAP(**SMALL_SOAP), n_sparse=15), pool, test_set[:3], **kw)
    b = D.learning_curve(GAP(SOAP(**SMALL_SOAP), n_sparse=15), pool, test_set[:3], **kw)
    for name in D.METRICS:
        if name != "fit_time":
            np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=name)
    assert np.all(np.isnan(a.test_forces_std))  # return_std=False


def test_learning_curve_rejects_bad_sizes(pool, test_set):
    with pytest.raises(ValueError, match="larger than the training set"):
        D.learning_curve(tiny_gap(), pool, test_set, sizes=[5, 50], progress=False)
    with pytest.raises(ValueError, match=">= 1"):
        D.learning_curve(tiny_gap(), pool, test_set, sizes=[0, 5], progress=False)
    with pytest.raises(ValueError, match="repeats"):
        D.learning_curve(tiny_gap(), pool, test_set, sizes=[5], repeats=0, progress=False)


def test_round_trips(curve, tmp_path):
    d = curve.to_dict()
    json.dumps(d)  # JSON-able with the standard library
    assert set(d) == {"size", "repeat", *curve.metrics}
    assert all(isinstance(v, list) and len(v) == 4 for v in d.values())
    assert d["size"] == [5, 5, 10, 10] and d["repeat"] == [0, 1, 0, 1]

    path = curve.to_csv(tmp_path / "lc.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and float(rows[3]["test_forces_rmse"]) == pytest.approx(
        curve.test_forces_rmse[1, 1])
    back = D.LearningCurve.from_csv(path, meta=curve.meta)
    back_d = D.LearningCurve.from_dict(d, meta=curve.meta)
    jpath = curve.to_json(tmp_path / "lc.json")
    payload = json.loads(jpath.read_text())
    assert payload["diagnosis"]["kind"] in ("bias", "variance", "noise", "unclear")
    back_j = D.LearningCurve.from_json(jpath)
    for other in (back, back_d, back_j):
        np.testing.assert_array_equal(other.sizes, curve.sizes)
        for name, v in curve.metrics.items():
            np.testing.assert_allclose(other.metrics[name], v, rtol=1e-12, err_msg=name)
    assert back_j.meta["n_test"] == curve.meta["n_test"]


# ----------------------------------------------------------------------------------
# diagnosis on synthetic curves
# ----------------------------------------------------------------------------------
def synthetic(test, train, noise_f, optimize=True, sizes=(25, 50, 100, 200)):
    n = len(sizes)
    metrics = {k: np.full((n, 2), np.nan) for k in D.METRICS}
    # two repeats scattered +-2 % around the given means
    for name, vals in (("test_forces_rmse", test), ("train_forces_rmse", train)):
        v = np.asarray(vals, dtype=float)[:, None]
        metrics[name] = np.hstack([v * 0.98, v * 1.02])
    metrics["noise_forces"] = np.full((n, 2), noise_f)
    metrics["noise_energy"] = np.full((n, 2), 0.001)
    metrics["test_energy_rmse_per_atom"] = np.full((n, 2), 0.01)
    metrics["train_energy_rmse_per_atom"] = np.full((n, 2), 0.005)
    meta = {"params": {"optimize": optimize}, "test_inv_n_atoms_mean": 1 / 9, "test_n_atoms_mean": 9}
    return D.LearningCurve(sizes=np.array(sizes), metrics=metrics, meta=meta)


def test_diagnose_variance():
    c = synthetic(test=[0.40, 0.29, 0.21, 0.15], train=[0.03, 0.04, 0.045, 0.05], noise_f=0.01)
    d = c.diagnose()
    assert d.kind == "variance" and d.leaning == "variance"
    assert d.slope == pytest.approx(np.polyfit(np.log([50, 100, 200]), np.log([0.29, 0.21, 0.15]), 1)[0])
    assert d.gap_ratio == pytest.approx(3.0) and d.floor_ratio == pytest.approx(15.0)
    assert d.sizes_used == [50, 100, 200] and d.metric == "forces_rmse"
    assert "more data" in d.message and str(d) == d.message


def test_diagnose_bias():
    d = D.diagnose(synthetic(test=[0.30, 0.26, 0.25, 0.248], train=[0.20, 0.22, 0.23, 0.235],
                             noise_f=0.02))
    assert d.kind == "bias"
    assert -0.1 < d.slope <= 0 and d.gap_ratio < 1.5 and d.floor_ratio > 10
    assert "capacity" in d.message and "n_max" in d.message


def test_diagnose_noise():
    d = D.diagnose(synthetic(test=[0.10, 0.06, 0.045, 0.042], train=[0.02, 0.03, 0.035, 0.038],
                             noise_f=0.04))
    assert d.kind == "noise"
    assert d.floor_ratio == pytest.approx(0.042 / 0.04)
    assert "noise floor" in d.message
    # an assumed (not learned) noise says so
    d2 = D.diagnose(synthetic(test=[0.10, 0.06, 0.045, 0.042], train=[0.02, 0.03, 0.035, 0.038],
                              noise_f=0.04, optimize=False))
    assert d2.kind == "noise" and "optimize=True" in d2.message


def test_diagnose_unclear_and_fallbacks():
    slow = synthetic(test=[0.40, 0.36, 0.32, 0.29], train=[0.30, 0.29, 0.28, 0.27], noise_f=0.01)
    d = slow.diagnose()
    assert d.kind == "unclear" and -0.2 < d.slope <= -0.1 and d.leaning is None
    # plateau with a large gap leans to regularisation / distribution shift
    d = synthetic(test=[0.30, 0.29, 0.29, 0.29], train=[0.05] * 4, noise_f=0.01).diagnose()
    assert d.kind == "unclear" and "regularisation" in d.message and d.leaning == "variance"
    # still falling steeply but train close to test: more data helps
    d = synthetic(test=[0.30, 0.17, 0.10, 0.078], train=[0.13, 0.08, 0.064, 0.059], noise_f=0.01).diagnose()
    assert d.kind == "unclear" and d.leaning == "variance" and "more data" in d.message
    # no forces: falls back to the per-atom energy error
    c = synthetic(test=[0.3] * 4, train=[0.2] * 4, noise_f=0.01)
    c.metrics["test_forces_rmse"][:] = np.nan
    assert c.diagnose().metric == "energy_rmse_per_atom"
    with pytest.raises(ValueError, match="metric"):
        c.diagnose(metric="nope")
    # the noise floor of the per-atom energy error: sigma_E sqrt(<1/N>)
    np.testing.assert_allclose(c.noise_floor("energy_rmse_per_atom"), 0.001 / 3)
    np.testing.assert_allclose(c.noise_floor("forces_mae"), 0.01 * np.sqrt(2 / np.pi))


# ----------------------------------------------------------------------------------
# scikit-learn interoperability
# ----------------------------------------------------------------------------------
def test_sklearn_learning_curve_and_cross_validate(pool):
    cv = ShuffleSplit(n_splits=2, test_size=3, random_state=0)
    frames = pool[::2]
    sizes, train_scores, test_scores = sk_learning_curve(tiny_gap(n_sparse=10), frames, None,
                                                         train_sizes=[3, 6], cv=cv)
    assert sizes.tolist() == [3, 6]
    assert train_scores.shape == test_scores.shape == (2, 2)
    assert np.all(np.isfinite(test_scores)) and np.all(test_scores < 0)  # -force RMSE
    res = cross_validate(tiny_gap(n_sparse=10), frames, None, cv=cv)
    assert np.all(np.isfinite(res["test_score"])) and np.all(res["test_score"] < 0)


def test_clone_and_nested_params():
    m = tiny_gap(n_sparse=33)
    p = m.get_params(deep=True)
    assert p["n_sparse"] == 33 and p["descriptor__n_max"] == SMALL_SOAP["n_max"]
    c = clone(m)
    c.set_params(descriptor__n_max=3, descriptor__l_max=2, zeta=2)
    assert (c.descriptor.n_max, c.descriptor.l_max, c.zeta) == (3, 2, 2)
    assert (m.descriptor.n_max, m.zeta) == (SMALL_SOAP["n_max"], 4.0)  # the original is untouched
    assert c.descriptor is not m.descriptor


# ----------------------------------------------------------------------------------
# capacity curve
# ----------------------------------------------------------------------------------
def test_capacity_curve(pool, test_set, tmp_path):
    cc = D.capacity_curve(tiny_gap(), pool[:6], test_set[:2], "n_sparse", [5, 15], repeats=2,
                          random_state=0, train_size=4, progress=False)
    assert cc.param_values == [5, 15] and cc.repeats == 2
    for name, v in cc.metrics.items():
        assert v.shape == (2, 2), name
    assert np.all(cc.n_sparse_points[0] < cc.n_sparse_points[1])
    assert np.all(np.isfinite(cc.test_forces_rmse))
    assert cc.best() in (5, 15)
    d = cc.to_dict()
    json.dumps(d)
    assert d["n_sparse"] == [5, 5, 15, 15]
    back = D.CapacityCurve.from_csv(cc.to_csv(tmp_path / "cc.csv"), "n_sparse")
    assert back.param_values == [5, 15]
    np.testing.assert_allclose(back.test_forces_rmse, cc.test_forces_rmse)

    names = ("descriptor__n_max", "descriptor__l_max")
    cc2 = D.capacity_curve(tiny_gap(), pool[:4], test_set[:2], names, [(3, 2), (4, 3)],
                           return_std=False, progress=False)
    assert cc2.param_values == [(3, 2), (4, 3)] and cc2.labels == ["3 / 2", "4 / 3"]
    back2 = D.CapacityCurve.from_dict(cc2.to_dict(), names)
    assert back2.param_values == [(3, 2), (4, 3)]
    with pytest.raises(ValueError, match="no parameter"):
        D.capacity_curve(tiny_gap(), pool, test_set, "descriptor__bogus", [1], progress=False)
    with pytest.raises(ValueError, match="tuple of 2"):
        D.capacity_curve(tiny_gap(), pool, test_set, names, [3], progress=False)


# ----------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------
SMALL_ARGS = ["--n-max", "4", "--l-max", "3", "--r-cut", "4.0", "--n-sparse", "20", "--e0", "lstsq"]


def lc_parser():
    parser = argparse.ArgumentParser(prog="gapkit")
    sub = parser.add_subparsers(dest="command", required=True)
    lc_cli.add_parser(sub)
    return parser


@pytest.fixture
def tiny_files(tmp_path, pool, test_set):
    tr, te = tmp_path / "train.xyz", tmp_path / "test.xyz"
    write(tr, pool[::3])  # 7 frames
    write(te, test_set[:3])
    return tr, te


def test_cli_runner_writes_outputs(tiny_files, tmp_path, capsys):
    tr, te = tiny_files
    out = tmp_path / "lc"
    args = lc_parser().parse_args(["learning-curve", str(tr), "--test", str(te), "--sizes", "3,6",
                                   "--repeats", "1", "-o", str(out), "--seed", "1", *SMALL_ARGS])
    assert args.n_sparse == 20 and args.sizes == [3, 6]
    assert lc_cli.run(args) == 0
    text = capsys.readouterr().out
    assert "Diagnosis:" in text
    for name in ("learning_curve.csv", "learning_curve.json", "learning_curve.png", "parity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    payload = json.loads((out / "learning_curve.json").read_text())
    assert payload["diagnosis"]["kind"] in ("bias", "variance", "noise", "unclear")
    assert payload["data"]["size"] == [3, 6] and payload["meta"]["n_test"] == 3
    with open(out / "learning_curve.csv") as fh:
        assert len(fh.read().strip().splitlines()) == 3


def test_cli_errors(tiny_files, tmp_path):
    tr, te = tiny_files
    parser = lc_parser()
    args = parser.parse_args(["learning-curve", str(tr), "--test", str(te), "--sizes", "4,80",
                              "-o", str(tmp_path / "x"), *SMALL_ARGS])
    with pytest.raises(ValueError, match="larger than the training set"):
        lc_cli.run(args)
    args = parser.parse_args(["learning-curve", str(tr), "-o", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="--test"):
        lc_cli.run(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["learning-curve", str(tr), "--sizes", "4,a"])


def test_cli_main_when_wired(tiny_files, tmp_path):
    sub_actions = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert sub_actions and "learning-curve" in sub_actions[0].choices
    tr, te = tiny_files
    out = tmp_path / "lc_main"
    rc = cli.main(["learning-curve", str(tr), "--test", str(te), "--sizes", "3,6", "--repeats", "1",
                   "-o", str(out), "--no-plots", "--no-std", *SMALL_ARGS])
    assert rc == 0 and (out / "learning_curve.json").is_file()
    assert cli.main(["learning-curve", str(tr), "--test", str(te), "--sizes", "99",
                     "-o", str(out), *SMALL_ARGS]) == 2
