"""The default validation split keeps equivalent frames (symmetry copies) on one side."""

import math

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from sklearn.utils import check_random_state

from gapkit.data import equivalent_groups
from gapkit.model import training


def _labelled(atoms, energy):
    atoms.calc = SinglePointCalculator(atoms, energy=energy,
                                       forces=np.zeros((len(atoms), 3)))
    return atoms


def _strained_copies(n_structures, rng):
    """Each structure three times, strained along x, y and z (equal energies)."""
    frames = []
    for s in range(n_structures):
        e = -10.0 * s - rng.uniform()
        for axis in range(3):
            a = bulk("Si", "diamond", a=5.43, cubic=True)
            cell = np.array(a.cell)
            cell[axis] *= 1.0 + 0.01 * (s + 1)
            a.set_cell(cell, scale_atoms=True)
            frames.append(_labelled(a, e + 1e-9 * axis))
    return frames


def test_equivalent_groups_join_copies_and_nothing_else(rng):
    frames = _strained_copies(4, rng)
    e = [f.get_potential_energy() for f in frames]
    g = equivalent_groups(frames, e)
    np.testing.assert_array_equal(g, np.repeat(np.arange(4), 3))
    # another composition, another periodicity, a missing energy: groups of their own
    other = _labelled(bulk("C", "diamond", a=3.57, cubic=True), e[0] * 8 / 8)
    slab = frames[0].copy()
    slab.pbc = (True, True, False)
    g2 = equivalent_groups(frames + [other, slab, frames[1]], e + [e[0], e[0], None])
    assert len(set(g2[12:])) == 3 and not set(g2[12:]) & set(g2[:12])
    # a difference above the tolerance (1e-7 eV/atom) separates
    g3 = equivalent_groups(frames[:2], [e[0], e[0] + 8 * 2e-7])
    assert g3[0] != g3[1]


def test_split_keeps_copies_together(rng):
    frames = _strained_copies(20, rng)
    train, val = training.split_validation(frames, 0.2, 0)
    assert len(val) >= math.ceil(0.2 * 60) and len(train) + len(val) == 60
    e_val = {round(a.get_potential_energy(), 6) for a in val}
    e_train = {round(a.get_potential_energy(), 6) for a in train}
    assert not e_val & e_train
    assert len(val) % 3 == 0


def test_split_of_distinct_frames_is_the_plain_random_split(train_frames):
    frames = train_frames[:50]
    train, val = training.split_validation(frames, 0.2, 7)
    idx = sorted(check_random_state(7).permutation(50)[:10].tolist())
    assert [id(a) for a in val] == [id(frames[k]) for k in idx]
    assert len(train) == 40


def test_split_refuses_when_a_group_leaves_too_little_training_data(rng):
    # 13 copies of one structure and 2 others: a plain split of 15 frames would hold
    # out 3, but any draw that takes the big group leaves fewer than 3 for training
    frames = _strained_copies(1, rng)[:1] * 13 + _strained_copies(2, rng)[1::3]
    assert len(frames) == 15 and len(set(equivalent_groups(
        frames, [a.get_potential_energy() for a in frames]))) == 3
    for seed in range(5):
        assert training.split_validation(frames, 0.2, seed) is None


def test_fit_says_when_equivalent_frames_block_the_split(rng):
    from conftest import SMALL_SOAP

    from gapkit import GAP, SOAP

    frames = _strained_copies(1, rng)[:1] * 13 + _strained_copies(2, rng)[1::3]
    model = GAP(SOAP(**{**SMALL_SOAP, "species": ["Si"]}), n_sparse=10, e0="lstsq",
                random_state=0)
    with pytest.warns(UserWarning, match="equivalent frames, the same composition and energy "
                                         "per atom, stay on one side"):
        model.fit(frames)
    assert not model.calibration_.calibrated
