"""Tests of the numpy SOAP engine against DScribe, finite differences and itself."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from dscribe.descriptors import SOAP as DSOAP

from conftest import si_primitive_skewed
from gapkit.descriptors.soap_engine import (
    SOAPEngine,
    _SolidHarmonicsEvaluator,
    gto_basis,
    real_solid_harmonics,
)

CHO = [1, 6, 8]
H_FD = 1e-5


# ----------------------------------------------------------------------------- helpers
def ethanol(seed: int = 0, amp: float = 0.05) -> Atoms:
    at = molecule("CH3CH2OH")
    at.rattle(amp, rng=np.random.default_rng(seed))
    return at


def si_cubic(seed: int = 1) -> Atoms:
    at = bulk("Si", "diamond", 5.43, cubic=True)
    at.rattle(0.05, rng=np.random.default_rng(seed))
    at.wrap()
    return at


def nacl_slab(seed: int = 3) -> Atoms:
    """Two-species cell periodic in x, y only."""
    at = bulk("NaCl", "rocksalt", 5.64, cubic=True).repeat((1, 1, 2))
    at.pbc = [True, True, False]
    at.center(vacuum=3.0, axis=2)
    at.rattle(0.1, rng=np.random.default_rng(seed))
    at.wrap()
    return at


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def dense_dp(res, n_atoms: int) -> np.ndarray:
    d = np.zeros((n_atoms, n_atoms, 3, res.p.shape[1]))
    d[res.pair_i, res.pair_j] = res.dp
    return d


def fd_positions(engine: SOAPEngine, atoms: Atoms, h: float = H_FD) -> np.ndarray:
    """Central differences, shape (n_atoms [centre], n_atoms [moved], 3, F)."""
    n = len(atoms)
    out = np.zeros((n, n, 3, engine.n_features))
    for j in range(n):
        for a in range(3):
            ap, am = atoms.copy(), atoms.copy()
            ap.positions[j, a] += h
            am.positions[j, a] -= h
            out[:, j, a] = (
                engine.compute(ap, gradients=False).p - engine.compute(am, gradients=False).p
            ) / (2 * h)
    return out


def fd_strain(engine: SOAPEngine, atoms: Atoms, h: float = H_FD) -> np.ndarray:
    """Central differences under r -> (1 + eps) r, shape (n_atoms, 3, 3, F)."""
    out = np.zeros((len(atoms), 3, 3, engine.n_features))
    cell = atoms.cell[:]
    for a in range(3):
        for b in range(3):
            e = np.zeros((3, 3))
            e[a, b] = h
            ap, am = atoms.copy(), atoms.copy()
            ap.set_cell(cell @ (np.eye(3) + e).T, scale_atoms=True)
            am.set_cell(cell @ (np.eye(3) - e).T, scale_atoms=True)
            out[:, a, b] = (
                engine.compute(ap, gradients=False).p - engine.compute(am, gradients=False).p
            ) / (2 * h)
    return out


# ----------------------------------------------------------------------------- basics
def test_basis_and_layout_match_dscribe():
    soap = DSOAP(species=CHO, r_cut=5.0, n_max=5, l_max=4, sigma=0.5)
    alphas, betas = gto_basis(5.0, 5, 4)
    np.testing.assert_array_equal(alphas, soap._alphas)
    np.testing.assert_array_equal(betas, soap._betas)
    eng = SOAPEngine(["O", "H", "C"], 5.0, 5, 4, 0.5)
    assert eng.species == CHO
    assert eng.n_features == soap.get_number_of_features()
    assert eng.search_radius == pytest.approx(5.0 + soap.get_cutoff_padding())
    lay = eng.feature_layout
    for z1 in CHO:
        for z2 in CHO:
            if z1 <= z2:
                sl = soap.get_location((z1, z2))
                assert (lay["Z1"][sl] == z1).all() and (lay["Z2"][sl] == z2).all()


@pytest.mark.parametrize("l_max", [0, 1, 3, 6, 9])
def test_solid_harmonics(l_max):
    rng = np.random.default_rng(l_max)
    D = rng.normal(size=(40, 3)) * 2.0
    S_rec, dS_rec = real_solid_harmonics(D, l_max, gradients=True)
    S_mono, dS_mono = _SolidHarmonicsEvaluator(l_max)(D, gradients=True)
    scale = np.abs(S_rec).max(axis=0)
    assert np.abs((S_mono - S_rec) / scale).max() < 1e-12
    if l_max:
        assert rel_err(dS_mono, dS_rec) < 1e-12
        # gradients of the recursion agree with finite differences
        fd = np.stack(
            [
                (real_solid_harmonics(D + H_FD * e, l_max)[0] - real_solid_harmonics(D - H_FD * e, l_max)[0])
                / (2 * H_FD)
                for e in np.eye(3)
            ],
            axis=1,
        )
        assert rel_err(fd, dS_rec) < 1e-8
    # orthonormal angular parts: Monte-Carlo-free check with a Lebedev-like
    # quadrature is overkill; check the addition theorem sum_m Y_lm^2 = (2l+1)/4pi
    u = D / np.linalg.norm(D, axis=1, keepdims=True)
    S_u, _ = real_solid_harmonics(u, l_max)
    for l in range(l_max + 1):
        s = (S_u[:, l * l:(l + 1) ** 2] ** 2).sum(axis=1)
        np.testing.assert_allclose(s, (2 * l + 1) / (4 * np.pi), rtol=1e-12)


@pytest.mark.parametrize("l_max", [0, 2, 8])
def test_engine_harmonics_are_the_reference_solid_harmonics(l_max):
    """The engine's sphericart harmonics have the reference normalisation and signs."""
    D = np.random.default_rng(l_max).normal(size=(60, 3)) * 2.0
    D[0] = 0.0  # the centre itself
    S_ref, dS_ref = real_solid_harmonics(D, l_max, gradients=True)
    S, dS = SOAPEngine([1], 4.0, 2, l_max, 0.5)._harmonics(D, True)
    scale = np.abs(S_ref).max(axis=0)
    assert np.abs((S - S_ref) / scale).max() < 1e-12
    if l_max:
        assert rel_err(dS, dS_ref) < 1e-12
    else:
        assert not dS.any() and not dS_ref.any()
    S_only, none = SOAPEngine([1], 4.0, 2, l_max, 0.5)._harmonics(D, False)
    assert none is None and np.abs((S_only - S_ref) / scale).max() < 1e-12


