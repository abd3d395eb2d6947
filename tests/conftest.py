"""Shared fixtures: small data, a small fitted model, the shared DFT data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
SHARED = Path(os.environ.get("GAPKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Small settings keep the whole suite fast on 2 cores.
SMALL_SOAP = dict(r_cut=4.0, n_max=4, l_max=3, sigma=0.5)


@pytest.fixture
def one_blas_thread():
    """BLAS on one thread for the test: results that are equal bit for bit (threaded
    factorisations against serial ones) are so only when BLAS itself does not split its
    products over threads; with several BLAS threads they agree to round-off."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def train_frames():
    return read(DATA / "train.xyz", ":")


@pytest.fixture(scope="session")
def test_frames():
    return read(DATA / "test.xyz", ":")


@pytest.fixture(scope="session")
def small_model(train_frames):
    """A GAP fitted on 40 default-data frames with a small SOAP (session-wide, read-only)."""
    from gapkit import GAP, SOAP

    frames = train_frames[:30] + train_frames[-10:]
    return GAP(SOAP(**SMALL_SOAP), n_sparse=60, e0="lstsq", random_state=0,
               calibrate=False).fit(frames)


@pytest.fixture(scope="session")
def calibrated_model(train_frames):
    """A GAP calibrated by default (held-out 20 %) on 60 default-data frames (read-only)."""
    from gapkit import GAP, SOAP

    frames = train_frames[:45] + train_frames[-15:]
    return GAP(SOAP(**SMALL_SOAP), n_sparse=60, e0="lstsq", random_state=0).fit(frames)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED.is_dir():
        pytest.skip(f"shared DFT data not found at {SHARED}")
    return SHARED


def finite_difference_forces(energy_fn, atoms, h=1e-4, atoms_idx=None):
    """Central-difference -dE/dr for the given atoms (all by default), shape (k, 3)."""
    idx = range(len(atoms)) if atoms_idx is None else atoms_idx
    out = []
    for j in idx:
        row = []
        for a in range(3):
            ap = atoms.copy()
            ap.positions[j, a] += h
            am = atoms.copy()
            am.positions[j, a] -= h
            row.append(-(energy_fn(ap) - energy_fn(am)) / (2 * h))
        out.append(row)
    return np.array(out)


def finite_difference_stress(energy_fn, atoms, h=1e-4):
    """Central-difference stress ``(1/V) dE/d eta`` (symmetrised), Voigt order, eV/Å³."""
    V = atoms.get_volume()
    dE = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            eps = np.zeros((3, 3))
            eps[i, j] = h
            p, m = atoms.copy(), atoms.copy()
            p.set_cell(atoms.cell @ (np.eye(3) + eps).T, scale_atoms=True)
            m.set_cell(atoms.cell @ (np.eye(3) - eps).T, scale_atoms=True)
            dE[i, j] = (energy_fn(p) - energy_fn(m)) / (2 * h)
    sym = 0.5 * (dE + dE.T) / V
    return np.array([sym[0, 0], sym[1, 1], sym[2, 2], sym[1, 2], sym[0, 2], sym[0, 1]])


def si_primitive_skewed(seed: int = 2) -> Atoms:
    """2-atom primitive Si cell (far smaller than twice the cutoff: atoms see many of
    their own images), randomly sheared and rattled."""
    rng = np.random.default_rng(seed)
    at = bulk("Si", "diamond", 5.43)
    at.set_cell(at.cell[:] @ (np.eye(3) + 0.03 * rng.standard_normal((3, 3))).T, scale_atoms=True)
    at.rattle(0.05, rng=rng)
    at.wrap()
    return at


# Small EMT copper cells: periodic data with energies, forces and stresses.
SOAP_CU = dict(r_cut=3.5, n_max=4, l_max=3, sigma=0.5)


def emt_cu_frames(n, rng, varied=True):
    """``n`` strained, rattled fcc Cu cells labelled by ASE's EMT (energy, forces,
    stress). ``varied`` mixes cubic, primitive and 2x1x1 cells; otherwise all cubic."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for k in range(n):
        a = bulk("Cu", "fcc", 3.6, cubic=bool(k % 2) or not varied)
        if varied and k % 3 == 0:
            a = a.repeat((2, 1, 1))
        a.set_cell(a.cell @ (np.eye(3) + 0.02 * rng.normal(size=(3, 3))).T, scale_atoms=True)
        a.positions += 0.08 * rng.normal(size=a.positions.shape)
        a.calc = EMT()
        e, f, st = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=st)
        frames.append(a)
    return frames
