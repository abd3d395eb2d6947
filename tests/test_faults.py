"""Fault injection: corrupted model files, interrupted and failed writes, hostile inputs.

Every fault must end in a clear, catchable error (``ModelFileError`` naming the file,
``ValueError`` naming the frame and key), never in a plausible result, a hang, or a
lost file.
"""

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

import gapkit
from gapkit import ModelFileError, load, read_frames
from gapkit.data import LabelKeys, check_geometry, get_labels
from gapkit.utils import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- corrupted model files
@pytest.fixture(scope="module")
def saved(small_model, tmp_path_factory):
    path = small_model.save(tmp_path_factory.mktemp("model") / "m.npz")
    return path, path.read_bytes()


def _arrays(data_path):
    with np.load(data_path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _rewrite(path, arrays, meta=None):
    if meta is not None:
        arrays = dict(arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    np.savez(path, **arrays)
    return path


def test_changed_bytes_never_give_anything_but_a_model_file_error(saved, tmp_path, small_model,
                                                                 test_frames):
    path, data = saved
    ref = small_model.predict(test_frames[:2]).energy
    offsets = sorted(set(np.linspace(0, len(data) - 1, 41).astype(int).tolist()))
    raised = 0
    for off in offsets:
        bad = tmp_path / f"flip{off}.npz"
        b = bytearray(data)
        b[off] ^= 0xFF
        bad.write_bytes(bytes(b))
        try:
            model = load(bad)
        except ModelFileError as exc:
            assert str(bad) in str(exc)
            raised += 1
            continue
        # a byte nothing depends on (a zip timestamp): the model must be unchanged
        np.testing.assert_array_equal(model.predict(test_frames[:2]).energy, ref)
    assert raised >= len(offsets) * 3 // 4


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.7, 0.999])
def test_truncated_model_file(saved, tmp_path, fraction):
    path, data = saved
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match=str(bad).replace("\\", "\\\\")):
        load(bad)


def test_text_file_and_directory_as_model(tmp_path):
    text = tmp_path / "m.npz"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelFileError, match="m.npz' is not a readable gapkit model file"):
        load(text)
    with pytest.raises(ModelFileError, match="is a directory, not a model file"):
        load(tmp_path)
    with pytest.raises(ValueError):  # ModelFileError is a ValueError
        load(text)


@pytest.mark.parametrize("change", [
    lambda m: {},                                        # foreign JSON object
    lambda m: [1, 2, 3],                                 # not an object
    lambda m: dict(m, terms=None),
    lambda m: dict(m, terms=[{"zeta": 4}]),
    lambda m: dict(m, delta_="big"),
    lambda m: dict(m, delta_=None),
    lambda m: dict(m, noise_=[1, 2]),
    lambda m: dict(m, e0_={"values": {"1": "x"}, "method": "lstsq"}),
    lambda m: dict(m, calibration=7),
    lambda m: dict(m, params=[]),
    lambda m: dict(m, params=dict(m["params"], not_a_parameter=1)),
    lambda m: dict(m, baseline={"kind": "gapkit", "spec": {"nonsense": 1}}),
    lambda m: dict(m, baseline="yes"),
    lambda m: {k: v for k, v in m.items() if k != "species_"},
], ids=lambda f: "")
def test_wrong_metadata(saved, tmp_path, change):
    path, _ = saved
    arrays = _arrays(path)
    meta = json.loads(arrays["__meta__"].tobytes())
    bad = _rewrite(tmp_path / "meta.npz", arrays, change(meta))
    with pytest.raises(ModelFileError, match="meta.npz"):
        load(bad)


def test_metadata_that_is_not_json(saved, tmp_path):
    path, _ = saved
    arrays = dict(_arrays(path), __meta__=np.frombuffer(b"\xff{not json", dtype=np.uint8))
    np.savez(tmp_path / "j.npz", **arrays)
    with pytest.raises(ModelFileError, match="j.npz"):
        load(tmp_path / "j.npz")