@pytest.mark.parametrize("l_max", [1, 4, 8])
def test_gradient_table_gives_the_reference_gradients(l_max):
    """The VJP's harmonic gradients: at most two harmonics of degree l - 1 each."""
    from gapkit.descriptors.soap_basis import solid_harmonic_gradient_table

    D = np.random.default_rng(l_max).normal(size=(80, 3)) * 2.0
    S, dS = real_solid_harmonics(D, l_max, gradients=True)
    idx, coef = solid_harmonic_gradient_table(l_max)
    dS_table = np.einsum("lxt,plxt->pxl", coef, S[:, idx])
    assert rel_err(dS_table, dS) < 1e-12
    lm = np.arange((l_max + 1) ** 2)
    l_of = np.floor(np.sqrt(lm)).astype(int)
    used = coef != 0
    assert np.all(np.floor(np.sqrt(idx[used])) == np.broadcast_to(l_of[:, None, None] - 1,
                                                                  idx.shape)[used])


def test_two_engine_threads_give_the_same_results():
    from gapkit.descriptors.threads import set_engine_threads

    at = si_cubic().repeat((2, 1, 1))
    eng = SOAPEngine([14], 4.0, 4, 3, 0.5, cutoff="cosine")
    res = eng.compute(at, gradients=False, keep=True)
    g = np.random.default_rng(0).normal(size=res.p.shape)
    ref = res.vjp(g, strain=True)
    set_engine_threads(2)
    try:
        res2 = eng.compute(at, gradients=False, keep=True)
        got = res2.vjp(g, strain=True)
    finally:
        set_engine_threads(None)
    np.testing.assert_array_equal(res2.p, res.p)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-13)


def test_unknown_species_and_empty():
    eng = SOAPEngine([1], 4.0, 3, 2, 0.5)
    with pytest.raises(ValueError):
        eng.compute(Atoms("C"))
    res = eng.compute(Atoms(), strain=True)
    assert res.p.shape == (0, eng.n_features) and res.dp.shape == (0, 3, eng.n_features)
    # an isolated atom: only its own Gaussian, no derivatives
    res = eng.compute(Atoms("HH", positions=[[0, 0, 0], [0, 0, 30]]), strain=True)
    soap = DSOAP(species=[1], r_cut=4.0, n_max=3, l_max=2, sigma=0.5)
    ref = soap.create(Atoms("HH", positions=[[0, 0, 0], [0, 0, 30]]))
    assert rel_err(res.p, ref) < 1e-12
    assert np.all(res.dp == 0) and np.all(res.dp_strain == 0)


