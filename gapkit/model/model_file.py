"""Model files: a :class:`~gapkit.model.state.FittedState` stored without pickle.

File format ``gapkit-model`` version 4
--------------------------------------
One compressed NumPy ``.npz`` archive (a zip of deflated ``.npy`` arrays, written with
``np.savez_compressed``), read with ``allow_pickle=False``:

====================== ================ ============================================
key                    shape            meaning
====================== ================ ============================================
``__meta__``           (n_bytes,) uint8 UTF-8 JSON, see below
``sparse_q_<t>``       (M_t, F_t)       normalised descriptors of the sparse points
                       float64          of kernel term ``t`` (0, 1, ...)
``sparse_species_<t>`` (M_t,) uint8     their central atomic numbers
``alpha``              (M,) float64     unit-scale weights of all terms stacked
                                        (energy = delta**2 sum_t w_t**2 k~_t alpha_t)
``posterior_upper``    (M(M+1)/2,)      the upper triangle of R_P, row by row
                       float64          (R_P^T R_P = K_MM + K_MN Lambda^-1 K_NM)
``variance_columns``   (M_v,) int64     optional: the sparse columns of the predictive
                                        variance (:class:`~gapkit.model.state.VarianceBasis`,
                                        increasing); absent: all M (files written before
                                        it existed, or ``variance_sparse="all"``)
====================== ================ ============================================

What is *not* stored: the lower Cholesky factor ``L`` of ``K~_MM + jitter I`` is a
function of the sparse sets, the term exponents and weights and ``params["jitter"]``;
:func:`read` recomputes it with the same code as the fit (the same factor to
round-off, ~1e-12: a different BLAS thread count changes the summation order), which takes one ``M x M`` kernel and one Cholesky (about a second for
M = 3000). Everything is kept in float64: on a real model (rMD17 ethanol, M = 1200)
float32 sparse descriptors changed forces by 8e-5 relative, a float32 ``L`` changed
energy stds by 1e-3 relative and a float32 ``R_P`` by 7e-5 (growing with M), above
the 1e-6 (E, F) and 1e-4 (std) tolerances the format keeps. Packing and deflate
together make files about half as large as version 3 (see
``tests/test_model_file_size.py``).

The JSON holds ``format`` (``"gapkit-model"``), ``version`` (4), the gapkit version
that wrote it, ``terms`` (for each kernel term: the descriptor class and parameters,
the fitted ``zeta`` and ``weight``, and the term as the user gave it, ``spec``, or
``null`` for a plain descriptor), the estimator parameters ``params``, the fitted
scalars (``delta_``, ``noise_`` and ``n_train_`` keyed by noise-group label such as
``"forces"`` or ``"forces:bulk"``, ``e0_``, ``species_``, ``log_marginal_likelihood_``),
``calibration`` (the scales of the variance terms per property and what they were
fitted on, ``source``; ``null`` source = raw DTC variance; since session 10 also
``config_types``, the variance multipliers per ``config_type``, and
``config_type_key``: files without them load with none), optional ``extra``
entries, and the Delta-learning ``baseline``: ``null``,
``{"kind": "gapkit", "spec": {...}}`` (rebuilt on load) or
``{"kind": "user", "class": "module.Class"}`` (must be passed to :func:`gapkit.load`).

Versions 1 to 3 stored both factors in full, ``kmm_cholesky`` (M, M) and
``posterior`` (M, M), uncompressed; version 1 had one SOAP descriptor (arrays
``sparse_q`` and ``sparse_species``) and versions 1 and 2 ``variance_scale_`` with
keys ``"<property>_nystrom"`` / ``"<property>_posterior"`` instead of
``calibration``. They are all still read (their stored ``L`` is used).

Writes are atomic: the archive goes to a temporary file in the target folder, is
flushed to disk, then renamed over the target (see
:func:`gapkit.utils.atomic_write_bytes`: the old file survives a failed write).

Reading checks everything: every failure (a truncated or changed file, zip CRC
errors, a text or foreign file, a directory, metadata with missing or mistyped
entries, arrays of the wrong shape, NaN or infinite numbers, sparse sets whose
kernel has no Cholesky factor) raises one :class:`ModelFileError` (a ``ValueError``)
whose message names the file and what is wrong.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import clone

from gapkit import descriptors
from gapkit._version import __version__
from gapkit.data import ReferenceEnergies
from gapkit.gp import solver as gp
from gapkit.gp.terms import FittedTerm, Term, as_terms, kernel_mm
from gapkit.model.state import Calibration, FittedState, GroupValues, VarianceBasis
from gapkit.utils import atomic_write_bytes, to_jsonable

FORMAT = "gapkit-model"
VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
_ARRAYS = {3: ("alpha", "kmm_cholesky", "posterior"), 4: ("alpha", "posterior_upper")}
#: Arrays a version 4 file may hold or not (an older reader ignores them).
_OPTIONAL = ("variance_columns",)


class ModelFileError(ValueError):
    """A model file that cannot be read: truncated, corrupt, foreign or inconsistent.

    The message names the file and what is wrong; the original exception, if any, is
    the ``__cause__``.
    """


@dataclass
class ModelFileContent:
    """What a model file holds.

    Attributes
    ----------
    state : FittedState
    params : dict
        Estimator parameters other than ``descriptor`` and ``baseline``.
    descriptor : descriptor, Term or list of Term
        The ``descriptor`` parameter as the user gave it (rebuilt, unfitted).
    baseline : dict or None
        The baseline record (see the module docstring).
    """

    state: FittedState
    params: dict
    descriptor: object
    baseline: dict | None


def save(path: str | os.PathLike, state: FittedState, params: dict, descriptor=None,
         baseline=None) -> Path:
    """Write a fitted state to ``path`` (format ``gapkit-model`` v4), atomically.

    Parameters
    ----------
    path : str or path
        Target file; conventionally ``*.npz``.
    state : FittedState
    params : dict
        Estimator parameters (JSON-able) other than ``descriptor`` and ``baseline``.
    descriptor : descriptor, Term or list, optional
        The ``descriptor`` parameter as given (records the user's term specs).
    baseline : ase Calculator, optional

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If the state holds NaN or infinite numbers (nothing is written).
    """
    bad = [name for name, arr in (("alpha", state.alpha), ("kmm_cholesky", state.kmm_cholesky),
                                  ("posterior", state.posterior_factor))
           if not np.all(np.isfinite(arr))]
    if bad or not np.isfinite(state.delta):
        raise ValueError(f"the fitted model has NaN or infinite values ({bad or 'delta'}): not "
                         f"saved to '{path}'; refit with other hyperparameters")
    params = dict(params)
    if not isinstance(params.get("e0"), (str, dict)):
        params["e0"] = str(params["e0"])
    if params.get("random_state") is not None and not isinstance(params["random_state"], int):
        params["random_state"] = None
    specs = as_terms(descriptor)
    # the default descriptor (None) is several terms: keep their specs (zeta, n_sparse)
    plain = descriptor is not None and not any(isinstance(d, Term) for d in (
        descriptor if isinstance(descriptor, (list, tuple)) else [descriptor]))
    term_meta = [{"descriptor": {"class": type(t.descriptor).__name__,
                                 "params": t.descriptor.get_params(deep=False)},
                  "zeta": t.zeta, "weight": t.weight,
                  "spec": None if plain else {k: v for k, v in spec.get_params(deep=False).items()
                                              if k != "descriptor"}}
                 for spec, t in zip(specs, state.terms)]
    meta = {
        "format": FORMAT, "version": VERSION, "gapkit_version": __version__,
        "terms": term_meta, "params": params,
        "delta_": state.delta, "noise_": state.noise.labelled(),
        "e0_": {"method": state.e0.method, "values": state.e0.values},
        "species_": list(state.species), "n_train_": state.n_train.labelled(),
        "calibration": state.calibration.as_dict(),
        "log_marginal_likelihood_": state.log_marginal_likelihood,
        "extra": state.extra, "baseline": _baseline_meta(baseline),
    }
    arrays = {
        "__meta__": np.frombuffer(json.dumps(to_jsonable(meta)).encode("utf-8"), dtype=np.uint8),
        **{f"sparse_q_{k}": t.sparse_q for k, t in enumerate(state.terms)},
        **{f"sparse_species_{k}": t.sparse_species.astype(np.uint8)
           for k, t in enumerate(state.terms)},
        "alpha": state.alpha, "posterior_upper": pack_upper(state.posterior_factor),
    }
    if state.variance_basis is not None:
        arrays["variance_columns"] = state.variance_basis.columns
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def pack_upper(R: np.ndarray) -> np.ndarray:
    """The upper triangle of a square matrix, row by row, shape (M(M+1)/2,)."""
    M = R.shape[0]
    return np.concatenate([R[i, i:] for i in range(M)]) if M else np.zeros(0)


def unpack_upper(packed: np.ndarray, M: int) -> np.ndarray:
    """The upper-triangular (M, M) matrix of :func:`pack_upper` (zeros below)."""
    if packed.shape != (M * (M + 1) // 2,):
        raise ValueError(f"packed triangle has shape {packed.shape}, expected "
                         f"({M * (M + 1) // 2},) for M = {M}")
    R = np.zeros((M, M))
    start = 0
    for i in range(M):
        R[i, i:] = packed[start:start + M - i]
        start += M - i
    return R


def _baseline_meta(baseline) -> dict | None:
    if baseline is None:
        return None
    if hasattr(baseline, "to_dict"):
        return {"kind": "gapkit", "spec": baseline.to_dict()}
    cls = type(baseline)
    return {"kind": "user", "class": f"{cls.__module__}.{cls.__qualname__}"}


def _descriptor_from_meta(dmeta: dict, path: Path):
    """Rebuild a descriptor from its class name (gapkit descriptors only) and parameters."""
    names = [n for n in descriptors.__all__ if n != "DescriptorSet"]
    if dmeta.get("class") not in names:
        raise ModelFileError(f"Unknown descriptor class {dmeta.get('class')!r} in '{path}' "
                         f"(this gapkit knows {names})")
    return getattr(descriptors, dmeta["class"])(**dmeta["params"])


def _read_archive(path: Path) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            if "__meta__" not in files:
                raise ModelFileError(f"'{path}' is not a gapkit model file (no __meta__ entry)")
            meta = json.loads(npz["__meta__"].tobytes().decode("utf-8"))
            if not isinstance(meta, dict):
                raise ModelFileError(f"'{path}': the metadata is not a JSON object")
            if meta.get("format") != FORMAT:
                raise ModelFileError(f"'{path}' has format {meta.get('format')!r}, expected {FORMAT!r}")
            version = meta.get("version")
            if version not in READABLE_VERSIONS:
                raise ModelFileError(f"'{path}' is gapkit-model version {version}; this gapkit reads "
                                 f"versions {READABLE_VERSIONS}. Refit, or use the gapkit version "
                                 f"that wrote it ({meta.get('gapkit_version')}).")
            if version == 1:
                names = ["sparse_q", "sparse_species"]
            else:
                n_terms = len(meta.get("terms") or [])
                names = [f"{stem}_{k}" for k in range(n_terms)
                         for stem in ("sparse_q", "sparse_species")]
            names += list(_ARRAYS[4 if version == 4 else 3])
            missing = [k for k in names if k not in files]
            if missing:
                raise ModelFileError(f"'{path}' is missing arrays {missing}")
            names += [k for k in _OPTIONAL if version == 4 and k in files]
            arrays = {k: np.asarray(npz[k]) for k in names}
    except ModelFileError:
        raise
    except Exception as exc:  # numpy, zipfile, json and tokenize raise many types
        raise ModelFileError(f"'{path}' is not a readable gapkit model file (corrupt or "
                             f"truncated?): {type(exc).__name__}: {exc}") from exc
    return meta, arrays


def _upgrade(meta: dict, arrays: dict) -> None:
    """Bring version 1 and 2 metadata to the version 3 layout (in place)."""
    if meta["version"] == 1:  # one SOAP term, exponent from the parameters
        meta["terms"] = [{"descriptor": meta["descriptor"], "zeta": meta["params"]["zeta"],
                          "weight": 1.0, "spec": None}]
        arrays["sparse_q_0"], arrays["sparse_species_0"] = arrays["sparse_q"], arrays["sparse_species"]
    if meta["version"] < 3:
        vs = meta.get("variance_scale_") or {}
        scales = {p: {"nystrom": float(vs.get(f"{p}_nystrom", 1.0)),
                      "posterior": float(vs.get(f"{p}_posterior", 1.0))}
                  for p in ("energy", "forces")}
        raw = all(v == 1.0 for s in scales.values() for v in s.values())
        meta["calibration"] = {"energy": scales["energy"], "forces": {"0": scales["forces"]},
                               "source": None if raw else "recalibrate (version 2 file)"}


def read(path: str | os.PathLike) -> ModelFileContent:
    """Read a model file written by :func:`save` (versions 1 to 4), checked.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        (a ``ValueError``) if ``path`` is a directory or not a gapkit model, is
        truncated or corrupt, has inconsistent or non-finite contents, or has an
        unsupported format version; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"'{path}' is a directory, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"No such model file: '{path}'")
    meta, arrays = _read_archive(path)
    try:
        return _content(path, meta, arrays)
    except ModelFileError:
        raise
    except Exception as exc:  # missing or mistyped metadata entries, bad shapes
        raise ModelFileError(f"'{path}' has invalid contents (corrupt or foreign file?): "
                             f"{type(exc).__name__}: {exc}") from exc


def _content(path: Path, meta: dict, arrays: dict) -> ModelFileContent:
    """The checked :class:`ModelFileContent` of a file's metadata and arrays."""
    _upgrade(meta, arrays)
    for name, arr in arrays.items():
        if arr.dtype.kind not in "fiu":
            raise ModelFileError(f"'{path}': array {name} has dtype {arr.dtype}, expected numbers")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ModelFileError(f"'{path}': array {name} contains NaN or infinite values "
                                 "(the fit that wrote it failed, or the file is corrupt)")
    fitted, start = [], 0
    for k, tm in enumerate(meta["terms"]):
        Q = arrays[f"sparse_q_{k}"].astype(np.float64)
        Z = arrays[f"sparse_species_{k}"].astype(np.int64)
        desc = _descriptor_from_meta(tm["descriptor"], path)
        if Q.ndim != 2 or Z.shape != (len(Q),) or Q.shape[1] != desc.n_features:
            raise ModelFileError(f"'{path}' has inconsistent array shapes in term {k} "
                                 f"(sparse_q {Q.shape}, sparse_species {Z.shape}, "
                                 f"{desc.n_features} features; corrupt file?)")
        fitted.append(FittedTerm(desc, _finite(tm["zeta"], "zeta", path),
                                 _finite(tm["weight"], "weight", path), Q, Z, start))
        start += len(Z)
    if not fitted:
        raise ModelFileError(f"'{path}' has no kernel terms (corrupt file?)")
    M = start
    shapes = {"alpha": (M,), "kmm_cholesky": (M, M), "posterior": (M, M),
              "posterior_upper": (M * (M + 1) // 2,)}
    for name in _ARRAYS[4 if meta["version"] == 4 else 3]:
        if arrays[name].shape != shapes[name]:
            raise ModelFileError(f"'{path}': array {name} has shape {arrays[name].shape}, "
                                 f"expected {shapes[name]} for {M} sparse points (corrupt file?)")
    if meta["version"] == 4:
        posterior = unpack_upper(arrays["posterior_upper"].astype(np.float64), M)
        try:
            kmm_cholesky = gp.cholesky_kmm(kernel_mm(fitted), _finite(
                meta["params"]["jitter"], "params.jitter", path))
        except gp.FactorisationError as exc:
            raise ModelFileError(f"'{path}': the sparse points have no Cholesky factor "
                                 f"(corrupt file?): {exc}") from exc
    else:
        posterior = arrays["posterior"].astype(np.float64)
        kmm_cholesky = arrays["kmm_cholesky"].astype(np.float64)
    if all(tm["spec"] is None for tm in meta["terms"]) and len(fitted) == 1:
        descriptor = clone(fitted[0].descriptor)
    else:
        descriptor = [Term(clone(t.descriptor), **(tm["spec"] or {}))
                      for t, tm in zip(fitted, meta["terms"])]
    noise = {k: _finite(v, f"noise_[{k}]", path) for k, v in meta["noise_"].items()}
    e0 = {int(k): _finite(v, f"e0_[{k}]", path) for k, v in meta["e0_"]["values"].items()}
    state = FittedState(
        terms=tuple(fitted), species=tuple(int(z) for z in meta["species_"]),
        e0=ReferenceEnergies(e0, meta["e0_"]["method"]),
        alpha=arrays["alpha"].astype(np.float64),
        kmm_cholesky=kmm_cholesky, posterior_factor=posterior,
        delta=_finite(meta["delta_"], "delta_", path),
        noise=GroupValues(noise),
        n_train=GroupValues(meta["n_train_"]),
        calibration=Calibration.from_dict(meta["calibration"]),
        log_marginal_likelihood=meta["log_marginal_likelihood_"],
        extra=meta.get("extra", {}), variance_basis=_variance_basis(arrays, M, path))
    if not isinstance(meta["params"], dict):
        raise ModelFileError(f"'{path}': the estimator parameters are not a JSON object")
    return ModelFileContent(state=state, params=meta["params"], descriptor=descriptor,
                            baseline=meta.get("baseline"))


def _variance_basis(arrays: dict, M: int, path: Path) -> VarianceBasis | None:
    """The stored variance basis, checked (``None`` when the file has none)."""
    if "variance_columns" not in arrays:
        return None
    cols = arrays["variance_columns"]
    try:
        if cols.dtype.kind not in "iu" or (cols.size and cols.max() >= M):
            raise ValueError(f"integers below M = {M} expected")
        return VarianceBasis(cols.astype(np.int64))
    except ValueError as exc:
        raise ModelFileError(f"'{path}': array variance_columns (shape {cols.shape}, dtype "
                             f"{cols.dtype}) is not a set of sparse columns: {exc} (corrupt "
                             "file?)") from exc


def _finite(value, name: str, path: Path) -> float:
    """``float(value)``, or :class:`ModelFileError` if it is not a finite number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = np.nan
    if isinstance(value, bool) or not np.isfinite(out):
        raise ModelFileError(f"'{path}': {name} is {value!r}, expected a finite number")
    return out


__all__ = ["FORMAT", "VERSION", "READABLE_VERSIONS", "ModelFileContent", "ModelFileError",
           "save", "read", "pack_upper", "unpack_upper"]
