"""SOAP wrapper: derivatives by finite differences, sparsity, periodic agreement with DScribe."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from gapkit.descriptors import SOAP

from conftest import SMALL_SOAP

DSCRIBE = dict(cutoff="dscribe", backend="dscribe")


def dense(ds):
    n, F = ds.q.shape
    D = np.zeros((n, n, 3, F))
    D[ds.pair_i, ds.pair_j] = ds.dq
    return D


@pytest.fixture
def ethanol(rng):
    a = molecule("CH3CH2OH")
    a.positions += rng.normal(scale=0.05, size=a.positions.shape)
    return a


@pytest.mark.parametrize("options", [{}, DSCRIBE])
def test_descriptor_is_normalised_and_derivatives_match_finite_differences(ethanol, options):
    soap = SOAP(["C", "H", "O"], **SMALL_SOAP, **options)
    ds = soap.compute(ethanol)
    assert np.allclose(np.linalg.norm(ds.q, axis=1), 1.0)
    D = dense(ds)
    h = 1e-5
    for j in (0, 2, 5):
        for a in range(3):
            p, m = ethanol.copy(), ethanol.copy()
            p.positions[j, a] += h
            m.positions[j, a] -= h
            fd = (soap.create(p) - soap.create(m)) / (2 * h)
            np.testing.assert_allclose(D[:, j, a], fd, atol=1e-7 * max(1, np.abs(fd).max()))


def test_cluster_route_equals_whole_molecule_route(ethanol):
    soap = SOAP(["C", "H", "O"], **SMALL_SOAP, **DSCRIBE)
    engine = soap._engine  # DScribe itself: one call for the molecule, or one per centre
    w = soap._to_descriptor_set(engine.whole(ethanol), ethanol)
    c = soap._to_descriptor_set(engine.cluster(ethanol, gradients=True, strain=False), ethanol)
    np.testing.assert_allclose(w.q, c.q, atol=1e-12)
    np.testing.assert_allclose(dense(w), dense(c), atol=1e-12)


@pytest.mark.parametrize("periodic", [False, True])
def test_engine_backend_equals_dscribe_backend(ethanol, periodic):
    atoms = ethanol
    if periodic:
        atoms = bulk("Si", "diamond", 5.43, cubic=True)
        atoms.rattle(0.05, seed=8)
    species = sorted(set(atoms.get_chemical_symbols()))
    ref = SOAP(species, **SMALL_SOAP, **DSCRIBE).compute(atoms, strain=periodic)
    eng = SOAP(species, **SMALL_SOAP, cutoff="dscribe").compute(atoms, strain=periodic)
    np.testing.assert_allclose(eng.q, ref.q, atol=1e-10)
    np.testing.assert_allclose(dense(eng), dense(ref), atol=1e-9)
    if periodic:
        np.testing.assert_allclose(eng.dq_strain, ref.dq_strain, atol=1e-9)


def test_vjp_equals_contraction_of_the_jacobian(ethanol, rng):
    soap = SOAP(["C", "H", "O"], **SMALL_SOAP)
    ds = soap.compute(ethanol)
    g = rng.normal(size=ds.q.shape)
    _, vjp = soap.vjp_setup(ethanol)
    dE_dr, _ = vjp(g)
    ref = np.einsum("ijaf,if->ja", dense(ds), g)
    np.testing.assert_allclose(dE_dr, ref, atol=1e-10)


def test_cosine_cutoff_is_continuous_and_dscribe_cutoff_jumps():
    """An atom crossing the cutoff: no jump with the cosine taper, DScribe's jump otherwise."""
    def q_at(soap, d):
        a = Atoms("H2", positions=[[0, 0, 0], [d, 0, 0]])
        return soap.create(a)[0]

    smooth = SOAP(["H"], **SMALL_SOAP)
    hard = SOAP(["H"], **SMALL_SOAP, cutoff="dscribe")
    rc, rh = smooth.interaction_range, hard.interaction_range
    assert np.abs(q_at(smooth, rc - 1e-7) - q_at(smooth, rc + 1e-7)).max() < 1e-9
    assert np.abs(q_at(hard, rh - 1e-7) - q_at(hard, rh + 1e-7)).max() > 1e-6


def test_derivatives_are_sparse_in_neighbours():
    # two molecules 20 Å apart: no derivative block couples them
    a = molecule("H2O")
    b = a.copy()
    b.translate([20.0, 0, 0])
    pair = a + b
    ds = SOAP(["H", "O"], **SMALL_SOAP).compute(pair)
    same = (ds.pair_i < 3) == (ds.pair_j < 3)
    assert same.all()
    assert len(ds.pair_i) == 2 * 9  # 3x3 pairs per molecule, not 6x6


def test_periodic_descriptor_agrees_with_dscribe_periodic():
    from dscribe.descriptors import SOAP as DSOAP

    si = bulk("Si", "diamond", 5.43, cubic=True)
    si.rattle(0.05, seed=3)
    ds = SOAP(["Si"], **SMALL_SOAP, cutoff="dscribe").compute(si, gradients=False)
    ref = DSOAP(species=["Si"], periodic=True, **SMALL_SOAP).create(si)
    np.testing.assert_allclose(ds.q, ref / np.linalg.norm(ref, axis=1)[:, None], atol=1e-11)


@pytest.mark.parametrize("cell", ["cubic", "primitive"])
@pytest.mark.parametrize("options", [{}, DSCRIBE])
def test_periodic_position_and_strain_derivatives(cell, options):
    si = bulk("Si", "diamond", 5.43, cubic=(cell == "cubic"))
    si.rattle(0.05, seed=4)
    soap = SOAP(["Si"], **SMALL_SOAP, **options)
    ds = soap.compute(si)
    D = dense(ds)
    h = 1e-5
    for a in range(3):
        p, m = si.copy(), si.copy()
        p.positions[1, a] += h
        m.positions[1, a] -= h
        fd = (soap.create(p) - soap.create(m)) / (2 * h)
        np.testing.assert_allclose(D[:, 1, a], fd, atol=1e-7)
    for (i, j) in [(0, 0), (0, 1), (2, 1)]:
        eps = np.zeros((3, 3))
        eps[i, j] = h
        p, m = si.copy(), si.copy()
        p.set_cell(si.cell @ (np.eye(3) + eps).T, scale_atoms=True)
        m.set_cell(si.cell @ (np.eye(3) - eps).T, scale_atoms=True)
        fd = (soap.create(p) - soap.create(m)) / (2 * h)
        np.testing.assert_allclose(ds.dq_strain[:, i, j], fd, atol=1e-7)


def test_unknown_species_and_bad_parameters_raise():
    soap = SOAP(["C", "H"], **SMALL_SOAP)
    with pytest.raises(ValueError, match=r"species \['O'\] are not covered"):
        soap.compute(molecule("H2O"))
    with pytest.raises(ValueError, match="SOAP.species is not set"):
        SOAP().compute(molecule("H2O"))
    with pytest.raises(ValueError, match="r_cut must be"):
        SOAP(["H"], r_cut=0.5).compute(Atoms("H"))
    with pytest.raises(ValueError, match="backend='dscribe' has only DScribe's hard cutoff"):
        SOAP(["H"], backend="dscribe").compute(Atoms("H"))
