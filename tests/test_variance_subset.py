"""The variance basis: the std as the DTC std of a sub-model on M_v of the M sparse points."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.linalg import lapack

import gapkit
from gapkit import GAP, SOAP
from gapkit.cli.app import build_parser, main
from gapkit.cli.common import model_from_args
from gapkit.cli.config import resolve
from gapkit.gp import kernels, solver, subset, terms
from gapkit.model import variance
from gapkit.model.state import VarianceBasis

from conftest import SMALL_SOAP

N_V = 50  # of M = 180 (60 per species)


@pytest.fixture(scope="module")
def frames(train_frames):
    return train_frames[:45] + train_frames[-15:]


@pytest.fixture(scope="module")
def sub_model(frames):
    """Calibrated (default split) with a 50-column variance basis."""
    return GAP(SOAP(**SMALL_SOAP), n_sparse=60, e0="lstsq", random_state=0,
               variance_sparse=N_V).fit(frames)


def _descriptors(model, atoms):
    return terms.compute(model.state_.terms, atoms, gradients=False)


def test_subset_factors_are_those_of_the_sub_model_fitted_from_scratch(rng):
    """(L L^T)[v, v] and the QR of R_P[:, v] give exactly the V_N and V_P of the GP whose
    sparse set is v, solved from the same rows, noises and delta."""
    M, F, n, zeta, delta, jitter = 40, 6, 300, 2.0, 0.7, 1e-8
    Q = np.abs(rng.normal(size=(M, F)))
    X = np.abs(rng.normal(size=(n, F)))
    T = np.abs(rng.normal(size=(25, F)))
    Kmm = kernels.dot_kernel(Q, Q, zeta)
    Knm = kernels.dot_kernel(X, Q, zeta)
    y, w = rng.normal(size=n), np.full(n, 4.0)
    v = np.sort(rng.choice(M, 13, replace=False))

    def fit(cols):
        acc = solver.RowAccumulator(len(cols))
        acc.add("forces", Knm[:, cols], y, w)
        L = solver.cholesky_kmm(Kmm[np.ix_(cols, cols)], jitter)
        return L, solver.solve(acc.finalize(), L, delta, {"forces": 0.1}).R

    L, R = fit(np.arange(M))
    L_v, R_v = subset.subset_factors(L, R, v)
    L_s, R_s = fit(v)
    rows = kernels.dot_kernel(T, Q, zeta)[:, v]
    prior = kernels._pow(np.einsum("tf,tf->t", T, T), zeta)
    ours = solver.predictive_variance(rows, prior, L_v, R_v, delta, parts=True)
    scratch = solver.predictive_variance(rows, prior, L_s, R_s, delta, parts=True)
    for a, b in zip(ours, scratch):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.abs(np.diag(R_v)), np.abs(np.diag(R_s)), rtol=1e-10)


def test_greedy_columns_follow_pivoted_cholesky_and_span_every_species(sub_model, rng):
    t = terms.FittedTerm(None, 2.0, 1.0, np.abs(rng.normal(size=(30, 5))) + 0.1,
                         np.repeat([1, 8], 15), 0)
    cols = subset.greedy_columns([t], 12)
    K = terms.kernel_mm([t])
    _, piv, _, info = lapack.dpstrf(K.copy(), lower=1)
    assert info >= 0
    np.testing.assert_array_equal(cols, np.sort(piv[:12] - 1))
    res = [subset.greedy_columns([t], k, return_residual=True)[1] for k in (3, 12, 30)]
    assert res[0] > res[1] > res[2] and res[2] < 1e-6  # all columns: nothing left unspanned
    st = sub_model.state_
    chosen = st.variance_basis.columns
    assert len(chosen) == N_V and np.all(np.diff(chosen) > 0)
    z = terms.sparse_species(st.terms)[chosen]
    assert set(z.tolist()) == set(st.species)
    np.testing.assert_array_equal(subset.greedy_columns(st.terms, N_V), chosen)  # deterministic


def test_subset_std_is_the_sub_model_std(sub_model, test_frames):
    """The rows of the cut terms are the basis columns of the full rows; V_N only grows
    with fewer columns; every std is finite and >= 0."""
    st = sub_model.state_
    fac = variance.variance_factors(st)
    assert fac is variance.variance_factors(st)  # cached per state
    assert variance.variance_factors(st.replace(extra={"x": 1})) is fac  # kept by replace
    moved = st.replace(posterior_factor=2 * st.posterior_factor)  # ... unless R_P changes
    assert np.allclose(np.abs(variance.variance_factors(moved).posterior_factor),
                       2 * np.abs(fac.posterior_factor))
    atoms = test_frames[0]
    ds = _descriptors(sub_model, atoms)
    np.testing.assert_allclose(terms.local_rows(fac.terms, ds),
                               terms.local_rows(st.terms, ds)[:, st.variance_basis.columns],
                               rtol=1e-13)
    sub = variance.variance_parts(st, ds)
    full = variance.variance_parts(st, ds, full=True)
    assert np.all(sub.energies.nystrom >= full.energies.nystrom - 1e-12)
    assert not np.allclose(sub.energies.nystrom, full.energies.nystrom)
    _, std = sub_model.predict(test_frames[:4], return_std=True, force_std="fast")
    for arr in [std.energy, *std.energies, *std.forces]:
        assert np.all(np.isfinite(arr)) and np.all(arr >= 0)
    _, ex = sub_model.predict(test_frames[:1], return_std=True, force_std="exact")
    assert np.all(np.isfinite(ex.forces[0])) and np.all(ex.forces[0] > 0)


def test_variance_sparse_all_is_todays_full_std(frames, test_frames):
    """No basis (None, 'all', or N >= M): the terms are today's full-M formula to 1e-12."""
    model = GAP(SOAP(**SMALL_SOAP), n_sparse=60, e0="lstsq", random_state=0, calibrate=False,
                variance_sparse=None).fit(frames)
    st = model.state_
    assert st.variance_basis is None
    assert variance.with_variance_basis(st, "all").variance_basis is None
    assert variance.with_variance_basis(st, 10 ** 6).variance_basis is None
    atoms = test_frames[3]
    ds = _descriptors(model, atoms)
    local = terms.local_rows(st.terms, ds)
    kqq = terms.local_prior(st.terms, ds)
    rows = np.vstack([local.sum(0, keepdims=True), local])
    prior = np.concatenate([[kqq.sum()], np.diag(kqq)])
    A = sla.solve_triangular(st.kmm_cholesky, rows.T, lower=True)
    B = sla.solve_triangular(st.posterior_factor, rows.T, trans="T", lower=False)
    d = st.delta
    parts = variance.variance_parts(st, ds)
    got = np.concatenate([[parts.energy.nystrom], parts.energies.nystrom])
    # V_N = d^2 (prior - |A|^2) cancels: to 1e-12 of the prior variance
    np.testing.assert_allclose(got, d ** 2 * (prior - np.sum(A * A, 0)), rtol=1e-12,
                               atol=1e-12 * d ** 2 * prior.max())
    got = np.concatenate([[parts.energy.posterior], parts.energies.posterior])
    np.testing.assert_allclose(got, d ** 4 * np.sum(B * B, 0), rtol=1e-12, atol=1e-15)


