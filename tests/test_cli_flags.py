"""CLI flags for MACE/nequip/QUIP users: underscore aliases, --n-jobs, --cutoff-width,
--noise-by-config-type, --log-file, --progress, and ``python -m gapkit.ipi``."""

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ase.io import read, write

from gapkit.cli import main
from gapkit.cli.app import SESSION_LOGGER, build_parser, session
from gapkit.cli.common import model_from_args
from gapkit.progress import ENV

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n-max", "3", "--l-max", "2", "--r-cut", "3.5", "--n-sparse", "20", "--e0", "lstsq"]


@pytest.fixture(autouse=True)
def _no_progress_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _dump(capsys, argv) -> dict:
    capsys.readouterr()
    assert main([*argv, "--dump-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_multi_word_flag_of_every_command_has_its_underscore_alias():
    parser = build_parser()
    checked = 0
    for name, sub in {"gapkit": parser, **_subparsers(parser)}.items():
        for opt, action in list(sub._option_string_actions.items()):
            if opt.startswith("--") and "-" in opt[2:]:
                alias = "--" + opt[2:].replace("-", "_")
                assert sub._option_string_actions.get(alias) is action, (name, opt)
                checked += 1
        assert "_key" not in sub.format_help() and "_fraction" not in sub.format_help()
    assert checked > 60


def test_underscore_spellings_parse_like_the_dashed_ones():
    parser = build_parser()
    mace = parser.parse_args(["fit", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
                              "--stress_key", "REF_stress", "--valid_fraction", "0.1",
                              "--n_sparse", "C:10,H:20", "--r_cut", "4.5", "--no_calibrate"])
    dashed = parser.parse_args(["fit", "--energy-key", "REF_energy", "--forces-key", "REF_forces",
                                "--stress-key", "REF_stress", "--valid-fraction", "0.1",
                                "--n-sparse", "C:10,H:20", "--r-cut", "4.5", "--no-calibrate"])
    assert vars(mace) == vars(dashed)
    assert mace.energy_key == "REF_energy" and mace.n_sparse == {"C": 10, "H": 20}
    ev = parser.parse_args(["evaluate", "m.npz", "t.xyz", "--virial_key", "REF_virial"])
    assert ev.virial_key == "REF_virial"
    cd = parser.parse_args(["check-data", "t.xyz", "--energy_key", "E", "--max_train", "9"])
    assert (cd.energy_key, cd.max_train) == ("E", 9)


def test_negative_boolean_alias_means_false():
    p = build_parser()
    assert p.parse_args(["info", "m", "--no_progress"]).progress is False
    assert p.parse_args(["--no_progress", "info", "m"]).progress is False
    assert p.parse_args(["info", "m", "--progress"]).progress is True
    assert "--no_progress" not in p.format_usage() + p.format_help()


def test_underscore_aliases_check_their_values_like_the_dashed_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--n_jobs", "0"])
    assert "0 workers cannot run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--sparse_method", "kmeans"])
    assert "invalid choice: 'kmeans'" in capsys.readouterr().err


def test_new_flags_reach_the_model():
    args = build_parser().parse_args(["fit", "--cutoff-width", "0.7", "--n-jobs", "2",
                                      "--noise-by-config-type"])
    from gapkit.cli.config import resolve

    model = model_from_args(resolve(args), "lstsq")
    soap, pair = model.descriptor  # SOAP + 2-body by default
    assert soap.descriptor.cutoff_width == 0.7 and pair.descriptor.r_cut == soap.descriptor.r_cut
    assert model.n_jobs == 2 and model.noise_by_config_type is True
    assert model.verbose is None  # bars follow gapkit.progress
    default = model_from_args(resolve(build_parser().parse_args(["fit"])), "lstsq")
    assert default.descriptor[0].descriptor.cutoff_width == 1.0 and default.n_jobs is None
    assert default.noise_by_config_type is False


def test_cutoff_width_is_soap_only_and_positive(capsys):
    from gapkit.cli.config import resolve

    args = resolve(build_parser().parse_args(["fit", "--descriptor", "acsf", "--cutoff-width", "1"]))
    with pytest.raises(ValueError, match="--cutoff-width is SOAP's smooth cutoff"):
        model_from_args(args, "lstsq")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--cutoff-width", "-1"])
    assert "expected a number > 0, got '-1'" in capsys.readouterr().err


def test_config_keys_accept_both_spellings_and_the_new_keys(tmp_path, capsys):
    cfg = tmp_path / "fit.json"
    cfg.write_text(json.dumps({"energy-key": "REF_energy", "forces_key": "REF_forces",
                               "valid-fraction": 0.3, "n_jobs": 2, "cutoff-width": 0.7,
                               "noise_by_config_type": True, "progress": False,
                               "log-file": str(tmp_path / "run.log")}))
    out = _dump(capsys, ["fit", "--config", str(cfg)])
    assert out["energy_key"] == "REF_energy" and out["forces_key"] == "REF_forces"
    assert out["valid_fraction"] == 0.3 and out["n_jobs"] == 2 and out["cutoff_width"] == 0.7
    assert out["noise_by_config_type"] is True and out["progress"] is False
    assert out["log_file"] == str(tmp_path / "run.log")
    # the command line wins over the file, in either spelling
    out = _dump(capsys, ["fit", "--config", str(cfg), "--n_jobs", "-1", "--progress"])
    assert out["n_jobs"] == -1 and out["progress"] is True


