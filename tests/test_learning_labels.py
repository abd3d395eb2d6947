"""Learning curves per label set (energy, forces, both), the power-law extrapolation,
their plots and ``gapkit learning-curve --labels ... --target-forces ...``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase.io import write
from conftest import SMALL_SOAP
from threadpoolctl import threadpool_limits

from gapkit import GAP, SOAP
from gapkit import diagnostics as D
from gapkit import plotting
from gapkit.cli import learning_curve as lc_cli
from gapkit.diagnostics import extrapolation as X
from gapkit.diagnostics import label_sets as L

SIZES = np.array([10, 20, 40, 80, 160, 320])


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas():
    with threadpool_limits(limits=1):
        yield


def tiny_gap(**kw):
    kw.setdefault("n_sparse", 20)
    kw.setdefault("random_state", 0)
    kw.setdefault("calibrate", False)
    return GAP(SOAP(**SMALL_SOAP), **kw)


@pytest.fixture(scope="module")
def ethanol(train_frames, test_frames):
    """Ethanol frames of the default data (one composition): a pool of 16, 4 test."""
    eth = [a for a in train_frames if a.get_chemical_formula() == "C2H6O"]
    te = [a for a in test_frames if a.get_chemical_formula() == "C2H6O"]
    return eth[:16], te[:4]


@pytest.fixture(scope="module")
def curves(ethanol):
    pool, test = ethanol
    return D.label_curves(tiny_gap(), pool, test, sizes=(4, 8, 16), repeats=1, random_state=0,
                          return_std=True, progress=False)


# ----------------------------------------------------------------------------------
# label sets
# ----------------------------------------------------------------------------------
def test_parse_labels():
    assert L.parse_labels("energy,forces,energy+forces") == ["energy", "forces", "energy+forces"]
    assert L.parse_labels(" Forces+Energy , energy,energy ") == ["energy+forces", "energy"]
    assert L.parse_labels(["forces"]) == ["forces"]
    with pytest.raises(ValueError, match="unknown label set 'virial'"):
        L.parse_labels("energy,virial")
    with pytest.raises(ValueError, match="no label set"):
        L.parse_labels(" , ")


def test_model_for_and_count_labels(ethanol):
    pool, _ = ethanol
    base = tiny_gap()
    assert L.model_for(base, "energy").use_forces is False
    f = L.model_for(base, "forces")
    assert f.energy_noise == L.FORCES_ONLY_ENERGY_NOISE and f.use_forces and not f.use_virials
    same = L.model_for(base, "energy+forces").get_params(deep=False)
    assert {k: v for k, v in same.items() if k != "descriptor"} == \
        {k: v for k, v in base.get_params(deep=False).items() if k != "descriptor"}
    with pytest.raises(ValueError, match="optimize=False"):
        L.model_for(tiny_gap(optimize=True), "forces")
    with pytest.raises(ValueError, match="use_forces=True"):
        L.model_for(tiny_gap(use_forces=False), "forces")
    n_atoms = sum(len(a) for a in pool[:5])
    assert L.count_labels(pool[:5], "energy", L.model_for(base, "energy")) == 5
    assert L.count_labels(pool[:5], "forces", f) == 3 * n_atoms
    assert L.count_labels(pool[:5], "energy+forces", base) == 5 + 3 * n_atoms


def test_label_curves_same_subsets_and_label_counts(curves, ethanol):
    assert list(curves) == ["energy", "forces", "energy+forces"]
    n_e, n_f, n_ef = (curves[k].metrics["n_labels"] for k in curves)
    # the same subsets: energy+forces labels = energy labels + force labels, exactly
    np.testing.assert_array_equal(n_ef, n_e + n_f)
    np.testing.assert_array_equal(n_e[:, 0], [4, 8, 16])
    np.testing.assert_array_equal(n_f[:, 0], 27 * np.array([4, 8, 16]))  # 9 atoms x 3
    for name, c in curves.items():
        assert c.meta["labels"] == name
        assert np.all(np.isfinite(c.test_forces_rmse)) and np.all(np.isfinite(c.test_energy_rmse))
    assert curves["forces"].meta["params"]["energy_noise"] == L.FORCES_ONLY_ENERGY_NOISE
    assert curves["energy"].meta["params"]["use_forces"] is False
    # a forces-only model has no energy σ; the others do
    assert np.all(np.isnan(curves["forces"].test_energy_std_per_atom))
    assert np.all(np.isfinite(curves["energy+forces"].test_energy_std_per_atom))
    # trained on forces, a model fits them far better than one that never saw a force
    assert np.all(curves["forces"].train_forces_rmse < 0.7 * curves["energy"].train_forces_rmse)
    # and one trained on energies fits them far better than its own forces would suggest
    assert np.all(curves["energy"].train_energy_rmse_per_atom
                  < 0.1 * curves["forces"].train_energy_rmse_per_atom)


def test_forces_only_offsets_are_refitted(ethanol):
    pool, _ = ethanol
    m = L.model_for(tiny_gap(), "forces").fit(pool[:8])
    before = np.array([a.get_potential_energy() for a in pool[:8]]) - m.predict(pool[:8], forces=False).energy
    L.refit_offsets(m, pool[:8])
    after = np.array([a.get_potential_energy() for a in pool[:8]]) - m.predict(pool[:8], forces=False).energy
    # one composition: the least-squares offset removes the mean residual, and no more
    assert abs(after.mean()) < 1e-8 * max(1.0, abs(before.mean()))
    np.testing.assert_allclose(after - after.mean(), before - before.mean(), atol=1e-8)
    assert m.e0_.method.endswith("+offset")


def test_learning_curve_labels_argument(ethanol):
    pool, test = ethanol
    c = D.learning_curve(tiny_gap(), pool, test, sizes=(4, 8), repeats=1, random_state=0,
                         return_std=False, labels="energy", progress=False)
    assert c.meta["labels"] == "energy" and c.metrics["n_labels"].ravel().tolist() == [4, 8]
    with pytest.raises(ValueError, match="one label set"):
        D.learning_curve(tiny_gap(), pool, test, sizes=(4,), labels="energy,forces")
    with pytest.raises(ValueError, match="unknown label set"):
        D.label_curves(tiny_gap(), pool, test, sizes=(4,), labels="stress")
    with pytest.raises(ValueError, match="optimize=False"):
        D.label_curves(tiny_gap(optimize=True), pool, test, sizes=(4,), labels="forces")


# ----------------------------------------------------------------------------------
# extrapolation on synthetic curves with a known law
# ----------------------------------------------------------------------------------
def synthetic(a=0.5, b=0.6, c=0.01, noise=0.02, repeats=3, seed=0):
    rng = np.random.default_rng(seed)
    true = a * SIZES.astype(float) ** -b + c
    return true[:, None] * np.exp(rng.normal(0, noise, (len(SIZES), repeats))) if noise else \
        np.repeat(true[:, None], repeats, axis=1)


def test_fit_power_law_recovers_a_known_law():
    law = X.fit_power_law(SIZES, synthetic(noise=0))
    assert (law.a, law.b, law.c) == pytest.approx((0.5, 0.6, 0.01), rel=1e-3)
    for (a, b, c) in ((2.0, 0.35, 0.05), (0.3, 1.0, 0.0), (1.0, 0.5, 0.002)):
        ext = X.extrapolate_errors(SIZES, synthetic(a, b, c, noise=0.02, seed=3), n_boot=50)
        assert ext.law.b == pytest.approx(b, abs=0.12)
        assert ext.law.a == pytest.approx(a, rel=0.35)
        assert ext.law.c == pytest.approx(c, abs=0.1 * (a * 320 ** -b + c))
        lo, hi = ext.floor_interval
        assert lo <= ext.law.c <= hi and lo >= 0


def test_target_frames_and_verdicts():
    errs = synthetic(noise=0.01, seed=1)
    ext = X.extrapolate_errors(SIZES, errs, target=0.02, n_boot=100)
    exact = (0.5 / (0.02 - 0.01)) ** (1 / 0.6)  # 679 structures
    assert ext.verdict == "reachable"
    assert ext.frames_needed == pytest.approx(exact, rel=0.2)
    lo, hi = ext.frames_interval
    assert lo < ext.frames_needed < hi and np.isfinite(hi)
    assert ext.law.frames_for(ext.law(500.0)) == pytest.approx(500.0)
    assert "N ≈" in ext.message
    # a target under the floor of 0.01 eV/Å
    below = X.extrapolate_errors(SIZES, errs, target=0.005, n_boot=50)
    assert below.verdict == "below the floor" and below.frames_needed == float("inf")
    assert "below the floor" in below.message
    # just above the fitted floor: reachable by the law, not within the interval
    edge = X.extrapolate_errors(SIZES, synthetic(noise=0.03, seed=2), n_boot=100,
                                target=X.fit_power_law(SIZES, synthetic(noise=0.03, seed=2)).c * 1.02)
    assert edge.verdict == "unreachable within the interval"
    assert edge.frames_interval[1] == float("inf") and 0 < edge.fraction_unreachable < 1
    # already met at the largest size
    assert X.extrapolate_errors(SIZES, errs, target=0.1, n_boot=20).verdict == "reached"
    json.dumps(ext.to_dict(), allow_nan=False)
    json.dumps(below.to_dict(), allow_nan=False)


def test_extrapolation_band_covers_the_truth():
    errs = synthetic(noise=0.03, seed=4)
    ext = X.extrapolate_errors(SIZES, errs, n_boot=200)
    n = np.array([20.0, 320.0, 1000.0])
    lo, hi = ext.band(n)
    truth = 0.5 * n ** -0.6 + 0.01
    assert np.all(lo < hi) and np.all((lo <= truth * 1.03) & (truth <= hi * 1.03))


def test_extrapolation_errors():
    with pytest.raises(ValueError, match="at least 3 sizes"):
        X.extrapolate_errors([10, 20], [[0.1], [0.08]])
    with pytest.raises(ValueError, match="at least 3 sizes"):
        X.extrapolate_errors([10, 20, 40], [[0.1], [np.nan], [0.05]])
    with pytest.raises(ValueError, match="positive error"):
        X.extrapolate_errors(SIZES, synthetic(), target=-0.1)
    with pytest.raises(ValueError, match="n_boot"):
        X.extrapolate_errors(SIZES, synthetic(), n_boot=2)
    with pytest.raises(ValueError, match="sizes but errors"):
        X.extrapolate_errors(SIZES, synthetic()[:4])
    with pytest.raises(ValueError, match="metric"):
        X.extrapolate_errors(SIZES, synthetic(), metric="speed")


def test_diagnose_reports_the_extrapolation():
    errs = synthetic(noise=0.01, seed=1)
    metrics = {k: np.full(errs.shape, np.nan) for k in D.METRICS}
    metrics["test_forces_rmse"] = errs
    metrics["train_forces_rmse"] = errs * 0.3
    metrics["noise_forces"] = np.full(errs.shape, 0.002)
    metrics["test_energy_rmse_per_atom"] = errs / 20
    curve = D.LearningCurve(sizes=SIZES, metrics=metrics, meta={"params": {}})
    d = curve.diagnose(targets={"forces_rmse": 0.005, "energy_rmse_per_atom": 0.002})
    assert set(d.extrapolations) == {"forces_rmse", "energy_rmse_per_atom"}
    assert d.extrapolations["forces_rmse"].verdict == "below the floor"
    assert "below the floor" in d.message and "a N^-b + c" in d.message
    assert d.extrapolations["energy_rmse_per_atom"].target == 0.002
    payload = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert payload["extrapolations"]["forces_rmse"]["law"]["c"] == pytest.approx(0.01, rel=0.3)
    assert curve.diagnose().extrapolations["forces_rmse"].target is None
    with pytest.raises(ValueError, match="positive error"):
        curve.diagnose(targets={"forces_rmse": 0})
    # fewer than 3 sizes: no extrapolation, still a diagnosis
    two = D.LearningCurve(sizes=SIZES[:2], metrics={k: v[:2] for k, v in metrics.items()}, meta={})
    assert two.diagnose().extrapolations == {}


# ----------------------------------------------------------------------------------
# plots and the command line
# ----------------------------------------------------------------------------------
def test_label_curves_figure(curves):
    fig = plotting.label_curves_figure(curves, targets={"forces_rmse": 0.05}, n_boot=20)
    axes = fig.get_axes()
    assert len(axes) == 4
    assert axes[1].get_xlabel().startswith("labels used")
    assert len(axes[0].get_legend().get_texts()) == 3
    ax = plotting.learning_curve(curves["energy+forces"], extrapolation=curves["energy+forces"]
                                 .extrapolate("forces_rmse", n_boot=20))
    assert any(t.get_text().startswith("fit:") for t in ax.get_legend().get_texts())
    bare = D.LearningCurve(sizes=[1, 2], metrics={"test_forces_rmse": [[0.2], [0.1]]})
    with pytest.raises(ValueError, match="n_labels"):
        plotting.label_curves({"energy+forces": bare}, x="labels")
    with pytest.raises(ValueError, match="configurations"):
        plotting.label_curves(curves, x="time")


def test_cli_labels_and_targets(ethanol, tmp_path, capsys):
    pool, test = ethanol
    tr, te = tmp_path / "train.xyz", tmp_path / "test.xyz"
    write(tr, pool[:8])
    write(te, test[:3])
    parser = argparse.ArgumentParser(prog="gapkit")
    lc_cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "lc"
    args = parser.parse_args(["learning-curve", str(tr), "--test", str(te), "--sizes", "2,4,8",
                              "--repeats", "1", "-o", str(out), "--no-std", "--labels",
                              "energy,forces,energy+forces", "--target-forces", "0.001",
                              "--target-energy", "0.5", "--json", "--n-max", "4", "--l-max", "3",
                              "--r-cut", "4.0", "--n-sparse", "20"])
    assert lc_cli.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["labels"] == ["energy", "forces", "energy+forces"]
    for name, c in report["curves"].items():
        ext = c["diagnosis"]["extrapolations"]["forces_rmse"]
        assert ext["target"] == 0.001 and ext["verdict"] in X.VERDICTS
        assert c["diagnosis"]["extrapolations"]["energy_rmse_per_atom"]["verdict"] == "reached"
    assert report["curves"]["forces"]["n_labels"] == [54, 108, 216]
    for name in ("learning_curve.json", "learning_curve_energy.json", "learning_curve_forces.csv",
                 "learning_labels.png", "learning_curve.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "learning_curve_forces.json").read_text())
    assert saved["meta"]["labels"] == "forces"
    assert saved["diagnosis"]["extrapolations"]["forces_rmse"]["target"] == 0.001
    for bad in (["--labels", "energy,stress"], ["--target-forces", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["learning-curve", str(tr), *bad])
