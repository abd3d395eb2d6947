"""Model files: round trip, atomicity, corrupt and wrong-version files."""

import json
from pathlib import Path

import numpy as np
import pytest

from ase.io import read

from gapkit import load
from gapkit.data import default_data_dir
from gapkit.model.model_file import FORMAT, VERSION

DATA = Path(__file__).parent / "data"


def test_save_load_reproduces_predictions(small_model, test_frames, tmp_path):
    path = small_model.save(tmp_path / "model.npz")
    loaded = load(path)
    p0, s0 = small_model.predict(test_frames[:4], return_std=True)
    p1, s1 = loaded.predict(test_frames[:4], return_std=True)
    np.testing.assert_allclose(p1.energy, p0.energy, rtol=0, atol=1e-10)
    for a, b in zip(p0.forces, p1.forces):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s1.energy, s0.energy, rtol=1e-10)
    assert loaded.get_params()["descriptor__n_max"] == small_model.descriptor_.n_max
    assert loaded.noise_ == small_model.noise_
    # nothing but the model is left in the folder (atomic write via a temporary file)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_file_is_documented_npz_without_pickle(small_model, tmp_path):
    path = small_model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["__meta__"].tobytes())
        assert meta["format"] == FORMAT and meta["version"] == VERSION == 4
        assert npz["alpha"].dtype == np.float64


def test_truncated_and_foreign_files_raise(small_model, tmp_path):
    path = small_model.save(tmp_path / "m.npz")
    data = path.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a gapkit model file"):
        load(other)
    with pytest.raises(FileNotFoundError, match="No such model file"):
        load(tmp_path / "missing.npz")


def test_version_1_files_still_load(small_model, tmp_path, test_frames):
    """A file in the one-descriptor layout of format version 1 loads and predicts the same."""
    path = small_model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    (term,) = meta.pop("terms")
    meta["version"] = 1
    meta["descriptor"] = term["descriptor"]
    arrays["sparse_q"] = arrays.pop("sparse_q_0")
    arrays["sparse_species"] = arrays.pop("sparse_species_0")
    del arrays["posterior_upper"]  # version 1 stored both factors in full
    arrays["kmm_cholesky"] = small_model.kmm_cholesky_
    arrays["posterior"] = small_model.posterior_factor_
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v1.npz", **arrays)
    old = load(tmp_path / "v1.npz")
    frames = test_frames[:3]
    np.testing.assert_allclose(old.predict(frames).forces_flat, small_model.predict(frames).forces_flat,
                               rtol=0, atol=1e-12)


def test_wrong_version_raises(small_model, tmp_path):
    path = small_model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["version"] = 99
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(ValueError, match="version 99"):
        load(tmp_path / "v99.npz")


def test_failed_write_keeps_the_old_file(small_model, tmp_path, monkeypatch):
    path = small_model.save(tmp_path / "m.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        small_model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_version_2_file_still_loads_and_predicts_the_same():
    """tests/data/model_v2.npz was written by gapkit before the fitted-state refactor
    (format version 2, recalibrated); its predictions and stds are in the JSON."""
    expected = json.loads((DATA / "model_v2_expected.json").read_text())
    model = load(DATA / "model_v2.npz")
    frames = [read(default_data_dir() / "test.xyz", i) for i in expected["frames"]]
    pred, std = model.predict(frames, return_std=True)
    np.testing.assert_allclose(pred.energy, expected["energy"], rtol=0, atol=1e-9)
    for f, g in zip(pred.forces, expected["forces"]):
        np.testing.assert_allclose(f, g, rtol=0, atol=1e-9)
    np.testing.assert_allclose(std.energy, expected["energy_std"], rtol=1e-8)
    for f, g in zip(std.forces, expected["forces_std"]):
        np.testing.assert_allclose(f, g, rtol=1e-8)
    vs = expected["variance_scale"]
    assert model.calibration_.calibrated
    assert model.calibration_.force_scale(6).posterior == pytest.approx(vs["forces_posterior"])
    assert model.force_std_mode() == "exact"  # version 2 files knew only exact force stds
