"""The command line, end to end on tiny data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read, write

from gapkit.cli import main

SMALL = ["--n-max", "4", "--l-max", "3", "--r-cut", "4.0", "--n-sparse", "40"]


@pytest.fixture
def tiny(tmp_path, train_frames, test_frames):
    tr, te = tmp_path / "train.xyz", tmp_path / "test.xyz"
    write(tr, train_frames[:12])
    write(te, test_frames[:5])
    return tr, te


def test_fit_evaluate_predict(tiny, tmp_path, capsys):
    tr, te = tiny
    model = tmp_path / "model.npz"
    assert main(["fit", str(tr), "--test", str(te), "-o", str(model), "--e0", "lstsq", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "train: 12 structures" in out and "test: 5 structures" in out and model.is_file()

    assert main(["evaluate", str(model), str(te), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("n_structures", "n_atoms", "energy_mae", "energy_rmse", "energy_mae_per_atom",
                "forces_mae", "forces_rmse", "energy_z_std", "forces_z_std", "energy_coverage_95",
                "forces_coverage_95", "energy_nll", "forces_nll", "energy_spearman", "noise"):
        assert key in res, key
    assert res["n_structures"] == 5 and res["n_atoms"] == sum(len(a) for a in read(te, ":"))
    assert 0 < res["forces_mae"] <= res["forces_rmse"]

    out_xyz = tmp_path / "pred.xyz"
    assert main(["predict", str(model), str(te), "-o", str(out_xyz), "--flag-threshold", "1e-9x"]) == 0
    text = capsys.readouterr().out
    assert "Flagged 5 of 5 structures" in text
    got = read(out_xyz, ":")
    ref = read(te, ":")
    for g, r in zip(got, ref):
        assert "gapkit_energy" in g.info and g.arrays["gapkit_forces"].shape == (len(r), 3)
        assert g.get_potential_energy() == pytest.approx(r.get_potential_energy())  # labels intact
        np.testing.assert_allclose(g.get_forces(), r.get_forces())
        assert g.info["gapkit_flagged"] and g.info["gapkit_energy_std"] > 0


def test_fit_with_acsf_and_two_body_terms(tiny, tmp_path, capsys):
    """--descriptor acsf --two-body N builds a 2b+ACSF additive model that saves and loads."""
    from gapkit import load

    tr, te = tiny
    model = tmp_path / "model.npz"
    assert main(["fit", str(tr), "--test", str(te), "-o", str(model), "--e0", "lstsq",
                 "--descriptor", "acsf", "--two-body", "10", *SMALL]) == 0
    loaded = load(model)
    # the many-body term first (it is descriptor_), the 2-body term second
    assert [type(t.descriptor).__name__ for t in loaded.terms_] == ["ACSF", "TwoBody"]
    assert type(loaded.descriptor_).__name__ == "ACSF"
    assert loaded.terms_[1].zeta == 1.0 and len(loaded.terms_[1].sparse_species) == 30
    assert loaded.terms_[1].descriptor.r_cut == loaded.descriptor_.r_cut


def test_cli_errors_are_reported(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "none.npz"), str(tmp_path / "x.xyz")]) == 2
    assert "No such model file" in capsys.readouterr().err


def test_default_fit_runs_from_any_directory(tmp_path):
    """`gapkit fit` with no training files uses the project's default data, from any cwd."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "gapkit", "fit", *SMALL, "-o", "m.npz"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Using the default data" in proc.stdout and "test:" in proc.stdout
    assert (tmp_path / "m.npz").is_file()


# ---------------------------------------------------------------- user errors (#13)
def _gapkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gapkit", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_user_errors_are_one_line_without_traceback(tmp_path, tiny):
    tr, te = tiny
    text = tmp_path / "m.npz"
    text.write_text("not a model")
    proc = _gapkit("evaluate", str(text), str(te))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"gapkit evaluate: error: '{text}' is not a readable gapkit model file (corrupt or "
        f"truncated?): " + proc.stderr.split("truncated?): ", 1)[1].strip()]
    # -v after the sub-command: the traceback, same exit code
    proc = _gapkit("evaluate", str(text), str(te), "-v")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "ModelFileError" in proc.stderr


def test_directory_and_unknown_inputs(tmp_path, tiny, capsys):
    tr, te = tiny
    assert main(["fit", str(tmp_path), "-o", str(tmp_path / "m.npz"), *SMALL]) == 2
    assert "is a directory, not a structure file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(te)]) == 2
    assert "is a directory, not a model file" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["C:abc", "0", "C:0", "-3", "X:5", "C=4"])
def test_bad_n_sparse_is_a_usage_error_without_internal_names(value, tiny, capsys, tmp_path):
    tr, _ = tiny
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(tr), "-o", str(tmp_path / "m.npz"), "--n-sparse", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --n-sparse" in err and "_parse" not in err
    assert "N a positive integer" in err


def test_version_and_verbosity_after_the_sub_command(capsys):
    from gapkit import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"gapkit {__version__}"
    for flags in (["-q"], ["-v"], ["--quiet"]):
        assert main(["evaluate", "none.npz", "x.xyz", *flags]) == 2
        assert "No such model file" in capsys.readouterr().err
    assert main(["-q", "evaluate", "none.npz", "x.xyz"]) == 2


def test_stress_key_and_no_virials(tmp_path, rng, capsys):
    from conftest import emt_cu_frames
    from ase.calculators.singlepoint import SinglePointCalculator

    from gapkit import load

    frames = []
    for a in emt_cu_frames(8, rng):
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        a.info["REF_stress"] = s
        frames.append(a)
    tr = tmp_path / "cu.xyz"
    write(tr, frames)
    small = ["--n-max", "4", "--l-max", "3", "--r-cut", "3.5", "--n-sparse", "20",
             "--no-calibrate", "--e0", "lstsq"]
    assert main(["fit", str(tr), "-o", str(tmp_path / "s.npz"), "--stress-key", "REF_stress",
                 *small]) == 0
    assert any(k.startswith("virial") for k in load(tmp_path / "s.npz").n_train_.labelled())
    assert load(tmp_path / "s.npz").stress_key == "REF_stress"
    assert main(["fit", str(tr), "-o", str(tmp_path / "n.npz"), "--stress-key", "REF_stress",
                 "--no-virials", *small]) == 0
    assert not any(k.startswith("virial") for k in load(tmp_path / "n.npz").n_train_.labelled())
    # a plain fit reads no virials here: REF_stress is not a conventional key
    assert main(["fit", str(tr), "-o", str(tmp_path / "p.npz"), *small]) == 0
    assert not any(k.startswith("virial") for k in load(tmp_path / "p.npz").n_train_.labelled())