@pytest.mark.parametrize("name", ["alpha", "posterior_upper", "sparse_q_0"])
def test_nan_and_inf_arrays_are_refused_on_load(saved, tmp_path, name):
    path, _ = saved
    arrays = _arrays(path)
    for bad_value, tag in ((np.nan, "nan"), (np.inf, "inf")):
        a = arrays[name].copy()
        a.flat[a.size // 2] = bad_value
        bad = _rewrite(tmp_path / f"{tag}.npz", dict(arrays, **{name: a}))
        with pytest.raises(ModelFileError, match=f"{tag}.npz': array {name} contains NaN"):
            load(bad)


@pytest.mark.parametrize("name,shape", [("alpha", lambda a: a[:-1]),
                                        ("posterior_upper", lambda a: a[:-1]),
                                        ("sparse_q_0", lambda a: a[:, :-2]),
                                        ("sparse_species_0", lambda a: a[:-1])])
def test_wrong_shapes(saved, tmp_path, name, shape):
    path, _ = saved
    arrays = _arrays(path)
    bad = _rewrite(tmp_path / "shape.npz", dict(arrays, **{name: shape(arrays[name])}))
    with pytest.raises(ModelFileError, match="shape.npz.*shape"):
        load(bad)


def test_an_all_nan_fit_is_refused_before_it_is_written():
    frames = [molecule("H2O") for _ in range(3)]
    with pytest.raises(ValueError, match="delta must be 'auto' or a positive number"):
        gapkit.GAP(delta=np.inf).fit(frames)


def test_a_nan_state_is_never_written(small_model, tmp_path):
    from gapkit.model import model_file

    state = small_model.state_.replace(alpha=np.full_like(small_model.alpha_, np.nan))
    with pytest.raises(ValueError, match="NaN or infinite values.*not saved"):
        model_file.save(tmp_path / "nan.npz", state, {"e0": "lstsq"})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- writes
def test_files_are_written_with_the_umask(small_model, tmp_path):
    old = os.umask(0o022)
    try:
        path = small_model.save(tmp_path / "m.npz")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "p.xyz", b"x")
        assert stat.S_IMODE((tmp_path / "p.xyz").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    os.chmod(path, 0o600)  # a replaced file keeps its mode
    small_model.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_stale_temporaries_of_a_killed_save_are_cleaned(small_model, tmp_path):
    dead = tmp_path / ".m.npz.999999999.k1ll3d.tmp"   # pid that cannot run
    old = tmp_path / ".m.npz.abcdef.tmp"              # the pre-pid naming, hours old
    live = tmp_path / f".m.npz.{os.getpid()}.busy.tmp"  # a save in progress here
    other = tmp_path / ".other.npz.999999999.x.tmp"   # another file's: not ours
    for p in (dead, old, live, other):
        p.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    small_model.save(tmp_path / "m.npz")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["m.npz", live.name, other.name])


@pytest.mark.parametrize("where", ["write", "replace", "fsync"])
def test_failed_write_leaves_the_old_file(small_model, tmp_path, monkeypatch, where):
    path = small_model.save(tmp_path / "m.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(f"injected {where} failure")

    if where == "replace":
        monkeypatch.setattr(os, "replace", boom)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        real = os.fdopen

        class Failing:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])  # half written, then the disk fails
                boom()

        monkeypatch.setattr(os, "fdopen", lambda fd, mode: Failing(real(fd, mode)))
    with pytest.raises(OSError, match=f"injected {where}"):
        small_model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    load(path)


def test_write_to_a_directory_or_an_unwritable_place(small_model, tmp_path, monkeypatch):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        small_model.save(tmp_path)
    # a folder that is a file cannot be created, even by root
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(OSError):
        small_model.save(blocker / "m.npz")
    # a folder the OS refuses (root ignores permission bits, so the refusal is injected)
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied (injected)")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match="injected"):
        small_model.save(tmp_path / "m.npz")
    monkeypatch.undo()
    assert not (tmp_path / "m.npz").exists()


# ---------------------------------------------------------------- hostile inputs
def test_a_header_claiming_1e10_atoms_fails_fast(tmp_path):
    bad = tmp_path / "huge.xyz"
    bad.write_text("10000000000\nProperties=species:S:1:pos:R:3\nH 0 0 0\n")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"frame 0 claims 10000000000 atoms but only 1 lines"):
        read_frames(bad)
    assert time.perf_counter() - t0 < 2
    neg = tmp_path / "neg.xyz"
    neg.write_text("-3\ncomment\nH 0 0 0\n")
    with pytest.raises(ValueError, match="claims -3 atoms"):
        read_frames(neg)


def test_a_directory_as_structure_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory, not a structure file"):
        read_frames(tmp_path)


def _labelled(atoms, **info):
    a = atoms.copy()
    a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)))
    a.info.update(info)
    return a


