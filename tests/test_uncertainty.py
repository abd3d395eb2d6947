"""Epistemic/aleatoric uncertainty, flags and calibration on fitted models."""

import numpy as np
import pytest
from ase import Atoms

from gapkit import GAP, SOAP, FlagThreshold
from gapkit.gp.kernels import dot_kernel, species_mask
from gapkit.model import VarianceScale
from gapkit.model.calibration import _Block, fit_exponent_and_scales, fit_fast_force_scales
from gapkit.model.variance import Term3
from gapkit.uncertainty import calibration_metrics

from conftest import SMALL_SOAP


def test_epistemic_variance_vanishes_at_training_points(train_frames):
    frames = train_frames[:6]
    model = GAP(SOAP(**SMALL_SOAP), n_sparse=10_000, energy_noise=1e-5, force_noise=1e-4,
                delta=1.0, jitter=1e-10).fit(frames)
    _, std = model.predict(frames, return_std=True)
    far = frames[0].copy()
    far.positions *= 1.3
    _, std_far = model.predict([far], return_std=True)
    assert np.max(std.energy_epistemic) < 1e-3
    assert std_far.energy_epistemic[0] > 20 * np.max(std.energy_epistemic)
    # the aleatoric part is exactly the learned noise
    np.testing.assert_allclose(std.energy_aleatoric, 1e-5 * np.sqrt([len(a) for a in frames]))
    np.testing.assert_allclose(std.forces_aleatoric[0], 1e-4)


def test_sigma_is_large_far_from_the_data(small_model, test_frames):
    _, std_in = small_model.predict(test_frames[:5], return_std=True)
    dimer = Atoms("CO", positions=[[0, 0, 0], [0.5, 0, 0]])
    _, std_out = small_model.predict([dimer], return_std=True)
    per_atom_in = std_in.energy_epistemic / np.array([len(a) for a in test_frames[:5]])
    assert std_out.energy_epistemic[0] / 2 > 5 * per_atom_in.max()
    mean_in = np.mean([s.mean() for s in std_in.forces_epistemic])
    assert std_out.forces_epistemic[0].max() > 5 * mean_in


def test_variance_of_sum_is_sum_of_covariance_blocks(small_model, test_frames):
    atoms = test_frames[2]
    cov = small_model.local_energy_covariance(atoms)
    _, std = small_model.predict([atoms], return_std=True, forces=False)
    assert np.allclose(cov, cov.T)
    assert std.energy_epistemic[0] ** 2 == pytest.approx(cov.sum(), rel=1e-8)
    np.testing.assert_allclose(std.energies_epistemic[0] ** 2, np.diag(cov), rtol=1e-8, atol=1e-14)


def test_force_std_matches_finite_difference_of_covariance(small_model, test_frames):
    """Var(F_ja) from the kernel Hessian equals the FD second derivative of the energy covariance."""
    atoms = test_frames[1]
    _, std = small_model.predict([atoms], return_std=True)
    j, a, h = 2, 1, 1e-4

    def cov_e(d1, d2):
        p, q = atoms.copy(), atoms.copy()
        p.positions[j, a] += d1
        q.positions[j, a] += d2
        both = p + q  # energies of two displaced copies, cross-covariance from the joint matrix
        both.positions[len(atoms):] += 50.0
        C = small_model.local_energy_covariance(both)
        n = len(atoms)
        return C[:n, n:].sum()

    fd = (cov_e(h, h) - cov_e(h, -h) - cov_e(-h, h) + cov_e(-h, -h)) / (4 * h * h)
    assert std.forces_epistemic[0][j, a] ** 2 == pytest.approx(fd, rel=2e-3, abs=1e-10)


