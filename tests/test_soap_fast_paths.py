"""The fast E+F(+stress) path (compiled power spectrum, dE/dc, pair VJP, one-pass
normalisation, compact 2-body VJP, blocks) against independent references.

The references never use the compiled kernels they check: the power spectrum from
the engine's expansion coefficients by numpy ``einsum`` (and DScribe without radial
scaling), forces and stress from the sparse derivative arrays (the engine's numpy
``_dp`` / ``_dp_strain``, normalised by :func:`gapkit.descriptors.results.normalise`)
contracted with the same ``dE/dq``. A GAP-like energy ``E = sum_i sum_m a_m (q_i .
Q_m)**zeta`` with random sparse points makes the ``dE/dq`` realistic. Equal to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from dscribe.descriptors import SOAP as DSOAP

from gapkit.descriptors import SOAP, TwoBody
from gapkit.descriptors.norm_kernels import normalise_rows, normalised_gradient
from gapkit.descriptors.pair_kernels import compact_pair_vjp

TOL = 1e-10
ZETA = 4


def ethanol_cluster():
    """Three rattled ethanol molecules side by side (27 atoms, finite)."""
    out = None
    for k in range(3):
        m = molecule("CH3CH2OH")
        m.rattle(0.05, rng=np.random.default_rng(k))
        m.translate([3.0 * k, 0.4 * k, 0.0])
        out = m if out is None else out + m
    return out


def si_cell():
    """A rattled 64-atom diamond Si cell (periodic)."""
    at = bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 2, 2))
    at.rattle(0.08, rng=np.random.default_rng(5))
    at.wrap()
    return at


CASES = {
    "ethanol": (ethanol_cluster, ["H", "C", "O"], dict(r_cut=4.5, n_max=6, l_max=4)),
    "si": (si_cell, ["Si"], dict(r_cut=4.0, n_max=5, l_max=4)),
}


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def energy_gradient(q: np.ndarray, numbers: np.ndarray, rng) -> tuple[float, np.ndarray]:
    """``E = sum_i sum_m a_m (q_i . Q_m)**zeta`` over sparse points of the centre's
    species; returns ``E`` and ``dE/dq`` (n_atoms, F)."""
    E, g = 0.0, np.zeros_like(q)
    for z in np.unique(numbers):
        ci = np.flatnonzero(numbers == z)
        Q = np.abs(rng.standard_normal((7, q.shape[1])))
        Q /= np.linalg.norm(Q, axis=1)[:, None]
        a = rng.standard_normal(7)
        d = q[ci] @ Q.T
        E += float(np.sum((d ** ZETA) @ a))
        g[ci] = (ZETA * d ** (ZETA - 1) * a) @ Q
    return E, g


def reference_forces_stress(ds, g: np.ndarray, n_atoms: int):
    """``dE/dr`` and ``dE/deta`` from the sparse derivative arrays."""
    dr = np.zeros((n_atoms, 3))
    np.add.at(dr, ds.pair_j, np.einsum("kaf,kf->ka", ds.dq, g[ds.pair_i]))
    deta = None if ds.dq_strain is None else np.einsum("iabf,if->ab", ds.dq_strain, g)
    return dr, deta


@pytest.mark.parametrize("scaling", [0.0, 4.0])
@pytest.mark.parametrize("case", list(CASES))
def test_soap_energy_forces_stress_equal_references(case, scaling):
    make, species, params = CASES[case]
    at = make()
    periodic = bool(at.pbc.all())
    desc = SOAP(species, radial_scaling=scaling, radial_scaling_r0=2.0, **params)
    eng = desc._engine
    # energies: q from the compiled power spectrum against numpy from c (and DScribe)
    env = eng._environment(at)
    c = eng._coefficients(env)  # (N, S, nlm, n)
    L = eng.l_max
    N, S, _, nm = c.shape
    gram = np.stack([np.einsum("iamx,ibmy->iabxy", c[:, :, l * l:(l + 1) ** 2],
                               c[:, :, l * l:(l + 1) ** 2]) * eng._prel[l]
                     for l in range(L + 1)], axis=1)  # (N, L+1, S, S, n, n)
    p_ref = np.concatenate(
        [np.concatenate([gram[:, l, s1, s2][:, *np.triu_indices(nm)] if s1 == s2
                         else gram[:, l, s1, s2].reshape(N, -1) for l in range(L + 1)], axis=1)
         for s1 in range(S) for s2 in range(s1, S)], axis=1)
    p = eng.compute(at, gradients=False).p
    assert rel(p, p_ref) < TOL
    if scaling == 0.0:
        ds_ = DSOAP(species=species, r_cut=params["r_cut"], n_max=params["n_max"],
                    l_max=params["l_max"], sigma=0.5, periodic=periodic)
        plain = SOAP(species, cutoff="dscribe", **params)._engine
        assert rel(plain.compute(at, gradients=False).p, ds_.create(at)) < TOL
    q_ref = p_ref / np.linalg.norm(p_ref, axis=1)[:, None]
    # forces / stress: VJP path (whole structure and blocks) against dq contraction
    ds_vjp, vjp = desc.vjp_setup(at, strain=periodic)
    assert rel(ds_vjp.q, q_ref) < TOL
    E, g = energy_gradient(ds_vjp.q, at.numbers, np.random.default_rng(1))
    E_ref, _ = energy_gradient(q_ref, at.numbers, np.random.default_rng(1))
    assert abs(E - E_ref) < TOL * abs(E_ref)
    ref = desc.compute(at, gradients=True, strain=periodic)
    dr_ref, deta_ref = reference_forces_stress(ref, g, len(at))
    dr, deta = vjp(g)
    assert rel(dr, dr_ref) < TOL
    blocked_dr, blocked_deta = np.zeros((len(at), 3)), np.zeros((3, 3))
    for blk in desc.vjp_blocks(at, block_atoms=10, strain=periodic):
        assert rel(blk.q, q_ref[blk.start:blk.stop]) < TOL
        blk.vjp(g[blk.start:blk.stop], periodic, out=(blocked_dr, blocked_deta))
    assert rel(blocked_dr, dr_ref) < TOL
    if periodic:
        assert rel(deta, deta_ref) < TOL
        assert rel(blocked_deta, deta_ref) < TOL


@pytest.mark.parametrize("case", list(CASES))
def test_two_body_compact_vjp_equals_derivative_arrays(case):
    make, species, params = CASES[case]
    at = make()
    periodic = bool(at.pbc.all())
    desc = TwoBody(species, r_cut=params["r_cut"])
    ds_vjp, vjp = desc.vjp_setup(at, strain=periodic)
    g = np.random.default_rng(2).standard_normal(ds_vjp.q.shape)
    ref = desc.compute(at, gradients=True, strain=periodic)
    np.testing.assert_array_equal(ds_vjp.q, ref.q)
    dr_ref, deta_ref = reference_forces_stress(ref, g, len(at))
    dr, deta = vjp(g)
    assert rel(dr, dr_ref) < TOL
    if periodic:
        assert rel(deta, deta_ref) < TOL


def test_norm_kernels_equal_numpy_forms():
    rng = np.random.default_rng(3)
    p = rng.random((37, 130))
    g = rng.standard_normal(p.shape)
    q, norms = normalise_rows(p)
    n_ref = np.linalg.norm(p, axis=1)
    q_ref = p / n_ref[:, None]
    assert rel(norms, n_ref) < 1e-14 and rel(q, q_ref) < 1e-14
    gp = normalised_gradient(q, norms, g)
    gp_ref = (g - q_ref * np.sum(q_ref * g, axis=1, keepdims=True)) / n_ref[:, None]
    assert rel(gp, gp_ref) < 1e-14
    g_before = g.copy()
    normalised_gradient(q, norms, g)
    np.testing.assert_array_equal(g, g_before)  # input untouched
    with pytest.raises(ValueError, match="shapes differ"):
        normalised_gradient(q, norms, g[:, :-1])


def test_compact_pair_vjp_equals_dense_contraction():
    rng = np.random.default_rng(4)
    n_atoms, F, P, K = 6, 20, 40, 5
    i = np.sort(rng.integers(0, n_atoms, P))
    cols = np.stack([rng.choice(F, K, replace=False) for _ in range(P)])
    gC = rng.standard_normal((P, 3, K))
    grad_p = rng.standard_normal((n_atoms, F))
    dense = np.zeros((P, 3, F))
    np.put_along_axis(dense, cols[:, None, :], gC, axis=2)
    ref = np.einsum("paf,pf->pa", dense, grad_p[i])
    assert rel(compact_pair_vjp(i, cols, gC, grad_p), ref) < 1e-14
    assert compact_pair_vjp(i[:0], cols[:0], gC[:0], grad_p).shape == (0, 3)
