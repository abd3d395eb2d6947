"""ACSF and TwoBody descriptors: DScribe equivalence, exact derivatives, GAP use, errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
import dscribe.descriptors as dscribe
from sklearn.base import clone

from gapkit import GAP
from gapkit.descriptors import ACSF, TwoBody
from gapkit.descriptors.acsf import default_g2_params, default_g4_params

from conftest import (emt_cu_frames, finite_difference_forces, finite_difference_stress,
                      si_primitive_skewed)

# Parameters exercising every term: shifted G2, G3, G4/G5 with integer and
# non-integer zeta and |lambda| < 1.
PARAMS = dict(
    g2_params=[[0.5, 0.0], [1.0, 1.5], [0.2, 3.0]],
    g3_params=[1.0, 2.5],
    g4_params=[[0.05, 1, 1], [0.1, 2, -1], [0.02, 4, 1], [0.02, 3.5, -0.5]],
    g5_params=[[0.05, 1, -1], [0.03, 2, 1]],
)
H_FD = 1e-5


# ----------------------------------------------------------------------------- systems
def ethanol(seed: int = 0) -> Atoms:
    at = molecule("CH3CH2OH")
    at.rattle(0.05, rng=np.random.default_rng(seed))
    return at


def si_supercell(seed: int = 1) -> Atoms:
    """64-atom rattled diamond Si (2x2x2 cubic cells)."""
    at = bulk("Si", "diamond", 5.43, cubic=True).repeat(2)
    at.rattle(0.05, rng=np.random.default_rng(seed))
    return at


def nacl_slab(seed: int = 3) -> Atoms:
    """Two species, periodic in x and y only."""
    at = bulk("NaCl", "rocksalt", 5.64, cubic=True)
    at.pbc = [True, True, False]
    at.center(vacuum=3.0, axis=2)
    at.rattle(0.05, rng=np.random.default_rng(seed))
    return at


def nacl_cell(seed: int = 4) -> Atoms:
    at = bulk("NaCl", "rocksalt", 5.64)
    at.rattle(0.05, rng=np.random.default_rng(seed))
    return at


SYSTEMS = {"ethanol": ethanol, "si64": si_supercell, "si_primitive": si_primitive_skewed,
           "nacl_slab": nacl_slab, "nacl_primitive": nacl_cell}


def species_of(at: Atoms) -> list[str]:
    return sorted(set(at.get_chemical_symbols()))


def dense(ds) -> np.ndarray:
    n, F = ds.q.shape
    D = np.zeros((n, n, 3, F))
    D[ds.pair_i, ds.pair_j] = ds.dq
    return D


def fd_positions(desc, at: Atoms, atoms_idx) -> np.ndarray:
    """Central differences d q / d r_j, shape (n_atoms, len(atoms_idx), 3, F)."""
    out = []
    for j in atoms_idx:
        row = []
        for a in range(3):
            p, m = at.copy(), at.copy()
            p.positions[j, a] += H_FD
            m.positions[j, a] -= H_FD
            row.append((desc.create(p) - desc.create(m)) / (2 * H_FD))
        out.append(row)
    return np.array(out).transpose(2, 0, 1, 3)


def fd_strain(desc, at: Atoms) -> np.ndarray:
    """Central differences d q / d eta_ab under r -> (1 + eta) r, shape (n, 3, 3, F)."""
    out = np.zeros((len(at), 3, 3, desc.n_features))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = H_FD
            p, m = at.copy(), at.copy()
            p.set_cell(at.cell[:] @ (np.eye(3) + eps).T, scale_atoms=True)
            m.set_cell(at.cell[:] @ (np.eye(3) - eps).T, scale_atoms=True)
            out[:, a, b] = (desc.create(p) - desc.create(m)) / (2 * H_FD)
    return out


# ----------------------------------------------------------------------------- DScribe


@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize("params", ["explicit", "default"])
def test_values_equal_dscribe(system, params):
    at = SYSTEMS[system]()
    sp = species_of(at)
    if params == "explicit":
        kw = PARAMS
    else:  # what ACSF(species) uses
        kw = dict(g2_params=default_g2_params(5.0), g4_params=default_g4_params(5.0))
    ref = dscribe.ACSF(r_cut=5.0, species=sp, periodic=bool(at.pbc.any()), **kw).create(at)
    desc = ACSF(sp, r_cut=5.0, normalize=False, **(kw if params == "explicit" else {}))
    q = desc.create(at)
    assert q.shape == ref.shape == (len(at), desc.n_features)
    np.testing.assert_allclose(q, ref, rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))
    if params == "default":
        # normalised by default
        np.testing.assert_allclose(np.linalg.norm(ACSF(sp).create(at), axis=1), 1.0)


@pytest.mark.parametrize("system", ["ethanol", "nacl_slab"])
def test_twobody_is_dscribe_g2_without_g1(system):
    at = SYSTEMS[system]()
    sp = species_of(at)
    tb = TwoBody(sp, r_cut=4.5, r_min=0.7, n_gaussians=10, sigma=0.4)
    mu = np.linspace(0.7, 4.5, 10)
    g2 = np.column_stack([np.full(10, 1 / (2 * 0.4**2)), mu])
    ref = dscribe.ACSF(r_cut=4.5, species=sp, g2_params=g2, periodic=bool(at.pbc.any())).create(at)
    ref = ref.reshape(len(at), len(sp), 11)[:, :, 1:].reshape(len(at), -1)  # drop G1
    np.testing.assert_allclose(tb.create(at), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tb.centres, mu)
    # default width is the grid spacing
    assert TwoBody(sp, r_cut=5.0, r_min=0.5, n_gaussians=10).width == pytest.approx(0.5)


def test_feature_counts_and_defaults():
    acsf = ACSF(["C", "H", "O"])
    # 3 species x (1 + 8 G2) + 6 species pairs x 12 G4
    assert acsf.n_features == 3 * 9 + 6 * 12 == 99
    assert acsf.interaction_range == 5.0
    assert acsf.species_numbers == [1, 6, 8]
    q = acsf.create(ethanol())
    assert q.shape == (9, 99) and np.all(np.isfinite(q))
    d = dscribe.ACSF(r_cut=5.0, species=["C", "H", "O"], g2_params=default_g2_params(),
                     g3_params=[1.0], g4_params=default_g4_params(), g5_params=[[0.1, 1, 1]])
    assert ACSF(["O", "C", "H"], g3_params=[1.0], g5_params=[[0.1, 1, 1]]).n_features == \
        d.get_number_of_features()
    assert TwoBody(["H", "C"], n_gaussians=7).n_features == 14


# ----------------------------------------------------------------------------- derivatives
DESCRIPTORS = {
    "acsf": lambda sp, norm: ACSF(sp, r_cut=5.0, normalize=norm, **PARAMS),
    "acsf_default": lambda sp, norm: ACSF(sp, normalize=norm),
    "twobody": lambda sp, norm: TwoBody(sp, r_cut=4.0, n_gaussians=8, normalize=norm),
}


@pytest.mark.parametrize("kind", list(DESCRIPTORS))
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("system", ["ethanol", "si_primitive", "nacl_slab"])
def test_position_derivatives_match_finite_differences(kind, normalize, system):
    at = SYSTEMS[system]()
    desc = DESCRIPTORS[kind](species_of(at), normalize)
    ds = desc.compute(at, strain=False)
    assert ds.dq.shape == (len(ds.pair_i), 3, desc.n_features)
    # every (centre, centre) pair is present
    assert set(zip(ds.pair_i.tolist(), ds.pair_j.tolist())) >= {(k, k) for k in range(len(at))}
    idx = [0, 2, 5] if len(at) > 6 else list(range(len(at)))
    fd = fd_positions(desc, at, idx)
    D = dense(ds)[:, idx]
    scale = max(1.0, np.abs(fd).max())
    np.testing.assert_allclose(D, fd, rtol=0, atol=2e-8 * scale)


@pytest.mark.parametrize("kind", list(DESCRIPTORS))
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("system", ["si_primitive", "nacl_primitive", "ethanol"])
def test_strain_derivatives_match_finite_differences(kind, normalize, system):
    at = SYSTEMS[system]()
    if not at.pbc.any():
        at.cell = np.eye(3) * 10.0  # finite: the strain just scales the positions
    desc = DESCRIPTORS[kind](species_of(at), normalize)
    ds = desc.compute(at, strain=True)
    fd = fd_strain(desc, at)
    np.testing.assert_allclose(ds.dq_strain, fd, rtol=0, atol=5e-8 * max(1.0, np.abs(fd).max()))


def test_strain_defaults_to_fully_periodic_cells():
    acsf = ACSF(["Si"], **PARAMS)
    assert acsf.compute(si_primitive_skewed()).dq_strain is not None
    assert acsf.compute(si_primitive_skewed(), gradients=False).dq_strain is None
    assert ACSF(["Na", "Cl"]).compute(nacl_slab()).dq_strain is None


@pytest.mark.parametrize("system", ["ethanol", "si"])
def test_compiled_three_body_equals_the_numpy_reference(system):
    """The compiled triplet loop gives the vectorised numpy G4/G5 values and gradients."""
    from gapkit.descriptors.base import species_index
    from gapkit.descriptors.neighbours import neighbour_pairs

    at, sp = (ethanol(), ["H", "C", "O"]) if system == "ethanol" else (si_supercell(), ["Si"])
    eng = ACSF(species=sp, r_cut=4.5, g5_params=[[0.01, 1.0, 1.0], [0.05, 2.5, -1.0]])._engine
    i, j, d, D = neighbour_pairs(at, eng.r_cut)
    sj = species_index(at.numbers, eng.species)[j]
    for gradients in (False, True):
        got = eng._three_body(i, sj, d, D, len(at), gradients)
        ref = eng._three_body_numpy(i, sj, d, D, len(at), gradients)
        assert np.abs(ref[0]).max() > 0
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12 * np.abs(ref[0]).max())
        if gradients:
            np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-12 * np.abs(ref[1]).max())
        else:
            assert got[1] is None and ref[1] is None


@pytest.mark.parametrize("system", ["ethanol", "si"])
def test_compiled_two_body_equals_the_numpy_reference(system):
    """The compiled pair loop gives the numpy G1/G2/G3 features (``_radial`` summed by
    centre and species) and the compact derivatives ``D / d dG/dr``."""
    from gapkit.descriptors.base import species_index
    from gapkit.descriptors.neighbours import neighbour_pairs
    from gapkit.descriptors.segments import segment_sum
    from gapkit.descriptors.symmetry_kernels import two_body

    at, sp = (ethanol(), ["H", "C", "O"]) if system == "ethanol" else (si_supercell(), ["Si"])
    eng = ACSF(species=sp, r_cut=4.5, g3_params=[1.0, 2.5])._engine
    assert eng.include_g1 and len(eng.g2) and len(eng.g3)
    i, j, d, D = neighbour_pairs(at, eng.r_cut)
    sj = species_index(at.numbers, eng.species)[j]
    N, ns, nr = len(at), eng.n_species, eng.n_radial
    g, dg = eng._radial(d, True)
    p_ref = segment_sum(i * ns + sj, N * ns, g).reshape(N, ns * nr)
    gC_ref = (D / d[:, None])[:, :, None] * dg[:, None, :]
    p = np.full((N, ns * nr), np.nan)
    gC = np.full((len(d), 3, nr + 2), np.nan)
    two_body(i, sj, d, D, eng.r_cut, True, eng.g2, eng.g3, p, gC, True)
    np.testing.assert_allclose(p, p_ref, rtol=0, atol=1e-12 * np.abs(p_ref).max())
    np.testing.assert_allclose(gC[:, :, :nr], gC_ref, rtol=0,
                               atol=1e-12 * np.abs(gC_ref).max())
    assert np.isnan(gC[:, :, nr:]).all()  # the 3-body columns are left alone


@pytest.mark.parametrize("kind", ["acsf", "twobody"])
@pytest.mark.parametrize("normalize", [False, True])
def test_vjp_equals_contraction_of_the_jacobian(kind, normalize, rng):
    at = nacl_cell()
    desc = DESCRIPTORS[kind](species_of(at), normalize)
    ds = desc.compute(at, strain=True)
    g = rng.normal(size=ds.q.shape)
    ds2, vjp = desc.vjp_setup(at, strain=True)
    np.testing.assert_allclose(ds2.q, ds.q, atol=1e-14)
    dE_dr, dE_deta = vjp(g)
    ref_r, ref_eta = ds.contract(g, strain=True)
    np.testing.assert_allclose(dE_dr, ref_r, atol=1e-12)
    np.testing.assert_allclose(dE_deta, ref_eta, atol=1e-12)
    # translation invariance: the forces of one centre's descriptor sum to zero
    np.testing.assert_allclose(dE_dr.sum(axis=0), 0.0, atol=1e-12)


def test_no_neighbours():
    far = Atoms("HH", positions=[[0, 0, 0], [0, 0, 10.0]])
    for desc in (ACSF(["H"], normalize=False), TwoBody(["H"])):
        ds = desc.compute(far, strain=True)
        assert np.all(ds.q == 0) and np.all(ds.dq == 0) and np.all(ds.dq_strain == 0)
        _, vjp = desc.vjp_setup(far, strain=True)
        dE_dr, dE_deta = vjp(np.ones_like(ds.q))
        assert np.all(dE_dr == 0) and np.all(dE_deta == 0)
    with pytest.raises(ValueError, match="no neighbour within r_cut.*increase r_cut"):
        ACSF(["H"]).compute(far)
    with pytest.raises(ValueError, match="no neighbour"):
        ACSF(["H"]).vjp_setup(Atoms("H"))


# ----------------------------------------------------------------------------- invariance
@pytest.mark.parametrize("system", ["ethanol", "nacl_primitive"])
def test_invariant_under_rotation_translation_permutation(system, rng):
    at = SYSTEMS[system]()
    desc = ACSF(species_of(at), **PARAMS)
    q = desc.create(at)
    b = at.copy()
    b.rotate(37.0, (1.0, 2.0, -0.5), rotate_cell=True)
    b.translate(rng.normal(size=3))
    perm = rng.permutation(len(at))
    b = b[perm]
    np.testing.assert_allclose(desc.create(b), q[perm], atol=1e-12)
    tb = TwoBody(species_of(at))
    np.testing.assert_allclose(tb.create(b), tb.create(at)[perm], atol=1e-12)


def test_supercell_gives_the_same_environments():
    at = si_primitive_skewed()
    desc = ACSF(["Si"], **PARAMS)
    np.testing.assert_allclose(desc.create(at.repeat((2, 1, 2))), np.tile(desc.create(at), (4, 1)),
                               atol=1e-12)


# ----------------------------------------------------------------------------- GAP
@pytest.fixture(scope="module")
def cu_frames():
    return emt_cu_frames(8, np.random.default_rng(0))


@pytest.fixture(scope="module")
def twobody_model(cu_frames):
    return GAP(TwoBody(r_cut=4.0, r_min=1.5, n_gaussians=8), zeta=1, n_sparse=20,
               jitter=1e-8, random_state=0).fit(cu_frames)


def test_twobody_zeta1_energy_is_a_sum_of_pair_terms(twobody_model):
    m = twobody_model
    assert m.descriptor_.species == ["Cu"] and m.descriptor_.normalize is False
    energy = lambda at: m.predict_structure(at, forces=False)["energy"]
    pos = np.array([[0.0, 0.0, 0.0], [2.4, 0.1, 0.0], [1.0, 2.2, 0.3], [0.2, 0.9, 2.6]])
    e1 = energy(Atoms("Cu", positions=pos[:1]))  # no neighbours: just E0
    assert e1 == pytest.approx(m.e0_.values[29], abs=1e-10)
    e_all = energy(Atoms("Cu4", positions=pos))
    pairs = [energy(Atoms("Cu2", positions=pos[[a, b]])) - 2 * e1
             for a in range(4) for b in range(a + 1, 4)]
    assert e_all - 4 * e1 == pytest.approx(sum(pairs), abs=1e-9)
    assert abs(e_all - 4 * e1) > 1e-3  # not trivially zero


@pytest.mark.parametrize("kind", ["twobody", "acsf"])
def test_gap_forces_and_stress_are_exact_derivatives(kind, cu_frames, twobody_model):
    if kind == "twobody":
        m = twobody_model
    else:
        m = GAP(ACSF(r_cut=4.0, g2_params=[[0.5, 0.0], [1.0, 2.5]], g4_params=[[0.05, 1, 1],
                                                                                [0.05, 2, -1]]),
                zeta=2, n_sparse=20, jitter=1e-8, random_state=0,
                # 8 two-atom cells: a larger delta='auto' builds the energy from large
                # cancelling terms and the h=1e-4 finite differences lose digits
                delta=1.0).fit(cu_frames)
    a = bulk("Cu", "fcc", 3.6)  # primitive: atoms see their own images
    a.set_cell(a.cell @ (np.eye(3) + [[0.01, 0.02, 0], [0, -0.01, 0.015], [0.01, 0, 0]]).T,
               scale_atoms=True)
    a = a.repeat((2, 1, 1))
    a.rattle(0.05, seed=2)
    e_fn = lambda x: m.predict_structure(x, forces=False, stress=False)["energy"]
    r = m.predict_structure(a)
    np.testing.assert_allclose(r["forces"], finite_difference_forces(e_fn, a, h=1e-4), atol=1e-6)
    np.testing.assert_allclose(r["stress"], finite_difference_stress(e_fn, a, h=1e-4), atol=1e-7)
    # the derivative-array route (used for uncertainties) agrees with the VJP route
    r2 = m.predict_structure(a, keep_gradients=True)
    np.testing.assert_allclose(r2["forces"], r["forces"], atol=1e-10)
    np.testing.assert_allclose(r2["stress"], r["stress"], atol=1e-12)


def test_gap_with_acsf_fits_molecules_and_forces_match_finite_differences(train_frames,
                                                                         test_frames):
    m = GAP(ACSF(), n_sparse=40, e0="lstsq", random_state=0).fit(train_frames[:20]
                                                                 + train_frames[-20:])
    assert m.descriptor_.species_numbers == [1, 6, 8]
    at = test_frames[0]
    e_fn = lambda x: m.predict_structure(x, forces=False)["energy"]
    r = m.predict_structure(at)
    # 40 sparse points on 40 frames: weights up to ~6e4 cancel, so the energy carries
    # ~5e-10 eV of round-off (2e-6 eV/A at h=1e-4, depending on the BLAS); h=3e-4
    # balances it against the O(h^2) truncation (~1e-6)
    np.testing.assert_allclose(r["forces"], finite_difference_forces(e_fn, at, h=3e-4), atol=3e-6)
    # it learned something (SOAP(r_cut=4, n_max=4, l_max=3) gets 0.43 on the same data)
    e_ref = np.array([f.get_potential_energy() for f in test_frames[:20]])
    e_pred = np.array([e_fn(f) for f in test_frames[:20]])
    assert np.sqrt(np.mean((e_pred - e_ref) ** 2)) < 0.6 * e_ref.std()


def test_twobody_plus_soap_terms(train_frames, test_frames, tmp_path):
    """A "2b+SOAP" model: exact forces, uncertainties and a save/load round trip."""
    from gapkit import SOAP, Term, load

    from conftest import SMALL_SOAP

    model = GAP([Term(TwoBody(r_cut=4.0, n_gaussians=10), zeta=1, n_sparse=15),
                 Term(SOAP(**SMALL_SOAP), n_sparse=30)], random_state=0).fit(train_frames[:20])
    assert type(model.terms_[0].descriptor) is TwoBody
    at = test_frames[0]
    e_fn = lambda x: model.predict_structure(x, forces=False)["energy"]
    r = model.predict_structure(at)
    np.testing.assert_allclose(r["forces"], finite_difference_forces(e_fn, at, h=1e-4), atol=2e-6)
    pred, std = model.predict(test_frames[:2], return_std=True)
    assert np.all(np.isfinite(std.energy)) and np.all(np.concatenate(std.forces) > 0)
    loaded = load(model.save(tmp_path / "2b_soap.npz"))
    np.testing.assert_allclose(loaded.predict(test_frames[:2]).energy, pred.energy, atol=1e-10)


# ----------------------------------------------------------------------------- sklearn / io
def test_params_clone_pickle_and_json_round_trip():
    desc = ACSF(["H", "O"], r_cut=4.0, g2_params=np.array([[0.3, 0.0], [1.0, 1.0]]),
                g4_params=[[0.1, 2, -1]], normalize=False)
    at = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    q = desc.create(at)
    np.testing.assert_allclose(clone(desc).create(at), q)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(desc)).create(at), q)
    assert "_engine_cache" not in pickle.loads(pickle.dumps(desc)).__dict__
    from gapkit.utils import to_jsonable

    for d in (desc, TwoBody(["H", "O"], sigma=0.3), ACSF(["H", "O"])):
        params = json.loads(json.dumps(to_jsonable(d.get_params(deep=False))))
        np.testing.assert_allclose(type(d)(**params).create(at), d.create(at))
    # set_params invalidates the cached engine
    desc.set_params(g4_params=[])
    assert desc.n_features == 2 * 3
    desc.set_params(r_cut=3.0)
    assert not np.allclose(desc.create(at), q[:, :6])


def test_save_load_round_trip(tmp_path, twobody_model):
    from gapkit.model import load, save

    m = load(save(twobody_model, tmp_path / "tb.npz"))
    assert type(m.descriptor_) is TwoBody
    a = bulk("Cu", "fcc", 3.6, cubic=True)
    a.rattle(0.05, seed=1)
    np.testing.assert_allclose(m.predict_structure(a)["forces"],
                               twobody_model.predict_structure(a)["forces"], atol=1e-12)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw,match", [
    (dict(species=["C", "Xx"]), "Unknown chemical symbol"),
    (dict(species=None), "species is not set"),
    (dict(species=[]), "species is not set"),
    (dict(species=["H"], r_cut=0.0), "r_cut must be a positive"),
    (dict(species=["H"], r_cut="five"), "r_cut must be a number"),
    (dict(species=["H"], g2_params=[1.0, 0.0]), r"g2_params must be an array of shape \(n, 2\)"),
    (dict(species=["H"], g2_params=[[-1.0, 0.0]]), "eta"),
    (dict(species=["H"], g3_params=[[1.0]]), "g3_params must be a 1-d array"),
    (dict(species=["H"], g4_params=[[0.1, 1.0]]), r"g4_params must be an array of shape \(n, 3\)"),
    (dict(species=["H"], g4_params=[[0.1, 0.5, 1.0]]), "zeta"),
    (dict(species=["H"], g5_params=[[0.1, 1.0, 2.0]]), "lambda"),
    (dict(species=["H"], g5_params=[[np.nan, 1.0, 1.0]]), "finite"),
    (dict(species=["H"], normalize="yes"), "normalize"),
])
def test_acsf_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        ACSF(**kw).compute(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))


@pytest.mark.parametrize("kw,match", [
    (dict(n_gaussians=0), "n_gaussians must be a positive integer"),
    (dict(n_gaussians=2.5), "n_gaussians must be a positive integer"),
    (dict(n_gaussians=1), "sigma is needed"),
    (dict(r_min=5.0), "r_min must be in"),
    (dict(r_min=-1.0), "r_min must be in"),
    (dict(sigma=0.0), "sigma must be a positive"),
    (dict(r_cut=-2.0), "r_cut must be a positive"),
])
def test_twobody_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        TwoBody(["H"], **kw).compute(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))


def test_unknown_species_in_structure(train_frames):
    for desc in (ACSF(["C", "H"]), TwoBody(["C", "H"])):
        with pytest.raises(ValueError, match=r"frame 3: species \['O'\] are not covered"):
            desc.compute(ethanol(), index=3)
        with pytest.raises(ValueError, match="not covered"):
            desc.vjp_setup(ethanol())
    with pytest.raises(ValueError, match="not covered"):
        GAP(ACSF(["C", "H"]), n_sparse=5).fit(train_frames[:2])
