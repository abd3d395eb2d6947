"""E0 choices (lstsq, average, isolated, dict), the rank-deficient rule and delta='auto'."""

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import SMALL_SOAP
from gapkit import GAP, SOAP
from gapkit.cli import main
from gapkit.data import fit_reference_energies
from gapkit.data.reference import parse_e0
from gapkit.gp import terms
from gapkit.model.params import DELTA_FORCE_FACTOR, auto_delta
from gapkit.model.training import fit_state


def _mol(symbols, energy):
    a = Atoms(symbols)
    a.positions = 1.5 * np.arange(3 * len(a), dtype=float).reshape(-1, 3)
    a.calc = SinglePointCalculator(a, energy=energy)
    return a


@pytest.fixture(scope="module")
def ethanol(train_frames):
    """Default-data ethanol frames: one composition (C2H6O)."""
    return [a for a in train_frames if a.info["config_type"] == "ethanol_md"][:16]


# ----------------------------------------------------------------------- parse_e0
def test_parse_e0_forms():
    assert parse_e0("H:-13.6, C:-1029.8") == {"H": -13.6, "C": -1029.8}
    for name in ("lstsq", "average", "isolated", "zero"):
        assert parse_e0(name) == name
    assert parse_e0("some/isolated_atoms.xyz") == "some/isolated_atoms.xyz"   # a path
    assert parse_e0({"H": -1.0}) == {"H": -1.0}


@pytest.mark.parametrize("text,match", [
    ("H:-13.6,C:abc", r"E0 of C is 'abc', not a number of eV; expected SYMBOL:eV"),
    ("H:-13.6,Xx:1", r"unknown chemical symbol or atomic number 'Xx'"),
    ("H:1,H:2", r"H is given twice"),
    ("H:1,,C:2", r"entry '' is not SYMBOL:eV"),
    ("H:", r"entry 'H:' is not SYMBOL:eV"),
    ("H:nan", r"E0 of H is nan; every value must be a finite energy"),
])
def test_parse_e0_bad_strings(text, match):
    with pytest.raises(ValueError, match=match):
        parse_e0(text)


# ----------------------------------------------------------------------- methods
def test_average_is_mean_energy_per_atom():
    frames = [_mol("H2O", -15.0), _mol("CH4", -25.0)]
    ref = fit_reference_energies("average", frames, np.array([-15.0, -25.0]), [1, 6, 8])
    assert ref.method == "average"
    assert ref.values == pytest.approx({1: -5.0, 6: -5.0, 8: -5.0})   # mean(-5, -5)


