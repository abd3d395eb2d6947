"""Periodic cells: forces, stress and virial training, small and non-orthogonal cells."""

import numpy as np
import pytest
from ase.build import bulk

from gapkit import GAP, SOAP, GAPCalculator

from conftest import SOAP_CU, emt_cu_frames, finite_difference_forces, finite_difference_stress

@pytest.fixture(scope="module")
def cu_model():
    rng = np.random.default_rng(0)
    frames = emt_cu_frames(16, rng)
    # Distorted fcc environments are nearly identical (q.q' ~ 0.9999), so K_MM is
    # nearly singular and the weights reach ~1e4 eV: energies carry ~1e-11 eV per atom
    # of round-off from cancellation. Tolerances below are set accordingly.
    return GAP(SOAP(**SOAP_CU), n_sparse=24, energy_noise=0.002, force_noise=0.02,
               virial_noise=0.02, jitter=1e-6, random_state=0).fit(frames)


def test_virials_are_used_in_training(cu_model):
    assert {g.label for g in cu_model.noise_} == {"energy", "forces", "virial"}
    assert cu_model.n_train_["virial"] == 16 * 9


@pytest.mark.parametrize("cubic,repeat", [(True, (1, 1, 1)), (False, (1, 1, 1)), (False, (2, 1, 1))])
def test_forces_and_stress_are_exact_derivatives(cu_model, cubic, repeat):
    """Primitive fcc is far smaller than twice the cutoff: atoms see their own images."""
    a = bulk("Cu", "fcc", 3.6, cubic=cubic).repeat(repeat)
    a.set_cell(a.cell @ (np.eye(3) + [[0.01, 0.02, 0], [0, -0.01, 0.015], [0.01, 0, 0]]).T,
               scale_atoms=True)
    a.rattle(0.05, seed=2)
    e_fn = lambda x: cu_model.predict_structure(x, forces=False, stress=False)["energy"]
    r = cu_model.predict_structure(a)
    np.testing.assert_allclose(r["forces"], finite_difference_forces(e_fn, a, h=1e-4), atol=1e-6)
    voigt = finite_difference_stress(e_fn, a, h=1e-4)
    np.testing.assert_allclose(r["stress"], voigt, atol=5e-8)


def test_energy_scales_with_supercell(cu_model):
    a = bulk("Cu", "fcc", 3.6, cubic=True)
    a.rattle(0.03, seed=5)
    e1 = cu_model.predict_structure(a, forces=False)["energy"]
    e8 = cu_model.predict_structure(a.repeat((2, 2, 2)), forces=False)["energy"]
    assert e8 == pytest.approx(8 * e1, abs=1e-8)
    prim = bulk("Cu", "fcc", 3.6)
    cub = bulk("Cu", "fcc", 3.6, cubic=True)
    e_p = cu_model.predict_structure(prim, forces=False)["energy"]
    e_c = cu_model.predict_structure(cub, forces=False)["energy"]
    assert e_c == pytest.approx(4 * e_p, abs=1e-8)


def test_mixed_periodicity_slab(cu_model):
    slab = bulk("Cu", "fcc", 3.6, cubic=True).repeat((1, 1, 2))
    slab.pbc = (True, True, False)
    slab.rattle(0.03, seed=1)
    e_fn = lambda x: cu_model.predict_structure(x, forces=False)["energy"]
    r = cu_model.predict_structure(slab)
    assert r.stress is None
    np.testing.assert_allclose(r["forces"][[0, 5]],
                               finite_difference_forces(e_fn, slab, atoms_idx=[0, 5]), atol=1e-6)


def test_cell_relaxation_with_frechet_filter(cu_model):
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    a = bulk("Cu", "fcc", 3.75, cubic=True)
    a.calc = GAPCalculator(cu_model)
    s0 = np.abs(a.get_stress()).max()
    BFGS(FrechetCellFilter(a), logfile=None).run(fmax=1e-3, steps=200)
    assert np.abs(a.get_stress()).max() < 0.1 * s0
    assert 3.4 < a.cell.lengths()[0] < 3.8
