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
    config = d / "fit.json"
    config.write_text(json.dumps({"n_max": 3, "l_max": 2, "r_cut": 3.5, "n_sparse": 15,
                                  "train": [str(a), str(b)]}))
    with pytest.warns(UserWarning, match="rank deficient"):
        assert cli.main(["fit", "--config", str(config), "-o", str(out), *FIT_FLAGS[8:]]) == 0
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
    assert prov["config"]["r_cut"] == 3.5 and prov["config"]["n_sparse"] == 15  # from the file
    assert isinstance(prov["command"], list)


def test_info_json(fitted, capsys):
    out, a, _ = fitted
    capsys.readouterr()
    assert cli.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 4 and info["gapkit_version"]
    assert info["file_size_bytes"] == out.stat().st_size
    assert info["species"] == ["H", "C", "O"]
    term, pair = info["terms"]  # the default model: SOAP, then the 2-body term
    assert term["descriptor"] == "SOAP" and term["settings"]["n_max"] == 3
    assert pair["descriptor"] == "TwoBody" and pair["zeta"] == 1
    assert pair["settings"]["r_cut"] == term["settings"]["r_cut"] == 3.5
    assert sum(term["n_sparse"].values()) == 45
    assert info["n_sparse"] == 45 + sum(pair["n_sparse"].values())
    assert set(info["noise"]) == {"energy", "forces"}
    assert info["calibration"]["calibrated"] is False
    assert info["provenance"]["training_files"][0]["sha256"] == \
        hashlib.sha256(a.read_bytes()).hexdigest()


def test_info_text(fitted, capsys):
    out, _, _ = fitted
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for word in ("gapkit-model v4", "species         H C O", "sparse H:15, C:15, O:15",
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


def _dump(argv, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["fit", *argv, "--dump-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_dump_config_defaults_and_flags(capsys):
    cfg = _dump(["--n-max", "3"], capsys)
    assert cfg["n_max"] == 3 and cfg["l_max"] == 6 and cfg["r_cut"] == 5.0
    assert cfg["output"] == "gapkit_model.npz" and cfg["train"] is None
    assert "config" not in cfg and "verbose" not in cfg


def test_config_file_then_flags_override(tmp_path, capsys):
    pytest.importorskip("yaml")
    path = tmp_path / "fit.yaml"
    path.write_text('n_sparse: "C:10,H:20,O:5"\nr-cut: 3.5\nn_max: 5\ntrain: [a.xyz]\n'
                    "no_calibrate: true\nsparse_method: fps\n")
    cfg = _dump(["--config", str(path), "--n-max", "2"], capsys)
    assert cfg["n_sparse"] == {"C": 10, "H": 20, "O": 5}
    assert cfg["r_cut"] == 3.5 and cfg["n_max"] == 2 and cfg["train"] == ["a.xyz"]
    assert cfg["no_calibrate"] is True and cfg["sparse_method"] == "fps"
    assert _dump(["b.xyz", "--config", str(path)], capsys)["train"] == ["b.xyz"]


def test_dumped_config_reproduces_itself(tmp_path, capsys):
    cfg = _dump(["x.xyz", "--n-sparse", "H:5,C:6", "--zeta", "2", "--optimize"], capsys)
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(cfg))
    assert _dump(["--config", str(path)], capsys) == cfg


@pytest.mark.parametrize("text, match", [('{"bogus": 1}', "unknown key 'bogus'"),
                                         ('{"sparse_method": "kmeans"}', "must be one of"),
                                         ('{"r_cut": "far"}', "r_cut"),
                                         ('{"optimize": "yes"}', "true or false"),
                                         ("[1, 2]", "must be a mapping")])
def test_bad_config_is_a_user_error(tmp_path, capsys, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    capsys.readouterr()
    assert cli.main(["fit", "--config", str(path), "--dump-config"]) == 2
    err = capsys.readouterr().err
    assert "gapkit fit: error:" in err and match in err