def test_dump_config_round_trips_the_new_flags(tmp_path, capsys):
    first = _dump(capsys, ["fit", "--n-jobs", "3", "--cutoff_width", "0.5", "--noise-by-config-type",
                           "--no-progress", "--log-file", str(tmp_path / "a.log"), "--r_cut", "4"])
    assert (first["n_jobs"], first["cutoff_width"], first["noise_by_config_type"]) == (3, 0.5, True)
    assert first["progress"] is False and first["r_cut"] == 4.0
    cfg = tmp_path / "dumped.json"
    cfg.write_text(json.dumps(first))
    assert _dump(capsys, ["fit", "--config", str(cfg)]) == first


@pytest.mark.parametrize("value, match", [("yes", "progress must be true, false or null"),
                                          (3, "log_file must be a file path")])
def test_bad_global_config_values_are_clear_errors(tmp_path, capsys, value, match):
    cfg = tmp_path / "bad.json"
    key = "progress" if value == "yes" else "log_file"
    cfg.write_text(json.dumps({key: value}))
    assert main(["fit", "--config", str(cfg), "--dump-config"]) == 2
    assert match in capsys.readouterr().err


def test_log_file_and_progress_stand_before_or_after_the_command():
    p = build_parser()
    before = p.parse_args(["--log-file", "a.log", "--no-progress", "info", "m.npz"])
    after = p.parse_args(["info", "m.npz", "--log_file", "a.log", "--no-progress"])
    assert (before.log_file, before.progress) == (after.log_file, after.progress) == ("a.log", False)
    assert not hasattr(p.parse_args(["info", "m.npz"]), "log_file")


def test_session_sets_and_restores_the_progress_switch(monkeypatch):
    monkeypatch.setenv(ENV, "1")
    for argv, inside in ((["--no-progress", "info", "m"], "0"), (["-q", "info", "m"], "0"),
                         (["info", "m", "--progress"], "1"), (["info", "m"], "1")):
        args = build_parser().parse_args(argv)
        with session(args, argv):
            assert os.environ[ENV] == inside, argv
        assert os.environ[ENV] == "1"


def test_fit_with_log_file_progress_and_config_type_noises(tmp_path, capsys, monkeypatch):
    """One small CLI fit: --noise-by-config-type learns a noise per config_type, the
    log file gets timestamped INFO records (the console stays at WARNING), and
    --progress draws the fit's bars on stderr."""
    frames = read(ROOT / "data" / "train.xyz", ":")
    train = frames[:8] + frames[-8:]  # ethanol and methanol config_types
    write(tmp_path / "train.xyz", train)
    log = tmp_path / "fit.log"
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a plain process: basicConfig adds the console
    monkeypatch.setattr(root, "level", logging.WARNING)
    code = main(["--log-file", str(log), "fit", str(tmp_path / "train.xyz"), "-o",
                 str(tmp_path / "m.npz"), "--no-calibrate", "--noise_by_config_type",
                 "--progress", *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    from gapkit import load

    groups = {(g.kind, g.config_type) for g in load(tmp_path / "m.npz").noise_}
    assert {c for _, c in groups} == {t.info["config_type"] for t in train}
    assert "sparse points:" in err and "chunk/s]" in err  # the bars (frames, row chunks)
    assert "INFO" not in err  # the console keeps WARNING
    text = log.read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.search(rf"^{stamp} INFO gapkit.cli.session: gapkit .*: gapkit --log-file", text, re.M)
    assert re.search(rf"^{stamp} INFO gapkit.model.training: term 0 \(SOAP\): sparse points", text, re.M)
    assert re.search(rf"^{stamp} INFO gapkit.cli.session: exit code 0$", text, re.M)
    # the log file's handler is detached when the command ends (none left on any logger
    # the CLI touches; pytest's own capture handlers may sit there too)
    for name in (None, "gapkit", SESSION_LOGGER):
        assert not [h for h in logging.getLogger(name).handlers
                    if isinstance(h, logging.FileHandler) and h.baseFilename == str(log)], name


def test_log_file_records_the_error_with_its_traceback(tmp_path, capsys):
    log = tmp_path / "err.log"
    assert main(["info", str(tmp_path / "missing.npz"), "--log-file", str(log)]) == 2
    assert "gapkit info: error:" in capsys.readouterr().err
    text = log.read_text()
    assert "ERROR gapkit.cli.session:" in text and "Traceback (most recent call last)" in text


def test_unwritable_log_file_is_a_user_error(tmp_path, capsys):
    assert main(["--log-file", str(tmp_path / "no" / "dir" / "x.log"), "info", "m.npz"]) == 2
    assert "No such file or directory" in capsys.readouterr().err


def test_python_m_gapkit_ipi_runs_the_ipi_command(small_model, tmp_path, train_frames):
    """``python -m gapkit.ipi`` is ``gapkit ipi``: with no i-PI listening it gives up
    after --connect-timeout with the command's error line and exit code 2."""
    model = small_model.save(tmp_path / "m.npz")
    write(tmp_path / "init.xyz", train_frames[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "gapkit.ipi", str(model), "--structure",
                          str(tmp_path / "init.xyz"), "--unix", str(tmp_path / "nobody"),
                          "--connect_timeout", "0.3"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "waiting for i-PI at" in res.stdout
    assert "gapkit ipi: error: no i-PI server at" in res.stderr