# ----------------------------------------------------------------------------- 1. values
@pytest.mark.parametrize("n_max,l_max", [(4, 3), (2, 0), (3, 1), (5, 2), (8, 6)])
def test_p_matches_dscribe_molecule(n_max, l_max):
    soap = DSOAP(species=CHO, r_cut=5.0, n_max=n_max, l_max=l_max, sigma=0.5, periodic=False)
    eng = SOAPEngine(CHO, 5.0, n_max, l_max, 0.5)
    for seed in (0, 1):
        at = ethanol(seed, amp=0.1)
        ref = soap.create(at)
        p = eng.compute(at, gradients=False).p
        assert p.shape == ref.shape
        assert rel_err(p, ref) < 1e-10


def test_p_matches_dscribe_molecule_partial_cutoff():
    """A small cutoff so that some neighbours are outside r_cut + padding."""
    soap = DSOAP(species=CHO, r_cut=2.0, n_max=4, l_max=3, sigma=0.3)
    eng = SOAPEngine(CHO, 2.0, 4, 3, 0.3)
    at = ethanol(5)
    assert rel_err(eng.compute(at, gradients=False).p, soap.create(at)) < 1e-10


@pytest.mark.parametrize("maker", [si_cubic, si_primitive_skewed])
def test_p_matches_dscribe_periodic_si(maker):
    at = maker()
    soap = DSOAP(species=[14], r_cut=4.0, n_max=4, l_max=3, sigma=0.5, periodic=True)
    eng = SOAPEngine([14], 4.0, 4, 3, 0.5)
    assert rel_err(eng.compute(at, gradients=False).p, soap.create(at)) < 1e-10


def test_p_matches_dscribe_mixed_pbc_two_species():
    at = nacl_slab()
    soap = DSOAP(species=[11, 17], r_cut=4.5, n_max=4, l_max=3, sigma=0.4, periodic=True)
    eng = SOAPEngine([11, 17], 4.5, 4, 3, 0.4)
    assert rel_err(eng.compute(at, gradients=False).p, soap.create(at)) < 1e-10


# ----------------------------------------------------------------------------- 2. dp
@pytest.mark.parametrize("n_max,l_max", [(4, 3), (8, 6)])
def test_dp_matches_dscribe_analytical(n_max, l_max):
    at = ethanol(0)
    soap = DSOAP(species=CHO, r_cut=5.0, n_max=n_max, l_max=l_max, sigma=0.5)
    eng = SOAPEngine(CHO, 5.0, n_max, l_max, 0.5)
    d_ref, p_ref = soap.derivatives(at, attach=True, method="analytical")
    res = eng.compute(at, gradients=True)
    assert rel_err(res.p, p_ref) < 1e-10
    # every (i, j) appears exactly once, self pairs last
    keys = res.pair_i * len(at) + res.pair_j
    assert len(np.unique(keys)) == len(keys)
    np.testing.assert_array_equal(res.pair_i[-len(at):], np.arange(len(at)))
    np.testing.assert_array_equal(res.pair_j[-len(at):], np.arange(len(at)))
    assert np.abs(dense_dp(res, len(at)) - d_ref).max() < 1e-8 * max(1.0, np.abs(d_ref).max())


@pytest.mark.parametrize(
    "maker,cutoff", [(si_cubic, "dscribe"), (si_primitive_skewed, "dscribe"), (si_primitive_skewed, "cosine")]
)
def test_dp_periodic_finite_differences(maker, cutoff):
    at = maker()
    eng = SOAPEngine([14], 4.0, 4, 3, 0.5, cutoff=cutoff, cutoff_width=1.0)
    res = eng.compute(at, gradients=True)
    fd = fd_positions(eng, at)
    assert np.abs(dense_dp(res, len(at)) - fd).max() < 1e-7 * np.abs(fd).max()


