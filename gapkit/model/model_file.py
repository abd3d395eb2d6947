"""Model files: a :class:`~gapkit.model.state.FittedState` stored without pickle.

File format ``gapkit-model`` version 3
--------------------------------------
One NumPy ``.npz`` archive (a zip of ``.npy`` arrays), read with
``allow_pickle=False``:

====================== ================ ============================================
key                    shape            meaning
====================== ================ ============================================
``__meta__``           (n_bytes,) uint8 UTF-8 JSON, see below
``sparse_q_<t>``       (M_t, F_t)       normalised descriptors of the sparse points
                       float64          of kernel term ``t`` (0, 1, ...)
``sparse_species_<t>`` (M_t,) int64     their central atomic numbers
``alpha``              (M,) float64     unit-scale weights of all terms stacked
                                        (energy = delta**2 sum_t w_t**2 k~_t alpha_t)
``kmm_cholesky``       (M, M) float64   lower Cholesky factor of K~_MM + jitter I
``posterior``          (M, M) float64   upper R_P, R_P^T R_P = K_MM + K_MN Lambda^-1 K_NM
====================== ================ ============================================

The JSON holds ``format`` (``"gapkit-model"``), ``version`` (3), the gapkit version
that wrote it, ``terms`` (for each kernel term: the descriptor class and parameters,
the fitted ``zeta`` and ``weight``, and the term as the user gave it, ``spec``, or
``null`` for a plain descriptor), the estimator parameters ``params``, the fitted
scalars (``delta_``, ``noise_`` and ``n_train_`` keyed by noise-group label such as
``"forces"`` or ``"forces:bulk"``, ``e0_``, ``species_``, ``log_marginal_likelihood_``),
``calibration`` (the scales of the variance terms per property and what they were
fitted on, ``source``; ``null`` source = raw DTC variance), optional ``extra``
entries, and the Delta-learning ``baseline``: ``null``,
``{"kind": "gapkit", "spec": {...}}`` (rebuilt on load) or
``{"kind": "user", "class": "module.Class"}`` (must be passed to :func:`gapkit.load`).

Versions 1 (one SOAP descriptor; arrays ``sparse_q`` and ``sparse_species``) and 2
(``variance_scale_`` with keys ``"<property>_nystrom"`` / ``"<property>_posterior"``
instead of ``calibration``) are still read.

Writes are atomic: the archive goes to a temporary file in the target folder, is
flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import clone

from gapkit import descriptors
from gapkit._version import __version__
from gapkit.data import ReferenceEnergies
from gapkit.gp.terms import FittedTerm, Term, as_terms
from gapkit.model.state import Calibration, FittedState, GroupValues
from gapkit.utils import atomic_write_bytes, to_jsonable

FORMAT = "gapkit-model"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_ARRAYS = ("alpha", "kmm_cholesky", "posterior")


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
    """Write a fitted state to ``path`` (format ``gapkit-model`` v3), atomically.

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
    """
    params = dict(params)
    if not isinstance(params.get("e0"), (str, dict)):
        params["e0"] = str(params["e0"])
    if params.get("random_state") is not None and not isinstance(params["random_state"], int):
        params["random_state"] = None
    specs = as_terms(descriptor)
    plain = not any(isinstance(d, Term) for d in (
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
        **{f"sparse_species_{k}": t.sparse_species.astype(np.int64)
           for k, t in enumerate(state.terms)},
        "alpha": state.alpha, "kmm_cholesky": state.kmm_cholesky,
        "posterior": state.posterior_factor,
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


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
        raise ValueError(f"Unknown descriptor class {dmeta.get('class')!r} in '{path}' "
                         f"(this gapkit knows {names})")
    return getattr(descriptors, dmeta["class"])(**dmeta["params"])


def _read_archive(path: Path) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
            if "__meta__" not in files:
                raise ValueError(f"'{path}' is not a gapkit model file (no __meta__ entry)")
            meta = json.loads(npz["__meta__"].tobytes().decode("utf-8"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"'{path}' has format {meta.get('format')!r}, expected {FORMAT!r}")
            version = meta.get("version")
            if version not in READABLE_VERSIONS:
                raise ValueError(f"'{path}' is gapkit-model version {version}; this gapkit reads "
                                 f"versions {READABLE_VERSIONS}. Refit, or use the gapkit version "
                                 f"that wrote it ({meta.get('gapkit_version')}).")
            if version == 1:
                names = ["sparse_q", "sparse_species"]
            else:
                n_terms = len(meta.get("terms") or [])
                names = [f"{stem}_{k}" for k in range(n_terms)
                         for stem in ("sparse_q", "sparse_species")]
            names += list(_ARRAYS)
            missing = [k for k in names if k not in files]
            if missing:
                raise ValueError(f"'{path}' is missing arrays {missing}")
            arrays = {k: np.asarray(npz[k]) for k in names}
    except (zipfile.BadZipFile, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"'{path}' is not a readable gapkit model file (corrupt or "
                         f"truncated?): {exc}") from exc
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
    """Read a model file written by :func:`save` (versions 1 to 3).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a gapkit model, is truncated or corrupt, or has an
        unsupported format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such model file: '{path}'")
    meta, arrays = _read_archive(path)
    _upgrade(meta, arrays)
    fitted, start = [], 0
    for k, tm in enumerate(meta["terms"]):
        Q = arrays[f"sparse_q_{k}"].astype(np.float64)
        Z = arrays[f"sparse_species_{k}"].astype(np.int64)
        desc = _descriptor_from_meta(tm["descriptor"], path)
        if Q.ndim != 2 or Z.shape != (len(Q),) or Q.shape[1] != desc.n_features:
            raise ValueError(f"'{path}' has inconsistent array shapes in term {k} (corrupt file?)")
        fitted.append(FittedTerm(desc, float(tm["zeta"]), float(tm["weight"]), Q, Z, start))
        start += len(Z)
    if not fitted:
        raise ValueError(f"'{path}' has no kernel terms (corrupt file?)")
    if all(tm["spec"] is None for tm in meta["terms"]) and len(fitted) == 1:
        descriptor = clone(fitted[0].descriptor)
    else:
        descriptor = [Term(clone(t.descriptor), **(tm["spec"] or {}))
                      for t, tm in zip(fitted, meta["terms"])]
    try:
        state = FittedState(
            terms=tuple(fitted), species=tuple(int(z) for z in meta["species_"]),
            e0=ReferenceEnergies({int(k): float(v) for k, v in meta["e0_"]["values"].items()},
                                 meta["e0_"]["method"]),
            alpha=arrays["alpha"].astype(np.float64),
            kmm_cholesky=arrays["kmm_cholesky"].astype(np.float64),
            posterior_factor=arrays["posterior"].astype(np.float64),
            delta=float(meta["delta_"]),
            noise=GroupValues({k: float(v) for k, v in meta["noise_"].items()}),
            n_train=GroupValues(meta["n_train_"]),
            calibration=Calibration.from_dict(meta["calibration"]),
            log_marginal_likelihood=meta["log_marginal_likelihood_"],
            extra=meta.get("extra", {}))
    except ValueError as exc:
        raise ValueError(f"'{path}' has inconsistent array shapes (corrupt file?): {exc}") from exc
    return ModelFileContent(state=state, params=meta["params"], descriptor=descriptor,
                            baseline=meta.get("baseline"))


__all__ = ["FORMAT", "VERSION", "READABLE_VERSIONS", "ModelFileContent", "save", "read"]