def _gp_draw_z_scores(train_frames, rng, calibrate: bool, n_draws: int = 12,
                      valid_fraction: float = 0.2) -> np.ndarray:
    """z-scores of held-out energies drawn from the model's own prior (draws pooled).

    MD frames are strongly correlated, so the z-scores of one draw are too; pooling
    independent draws makes the check sharp.
    """
    soap = SOAP(["H", "C", "O"], **SMALL_SOAP)
    frames = [a.copy() for a in train_frames[:100]]
    for a in frames:
        a.calc = None
    descs = [soap.compute(a, gradients=False) for a in frames]
    Q = np.vstack([d.q for d in descs])
    Z = np.concatenate([d.numbers for d in descs])
    owner = np.repeat(np.arange(len(frames)), [len(a) for a in frames])
    delta, noise, zeta = 0.5, 0.01, 2.0
    K = delta ** 2 * dot_kernel(Q, Q, zeta) * species_mask(Z, Z)
    Lk = np.linalg.cholesky(K + 1e-8 * np.eye(len(K)))
    n_atoms = np.array([len(a) for a in frames])
    zs = []
    for draw in range(n_draws):
        eps = Lk @ rng.normal(size=len(K))
        y = np.bincount(owner, weights=eps) + noise * np.sqrt(n_atoms) * rng.normal(size=len(frames))
        for a, e in zip(frames, y):
            a.info["energy"] = float(e)
        model = GAP(soap, zeta=zeta, delta=delta, energy_noise=noise, use_forces=False,
                    n_sparse=10_000, e0="zero", calibrate=calibrate,
                    valid_fraction=valid_fraction, random_state=draw).fit(frames[:50])
        pred, std = model.predict(frames[50:], return_std=True, forces=False)
        zs.append((pred.energy - y[50:]) / std.energy)
    return np.concatenate(zs)


def test_z_scores_on_a_synthetic_gp_draw_are_standard_normal(train_frames, rng):
    """The raw DTC std is exact for data drawn from the model's own prior."""
    z = _gp_draw_z_scores(train_frames, rng, calibrate=False)
    assert abs(z.mean()) < 0.2
    assert 0.85 < z.std() < 1.15
    assert 0.9 < np.mean(np.abs(z) < 1.96) < 0.99


def test_calibrated_std_on_a_synthetic_gp_draw_has_zms_one(train_frames, rng):
    """The default calibration (held-out split) keeps an exact std calibrated: ZMS ~ 1 and
    nominal coverage on held-out draws."""
    # 20 of 50 frames held out per draw: 3 scales fitted on 10 energies would be noisy
    z = _gp_draw_z_scores(train_frames, rng, calibrate=True, n_draws=8, valid_fraction=0.4)
    # ~1.27 measured: scales fitted on 20 energies per draw are slightly optimistic
    assert 0.75 < np.mean(z ** 2) < 1.35
    assert 0.9 < np.mean(np.abs(z) < 1.96) < 0.985


def test_flags_absolute_and_relative(small_model, test_frames):
    frames = test_frames[:3] + [Atoms("CO", positions=[[0, 0, 0], [0.6, 0, 0]])]
    _, std = small_model.predict(frames, return_std=True)
    big = max(s.max() for s in std.forces_epistemic[:3])
    fl = FlagThreshold(forces=1.01 * big).evaluate(std, frames, small_model.noise_)
    assert fl.structures.tolist() == [False, False, False, True]
    assert fl.atoms[3].all()
    fl = FlagThreshold(relative=1e-9).evaluate(std, frames, small_model.noise_)
    assert fl.structures.all()
    assert FlagThreshold.parse("forces=0.2,energy=0.01") == FlagThreshold(forces=0.2, energy_per_atom=0.01)
    assert FlagThreshold.parse("3x").relative == 3.0
    with pytest.raises(ValueError, match="Cannot parse flag threshold"):
        FlagThreshold.parse("banana=1")
    with pytest.raises(ValueError, match="needs at least one"):
        FlagThreshold()


def test_calibration_metrics_known_cases(rng):
    s = rng.uniform(0.5, 2.0, size=20000)
    e = s * rng.normal(size=s.size)
    m = calibration_metrics(e, s)
    assert m["z_std"] == pytest.approx(1.0, abs=0.02)
    assert m["coverage_95"] == pytest.approx(0.95, abs=0.01)
    assert m["coverage_68"] == pytest.approx(0.6827, abs=0.015)
    assert m["miscalibration_area"] < 0.01
    assert m["spearman"] > 0.3
    over = calibration_metrics(e, 3 * s)
    assert over["z_std"] == pytest.approx(1 / 3, abs=0.02) and over["coverage_95"] > 0.99
    assert over["miscalibration_area"] > 0.2
    with pytest.raises(ValueError, match="finite and positive"):
        calibration_metrics(e, np.zeros_like(s))