def test_dp_cosine_molecule_and_slab_finite_differences():
    at = ethanol(3, amp=0.1)
    eng = SOAPEngine(CHO, 3.0, 4, 3, 0.5, cutoff="cosine", cutoff_width=1.5)
    res = eng.compute(at, gradients=True)
    fd = fd_positions(eng, at)
    assert np.abs(dense_dp(res, len(at)) - fd).max() < 1e-7 * np.abs(fd).max()
    slab = nacl_slab()
    eng2 = SOAPEngine([11, 17], 4.0, 3, 2, 0.4, cutoff="cosine", cutoff_width=1.0)
    res2 = eng2.compute(slab, gradients=True)
    fd2 = fd_positions(eng2, slab)
    assert np.abs(dense_dp(res2, len(slab)) - fd2).max() < 1e-7 * np.abs(fd2).max()


def test_larger_cell_blocked_paths():
    """32-atom cell: streamed coefficients, blocked harmonics and chunked dp
    (several blocks, periodic images folded across them) agree with DScribe,
    the cached path and finite differences."""
    at = bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 2, 1))
    at.rattle(0.05, rng=np.random.default_rng(11))
    at.wrap()
    soap = DSOAP(species=[14], r_cut=4.0, n_max=4, l_max=3, sigma=0.5, periodic=True)
    eng = SOAPEngine([14], 4.0, 4, 3, 0.5)
    ref = SOAPEngine([14], 4.0, 4, 3, 0.5)
    eng._pair_block = 100  # several streamed blocks of pairs
    eng._block_budget = 30_000  # dp in chunks of ~39 unique pairs
    p_stream = eng.compute(at, gradients=False).p
    res = eng.compute(at, gradients=True, strain=True)
    res_ref = ref.compute(at, gradients=True, strain=True)
    assert rel_err(p_stream, soap.create(at)) < 1e-10
    assert np.abs(res.p - p_stream).max() < 1e-12 * np.abs(p_stream).max()
    np.testing.assert_array_equal(res.pair_i, res_ref.pair_i)
    np.testing.assert_array_equal(res.pair_j, res_ref.pair_j)
    assert np.abs(res.dp - res_ref.dp).max() < 1e-12 * np.abs(res_ref.dp).max()
    d = dense_dp(res, len(at))
    rng = np.random.default_rng(0)
    for j in rng.choice(len(at), 3, replace=False):
        for a in range(3):
            ap, am = at.copy(), at.copy()
            ap.positions[j, a] += H_FD
            am.positions[j, a] -= H_FD
            fd = (eng.compute(ap, gradients=False).p - eng.compute(am, gradients=False).p) / (2 * H_FD)
            assert np.abs(d[:, j, a] - fd).max() < 1e-7 * np.abs(fd).max()
    # one strain component by finite differences
    e = np.zeros((3, 3))
    e[0, 2] = H_FD
    ap, am = at.copy(), at.copy()
    ap.set_cell(at.cell[:] @ (np.eye(3) + e).T, scale_atoms=True)
    am.set_cell(at.cell[:] @ (np.eye(3) - e).T, scale_atoms=True)
    fd = (eng.compute(ap, gradients=False).p - eng.compute(am, gradients=False).p) / (2 * H_FD)
    assert np.abs(res.dp_strain[:, 0, 2] - fd).max() < 1e-7 * np.abs(fd).max()


# ----------------------------------------------------------------------------- 3. strain
@pytest.mark.parametrize("cutoff", ["dscribe", "cosine"])
def test_strain_finite_differences(cutoff):
    at = si_primitive_skewed(7)
    eng = SOAPEngine([14], 4.0, 4, 3, 0.5, cutoff=cutoff)
    res = eng.compute(at, gradients=False, strain=True)
    fd = fd_strain(eng, at)
    assert np.abs(res.dp_strain - fd).max() < 1e-7 * np.abs(fd).max()


def test_strain_two_species_mixed_pbc():
    at = nacl_slab(4)
    eng = SOAPEngine([11, 17], 4.0, 3, 2, 0.4)
    res = eng.compute(at, gradients=False, strain=True)
    fd = fd_strain(eng, at)
    assert np.abs(res.dp_strain - fd).max() < 1e-7 * np.abs(fd).max()