def test_save_load_keeps_columns_and_std(sub_model, test_frames, tmp_path, capsys):
    path = sub_model.save(tmp_path / "m.npz")
    loaded = gapkit.load(path)
    assert loaded.state_.variance_basis == sub_model.state_.variance_basis
    assert loaded.variance_sparse == N_V
    _, a = sub_model.predict(test_frames[:3], return_std=True, force_std="fast")
    _, b = loaded.predict(test_frames[:3], return_std=True, force_std="fast")
    np.testing.assert_allclose(b.energy, a.energy, rtol=1e-9)
    np.testing.assert_allclose(np.concatenate(b.forces), np.concatenate(a.forces), rtol=1e-9)
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_variance_sparse"] == N_V


def _without_columns(src, dst):
    """The model file with its variance_columns array removed (a file of before)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            if item.filename != "variance_columns.npy":
                zout.writestr(item, zin.read(item.filename))


def test_model_file_without_columns_gives_the_full_std(sub_model, test_frames, tmp_path):
    path = sub_model.save(tmp_path / "m.npz")
    assert "variance_columns" in np.load(path).files
    _without_columns(path, tmp_path / "old.npz")
    old = gapkit.load(tmp_path / "old.npz")
    assert old.state_.variance_basis is None
    r = sub_model.predict_structure(test_frames[0])
    full = sub_model.std_structure(test_frames[0], r, force_std="fast", full=True)
    got = old.std_structure(test_frames[0], old.predict_structure(test_frames[0]),
                            force_std="fast")
    np.testing.assert_allclose(got.energy, full.energy, rtol=1e-9)
    np.testing.assert_allclose(got.forces[0], full.forces[0], rtol=1e-9)


def test_corrupt_columns_are_a_model_file_error(sub_model, tmp_path):
    path = sub_model.save(tmp_path / "m.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["variance_columns"] = np.array([3, 2, 10 ** 6])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    (tmp_path / "bad.npz").write_bytes(buf.getvalue())
    with pytest.raises(gapkit.ModelFileError, match="variance_columns"):
        gapkit.load(tmp_path / "bad.npz")


def test_calculator_stds_use_the_basis(sub_model, test_frames):
    atoms = test_frames[2].copy()
    atoms.calc = gapkit.GAPCalculator(sub_model)
    e_std = atoms.calc.get_property("energy_std", atoms)
    f_std = atoms.calc.get_property("forces_std", atoms)
    r = sub_model.predict_structure(test_frames[2])
    sub = sub_model.std_structure(test_frames[2], r, force_std="fast")
    full = sub_model.std_structure(test_frames[2], r, force_std="fast", full=True)
    assert e_std == pytest.approx(float(sub.energy[0]), rel=1e-10)
    np.testing.assert_allclose(f_std, sub.forces[0], rtol=1e-10)
    assert abs(e_std - float(full.energy[0])) > 1e-3 * e_std


@pytest.mark.parametrize("bad", [0, -3, "x", True, 2.5])
def test_bad_variance_sparse_raises(frames, bad):
    with pytest.raises(ValueError, match="variance_sparse must be a positive integer"):
        GAP(SOAP(**SMALL_SOAP), n_sparse=20, variance_sparse=bad).fit(frames[:10])
    with pytest.raises(ValueError, match="VarianceBasis: columns must be"):
        VarianceBasis(np.array([2, 1]))


def test_cli_flag_config_and_round_trip(tmp_path, capsys):
    parser = build_parser()
    for spelling in ("--variance-sparse", "--variance_sparse"):
        args = resolve(parser.parse_args(["fit", spelling, "300"]))
        assert model_from_args(args, "lstsq").variance_sparse == 300
    assert model_from_args(resolve(parser.parse_args(["fit"])), "lstsq").variance_sparse == "auto"
    assert resolve(parser.parse_args(["fit", "--variance-sparse", "all"])).variance_sparse == "all"
    for bad in ("0", "-3", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["fit", "--variance-sparse", bad])
        assert "expected 'auto', 'all' or a positive integer" in capsys.readouterr().err
    cfg = tmp_path / "fit.json"
    cfg.write_text(json.dumps({"variance-sparse": 400}))
    capsys.readouterr()
    assert main(["fit", "--config", str(cfg), "--dump-config"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["variance_sparse"] == 400
    cfg.write_text(json.dumps(dumped))
    assert main(["fit", "--config", str(cfg), "--dump-config"]) == 0
    assert json.loads(capsys.readouterr().out)["variance_sparse"] == 400


def test_local_prior_sum_and_diagonal_without_the_matrix(sub_model, test_frames):
    st = sub_model.state_
    for atoms in test_frames[:3]:
        ds = _descriptors(sub_model, atoms)
        kqq = terms.local_prior(st.terms, ds)
        total, diag = terms.local_prior_sum_diag(st.terms, ds, block=4)
        assert total == pytest.approx(kqq.sum(), rel=1e-12)
        np.testing.assert_allclose(diag, np.diag(kqq), rtol=1e-12)


def test_calibration_is_fitted_on_the_basis_terms(frames, test_frames, one_blas_thread):
    """The fit chooses the basis before calibrating: recalibrating the fitted model on the
    same frames reproduces its scales, and they differ from those of all M columns."""
    train, val = frames[:40], frames[40:]
    kw = dict(n_sparse=60, e0="lstsq", random_state=0)
    sub = GAP(SOAP(**SMALL_SOAP), variance_sparse=N_V, **kw).fit(train, valid=val)
    full = GAP(SOAP(**SMALL_SOAP), variance_sparse="all", **kw).fit(train, valid=val)
    np.testing.assert_allclose(sub.alpha_, full.alpha_, rtol=1e-10)  # same model
    cal = sub.calibration_
    again = copy.copy(sub).recalibrate(val).calibration_
    assert again.energy == cal.energy and again.forces_fast == cal.forces_fast
    assert full.calibration_.energy != cal.energy


def test_basis_across_kernel_terms_and_a_term_without_columns(frames, test_frames):
    from gapkit import Term
    from gapkit.descriptors import TwoBody

    model = GAP([Term(TwoBody(r_cut=4.0), zeta=1, n_sparse=10), Term(SOAP(**SMALL_SOAP))],
                n_sparse=40, e0="lstsq", random_state=0, variance_sparse=60).fit(frames[:30])
    st = model.state_
    owner = np.searchsorted([t.start for t in st.terms], st.variance_basis.columns, "right") - 1
    assert set(owner.tolist()) == {0, 1}  # the greedy choice spans both terms
    start = st.terms[1].start
    model.state_ = st.replace(variance_basis=VarianceBasis(np.arange(start, start + 50)))
    assert len(variance.variance_factors(model.state_).terms[0].sparse_species) == 0
    assert model.force_std_mode("fast") == "fast"
    for mode in ("fast", "exact"):
        _, std = model.predict(test_frames[:2], return_std=True, force_std=mode)
        assert np.all(np.isfinite(std.energy)) and np.all(np.isfinite(std.forces[0]))