def test_forces_of_shape_3_by_n_are_refused_not_reshaped():
    w = molecule("CH4")  # 5 atoms
    w.info["E"] = 0.0
    w.arrays["F"] = np.zeros((5, 3))
    ok = get_labels(w, LabelKeys(energy="E", forces="F"))
    assert ok.forces.shape == (5, 3)
    a = w.copy()
    a.calc = SinglePointCalculator(a, energy=-1.0)
    a.calc.results["forces"] = np.arange(15.0).reshape(3, 5)
    with pytest.raises(ValueError, match=r"frame 4: forces under key 'forces' has shape \(3, 5\), "
                                         r"expected \(5, 3\)"):
        get_labels(a, index=4)


def test_virial_as_text_names_frame_and_key():
    a = _labelled(bulk("Si", "diamond", 5.43), virial="one two three")
    with pytest.raises(ValueError, match="frame 7: virial under key 'virial' is not numeric"):
        get_labels(a, index=7)
    b = _labelled(bulk("Si", "diamond", 5.43), REF_stress="1 2 x 4 5 6")
    with pytest.raises(ValueError, match="frame 2: stress under key 'REF_stress' is not numeric"):
        get_labels(b, LabelKeys(stress="REF_stress"), index=2)


def test_stress_on_a_non_periodic_structure_is_an_error():
    m = molecule("H2O")
    m.calc = SinglePointCalculator(m, energy=-1.0, forces=np.zeros((3, 3)), stress=np.ones(6))
    with pytest.raises(ValueError, match=r"frame 1: a stress label under key 'stress \(calculator\)' "
                                         "needs a fully periodic cell"):
        get_labels(m, index=1)
    assert get_labels(m, LabelKeys(use_virials=False)).virial is None
    slab = _labelled(bulk("Cu", "fcc", 3.6, cubic=True), virial=np.eye(3).tolist())
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="virial label under key 'virial' needs a fully periodic"):
        get_labels(slab)


def test_an_absent_virial_key_does_not_fall_back_to_the_stress():
    si = bulk("Si", "diamond", 5.43)
    si.calc = SinglePointCalculator(si, energy=-1.0, forces=np.zeros((2, 3)),
                                    stress=np.full(6, 0.01))
    assert get_labels(si).virial is not None                     # default: the stress
    assert get_labels(si, LabelKeys(virial="REF_virial")).virial is None
    si.info["REF_stress"] = np.full(6, 0.02)
    lab = get_labels(si, LabelKeys(stress="REF_stress"))
    np.testing.assert_allclose(np.diag(lab.virial), -0.02 * si.get_volume())


def test_degenerate_cells_with_mixed_pbc():
    flat = Atoms("H", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 0]], pbc=[True, True, False])
    with pytest.raises(ValueError, match="frame 0: the periodic cell is degenerate"):
        check_geometry(flat)
    inplane = Atoms("H", cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=[True, True, False])
    with pytest.raises(ValueError, match="the cell is degenerate.*linearly dependent"):
        check_geometry(inplane)
    check_geometry(Atoms("H", cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=[True, True, False]))


def test_one_atom_overlapping_its_own_images():
    with pytest.raises(ValueError, match="atoms overlap.*periodic images included"):
        check_geometry(Atoms("H", cell=[0.05, 5, 5], pbc=True))


def test_overlap_threshold_is_the_same_everywhere(small_model):
    """Exactly 0.1 Å apart passes (to round-off) in the check shared by fit, predict and
    the calculator; closer fails in both."""
    at = Atoms("H2", positions=[[0, 0, 1.3], [0, 0, 1.4]])  # 0.09999999999999987 Å
    check_geometry(at)
    small_model.check_structure(Atoms("CH", positions=[[0, 0, 1.3], [0, 0, 1.4]]))
    with pytest.raises(ValueError, match="atoms overlap"):
        check_geometry(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.0999]]))


# ---------------------------------------------------------------- packaging
def test_wheel_ships_the_default_data(tmp_path):
    """A non-editable install must find data/*.xyz inside the package (gapkit/_data)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "gapkit", src / "gapkit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "data", src / "data")
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    # without the build requirements here, pip fetches them into an isolated build
    isolation = [] if importlib.util.find_spec("wheel") is None else ["--no-build-isolation"]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                           *isolation, "-q", "-w", str(tmp_path / "dist")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("gapkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in sorted((ROOT / "data").glob("*.xyz")):
        assert f"gapkit/_data/{f.name}" in names
    assert not any(n.startswith("data/") for n in names)
