"""Errors per file and per config_type, with stress errors (gapkit.diagnostics.breakdown)."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.units import GPa

from gapkit.cli import main
from gapkit.data import LabelKeys
from gapkit.diagnostics.breakdown import GROUP_KEYS, breakdown, frame_errors, group_metrics
from gapkit.diagnostics.evaluation import evaluate
from gapkit.model import Prediction


def _frame(n, energy, forces, config_type, stress=None, cell=None):
    a = Atoms("H" * n, positions=np.arange(3 * n, dtype=float).reshape(n, 3),
              cell=cell, pbc=cell is not None)
    a.calc = SinglePointCalculator(a, energy=energy, forces=np.asarray(forces, float),
                                   **({} if stress is None else {"stress": np.asarray(stress)}))
    a.info["config_type"] = config_type
    return a


@pytest.fixture
def labelled():
    """Four frames: (2 atoms, 'bulk', stress), (1, 'bulk'), (2, 'surf', stress), (1, 'surf');
    and a prediction whose errors are simple numbers."""
    cell = np.diag([2.0, 2.0, 2.0])
    frames = [_frame(2, 1.0, np.zeros((2, 3)), "bulk", stress=[0.01, 0, 0, 0, 0, 0], cell=cell),
              _frame(1, 2.0, np.zeros((1, 3)), "bulk"),
              _frame(2, 3.0, np.zeros((2, 3)), "surf", stress=np.zeros(6), cell=cell),
              _frame(1, 4.0, np.zeros((1, 3)), "surf")]
    # energy errors +0.2, -0.1, +0.4, -0.3 eV; force errors: one component each
    forces = [np.array([[0.1, 0, 0], [0, 0, 0]]), np.array([[0, -0.2, 0]]),
              np.array([[0, 0, 0.3], [0, 0, 0]]), np.array([[0, 0, 0]])]
    stress = np.full((4, 6), np.nan)
    stress[0] = [0.01 + 0.002, 0, 0, 0, 0, -0.004]   # errors 0.002 and -0.004 eV/Å³
    stress[2] = [0, 0, 0.006, 0, 0, 0]               # error 0.006 eV/Å³
    pred = Prediction(energy=np.array([1.2, 1.9, 3.4, 3.7]), energies=[None] * 4,
                      forces=forces, stress=stress)
    return frames, pred


def test_group_metrics_by_hand(labelled):
    frames, pred = labelled
    fe = frame_errors(pred, frames)
    m = group_metrics(fe)
    assert set(m) == set(GROUP_KEYS)
    assert m["n_structures"] == 4 and m["n_atoms"] == 6
    assert m["energy_mae"] == pytest.approx((0.2 + 0.1 + 0.4 + 0.3) / 4)
    assert m["energy_rmse"] == pytest.approx(np.sqrt((0.04 + 0.01 + 0.16 + 0.09) / 4))
    assert m["energy_mae_per_atom"] == pytest.approx((0.1 + 0.1 + 0.2 + 0.3) / 4)
    assert m["forces_mae"] == pytest.approx((0.1 + 0.2 + 0.3) / 18)
    assert m["forces_rmse"] == pytest.approx(np.sqrt((0.01 + 0.04 + 0.09) / 18))
    assert m["n_force_components"] == 18
    # stress over the 2 labelled cells x 6 Voigt components, in GPa
    assert m["n_stress"] == 2
    assert m["stress_mae"] == pytest.approx((0.002 + 0.004 + 0.006) / 12 / GPa)
    assert m["stress_rmse"] == pytest.approx(np.sqrt((4e-6 + 16e-6 + 36e-6) / 12) / GPa)
    assert m["energy_zms"] is None and m["forces_zms"] is None


def test_breakdown_by_config_type_and_file(labelled):
    frames, pred = labelled
    fe = frame_errors(pred, frames)
    by_ct = breakdown(fe, fe.config_types)
    assert list(by_ct) == ["bulk", "surf"]
    assert by_ct["bulk"]["energy_mae"] == pytest.approx(0.15)
    assert by_ct["surf"]["energy_mae_per_atom"] == pytest.approx((0.2 + 0.3) / 2)
    assert by_ct["bulk"]["forces_mae"] == pytest.approx(0.3 / 9)
    assert by_ct["bulk"]["stress_mae"] == pytest.approx(0.006 / 6 / GPa)
    assert by_ct["surf"]["stress_rmse"] == pytest.approx(np.sqrt(36e-6 / 6) / GPa)
    by_file = breakdown(fe, ["a.xyz", "b.xyz", "b.xyz", "a.xyz"])
    assert by_file["a.xyz"]["energy_rmse"] == pytest.approx(np.sqrt((0.04 + 0.09) / 2))
    assert by_file["a.xyz"]["stress_mae"] == pytest.approx(0.006 / 6 / GPa)
    assert by_file["b.xyz"]["n_stress"] == 1 and by_file["b.xyz"]["n_atoms"] == 3
    # a group without stress labels reports None, not 0
    assert breakdown(fe, ["x", "y", "x", "y"])["y"]["stress_mae"] is None
    with pytest.raises(ValueError, match="3 tags for 4 frames"):
        breakdown(fe, ["a", "b", "c"])


def test_stress_from_virial_key_and_zms(labelled):
    """A virial key (eV) gives the reference stress -W/V; σ gives the ZMS per group."""
    frames, pred = labelled
    frames[0].info["my_virial"] = np.diag([-0.08, 0.0, 0.0])     # -stress * V, V = 8
    fe = frame_errors(pred, frames, LabelKeys(virial="my_virial"))
    assert [s is not None for s in fe.stress] == [True, False, False, False]
    np.testing.assert_allclose(fe.stress[0] * GPa, [0.002, 0, 0, 0, 0, -0.004], atol=1e-15)

    class Std:
        energy = np.array([0.1, 0.1, 0.2, 0.3])
        forces = [np.full((2, 3), 0.1), np.full((1, 3), 0.1), np.full((2, 3), 0.3),
                  np.full((1, 3), 0.1)]
    fe = frame_errors(pred, frames, std=Std())
    by_ct = breakdown(fe, fe.config_types)
    assert by_ct["bulk"]["energy_zms"] == pytest.approx((4 + 1) / 2)
    assert by_ct["surf"]["energy_zms"] == pytest.approx((4 + 1) / 2)
    assert by_ct["surf"]["forces_zms"] == pytest.approx(1 / 9)


def test_frame_errors_checks_lengths(labelled):
    frames, pred = labelled
    with pytest.raises(ValueError, match="3 energies for 4 frames"):
        frame_errors(Prediction(energy=pred.energy[:3], energies=[]), frames)


class _Fixed:
    """A stand-in model that returns a fixed prediction."""

    label_keys = None

    def __init__(self, pred):
        self.pred = pred

    def predict(self, frames, **kw):
        return self.pred


def test_evaluation_groups_and_top_level_stress(labelled):
    frames, pred = labelled
    ev = evaluate(_Fixed(pred), frames, with_std=False,
                  sources=["a.xyz", "a.xyz", "b.xyz", "b.xyz"])
    assert ev.errors["stress_mae"] == pytest.approx(0.012 / 12 / GPa)
    assert ev.errors["energy_mae"] == pytest.approx(0.25)
    assert ev.by_file()["b.xyz"]["energy_mae"] == pytest.approx(0.35)
    assert ev.by_config_type()["bulk"]["n_structures"] == 2
    with pytest.raises(ValueError, match="sources has 1 entries for 4 frames"):
        evaluate(_Fixed(pred), frames, with_std=False, sources=["a"])


def test_evaluation_without_stress_labels_is_none(labelled):
    frames, pred = labelled
    ev = evaluate(_Fixed(Prediction(energy=pred.energy, energies=[], forces=pred.forces)),
                  frames, with_std=False)
    assert ev.errors["stress_mae"] is None and ev.errors["stress_rmse"] is None
    assert list(ev.by_file()) == ["all"]


def test_cli_evaluate_two_files_two_config_types(tmp_path, small_model, test_frames, capsys):
    """gapkit evaluate A B --json: by_file and by_config_type equal the errors of each
    subset computed from the model's own prediction."""
    model = tmp_path / "m.npz"
    small_model.save(model)
    a, b = test_frames[:4], test_frames[-3:]
    assert {f.info["config_type"] for f in a + b} >= {"ethanol_md", "methanol_rattle"}
    fa, fb = tmp_path / "a.xyz", tmp_path / "b.xyz"
    write(fa, a)
    write(fb, b)
    assert main(["evaluate", str(model), str(fa), str(fb), "--json", "--no-std"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["stress_mae"] is None and res["stress_rmse"] is None
    assert list(res["by_file"]) == [str(fa), str(fb)]
    for path, frames in ((fa, a), (fb, b)):
        pred = small_model.predict(frames)
        de = pred.energy - np.array([f.get_potential_energy() for f in frames])
        got = res["by_file"][str(path)]
        assert set(got) == set(GROUP_KEYS)
        assert got["energy_mae"] == pytest.approx(np.mean(np.abs(de)))
        df = np.concatenate([(p - f.get_forces()).ravel() for p, f in zip(pred.forces, frames)])
        assert got["forces_rmse"] == pytest.approx(np.sqrt(np.mean(df ** 2)))
    cts = [f.info["config_type"] for f in a + b]
    assert set(res["by_config_type"]) == set(cts)
    for ct, m in res["by_config_type"].items():
        assert m["n_structures"] == cts.count(ct)
    assert main(["evaluate", str(model), str(fa), str(fb), "--no-std"]) == 0
    text = capsys.readouterr().out
    assert "config_type" in text and str(fb) in text and "ethanol_md" in text


def test_cli_stress_error_matches_hand_value(tmp_path, capsys):
    """On periodic EMT cells the reported stress MAE is that of the model's stress
    against the EMT labels, in GPa."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from gapkit import GAP, SOAP

    rng = np.random.default_rng(0)
    cells = []
    for k in range(10):
        c = bulk("Cu", "fcc", a=3.6, cubic=True)
        c.set_cell(c.cell.array * (1 + rng.uniform(-0.02, 0.02, 3)), scale_atoms=True)
        c.rattle(0.05, seed=k)
        c.calc = EMT()
        c.calc = SinglePointCalculator(c, energy=c.get_potential_energy(),
                                       forces=c.get_forces(), stress=c.get_stress())
        c.info["config_type"] = "strained" if k % 2 else "rattled"
        cells.append(c)
    model = GAP(SOAP(r_cut=3.5, n_max=3, l_max=2), n_sparse=8, calibrate=False,
                random_state=0).fit(cells[:6])
    path = tmp_path / "m.npz"
    model.save(path)
    test = tmp_path / "t.xyz"
    write(test, cells[6:])
    assert main(["evaluate", str(path), str(test), "--json", "--no-std"]) == 0
    res = json.loads(capsys.readouterr().out)
    cells[6:] = read(test, ":")          # the labels as written (8 decimals)
    pred = model.predict(cells[6:])
    ds = pred.stress - np.array([c.get_stress() for c in cells[6:]])
    assert res["stress_mae"] == pytest.approx(np.mean(np.abs(ds)) / GPa, rel=1e-9)
    assert res["stress_rmse"] == pytest.approx(np.sqrt(np.mean(ds ** 2)) / GPa, rel=1e-9)
    assert res["n_stress"] == 4 and res["stress_mae"] > 0
    odd = [c for k, c in enumerate(cells[6:]) if k % 2]
    ds_odd = model.predict(odd).stress - np.array([c.get_stress() for c in odd])
    assert res["by_config_type"]["strained"]["stress_mae"] == pytest.approx(
        np.mean(np.abs(ds_odd)) / GPa, rel=1e-9)


def test_cli_fit_test_files_are_reported_separately(tmp_path, train_frames, test_frames, capsys):
    """gapkit fit --test A B prints one row per file and per config_type, and
    --errors-json writes the same numbers as gapkit evaluate --json."""
    tr, fa, fb = tmp_path / "tr.xyz", tmp_path / "a.xyz", tmp_path / "b.xyz"
    write(tr, train_frames[:12])
    write(fa, test_frames[:3])
    write(fb, test_frames[-2:])
    model, js = tmp_path / "m.npz", tmp_path / "errors.json"
    assert main(["fit", str(tr), "--test", str(fa), str(fb), "-o", str(model), "--e0", "lstsq",
                 "--n-max", "3", "--l-max", "2", "--r-cut", "3.5", "--n-sparse", "10",
                 "--no-calibrate", "--errors-json", str(js)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(str(fa)) and line.split()[1] == "3" for line in lines)
    assert any(line.startswith(str(fb)) and line.split()[1] == "2" for line in lines)
    saved = json.loads(js.read_text())
    assert saved["train"]["n_structures"] == 12 and saved["test"]["n_structures"] == 5
    assert main(["evaluate", str(model), str(fa), str(fb), "--json", "--no-std"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("by_file", "by_config_type"):
        for name, m in res[key].items():
            assert saved["test"][key][name]["energy_mae"] == pytest.approx(m["energy_mae"])
            assert saved["test"][key][name]["forces_rmse"] == pytest.approx(m["forces_rmse"])
