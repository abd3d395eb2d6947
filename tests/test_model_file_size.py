"""Model file format v4: packed, compressed, bit-exact round trip, older files read."""

import json

import numpy as np
import pytest

from gapkit import load
from gapkit.model import model_file
from gapkit.model.model_file import pack_upper, unpack_upper


def _v3_copy(model, v4_path, out):
    """The same model in the version 3 layout (both full factors, uncompressed)."""
    with np.load(v4_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["version"] = 3
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    del arrays["posterior_upper"]
    arrays["kmm_cholesky"] = model.kmm_cholesky_
    arrays["posterior"] = model.posterior_factor_
    for k in [k for k in arrays if k.startswith("sparse_species")]:
        arrays[k] = arrays[k].astype(np.int64)
    np.savez(out, **arrays)
    return out


def test_pack_unpack_round_trip(rng):
    R = np.triu(rng.normal(size=(7, 7)))
    p = pack_upper(R)
    assert p.shape == (28,)
    np.testing.assert_array_equal(unpack_upper(p, 7), R)
    assert pack_upper(np.zeros((0, 0))).shape == (0,)
    with pytest.raises(ValueError, match="packed triangle has shape"):
        unpack_upper(p[:-1], 7)


def test_v4_round_trip_equals_to_round_off_and_is_smaller_than_v3(calibrated_model, test_frames, tmp_path):
    path = calibrated_model.save(tmp_path / "m.npz")
    loaded = load(path)
    s0, s1 = calibrated_model.state_, loaded.state_
    # the Cholesky factor of K_MM is recomputed on load: equal to round-off (the fit
    # caps BLAS at one thread when it runs on several, so the summation order may
    # differ from the loading process's BLAS)
    np.testing.assert_allclose(s1.kmm_cholesky, s0.kmm_cholesky, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(s1.posterior_factor, s0.posterior_factor)
    np.testing.assert_array_equal(s1.alpha, s0.alpha)
    frames = test_frames[:3]
    p0, d0 = calibrated_model.predict(frames, return_std=True)
    p1, d1 = loaded.predict(frames, return_std=True)
    np.testing.assert_allclose(p1.energy, p0.energy, rtol=1e-13)
    np.testing.assert_allclose(p1.forces_flat, p0.forces_flat, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d1.energy, d0.energy, rtol=1e-10)
    np.testing.assert_allclose(np.concatenate([f.ravel() for f in d1.forces]),
                               np.concatenate([f.ravel() for f in d0.forces]), rtol=1e-10)
    with np.load(path, allow_pickle=False) as npz:
        assert "kmm_cholesky" not in npz.files and "posterior" not in npz.files
        assert npz["sparse_q_0"].dtype == np.float64 and npz["alpha"].dtype == np.float64
    v3 = _v3_copy(calibrated_model, path, tmp_path / "v3.npz")
    size3, size4 = v3.stat().st_size, path.stat().st_size
    assert size4 < 0.75 * size3, (size3, size4)
    # and the version 3 file still loads and predicts the same
    old = load(v3)
    np.testing.assert_allclose(old.predict(frames).energy, p0.energy, rtol=1e-13)
    np.testing.assert_allclose(old.predict(frames, return_std=True)[1].energy, d0.energy,
                               rtol=1e-12)


def test_v4_posterior_of_wrong_length_is_refused(small_model, tmp_path):
    path = small_model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["posterior_upper"] = arrays["posterior_upper"][:-3]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(model_file.ModelFileError, match="bad.npz': array posterior_upper has shape"):
        load(tmp_path / "bad.npz")


def test_v4_sparse_points_without_cholesky_factor_are_refused(small_model, tmp_path):
    path = small_model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    q = arrays["sparse_q_0"].copy()
    q[1] = q[0]  # two identical sparse points: K_MM singular beyond the jitter
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["params"]["jitter"] = 1e-300
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "dup.npz", **dict(arrays, sparse_q_0=q))
    with pytest.raises(model_file.ModelFileError, match="dup.npz': the sparse points have no "
                                                       "Cholesky factor"):
        load(tmp_path / "dup.npz")
