"""``gapkit info`` and the provenance ``gapkit fit`` records in the model."""

from __future__ import annotations

import hashlib
import json

import pytest
from ase.io import write

from gapkit import cli, load
from gapkit._version import __version__

FIT_FLAGS = ["--n-max", "3", "--l-max", "2", "--r-cut", "3.5", "--n-sparse", "15",
             "--e0", "lstsq", "--no-calibrate"]


@pytest.fixture(scope="module")
def fitted(train_frames, tmp_path_factory):
    d = tmp_path_factory.mktemp("info")
    a, b = d / "a.xyz", d / "b.xyz"
    write(a, train_frames[:12])
    write(b, train_frames[-8:])
    out = d / "model.npz"
    with pytest.warns(UserWarning, match="rank deficient"):
        assert cli.main(["fit", str(a), str(b), "-o", str(out), *FIT_FLAGS]) == 0
    return out, a, b


def test_fit_records_provenance(fitted):
    out, a, b = fitted
    prov = load(out).extra_["provenance"]
    assert prov["gapkit_version"] == __version__
    files = prov["training_files"]
    assert [f["n_frames"] for f in files] == [12, 8]
    assert files[0]["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert files[1]["path"].endswith("b.xyz")
    assert prov["config"]["n_max"] == 3 and prov["config"]["output"] == str(out)
    assert isinstance(prov["command"], list)


def test_info_json(fitted, capsys):
    out, a, _ = fitted
    capsys.readouterr()
    assert cli.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 3 and info["gapkit_version"]
    assert info["file_size_bytes"] == out.stat().st_size
    assert info["species"] == ["H", "C", "O"]
    (term,) = info["terms"]
    assert term["descriptor"] == "SOAP" and term["settings"]["n_max"] == 3
    assert sum(term["n_sparse"].values()) == info["n_sparse"] == 45
    assert set(info["noise"]) == {"energy", "forces"}
    assert info["calibration"]["calibrated"] is False
    assert info["provenance"]["training_files"][0]["sha256"] == \
        hashlib.sha256(a.read_bytes()).hexdigest()


def test_info_text(fitted, capsys):
    out, _, _ = fitted
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for word in ("gapkit-model v3", "species         H C O", "sparse H:15, C:15, O:15",
                 "std calibrated  no", "made by", "a.xyz (12 frames"):
        assert word in text, word


def test_info_of_a_model_saved_from_python(small_model, tmp_path, capsys):
    path = small_model.save(tmp_path / "m.npz")
    capsys.readouterr()
    assert cli.main(["info", str(path)]) == 0
    assert "provenance      not recorded" in capsys.readouterr().out


def test_info_of_a_foreign_file_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "x.npz"
    bad.write_text("not a model")
    assert cli.main(["info", str(bad)]) == 2
    assert "gapkit info: error:" in capsys.readouterr().err
