"""Active learning loop (gapkit.physics.active) with EMT copper as the oracle: tiny and fast."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write
from threadpoolctl import threadpool_limits

from gapkit import GAP, SOAP, FlagThreshold, load
from gapkit.physics.active import ActiveLearningResult, learn

TINY_SOAP = dict(r_cut=3.5, n_max=3, l_max=2)
FAST = dict(md_steps=30, sample_interval=5, md_temperature=800.0, timestep=2.0, n_walkers=2)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


class CountingEMT(EMT):
    """EMT that counts the distinct structures it was asked about (oracle calls)."""

    def __init__(self, fail_every: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.count = 0
        self.fail_every = fail_every

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if system_changes:
            self.count += 1
            if self.fail_every and self.count % self.fail_every == 0:
                raise RuntimeError("simulated oracle failure")
        super().calculate(atoms, properties, system_changes)


def cu_cells(n: int = 2, seed: int = 0, labelled: bool = True) -> list:
    """4-atom fcc Cu cells, slightly rattled (labelled with EMT if asked)."""
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.rattle(0.05, seed=seed + k)
        if labelled:
            from ase.calculators.singlepoint import SinglePointCalculator

            b = a.copy()
            b.calc = EMT()
            a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(),
                                           forces=b.get_forces(), stress=b.get_stress())
        out.append(a)
    return out


def tiny_gap() -> GAP:
    return GAP(SOAP(**TINY_SOAP), n_sparse=20, random_state=0)


def emt_energy_forces(atoms) -> tuple[float, np.ndarray]:
    b = atoms.copy()
    b.calc = EMT()
    return b.get_potential_energy(), b.get_forces()


# ----------------------------------------------------------------------------------
def test_adds_exactly_the_flagged_structures():
    start = cu_cells(2)
    threshold = FlagThreshold(forces=0.015)
    oracle = CountingEMT()
    seen = []
    res = learn(tiny_gap(), oracle, start, threshold=threshold, n_iterations=3, budget=20,
                random_state=0, progress=seen.append, **FAST)
    assert isinstance(res, ActiveLearningResult)
    log = res.log
    assert log and [e["iteration"] for e in log] == list(range(1, len(log) + 1))
    assert [e["iteration"] for e in seen] == [0] + [e["iteration"] for e in log]
    n_added = [e["n_added"] for e in log]
    assert sum(n > 0 for n in n_added) >= 2, "the threshold is low: data must be added twice"
    # counts are consistent: every oracle call added one structure
    assert oracle.count == res.n_oracle_calls == sum(n_added)
    assert len(res.train) == len(start) + res.n_oracle_calls
    assert [e["n_train"] for e in log] == list(len(start) + np.cumsum(n_added))
    assert [e["n_oracle_calls"] for e in log] == list(np.cumsum(n_added))
    for e in log:
        assert e["n_added"] == e["n_selected"] <= min(e["n_flagged"], FAST["n_walkers"])
        assert len(e["selected_scores"]) == e["n_selected"]
        assert all(s > 1 for s in e["selected_scores"])
        assert e["fit_time"] >= 0 and e["sigma_forces_max"] >= e["sigma_forces_mean"] > 0
    # start structures first and unchanged, then the added ones in order
    for a, b in zip(res.train, start):
        np.testing.assert_array_equal(a.positions, b.positions)
    added = res.train[len(start):]
    assert [a.info["al_iteration"] for a in added] == sorted(a.info["al_iteration"] for a in added)
    # every added structure was flagged by the model it was sampled with: refit that
    # model independently (same data, same seed) and re-evaluate the threshold
    n_before = {1: len(start), **{e["iteration"] + 1: e["n_train"] for e in log}}
    for a in added:
        it = a.info["al_iteration"]
        model = tiny_gap().fit(res.train[:n_before[it]])
        _, std = model.predict(a, return_std=True)
        assert threshold.evaluate(std, [a], model.noise_).structures[0]
        assert np.max(std.forces_epistemic[0]) == pytest.approx(a.info["al_sigma_forces"], rel=1e-6)
        assert a.info["al_sigma_forces"] > threshold.forces
        # and its labels are the oracle's
        e, f = emt_energy_forces(a)
        assert a.get_potential_energy() == pytest.approx(e, abs=1e-10)
        np.testing.assert_allclose(a.get_forces(), f, atol=1e-10)
        assert a.calc.results["stress"].shape == (6,)  # periodic: stress labelled too
    # the final model is fitted on the final training set
    assert res.model.extra_["active_learning"]["n_train"] == len(res.train)
    d = res.to_dict()
    assert d["n_train"] == len(res.train) and d["stopped_because"] == res.stopped_because
    json.dumps(d, allow_nan=False)


def test_stops_on_budget_and_counts_start_labelling():
    oracle = CountingEMT()
    start = cu_cells(2, labelled=False)  # labelled by the oracle: 2 of the budget
    res = learn(tiny_gap(), oracle, start, threshold=FlagThreshold(forces=1e-4), budget=3,
                n_iterations=10, sampler="rattle", random_state=0, **FAST)
    assert res.stopped_because == "budget"
    assert res.initial["n_oracle_calls"] == 2
    assert oracle.count == res.n_oracle_calls == 3
    assert len(res.log) == 1 and res.log[0]["n_added"] == 1  # budget cut the selection to 1
    assert len(res.train) == 3

    oracle = CountingEMT()
    res = learn(tiny_gap(), oracle, cu_cells(2), threshold=FlagThreshold(forces=1e-4), budget=3,
                n_iterations=10, random_state=0, max_new_per_iteration=2, **FAST)
    assert res.stopped_because == "budget"
    assert oracle.count == res.n_oracle_calls == 3
    assert [e["n_added"] for e in res.log] == [2, 1]
    assert len(res.train) == 2 + 3


def test_stops_when_nothing_is_flagged():
    oracle = CountingEMT()
    start = cu_cells(2)
    res = learn(tiny_gap(), oracle, start, threshold=FlagThreshold(forces=1e3), n_iterations=5,
                random_state=0, **FAST)
    assert res.stopped_because == "no flags"
    assert len(res.log) == 1
    assert res.log[0]["n_flagged"] == res.log[0]["n_added"] == 0
    assert res.log[0]["n_sampled"] > 0
    assert oracle.count == 0 and len(res.train) == len(start)

    res = learn(tiny_gap(), CountingEMT(), start, threshold=FlagThreshold(forces=1e-4),
                n_iterations=2, budget=100, random_state=0, **{**FAST, "dynamics": "verlet"})
    assert res.stopped_because == "iterations" and len(res.log) == 2


def test_exploding_md_is_discarded_not_labelled():
    oracle = CountingEMT()
    # 50 000 K with 5 fs steps: atoms collide within a few steps
    res = learn(tiny_gap(), oracle, cu_cells(2), threshold=FlagThreshold(forces=10.0),
                n_iterations=2, budget=10, random_state=1, dynamics="verlet",
                **{**FAST, "md_temperature": 5e4, "timestep": 5.0})
    assert sum(e["n_exploded"] for e in res.log) > 0
    assert oracle.count == 0 and len(res.train) == 2
    assert res.stopped_because == "iterations"  # an explosion is not a clean "no flags"


def test_oracle_failures_are_skipped_and_counted():
    oracle = CountingEMT(fail_every=2)
    res = learn(tiny_gap(), oracle, cu_cells(2), threshold=FlagThreshold(forces=1e-4), budget=4,
                n_iterations=5, sampler="rattle", random_state=0, max_new_per_iteration=2, **FAST)
    assert res.stopped_because == "budget"
    assert res.n_oracle_calls == 4 and res.log[-1]["n_oracle_failures"] == 2
    assert len(res.train) == 2 + 2


def test_restart_from_disk_continues(tmp_path):
    wd = tmp_path / "al"
    kw = dict(threshold=FlagThreshold(forces=0.02), budget=20, random_state=3, **FAST)
    first = learn(tiny_gap(), EMT(), cu_cells(2), n_iterations=1, workdir=wd, **kw)
    assert len(first.log) == 1
    for name in ("train.xyz", "log.json", "model.npz"):
        assert (wd / name).is_file()
    assert not list(wd.glob("*.tmp"))
    with pytest.raises(ValueError, match="restart=True"):
        learn(tiny_gap(), EMT(), cu_cells(2), n_iterations=2, workdir=wd, **kw)

    res = learn(tiny_gap(), EMT(), None, n_iterations=2, workdir=wd, restart=True, **kw)
    assert [e["iteration"] for e in res.log] == [1, 2]
    assert res.log[0] == first.log[0]
    assert res.n_oracle_calls == sum(e["n_added"] for e in res.log)
    # the files on disk hold the final state
    disk = read(wd / "train.xyz", ":")
    assert len(disk) == len(res.train) == res.log[-1]["n_train"]
    for a, b in zip(disk, res.train):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-8)
    text = (wd / "log.json").read_text()
    state = json.loads(text)
    assert "NaN" not in text and state["log"] == res.log and state["n_train"] == len(res.train)
    saved = load(wd / "model.npz")
    np.testing.assert_allclose(saved.predict(res.train[-1]).energy,
                               res.model.predict(res.train[-1]).energy, atol=1e-10)
    # one run of 2 iterations gives the same as 1 + restart
    straight = learn(tiny_gap(), EMT(), cu_cells(2), n_iterations=2, **kw)
    assert len(straight.train) == len(res.train)
    for a, b in zip(straight.train, res.train):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)

    # a crash after train.xyz was written but before log.json: the extra frame is dropped
    write(wd / "train.xyz", disk + [disk[0]])
    again = learn(tiny_gap(), EMT(), None, n_iterations=2, workdir=wd, restart=True, **kw)
    assert len(again.train) == len(res.train) and len(again.log) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=-1), "budget"),
    (dict(budget=2.5), "budget"),
    (dict(sampler="metadynamics"), "sampler"),
    (dict(dynamics="nose"), "dynamics"),
    (dict(n_iterations=-1), "n_iterations"),
    (dict(md_steps=0), "md_steps"),
    (dict(n_walkers=0), "n_walkers"),
    (dict(max_new_per_iteration=0), "max_new_per_iteration"),
    (dict(md_temperature=-300.0), "md_temperature"),
    (dict(timestep=0.0), "timestep"),
    (dict(md_steps=5, sample_interval=10), "sample_interval"),
    (dict(restart=True), "workdir"),
    (dict(random_state=-1), "random_state"),
])
def test_bad_arguments_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        learn(tiny_gap(), EMT(), cu_cells(1), threshold=FlagThreshold(forces=0.1), **kwargs)


def test_bad_inputs():
    with pytest.raises(TypeError, match="FlagThreshold"):
        learn(tiny_gap(), EMT(), cu_cells(1), threshold=0.1)
    with pytest.raises(ValueError, match="budget"):
        learn(tiny_gap(), EMT(), cu_cells(3, labelled=False), threshold=FlagThreshold(forces=0.1),
              budget=2)
    with pytest.raises(ValueError, match="labels"):
        learn(tiny_gap(), EMT(), cu_cells(1), threshold=FlagThreshold(forces=0.1),
              test=cu_cells(1, labelled=False))
    with pytest.raises(ValueError, match="empty"):
        learn(tiny_gap(), EMT(), [], threshold=FlagThreshold(forces=0.1))


def test_scores_of_samples_are_the_threshold_flags():
    """A sample is flagged exactly when its FlagThreshold score is above 1 (also at the
    thresholds themselves, where ``>`` decides)."""
    from types import SimpleNamespace

    from ase import Atoms

    frames = [Atoms("Cu3"), Atoms("Cu2")]
    t = FlagThreshold(forces=0.1, energy_per_atom=0.01, relative=3.0)
    noise = {"forces": 0.05, "energy": 0.001}
    rel_e = 3.0 * 0.001  # the relative local-energy threshold (eV)
    f = [np.array([[0.1, 0.0, 0.0], [np.nextafter(0.1, 1), 0, 0], [0.05, 0, 0]]),
         np.array([[0.01, 0, 0], [0.01, 0, 0]])]
    e = [np.array([0.0, 0.0, 0.0]), np.array([rel_e, np.nextafter(rel_e, 1)])]
    std = SimpleNamespace(forces_epistemic=f, energies_epistemic=e,
                          energy_epistemic=np.array([0.03, 0.0]))
    flags = t.evaluate(std, frames, noise)
    atom_scores = t.atom_scores(std, frames, noise)
    assert [a.tolist() for a in flags.atoms] == [[False, True, False], [False, True]]
    for a, s in zip(flags.atoms, atom_scores):
        np.testing.assert_array_equal(a, s > 1)
    scores = t.structure_scores(std, frames, noise)
    np.testing.assert_array_equal(flags.structures, scores > 1)
    assert scores[0] == pytest.approx(np.nextafter(0.1, 1) / 0.1)
    assert FlagThreshold(energy_per_atom=0.01).structure_scores(std, frames, noise)[0] == \
        pytest.approx(1.0)  # 0.03 eV / 3 atoms: at the threshold, not flagged