def test_variance_scales_are_recovered(rng):
    """Synthetic errors drawn with known (exponent, posterior, aleatoric) scales."""
    n = 40000
    prior = np.ones(n)
    rho = rng.uniform(0.01, 1.0, size=n)
    nys = 0.5 * rho  # delta = 1: V_N = rho * prior * delta**2 ... scaled by 0.5 prior
    t = Term3(nystrom=nys, posterior=rng.uniform(0.5, 2.0, size=n) * rng.choice([0.1, 10.0], n),
              prior=0.5 * prior)
    a = np.full(n, 0.3)
    var = nys * rho ** 2.0 + 2.0 * t.posterior + 0.5 * a
    e = np.sqrt(var) * rng.normal(size=n)
    beta, sc = fit_exponent_and_scales({"x": _Block(e, t, a, 1.0)})
    assert beta[0] == pytest.approx(2.0, abs=0.3)
    assert sc["x"].posterior == pytest.approx(2.0, rel=0.1)
    assert sc["x"].aleatoric == pytest.approx(0.5, rel=0.25)
    # noise-free labels: the aleatoric scale goes (close) to zero
    e0 = np.sqrt(nys * rho ** 2.0 + 2.0 * t.posterior) * rng.normal(size=n)
    _, sc0 = fit_exponent_and_scales({"x": _Block(e0, t, a, 1.0)})
    assert sc0["x"].aleatoric < 0.05
    # the fast force map follows the exact force variance: synthetic exact terms built
    # from neighbourhood sums with a known prior ratio 0.7 and exponent 1.5 below the
    # knee (the largest neighbourhood rho, where the map returns to the raw term)
    k_nb = rng.uniform(1.0, 2.0, 3000)
    rho = rng.uniform(1e-4, 0.2, 3000)
    fast = Term3(nystrom=k_nb * rho, posterior=rng.uniform(0.1, 1.0, 3000), prior=k_nb)
    exact = Term3(nystrom=0.7 * k_nb * rho * (rho / rho.max()) ** 1.5,
                  posterior=4.0 * fast.posterior, prior=0.7 * k_nb)
    s, ratio = fit_fast_force_scales(exact, fast, VarianceScale(1.0, 2.0, 0.5, 0.0), 1.0)
    assert s.nystrom == pytest.approx(0.7, rel=1e-6) and s.exponent == pytest.approx(1.5, rel=1e-6)
    assert s.knee == pytest.approx(rho.max()) and s.aleatoric == 0.5
    assert s.posterior == pytest.approx(8.0, rel=1e-6)
    assert ratio[0] == pytest.approx(1.0, rel=1e-6) and ratio[2] == pytest.approx(1.0, rel=1e-6)


def test_recalibration_is_stored_and_applied(small_model, test_frames, tmp_path):
    import copy

    from gapkit import load

    model = copy.deepcopy(small_model)
    val, test = test_frames[:25], test_frames[25:35]
    model.recalibrate(val)
    cal = model.calibration_
    assert cal.calibrated and "25 validation frames" in cal.source
    assert not small_model.calibration_.calibrated
    assert cal.energy != VarianceScale() and cal.forces != VarianceScale()
    pred, std = model.predict(val, return_std=True)
    e_ref = np.array([a.get_potential_energy() for a in val])
    f_ref = np.concatenate([a.get_forces().ravel() for a in val])
    z_e = (pred.energy - e_ref) / std.energy
    z_f = (pred.forces_flat.ravel() - f_ref) / np.concatenate([s.ravel() for s in std.forces])
    assert 0.7 < z_e.std() < 1.3 and 0.8 < z_f.std() < 1.2
    _, std_raw = small_model.predict(test, return_std=True)
    _, std_new = model.predict(test, return_std=True)
    assert not np.allclose(std_raw.energy, std_new.energy)
    path = model.save(tmp_path / "m.npz")
    _, std2 = load(path).predict(test, return_std=True)
    np.testing.assert_allclose(std2.energy, std_new.energy, rtol=1e-10)
    np.testing.assert_allclose(std2.forces[0], std_new.forces[0], rtol=1e-10)


