"""Every plotting function draws into a given Agg axes, returns it and labels both axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gapkit import FlagThreshold, plotting  # noqa: E402
from gapkit import diagnostics as D  # noqa: E402
from gapkit.metrics import reference_arrays  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas():
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def assert_labelled(ax, returned):
    assert returned is ax
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip()
    assert ax.has_data() or ax.lines or ax.collections


@pytest.fixture(scope="module")
def prediction(small_model, test_frames):
    frames = test_frames[:4]
    pred, std = small_model.predict(frames, return_std=True)
    return frames, pred, std


def synthetic_curve():
    sizes = np.array([10, 20, 40])
    metrics = {k: np.full((3, 2), np.nan) for k in D.METRICS}
    for split, base in (("train", 0.1), ("test", 0.3)):
        for m in D.ERROR_METRICS:
            metrics[f"{split}_{m}"] = base * np.array([[1.0, 1.1], [0.8, 0.85], [0.7, 0.7]])
    metrics["test_forces_std"] = np.full((3, 2), 0.2)
    metrics["test_energy_std_per_atom"] = np.full((3, 2), 0.2)
    metrics["noise_forces"] = np.full((3, 2), 0.02)
    metrics["noise_energy"] = np.full((3, 2), 0.001)
    return D.LearningCurve(sizes=sizes, metrics=metrics,
                           meta={"test_n_atoms_mean": 9.0, "test_inv_n_atoms_mean": 1 / 9})


@pytest.mark.parametrize("prop, per_atom, with_std", [("energy", True, True), ("energy", False, False),
                                                       ("forces", False, True)])
def test_parity(ax, prediction, prop, per_atom, with_std):
    frames, pred, std = prediction
    out = plotting.parity(pred, frames, prop, std=std if with_std else None, ax=ax, per_atom=per_atom)
    assert_labelled(ax, out)
    unit = "eV/Å" if prop == "forces" else ("eV/atom" if per_atom else "eV")
    assert f"({unit})" in ax.get_xlabel() and f"({unit})" in ax.get_ylabel()
    with pytest.raises(ValueError, match="property"):
        plotting.parity(pred, frames, "stress", ax=ax)


def test_parity_creates_a_figure_without_ax(prediction):
    frames, pred, _ = prediction
    out = plotting.parity(pred, frames)
    assert out.figure is not None and out.get_xlabel()
    plt.close(out.figure)


@pytest.mark.parametrize("metric", ["forces_rmse", "energy_rmse_per_atom", "test_forces_mae"])
def test_learning_curve(ax, metric):
    curve = synthetic_curve()
    out = plotting.learning_curve(curve, metric=metric, ax=ax)
    assert_labelled(ax, out)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "train" in labels and "test" in labels and any("noise floor" in t for t in labels)
    with pytest.raises(ValueError, match="metric"):
        plotting.learning_curve(curve, metric="fit_time", ax=ax)


def test_capacity_curve(ax):
    curve = synthetic_curve()
    cap = D.CapacityCurve(param_name=("descriptor__n_max", "descriptor__l_max"),
                          param_values=[(3, 2), (4, 3), (6, 4)], metrics=curve.metrics)
    out = plotting.capacity_curve(cap, ax=ax)
    assert_labelled(ax, out)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3 / 2", "4 / 3", "6 / 4"]


def test_calibration_and_error_vs_sigma(ax, rng):
    std = rng.uniform(0.05, 0.5, 500)
    err = rng.normal(size=500) * std
    out = plotting.calibration(err, std, ax=ax, label="forces")
    plotting.calibration([err[:250], err[250:]], [std[:250], std[250:]], ax=ax, label="again")
    assert_labelled(ax, out)
    assert ax.get_xlim() == (0.0, 1.0)
    fig, ax2 = plt.subplots()
    out2 = plotting.error_vs_sigma(err, std, ax=ax2, unit="eV/Å")
    assert_labelled(ax2, out2)
    assert "eV/Å" in ax2.get_xlabel() and ax2.get_xscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="differ"):
        plotting.calibration(err, std[:10], ax=ax)


def test_uncertainty_plots_on_model_output(ax, prediction):
    frames, pred, std = prediction
    ref = reference_arrays(frames)
    err = [p - r for p, r in zip(pred.forces, ref["forces"])]
    assert_labelled(ax, plotting.calibration(err, std.forces, ax=ax))
    fig, ax2 = plt.subplots()
    assert_labelled(ax2, plotting.error_vs_sigma(err, std.forces, ax=ax2))
    plt.close(fig)


def test_sigma_trajectory(ax):
    values = np.r_[np.full(20, 0.05), np.linspace(0.05, 0.5, 20)]
    out = plotting.sigma_trajectory(values, threshold=0.2, ax=ax, time=0.5 * np.arange(40),
                                    marks={"heating": 10.0})
    assert_labelled(ax, out)
    assert ax.get_xlabel() == "time (fs)" and "eV/Å" in ax.get_ylabel()
    assert any("flagged" in t.get_text() for t in ax.get_legend().get_texts())

    # a GAPCalculator flag log and a relative FlagThreshold resolved with the noise
    log = [{"max_forces_std_epistemic": v, "flagged": bool(v > 0.2)} for v in values]
    fig, ax2 = plt.subplots()
    out2 = plotting.sigma_trajectory(log, threshold=FlagThreshold(relative=10), ax=ax2,
                                     noise={"energy": 0.001, "forces": 0.02})
    assert_labelled(ax2, out2)
    assert ax2.get_xlabel() == "MD step"
    assert any("threshold 0.2" in t.get_text() for t in ax2.get_legend().get_texts())
    plt.close(fig)
    with pytest.raises(ValueError, match="time"):
        plotting.sigma_trajectory(values, time=np.arange(3), ax=ax)


def test_reliability_draws_the_calibrated_band(ax, rng):
    std = np.exp(rng.uniform(np.log(0.02), np.log(1.0), 3000))
    err = rng.normal(size=std.size) * std
    out = plotting.reliability(err, std, n_bins=8, ax=ax, unit="eV/Å")
    assert_labelled(ax, out)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "eV/Å" in ax.get_xlabel() and "eV/Å" in ax.get_ylabel()
    bands = [c for c in ax.collections if c.get_label().startswith("calibrated σ")]
    assert len(bands) == 1
    # the band surrounds the diagonal: at every bin low < RMS σ < high
    (x, y), = [ln.get_xydata().T for ln in ax.lines if "ENCE" in ln.get_label()]
    assert len(x) == 8 and np.all(np.diff(x) > 0)
    verts = bands[0].get_paths()[0].vertices
    for xi in x:
        at = verts[np.isclose(verts[:, 0], xi), 1]
        assert at.min() < xi < at.max()
    with pytest.raises(ValueError, match="finite and positive"):
        plotting.reliability(err, np.zeros_like(std), ax=ax)


def test_reliability_on_model_output(ax, prediction):
    frames, pred, std = prediction
    ref = reference_arrays(frames)
    err = [p - r for p, r in zip(pred.forces, ref["forces"])]
    assert_labelled(ax, plotting.reliability(err, std.forces, ax=ax, n_draws=20))
