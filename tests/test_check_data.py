"""``check_data`` / ``gapkit check-data``: planted wrong labels rank at the top, clean
frames rarely flag, duplicates and energy-force inconsistencies are found (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase import units

from gapkit.cli.app import main
from gapkit.data import default_data_dir
from gapkit.diagnostics import check_data

FAST = dict(n_folds=3, max_train=100, n_sparse=40, random_state=0)
FIXED_KEYS = {"index", "score", "flagged", "reason"}


def _relabel(atoms, energy, forces):
    atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=np.array(forces))


@pytest.fixture(scope="module")
def planted():
    """The default xTB train set with an energy +0.3 eV, one flipped force (the largest),
    a 'different method' frame (forces x1.3, energy +0.3 eV) and a repeated frame."""
    frames = read(default_data_dir() / "train.xyz", ":")
    a = frames[20]
    _relabel(a, a.get_potential_energy() + 0.3, a.get_forces())
    a = frames[70]
    f = a.get_forces().copy()
    f[np.argmax(np.linalg.norm(f, axis=1))] *= -1
    _relabel(a, a.get_potential_energy(), f)
    a = frames[160]
    _relabel(a, a.get_potential_energy() + 0.3, a.get_forces() * 1.3)
    dup = frames[100].copy()
    _relabel(dup, frames[100].get_potential_energy(), frames[100].get_forces())
    frames.append(dup)
    bad = {20: "energy", 70: "forces", 160: "energy"}
    return frames, bad, check_data(frames, **FAST)


def test_planted_labels_rank_at_the_top_and_are_flagged(planted):
    frames, bad, rep = planted
    ranks = {r["index"]: i for i, r in enumerate(rep["frames"])}
    for k, label in bad.items():
        row = rep["frames"][ranks[k]]
        assert ranks[k] < 5, (k, ranks[k], row)
        assert row["flagged"] and label in row["reason"], row


def test_clean_frames_give_few_false_alarms(planted):
    """Clean data: at most 2 % flagged (the default train set, seeds 0-3 with these
    settings: 3, 0, 2, 0 of 200 since the scores are rescaled per fold and composition;
    7, 1, 20, 0 with one scale per composition). Beside planted errors a few clean
    frames more: the fold models learn the planted +0.3 eV energies and pull their
    neighbours' predictions (5 of 197 at seed 0), so that case allows 3 %."""
    frames = read(default_data_dir() / "train.xyz", ":")
    rep = check_data(frames, **FAST)
    assert rep["n_flagged"] <= 0.02 * len(frames), [r for r in rep["frames"] if r["flagged"]]
    frames, bad, rep = planted
    clean = [r for r in rep["frames"] if r["index"] not in bad and r["index"] != len(frames) - 1]
    n_false = sum(r["flagged"] for r in clean)
    assert n_false <= 0.03 * len(clean), [r for r in clean if r["flagged"]]