@pytest.fixture(scope="module")
def medium_model(train_frames):
    """A calibrated GAP on 160 default-data frames with 200 CUR points (module-wide)."""
    from gapkit import GAP, SOAP

    return GAP(SOAP(**SMALL_SOAP), n_sparse=200, e0="lstsq", random_state=0).fit(
        train_frames[:120] + train_frames[-40:])


def test_fast_force_std_tracks_the_exact_one(medium_model, test_frames):
    """The fast per-atom force std is an approximation of the exact (kernel Hessian) one:
    on new frames the two agree within a factor of a few, rank atoms alike overall, and
    both grow far from the data. (rMD17 ethanol, 800 frames: 5-95 % of fast/exact
    0.74-1.80, rank correlation 0.81. This 160-frame model: 0.77-0.88 over CUR seeds
    0-3; a 60-frame model with 60 points is too small to test it: 0.07-0.73.)"""
    from scipy.stats import spearmanr

    model = medium_model
    frames = test_frames[:12]
    far = test_frames[0].copy()
    far.positions *= 1.3  # every bond 30 % longer: far from the training data
    _, fast = model.predict(frames + [far], return_std=True, force_std="fast")
    _, exact = model.predict(frames + [far], return_std=True, force_std="exact")
    assert model.force_std_mode("fast") == "fast" and model.force_std_mode() == "exact"
    f = np.concatenate([s[:, 0] for s in fast.forces_epistemic[:-1]])
    e = np.sqrt(np.mean(np.concatenate(exact.forces_epistemic[:-1]) ** 2, axis=1))
    assert spearmanr(f, e)[0] > 0.5
    assert 0.2 < np.median(f / e) < 5.0
    for std in (fast, exact):
        typical = np.median([s.max() for s in std.forces_epistemic[:-1]])
        assert std.forces_epistemic[-1].max() > 2 * typical
    for lo, mid, hi in model.calibration_.fast_force_ratio.values():
        assert 0 < lo <= mid <= hi
    # energies do not depend on the force mode (to rounding: descriptors with and without
    # derivatives agree to ~1e-15, and the Nyström residual V_N = k** - k K^-1 k is a
    # cancelling difference raised to the calibrated exponent)
    np.testing.assert_allclose(fast.energy, exact.energy, rtol=1e-7)


def test_default_calibration_survives_save_and_load(calibrated_model, test_frames, tmp_path):
    from gapkit import load

    path = calibrated_model.save(tmp_path / "cal.npz")
    back = load(path)
    assert back.calibration_ == calibrated_model.calibration_
    _, s0 = calibrated_model.predict(test_frames[:3], return_std=True)
    _, s1 = back.predict(test_frames[:3], return_std=True)
    # K_MM's Cholesky factor is recomputed on load (format v4): stds equal to round-off
    np.testing.assert_allclose(s1.energy, s0.energy, rtol=1e-10)
    for a, b in zip(s0.forces, s1.forces):
        np.testing.assert_allclose(b, a, rtol=1e-10)
    assert back.flag_reference() == calibrated_model.flag_reference()


def test_learned_aleatoric_std_recovers_injected_label_noise(small_model, train_frames):
    """Forces = a smooth model's forces + N(0, 0.05**2) noise: the calibrated aleatoric
    force std recovers 0.05 eV/Å within 20 %; without noise it shrinks far below the
    default force_noise (the 'noise' was model error)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(7)
    teacher = small_model.predict(train_frames)
    got = {}
    for sigma in (0.05, 0.0):
        frames = []
        for a, e, f in zip(train_frames[::2], teacher.energy[::2], teacher.forces[::2]):
            b = a.copy()
            b.calc = SinglePointCalculator(
                b, energy=e + 1e-3 * np.sqrt(len(b)) * rng.normal(),
                forces=f + sigma * rng.normal(size=f.shape))
            frames.append(b)
        model = GAP(SOAP(**SMALL_SOAP), n_sparse=200, e0="lstsq", random_state=0).fit(frames)
        _, std = model.predict(frames[:3], return_std=True)
        got[sigma] = float(np.median(np.concatenate(std.forces_aleatoric)))
    assert got[0.05] == pytest.approx(0.05, rel=0.2)
    assert got[0.0] < 0.5 * 0.02