# ----------------------------------------------------------------------------- 4. vjp
@pytest.mark.parametrize("case", ["molecule", "si", "slab_cosine"])
def test_vjp_matches_dp_contraction(case):
    if case == "molecule":
        at, eng = ethanol(1), SOAPEngine(CHO, 4.0, 4, 3, 0.5)
    elif case == "si":
        at, eng = si_primitive_skewed(), SOAPEngine([14], 4.0, 4, 3, 0.5)
    else:
        at, eng = nacl_slab(), SOAPEngine([11, 17], 4.0, 3, 2, 0.4, cutoff="cosine")
    res = eng.compute(at, gradients=True, strain=True, keep=True)
    g = np.random.default_rng(0).standard_normal(res.p.shape)
    ref_r = np.zeros((len(at), 3))
    np.add.at(ref_r, res.pair_j, np.einsum("kaf,kf->ka", res.dp, g[res.pair_i]))
    ref_eta = np.einsum("iabf,if->ab", res.dp_strain, g)
    for dr, deta in (eng.vjp(at, g, strain=True), res.vjp(g, strain=True)):
        assert np.abs(dr - ref_r).max() < 1e-10 * np.abs(ref_r).max()
        assert np.abs(deta - ref_eta).max() < 1e-10 * np.abs(ref_eta).max()
    dr, deta = eng.vjp(at, g)
    assert deta is None
    np.testing.assert_allclose(dr.sum(axis=0), 0.0, atol=1e-10 * np.abs(dr).max())


# ----------------------------------------------------------------------------- 5. cutoff
def _dimer(r: float) -> Atoms:
    return Atoms("CH", positions=[[0, 0, 0], [0.6 * r, 0.8 * r, 0.0]])


def test_cosine_cutoff_is_continuous_and_dscribe_is_not():
    r_cut = 4.0
    cos = SOAPEngine([1, 6], r_cut, 4, 3, 0.5, cutoff="cosine", cutoff_width=1.0)
    a, b = cos.compute(_dimer(r_cut - 1e-6)), cos.compute(_dimer(r_cut + 1e-6))
    assert np.abs(a.p - b.p).max() < 1e-8
    assert np.abs(a.dp).max() < 1e-5  # derivative also goes continuously to zero
    hard = SOAPEngine([1, 6], r_cut, 4, 3, 0.5)
    R = hard.search_radius
    a, b = hard.compute(_dimer(R - 1e-6), gradients=False), hard.compute(_dimer(R + 1e-6), gradients=False)
    jump = np.abs(a.p - b.p).max()
    assert jump > 1e-5 * np.abs(a.p).max()
    # the same jump in DScribe
    soap = DSOAP(species=[1, 6], r_cut=r_cut, n_max=4, l_max=3, sigma=0.5)
    ref_jump = np.abs(soap.create(_dimer(R - 1e-6)) - soap.create(_dimer(R + 1e-6))).max()
    assert jump == pytest.approx(ref_jump, rel=1e-6)


def test_cosine_equals_dscribe_inside_inner_radius():
    at = molecule("H2O")
    soap = DSOAP(species=[1, 8], r_cut=5.0, n_max=4, l_max=3, sigma=0.5)
    eng = SOAPEngine([1, 8], 5.0, 4, 3, 0.5, cutoff="cosine", cutoff_width=1.0)
    assert rel_err(eng.compute(at, gradients=False).p, soap.create(at)) < 1e-10


# ----------------------------------------------------------------------------- 6. timing
def _best(f, reps: int, blocks: int = 3) -> float:
    f()
    best = np.inf
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def test_timing_report(capsys):
    """Not an assertion: µs/atom for ethanol at n_max=8, l_max=6, 3 species."""
    at = ethanol(0)
    n = len(at)
    soap = DSOAP(species=CHO, r_cut=5.0, n_max=8, l_max=6, sigma=0.5)
    eng = SOAPEngine(CHO, 5.0, 8, 6, 0.5)
    g = np.random.default_rng(0).standard_normal((n, eng.n_features))
    rows = {
        "dscribe create": _best(lambda: soap.create(at), 20),
        "dscribe derivatives (analytical)": _best(
            lambda: soap.derivatives(at, attach=True, method="analytical"), 3
        ),
        "engine p": _best(lambda: eng.compute(at, gradients=False), 20),
        "engine p + dp": _best(lambda: eng.compute(at, gradients=True), 5),
        "engine vjp (from atoms)": _best(lambda: eng.vjp(at, g), 20),
        "engine p + vjp (keep=True)": _best(lambda: eng.compute(at, gradients=False, keep=True).vjp(g), 20),
    }
    with capsys.disabled():
        print("\nSOAP timings, ethanol, n_max=8 l_max=6, 3 species (µs/atom):")
        for k, v in rows.items():
            print(f"  {k:36s} {v / n * 1e6:9.1f}")