def test_one_entry_per_frame_sorted_by_score(planted):
    frames, _, rep = planted
    rows = rep["frames"]
    assert sorted(r["index"] for r in rows) == list(range(len(frames)))
    assert all(FIXED_KEYS <= set(r) for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert rep["n_flagged"] == sum(r["flagged"] for r in rows)
    assert all(r["reason"] == "ok" for r in rows if not r["flagged"])


def test_repeated_frame_is_reported_as_duplicate(planted):
    frames, _, rep = planted
    last = len(frames) - 1
    assert [(d["first"], d["second"]) for d in rep["duplicates"]] == [(100, last)]
    row = next(r for r in rep["frames"] if r["index"] == last)
    assert row["flagged"] and "duplicate" in row["reason"]


def test_snapshots_10_fs_apart_are_not_a_trajectory(planted):
    cons = planted[2]["consistency"]
    assert not cons["is_trajectory"] and cons["frames"] == []
    assert "not a trajectory" in cons["message"]


def test_statistics_and_units(planted):
    rep = planted[2]
    assert set(rep["statistics"]["species"]) == {"C", "H", "O"}
    assert rep["statistics"]["config_types"]["ethanol_md"]["n_frames"] == 141
    assert rep["units"]["warnings"] == []
    assert rep["units"]["virial"] is None


def _cu_md(n=20, dt=1.0, seed=0):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    md = VelocityVerlet(atoms, dt * units.fs)
    frames = []
    for _ in range(n):
        snap = atoms.copy()
        _relabel(snap, atoms.get_potential_energy(), atoms.get_forces())
        frames.append(snap)
        md.run(1)
    return frames


def test_trajectory_consistency_flags_exactly_the_pairs_around_a_wrong_energy():
    frames = _cu_md()
    clean = check_data(frames, scores=False)["consistency"]
    assert clean["is_trajectory"] and clean["pairs"] == [] and clean["frames"] == []
    # an atom moved by a lattice vector is the same structure (minimum image)
    frames[5].positions[0] += frames[5].cell[0]
    _relabel(frames[10], frames[10].get_potential_energy() + 0.02, frames[10].get_forces())
    rep = check_data(frames, scores=False)
    cons = rep["consistency"]
    assert [(p["first"], p["second"]) for p in cons["pairs"]] == [(9, 10), (10, 11)]
    assert cons["frames"] == [10]
    flagged = [r for r in rep["frames"] if r["flagged"]]
    assert [(r["index"], r["reason"]) for r in flagged] == [(10, "energy-force inconsistency")]


def test_shuffled_rmd17_frames_are_not_a_trajectory(shared_data):
    frames = read(shared_data / "ethanol_rmd17" / "train.xyz", ":60")
    cons = check_data(frames, scores=False)["consistency"]
    assert not cons["is_trajectory"] and "not a trajectory" in cons["message"]
    assert cons["pairs"] == [] and cons["median_step"] > 0.1


def test_near_duplicate_is_listed_not_flagged():
    frames = _cu_md(n=6)
    near = frames[2].copy()
    near.positions += 2e-4
    _relabel(near, frames[2].get_potential_energy(), frames[2].get_forces())
    rep = check_data(frames + [near], scores=False)
    assert [(d["first"], d["second"]) for d in rep["near_duplicates"]] == [(2, 6)]
    assert rep["duplicates"] == []


def test_too_few_frames_is_a_value_error():
    with pytest.raises(ValueError, match="at least"):
        check_data(_cu_md(n=6), n_folds=5)


def test_cli_prints_strict_json_with_the_fixed_keys(tmp_path, capsys):
    frames = read(default_data_dir() / "train.xyz", ":24")
    path = tmp_path / "part.xyz"
    write(path, frames)
    plot = tmp_path / "scores.png"
    rc = main(["check-data", str(path), "--json", "--folds", "2", "--max-train", "12",
               "--n-sparse", "15", "--plot", str(plot)])
    assert rc == 0
    out = capsys.readouterr().out

    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    rep = json.loads(out, parse_constant=refuse)
    assert isinstance(rep["n_flagged"], int)
    assert [r["index"] for r in sorted(rep["frames"], key=lambda r: r["index"])] == list(range(24))
    for r in rep["frames"]:
        assert FIXED_KEYS <= set(r)
        assert isinstance(r["index"], int) and isinstance(r["score"], float)
        assert isinstance(r["flagged"], bool) and isinstance(r["reason"], str)
    assert plot.is_file() and plot.stat().st_size > 0


def test_cli_human_output_has_the_worst_frames_table(tmp_path, capsys):
    frames = _cu_md(n=12)
    path = tmp_path / "cu.xyz"
    write(path, frames)
    assert main(["check-data", str(path), "--folds", "2", "--max-train", "6", "--n-sparse", "8"]) == 0
    out = capsys.readouterr().out
    assert "index" in out and "config_type" in out and "energy-force consistency: trajectory" in out


def test_forces_in_kcal_per_mol_raise_a_unit_warning():
    frames = read(default_data_dir() / "train.xyz", ":40")
    for a in frames:
        _relabel(a, a.get_potential_energy(), a.get_forces() * 23.06)
    units_ = check_data(frames, scores=False)["units"]
    assert units_["force_energy_ratio"] > 2000
    assert any("eV/Å" in w for w in units_["warnings"])
