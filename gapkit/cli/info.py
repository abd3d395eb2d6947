"""``gapkit info MODEL``: what a model file holds and where it came from (``--json`` too)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from gapkit.model import model_file
from gapkit.utils import to_jsonable


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``info`` sub-command to an argparse ``subparsers`` object; returns it."""
    p = subparsers.add_parser("info", help="settings, species, sparse points, noises, "
                                           "calibration and provenance of a model file")
    p.add_argument("model", help="model file (gapkit fit -o)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def model_info(path: str | Path) -> dict:
    """The facts ``gapkit info`` reports about the model file ``path`` (JSON-able).

    Parameters
    ----------
    path : str or path
        A gapkit model file (checked by :func:`gapkit.model.model_file.read`).

    Returns
    -------
    dict
        ``file``, ``file_size_bytes``, ``format_version``, ``gapkit_version`` (that
        wrote it), ``species``, ``terms`` (descriptor class and settings, ``zeta``,
        ``weight`` and sparse points per species), ``n_sparse``, ``n_variance_sparse``
        (sparse points of the std), ``params``,
        ``delta`` (eV), ``noise`` and ``n_train`` per noise group, ``e0`` (eV per
        species), ``calibration`` (``calibrated``, ``source``, ``reference`` stds,
        ``config_types``: the variance multipliers per ``config_type``),
        ``baseline`` and ``provenance`` (when the model's ``extra_`` holds it) and
        the rest of ``extra``.
    """
    path = Path(path)
    content = model_file.read(path)  # validates the whole file
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(bytes(archive["__meta__"]).decode("utf-8"))
    state = content.state
    terms = []
    for k, t in enumerate(state.terms):
        zs, counts = np.unique(t.sparse_species, return_counts=True)
        terms.append({"term": k, "descriptor": type(t.descriptor).__name__,
                      "settings": t.descriptor.get_params(deep=False), "zeta": t.zeta,
                      "weight": t.weight,
                      "n_sparse": {chemical_symbols[int(z)]: int(c) for z, c in zip(zs, counts)}})
    cal = state.calibration
    cal_dict = cal.as_dict()
    extra = dict(state.extra or {})
    provenance = extra.pop("provenance", None)
    info = {
        "file": str(path), "file_size_bytes": path.stat().st_size,
        "format_version": meta.get("version"), "gapkit_version": meta.get("gapkit_version"),
        "species": [chemical_symbols[z] for z in state.species],
        "terms": terms, "n_sparse": int(len(state.alpha)),
        "n_variance_sparse": int(len(state.variance_basis if state.variance_basis is not None
                                     else state.alpha)),
        "params": content.params, "delta": state.delta,
        "noise": dict(state.noise.labelled()), "n_train": dict(state.n_train.labelled()),
        "e0": {"method": state.e0.method,
               "values": {chemical_symbols[int(z)]: v for z, v in state.e0.values.items()}},
        "log_marginal_likelihood": state.log_marginal_likelihood,
        "calibration": {"calibrated": cal.calibrated,
                        **{k: cal_dict[k] for k in ("source", "reference", "config_types",
                                                    "config_type_key")}},
        "baseline": content.baseline, "provenance": provenance, "extra": extra,
    }
    return to_jsonable(info)


def config_type_lines(config_types: dict, key: str = "config_type") -> list[str]:
    """One line per ``config_type`` with variance multipliers (the ``config_types`` of
    :meth:`gapkit.model.state.Calibration.as_dict`), as std factors."""
    return [f"{key}={name}: std x {c['energy'] ** 0.5:.3g} (energy), x "
            f"{c['forces'] ** 0.5:.3g} (forces), from {c['n_frames']} validation frames"
            for name, c in config_types.items()]


def format_info(info: dict) -> str:
    """The text of ``gapkit info`` for a :func:`model_info` dict."""
    size = info["file_size_bytes"]
    lines = [f"model file      {info['file']} ({size / 1e6:.2f} MB, gapkit-model v"
             f"{info['format_version']}, written by gapkit {info['gapkit_version']})",
             f"species         {' '.join(info['species'])}",
             f"sparse points   {info['n_sparse']} in {len(info['terms'])} term(s); the std "
             f"uses {info.get('n_variance_sparse', info['n_sparse'])} (variance basis)"]
    for t in info["terms"]:
        settings = ", ".join(f"{k}={v}" for k, v in t["settings"].items())
        per = ", ".join(f"{s}:{n}" for s, n in t["n_sparse"].items())
        lines.append(f"  term {t['term']}: {t['descriptor']}({settings}) zeta={t['zeta']:g} "
                     f"weight={t['weight']:.4g} | sparse {per}")
    lines.append(f"delta           {info['delta']:.6g} eV")
    lines.append("noise           " + ", ".join(f"{k} {v:.4g}" for k, v in info["noise"].items())
                 + "  (eV/sqrt(atom), eV/Å)")
    lines.append("training rows   " + ", ".join(f"{k} {v}" for k, v in info["n_train"].items()))
    e0 = info["e0"]
    lines.append(f"E0 ({e0['method']})".ljust(16) + "".join(
        f"{s} {v:.6g} eV  " for s, v in e0["values"].items()).rstrip())
    cal = info["calibration"]
    if cal["calibrated"]:
        refs = dict(cal["reference"])
        q = refs.pop("quantile", None)  # the per-atom quantile the stds are (newer files)
        ref = ", ".join(f"{k} {v:.3g}" for k, v in refs.items())
        unit = f"{q:.0%} per-atom quantile" if q is not None else "RMS of frame maxima"
        lines.append(f"std calibrated  on {cal['source']} (flag reference std, {unit}: {ref})")
        lines += [f"  {line}" for line in config_type_lines(
            cal.get("config_types") or {}, cal.get("config_type_key", "config_type"))]
    else:
        lines.append("std calibrated  no (raw DTC variance)")
    if info.get("baseline"):
        lines.append(f"baseline        {json.dumps(info['baseline'])}")
    prov = info.get("provenance")
    if prov:
        lines.append(f"made by         gapkit {prov.get('gapkit_version')}: "
                     f"{' '.join(prov.get('command') or [])}")
        for f in prov.get("training_files") or []:
            lines.append(f"  training file {f.get('path')} ({f.get('n_frames')} frames, "
                         f"sha256 {str(f.get('sha256'))[:16]}...)")
    else:
        lines.append("provenance      not recorded (not written by gapkit fit)")
    params = ", ".join(f"{k}={v}" for k, v in info["params"].items())
    lines.append(f"parameters      {params}")
    if info.get("extra"):
        lines.append(f"extra           {json.dumps(info['extra'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``gapkit info``: print the facts of a model file; returns 0."""
    info = model_info(args.model)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
