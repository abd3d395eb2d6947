"""n_sparse="auto": sparse counts that scale with the data, within the budgets."""

import warnings

import numpy as np
import pytest

from gapkit import GAP, SOAP
from gapkit.cli.common import parse_n_sparse
from gapkit.model import sparse_counts as sc
from gapkit.model.params import check_n_sparse

from conftest import SMALL_SOAP


def test_rule_every_environment_then_a_fraction():
    counts = sc.auto_counts({1: 6000, 6: 2000, 8: 1000}, n_features=2100)
    assert counts == {1: sc.ALL_UP_TO + int(sc.FRACTION_BEYOND * (6000 - sc.ALL_UP_TO)),
                      6: 2000, 8: 1000}
    assert sc.auto_counts({29: 50}, n_features=100) == {29: 50}


def test_budget_scales_counts_down_and_keeps_the_floor():
    n_env = {1: 100_000, 6: 50_000, 8: 800}
    F = 6000
    counts = sc.auto_counts(n_env, n_features=F)
    M = sum(counts.values())
    assert M <= sc.budget_m(F) + len(n_env)       # rounding
    assert 8 * M * F + 4 * M ** 2 <= sc.FILE_BUDGET * 1.01
    assert counts[8] == min(800, sc.FLOOR)          # small species keep the floor
    assert counts[1] > counts[6] > counts[8]
    # half the budget (two auto terms) gives fewer points
    assert sum(sc.auto_counts(n_env, F, share=0.5).values()) < M


def test_budget_respects_memory():
    m = sc.budget_m(n_features=1)
    assert sc.PEAK_BYTES_PER_M2 * m ** 2 <= sc.MEMORY_BUDGET


def test_bad_environment_counts_raise():
    with pytest.raises(ValueError, match="positive environment count"):
        sc.auto_counts({}, 10)
    with pytest.raises(ValueError, match="positive environment count"):
        sc.auto_counts({1: 0}, 10)


def test_auto_is_the_default_and_takes_every_environment_of_small_data(train_frames):
    frames = train_frames[:8]
    assert GAP().n_sparse == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GAP(SOAP(**SMALL_SOAP), random_state=0, calibrate=False).fit(frames)
    n_env = sc.environment_counts(frames)
    Z = model.sparse_species_
    for z, n in n_env.items():  # all distinct environments (a few duplicates dropped)
        assert 0.9 * n <= np.sum(Z == z) <= n


def test_explicit_counts_still_work(train_frames):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GAP(SOAP(**SMALL_SOAP), n_sparse={"H": 7, "C": 5, "O": 3}, random_state=0,
                    calibrate=False).fit(train_frames[:8])
    Z = model.sparse_species_
    assert [int(np.sum(Z == z)) for z in (1, 6, 8)] == [7, 5, 3]


def test_n_sparse_strings_other_than_auto_raise():
    check_n_sparse("auto")
    with pytest.raises(ValueError, match="n_sparse must be a positive integer .*, 'auto' or a dict"):
        check_n_sparse("many")
    with pytest.raises(ValueError, match="n_sparse must be a positive integer"):
        GAP(n_sparse="all").fit([])


def test_cli_accepts_auto():
    assert parse_n_sparse("auto") == "auto"
    assert parse_n_sparse("C:10,H:20") == {"C": 10, "H": 20}
