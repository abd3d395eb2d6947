"""Saving and loading fitted models, without pickle.

File format ``gapkit-model`` version 2
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

The JSON holds ``format`` (``"gapkit-model"``), ``version`` (2), the gapkit version
that wrote it, ``terms`` (for each kernel term: the descriptor class and parameters,
the fitted ``zeta`` and ``weight``, and the term as the user gave it, ``spec``, or
``null`` for a plain descriptor), the estimator parameters, the fitted scalars
(``delta_``, ``noise_``, ``e0_``, ``species_``, ``variance_scale_``, ``n_train_``,
``log_marginal_likelihood_``), optional ``extra`` entries, and the Delta-learning
``baseline``: ``null``, ``{"kind": "gapkit", "spec": {...}}`` (rebuilt on load) or
``{"kind": "user", "class": "module.Class"}`` (must be passed to :func:`load`).

Version 1 files (one SOAP descriptor; arrays ``sparse_q`` and ``sparse_species``)
are still read.

Writes are atomic: the archive goes to a temporary file in the target folder, is
flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from sklearn.base import clone

from gapkit.gp.terms import FittedTerm, Term, as_terms
from gapkit.utils import atomic_write_bytes, to_jsonable

FORMAT = "gapkit-model"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_ARRAYS = ("alpha", "kmm_cholesky", "posterior")


def save(model, path: str | os.PathLike) -> Path:
    """Save a fitted :class:`gapkit.GAP` to ``path`` (format ``gapkit-model`` v2).

    Parameters
    ----------
    model : GAP
        A fitted model.
    path : str or path
        Target file; conventionally ``*.npz``. Written atomically.

    Returns
    -------
    pathlib.Path
    """
    from gapkit import __version__

    model._check_fitted()
    params = model.get_params(deep=False)
    params.pop("descriptor", None)
    baseline = params.pop("baseline", None)
    if not isinstance(params.get("e0"), (str, dict)):
        params["e0"] = str(params["e0"])
    if params.get("random_state") is not None and not isinstance(params["random_state"], int):
        params["random_state"] = None
    specs = as_terms(model.descriptor)
    plain = not any(isinstance(d, Term) for d in (
        model.descriptor if isinstance(model.descriptor, (list, tuple)) else [model.descriptor]))
    term_meta = []
    for spec, t in zip(specs, model.terms_):
        term_meta.append({
            "descriptor": _descriptor_meta(t.descriptor), "zeta": t.zeta, "weight": t.weight,
            "spec": None if plain else {k: v for k, v in spec.get_params(deep=False).items()
                                        if k != "descriptor"}})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "gapkit_version": __version__,
        "terms": term_meta,
        "params": params,
        "delta_": model.delta_,
        "noise_": model.noise_,
        "e0_": {"method": model.e0_.method, "values": model.e0_.values},
        "species_": list(model.species_),
        "variance_scale_": model.variance_scale_,
        "n_train_": model.n_train_,
        "log_marginal_likelihood_": model.log_marginal_likelihood_,
        "extra": getattr(model, "extra_", {}),
        "baseline": _baseline_meta(baseline),
    }
    arrays = {
        "__meta__": np.frombuffer(json.dumps(to_jsonable(meta)).encode("utf-8"), dtype=np.uint8),
        **{f"sparse_q_{k}": t.sparse_q for k, t in enumerate(model.terms_)},
        **{f"sparse_species_{k}": t.sparse_species.astype(np.int64)
           for k, t in enumerate(model.terms_)},
        "alpha": model.alpha_,
        "kmm_cholesky": model.kmm_cholesky_,
        "posterior": model.posterior_factor_,
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _descriptor_meta(desc) -> dict:
    return {"class": type(desc).__name__, "params": desc.get_params(deep=False)}


def _descriptor_from_meta(dmeta: dict, path: Path):
    """Rebuild a descriptor from its class name (gapkit descriptors only) and parameters."""
    from gapkit import descriptors

    names = [n for n in descriptors.__all__ if n != "DescriptorSet"]
    if dmeta.get("class") not in names:
        raise ValueError(f"Unknown descriptor class {dmeta.get('class')!r} in '{path}' "
                         f"(this gapkit knows {names})")
    return getattr(descriptors, dmeta["class"])(**dmeta["params"])


def _baseline_meta(baseline) -> dict | None:
    if baseline is None:
        return None
    if hasattr(baseline, "to_dict"):
        return {"kind": "gapkit", "spec": baseline.to_dict()}
    cls = type(baseline)
    return {"kind": "user", "class": f"{cls.__module__}.{cls.__qualname__}"}


def load(path: str | os.PathLike, baseline=None):
    """Load a model written by :func:`save`.

    Parameters
    ----------
    path : str or path
    baseline : ase Calculator, optional
        The Delta-learning baseline, required when the model was trained with a user
        calculator (only its class name is stored). A gapkit baseline is rebuilt from
        the file; passing one overrides it.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a gapkit model, is truncated or corrupt, has an
        unsupported format version, or needs a baseline that was not given.
    """
    from gapkit.data import ReferenceEnergies
    from gapkit.model.estimator import GAP

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such model file: '{path}'")
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
    if meta["version"] == 1:  # one SOAP term, exponent from the parameters
        meta["terms"] = [{"descriptor": meta["descriptor"], "zeta": meta["params"]["zeta"],
                          "weight": 1.0, "spec": None}]
        arrays["sparse_q_0"], arrays["sparse_species_0"] = arrays["sparse_q"], arrays["sparse_species"]
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
    bmeta = meta.get("baseline")
    if baseline is None and bmeta is not None:
        if bmeta["kind"] == "gapkit":
            from gapkit.physics.baselines import baseline_from_dict

            baseline = baseline_from_dict(bmeta["spec"])
        else:
            raise ValueError(f"'{path}' was trained with the baseline calculator "
                             f"{bmeta['class']}; pass it again: gapkit.load(path, baseline=...)")
    model = GAP(descriptor=descriptor, baseline=baseline, **meta["params"])
    model.terms_ = fitted
    model.descriptor_ = fitted[0].descriptor
    model.species_ = [int(z) for z in meta["species_"]]
    model.e0_ = ReferenceEnergies({int(k): float(v) for k, v in meta["e0_"]["values"].items()},
                                  meta["e0_"]["method"])
    model.delta_ = float(meta["delta_"])
    model.noise_ = {k: float(v) for k, v in meta["noise_"].items()}
    model.variance_scale_ = {k: float(v) for k, v in meta["variance_scale_"].items()}
    model.n_train_ = meta["n_train_"]
    model.log_marginal_likelihood_ = meta["log_marginal_likelihood_"]
    model.extra_ = meta.get("extra", {})
    model.alpha_ = arrays["alpha"].astype(np.float64)
    model.kmm_cholesky_ = arrays["kmm_cholesky"].astype(np.float64)
    model.posterior_factor_ = arrays["posterior"].astype(np.float64)
    M = len(model.alpha_)
    shapes_ok = (start == M and model.kmm_cholesky_.shape == (M, M)
                 and model.posterior_factor_.shape == (M, M))
    if not shapes_ok:
        raise ValueError(f"'{path}' has inconsistent array shapes (corrupt file?)")
    return model
