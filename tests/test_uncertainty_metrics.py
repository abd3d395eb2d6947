"""Uncertainty metrics and their calibrated reference, on synthetic errors and end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from gapkit.cli import main
from gapkit.diagnostics.evaluation import CALIBRATION_REPORT_KEYS, calibration_warnings
from gapkit.uncertainty import (auroc_worst, coverage, ence, forces_ence, forces_spearman,
                                gaussian_nll, reference, spearman, zms, zms_by_species)

#: The fixed keys ``gapkit evaluate --json`` adds for the uncertainty metrics.
FIXED_KEYS = ("energy_zms", "forces_zms", "forces_zms_by_species", "energy_ence", "forces_ence",
              "forces_spearman", "energy_spearman", "energy_auroc_worst10", "energy_spearman_reference",
              "forces_spearman_reference", "energy_auroc_worst10_reference", "energy_ence_reference",
              "forces_ence_reference", "calibrated", "calibration_source", "energy_z_std",
              "energy_coverage_95", "forces_z_std", "forces_coverage_95", "energy_nll", "forces_nll")
FORCE_KEYS = ("forces_zms", "forces_zms_by_species", "forces_ence", "forces_spearman",
              "forces_spearman_reference", "forces_ence_reference", "forces_z_std",
              "forces_coverage_95", "forces_nll")
REFERENCED = {"spearman": spearman, "ence": ence, "auroc_worst": auroc_worst}


@pytest.fixture
def calibrated(rng):
    """2000 errors drawn from N(0, σ²) with σ spread over a factor 40."""
    s = np.exp(rng.uniform(np.log(0.05), np.log(2.0), 2000))
    return s * rng.normal(size=s.size), s


@pytest.fixture
def force_set(rng):
    """600 atoms, components sharing one σ per atom (the fast mode), calibrated errors."""
    s = np.repeat(np.exp(rng.uniform(np.log(0.02), np.log(1.0), (600, 1))), 3, axis=1)
    return s * rng.normal(size=s.shape), s


def _inside(value, ref):
    mean, low, high = ref
    return low <= value <= high


def test_calibrated_errors_fall_inside_their_reference(calibrated):
    e, s = calibrated
    assert zms(e, s) == pytest.approx(1.0, abs=0.08)
    assert _inside(zms(e, s), reference(zms, s))
    assert coverage(e, s, 0.95) == pytest.approx(0.95, abs=0.015)
    assert coverage(e, s, 0.6827) == pytest.approx(0.6827, abs=0.03)
    for name, stat in REFERENCED.items():
        ref = reference(stat, s)
        assert ref[1] < ref[0] < ref[2], name
        assert _inside(stat(e, s), ref), (name, stat(e, s), ref)
    # a calibrated σ spread this widely ranks errors well, and the reference says how well
    assert reference(spearman, s)[1] > 0.4 and reference(auroc_worst, s)[1] > 0.7
    # the ENCE of a calibrated σ on a finite set is not zero: the reference knows it
    assert 0.0 < reference(ence, s)[1]


def test_the_reference_interval_covers_about_90_percent(rng):
    s = rng.uniform(0.1, 1.0, 300)
    ref = reference(zms, s, n_draws=400, random_state=1)
    hits = [_inside(zms(s * rng.normal(size=s.size), s), ref) for _ in range(200)]
    assert 0.82 <= np.mean(hits) <= 0.97


def test_overestimated_sigma(calibrated):
    """σ three times too large: ZMS ≈ 1/9, ENCE far outside the reference, ranking intact."""
    e, s = calibrated
    big = 3 * s
    assert zms(e, big) == pytest.approx(1 / 9, rel=0.08)
    assert not _inside(zms(e, big), reference(zms, big))
    e_ref = reference(ence, big)
    assert ence(e, big) == pytest.approx(2 / 3, abs=0.05)
    assert ence(e, big) > 5 * e_ref[2]
    assert coverage(e, big, 0.95) > 0.999
    assert gaussian_nll(e, big) > gaussian_nll(e, s)
    # a scale does not change the ranking
    assert spearman(e, big) == pytest.approx(spearman(e, s))
    assert auroc_worst(e, big) == pytest.approx(auroc_worst(e, s))


def test_sigma_unrelated_to_the_errors_ranks_at_chance(calibrated, rng):
    e, s = calibrated
    shuffled = rng.permutation(s)
    for name, chance in (("spearman", 0.0), ("auroc_worst", 0.5)):
        stat = REFERENCED[name]
        value, ref = stat(e, shuffled), reference(stat, shuffled)
        assert value == pytest.approx(chance, abs=0.07), name
        assert value < ref[1] - 0.15, (name, value, ref)


def test_reference_is_reproducible_per_seed(calibrated):
    _, s = calibrated
    a = reference(ence, s, n_draws=50, random_state=7)
    assert reference(ence, s, n_draws=50, random_state=7) == a
    assert reference(ence, s, n_draws=50, random_state=8) != a
    assert reference(ence, s, n_draws=50, random_state=np.random.RandomState(7)) == a
    assert len(a) == 3 and a[1] <= a[0] <= a[2]


def test_ence_by_hand():
    """Two bins by σ: RMV 1 with RMSE 2, RMV 2 with RMSE 2 -> (1 + 0) / 2."""
    s = np.array([1.0, 1.0, 2.0, 2.0])
    e = np.array([2.0, -2.0, 2.0, -2.0])
    assert ence(e, s, n_bins=2) == pytest.approx(0.5)
    assert ence(e, s, n_bins=1) == pytest.approx(abs(np.sqrt(2.5) - 2) / np.sqrt(2.5))
    # more bins than values: one value a bin
    assert ence(e, s, n_bins=10) == pytest.approx(0.5)
    assert zms(e, s) == pytest.approx((4 + 4 + 1 + 1) / 4)


def test_auroc_worst_by_hand():
    e = np.array([0.1, 0.2, 0.3, 5.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert auroc_worst(e, 1 + np.abs(e)) == pytest.approx(1.0)
    assert auroc_worst(e, 1 / (1 + np.abs(e))) == pytest.approx(0.0)
    assert auroc_worst(e, np.ones_like(e)) == pytest.approx(0.5)
    assert np.isnan(auroc_worst(e[:1], np.ones(1)))
    assert np.isnan(spearman(e, np.ones_like(e)))


def test_force_statistics_are_per_atom(force_set, rng):
    e, s = force_set
    assert _inside(forces_spearman(e, s), reference(forces_spearman, s))
    assert _inside(forces_ence(e, s), reference(forces_ence, s))
    assert reference(forces_spearman, s)[1] > 0.5
    assert forces_ence(e, 3 * s) > 5 * reference(forces_ence, 3 * s)[2]
    # per atom, not per component: the norm of the error vector against the RMS σ
    norm, sigma = np.linalg.norm(e, axis=1), np.sqrt(np.mean(s ** 2, axis=1))
    assert forces_spearman(e, s) == pytest.approx(spearman(norm, sigma))
    assert forces_ence(e, s, n_bins=5) == pytest.approx(ence(norm / np.sqrt(3), sigma, n_bins=5))
    assert forces_spearman(e, s) != pytest.approx(spearman(e, s), abs=1e-3)
    # per-species ZMS over components
    numbers = np.where(np.arange(len(e)) % 3 == 0, 8, 1)
    e2 = e.copy()
    e2[numbers == 8] *= 2
    by = zms_by_species(e2, s, numbers)
    assert list(by) == ["H", "O"]
    assert by["H"] == pytest.approx(1.0, abs=0.15) and by["O"] == pytest.approx(4.0, rel=0.15)
    assert by["H"] == pytest.approx(zms(e2[numbers == 1], s[numbers == 1]))


@pytest.mark.parametrize("call, match", [
    (lambda: zms(np.ones(3), np.ones(4)), "differ in shape"),
    (lambda: ence(np.ones(3), np.array([1.0, 0.0, 1.0])), "finite and positive"),
    (lambda: spearman(np.ones(3), -np.ones(3)), "finite and positive"),
    (lambda: auroc_worst(np.ones(3), np.ones(3), fraction=1.5), "fraction"),
    (lambda: coverage(np.ones(3), np.ones(3), level=95), "level"),
    (lambda: gaussian_nll(np.array([np.nan]), np.ones(1)), "errors must be finite"),
    (lambda: zms(np.ones(0), np.ones(0)), "at least one value"),
    (lambda: forces_ence(np.ones((4, 2)), np.ones((4, 2))), r"\(n_atoms, 3\)"),
    (lambda: forces_spearman(np.ones((4, 3)), np.ones((4, 1))), "differ in shape"),
    (lambda: zms_by_species(np.ones((4, 3)), np.ones((4, 3)), [1, 1]), "numbers"),
    (lambda: reference(zms, np.zeros(3)), "finite and positive"),
    (lambda: reference(zms, np.ones(3), n_draws=0), "n_draws"),
    (lambda: ence(np.ones(3), np.ones(3), n_bins=0), "n_bins"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_calibration_warnings():
    assert calibration_warnings({"energy_z_std": 1.0, "forces_z_std": 1.9}) == []
    msgs = calibration_warnings({"energy_z_std": 3.0, "forces_z_std": 0.3})
    assert len(msgs) == 2 and "energy z std 3.00" in msgs[0] and "over-confident" in msgs[0]
    assert "forces z std 0.30" in msgs[1] and "under-confident" in msgs[1]
    assert calibration_warnings({"energy_z_std": None, "forces_z_std": float("nan")}) == []


def _strict_json(text: str) -> dict:
    def reject(name):
        raise ValueError(f"non-finite number {name} in the JSON")
    return json.loads(text, parse_constant=reject)


def _energy_only(frames):
    out = []
    for a in frames:
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy())
        out.append(b)
    return out


def test_evaluate_json_has_the_fixed_keys(small_model, test_frames, tmp_path, capsys):
    model = tmp_path / "model.npz"
    small_model.save(model)
    full, energy_only = tmp_path / "full.xyz", tmp_path / "energy.xyz"
    write(full, test_frames[:12])
    write(energy_only, _energy_only(test_frames[:6]))

    assert main(["evaluate", str(model), str(full), "--json"]) == 0
    captured = capsys.readouterr()
    res = _strict_json(captured.out)
    assert set(CALIBRATION_REPORT_KEYS) <= set(res)
    for key in FIXED_KEYS:
        assert key in res, key
        if key != "calibration_source":
            assert res[key] is not None, key
    assert res["calibrated"] is False and res["calibration_source"] is None
    assert set(res["forces_zms_by_species"]) == {"H", "C", "O"}
    for key in ("energy_spearman", "forces_spearman", "energy_auroc_worst10", "energy_ence",
                "forces_ence"):
        mean, low, high = res[f"{key}_reference"]
        assert low <= mean <= high, key
    assert 0 < res["forces_zms"] and 0 <= res["forces_ence"]
    # the warning (stderr, not an error) is given exactly when a z std is off
    off = [p for p in ("energy", "forces") if not 0.5 <= res[f"{p}_z_std"] <= 2.0]
    for p in ("energy", "forces"):
        assert (f"warning: {p} z std" in captured.err) == (p in off), captured.err
    if off:
        assert f"gapkit recalibrate {model} VAL.xyz -o OUT" in captured.err

    assert main(["evaluate", str(model), str(energy_only), "--json"]) == 0
    res = _strict_json(capsys.readouterr().out)
    for key in FIXED_KEYS:
        assert key in res, key
    for key in FORCE_KEYS:
        assert res[key] is None, key
    assert res["forces_mae"] is None and res["energy_zms"] > 0
    assert len(res["energy_ence_reference"]) == 3

    assert main(["evaluate", str(model), str(full)]) == 0
    text = capsys.readouterr().out
    assert "ENCE" in text and "calibrated σ:" in text and "not calibrated" in text


def test_evaluate_warns_on_an_off_sigma(small_model, test_frames, tmp_path, capsys, monkeypatch):
    """σ shrunk a hundredfold: z std ≫ 2, a stderr warning names both properties."""
    import dataclasses

    import gapkit.diagnostics.evaluation as evaluation

    real = evaluation.predict_with_std

    def shrunk(model, frames, with_std=True):
        pred, std = real(model, frames, with_std)
        return pred, dataclasses.replace(std, energy=std.energy / 100,
                                         forces=[f / 100 for f in std.forces])

    monkeypatch.setattr(evaluation, "predict_with_std", shrunk)
    path = tmp_path / "model.npz"
    small_model.save(path)
    data = tmp_path / "test.xyz"
    write(data, test_frames[:8])
    assert main(["evaluate", str(path), str(data)]) == 0
    captured = capsys.readouterr()
    assert "warning: energy z std" in captured.err and "warning: forces z std" in captured.err
    assert "over-confident" in captured.err
    assert f"gapkit recalibrate {path} VAL.xyz -o OUT" in captured.err
    assert "z std" in captured.out  # the report itself still comes