def test_rank_deficient_lstsq_is_nearest_to_one_shared_value():
    """Rows (H, C, O) = (2,0,1), (4,0,2), (4,1,0) have rank 2, null space (1,-4,-2): the
    E0 is a least-squares solution whose offset from the mean per atom has no part along
    the null space."""
    frames = [_mol("H2O", -14.0), _mol("H4O2", -28.5), _mol("CH4", -24.0)]
    e = np.array([-14.0, -28.5, -24.0])
    with pytest.warns(UserWarning, match=r"rank deficient \(rank 2 < 3 species: the training "
                                         r"compositions are collinear\).*e0='isolated'"):
        ref = fit_reference_energies("lstsq", frames, e, [1, 6, 8])
    x = np.array([ref.values[z] for z in (1, 6, 8)])
    C = np.array([[2, 0, 1], [4, 0, 2], [4, 1, 0]], dtype=float)
    np.testing.assert_allclose(C.T @ (C @ x - e), 0, atol=1e-9)        # least squares
    mean = np.mean(e / C.sum(axis=1))
    assert (x - mean) @ np.array([1, -4, -2]) == pytest.approx(0, abs=1e-9)
    # a full-rank set is the plain least squares, without a warning
    frames.append(_mol("CO", -30.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = fit_reference_energies("lstsq", frames, np.append(e, -30.0), [1, 6, 8])
    C = np.vstack([C, [0, 1, 1]])
    np.testing.assert_allclose([full.values[z] for z in (1, 6, 8)],
                               np.linalg.lstsq(C, np.append(e, -30.0), rcond=None)[0])


def test_one_molecule_lstsq_equals_average(ethanol):
    e = np.array([a.get_potential_energy() for a in ethanol])
    with pytest.warns(UserWarning, match="every training frame has the same composition.*"
                                         "same as e0=average.*--e0 H:EV,C:EV,O:EV"):
        ref = fit_reference_energies("lstsq", ethanol, e, [1, 6, 8])
    avg = fit_reference_energies("average", ethanol, e, [1, 6, 8])
    assert ref.values == pytest.approx(avg.values)
    assert np.all(np.isfinite(list(ref.values.values())))
    resid = e - np.array([ref.energy(a.numbers) for a in ethanol])
    assert abs(resid.mean()) < 1e-9 * abs(e.mean())


def test_bad_e0_parameter_raises(ethanol):
    with pytest.raises(ValueError, match="e0 must be one of .*got 'bogus' \\(not a method"):
        GAP(SOAP(**SMALL_SOAP), n_sparse=10, e0="bogus").fit(ethanol)
    with pytest.raises(ValueError, match="e0 must be one of .*got 3"):
        GAP(SOAP(**SMALL_SOAP), n_sparse=10, e0=3).fit(ethanol)


# ----------------------------------------------------------------------- delta='auto'
def test_auto_delta_on_one_molecule_does_not_collapse(ethanol):
    """Rank-deficient lstsq E0: the energy RMS is ~meV, and δ comes from the force
    moment, which is the same whatever E0 is and equals the one of explicit rows."""
    est = GAP(SOAP(**SMALL_SOAP), n_sparse=20, e0="lstsq", calibrate=False, random_state=0)
    with pytest.warns(UserWarning, match="rank deficient"):
        state, groups = fit_state(est, ethanol, False)
    e = np.array([a.get_potential_energy() for a in ethanol])
    resid = e - np.array([state.e0.energy(a.numbers) for a in ethanol])
    n = np.array([len(a) for a in ethanol], dtype=float)
    e_rms = np.sqrt(np.mean((resid / n) ** 2))
    # the force moment from explicit rows: sum F^2 - n sigma^2 over tr(K_FM K_MM^-1 K_MF)
    tr, ff, nf = 0.0, 0.0, 0
    for k, a in enumerate(ethanol):
        ds = terms.compute(list(state.terms), a, gradients=True, index=k)
        rows = terms.design_rows(list(state.terms), ds, forces=True)["forces"]
        X = np.linalg.solve(state.kmm_cholesky, rows.T)
        tr += np.sum(X * X)
        ff += np.sum(a.get_forces() ** 2)
        nf += rows.shape[0]
    d_f = np.sqrt((ff - nf * est.force_noise ** 2) / tr)
    assert state.delta == pytest.approx(max(e_rms, DELTA_FORCE_FACTOR * d_f), rel=1e-6)
    assert e_rms < 0.05 and state.delta > 10 * e_rms and np.isfinite(state.delta)
    # the same force moment with another E0 (a dict far from the data: large energy RMS)
    delta, how = auto_delta(groups, state.kmm_cholesky, resid + 50.0 * n, n, est.force_noise)
    assert how["force_moment"] == pytest.approx(d_f, rel=1e-6)
    assert delta == pytest.approx(50.0, rel=1e-3) and how["rule"] == "energy RMS"


def test_average_e0_fits_and_is_stored(ethanol):
    m = GAP(SOAP(**SMALL_SOAP), n_sparse=10, e0="average", calibrate=False).fit(ethanol)
    assert m.e0_.method == "average" and len(set(m.e0_.values.values())) == 1
    e = np.array([a.get_potential_energy() / len(a) for a in ethanol])
    assert m.e0_.values[1] == pytest.approx(e.mean())


# ----------------------------------------------------------------------- CLI
def test_cli_e0_dict_and_bad_dict(tmp_path, ethanol, capsys):
    from ase.io import write

    tr = tmp_path / "tr.xyz"
    write(tr, ethanol[:8])
    out = tmp_path / "m.npz"
    small = ["--n-max", "3", "--l-max", "2", "--r-cut", "3.5", "--n-sparse", "8",
             "--no-calibrate"]
    assert main(["fit", str(tr), "-o", str(out), "--e0", "H:-13.6,C:-1029.8,O:-2041.3",
                 *small]) == 0
    from gapkit import load
    assert load(out).e0_.values == pytest.approx({1: -13.6, 6: -1029.8, 8: -2041.3})
    capsys.readouterr()
    assert main(["fit", str(tr), "-o", str(out), "--e0", "H:-13.6,C:oops", *small]) == 2
    err = capsys.readouterr().err
    assert "E0 of C is 'oops', not a number of eV" in err and len(err.strip().splitlines()) == 1
    assert main(["fit", str(tr), "-o", str(out), "--e0", "H:-13.6,C:-1029.8", *small]) == 2
    assert "E0 dict lacks species ['O']" in capsys.readouterr().err


def test_atomic_e0_by_species_table():
    """``ReferenceEnergies.atomic``: each atom's E0 by its species, 0 for a species
    without one, any shape of input, the empty structure included."""
    from gapkit.data.reference import ReferenceEnergies
    r = ReferenceEnergies({1: -13.6, 8: -2040.5}, method="dict")
    np.testing.assert_array_equal(r.atomic(np.array([8, 1, 1, 6, 1])),
                                  [-2040.5, -13.6, -13.6, 0.0, -13.6])
    np.testing.assert_array_equal(r.atomic([1, 8]), [-13.6, -2040.5])
    assert r.atomic(np.array([], dtype=int)).shape == (0,)
