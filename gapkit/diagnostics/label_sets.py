"""Label sets of a learning curve: models trained on energies, forces, or both.

A *label set* says which reference labels a model is trained on:

``"energy+forces"``
    the model as given (today's default: energies, forces and, where the frames have
    them and ``use_virials`` is on, virials).
``"energy"``
    energies only (``use_forces=False``, ``use_virials=False``). The reported force
    error is that of the negative gradient of an energy model that never saw a force:
    a real force error, typically large at small N.
``"forces"``
    forces only (``use_virials=False``). GAP has no switch that drops the energy rows,
    so they are given a vanishing weight: ``energy_noise`` is set to
    :data:`FORCES_ONLY_ENERGY_NOISE` (1e3 eV/√atom; an energy row then weighs about
    1e-10 of a force row). Forces fix the local energies only up to a constant per
    species, so after the fit the per-species offsets (``E0``) are refitted by least
    squares to the training energies (:func:`refit_offsets`): the energy error
    reported for a forces-only model is that of the best constant offsets, the only
    use it makes of energy labels (one number per species; with a single composition,
    as in rMD17 ethanol, one number in all). Its predicted energy σ is meaningless and
    is recorded as NaN. A learned noise (``optimize=True``) would learn the energy
    noise back, so ``"forces"`` refuses it.

The number of labels a frame of N atoms contributes (:func:`count_labels`) is 1 per
energy, 3N per force set and 6 per virial (when used), so curves can be drawn
against configurations and against labels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from sklearn.base import clone

from gapkit.data import ReferenceEnergies, get_labels

#: The label sets :func:`learning_curve` knows, in plotting order.
LABEL_SETS = ("energy", "forces", "energy+forces")
#: ``energy_noise`` (eV/√atom) of a forces-only model: energy rows of negligible weight.
FORCES_ONLY_ENERGY_NOISE = 1e3


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """Label sets from ``"energy,forces,energy+forces"`` or a sequence of names.

    Names are case-insensitive; ``"forces+energy"`` is ``"energy+forces"``.

    Returns
    -------
    list of str
        Distinct names of :data:`LABEL_SETS`, in the order given.

    Raises
    ------
    ValueError
        For an empty list or an unknown name.
    """
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out = []
    for item in items:
        name = str(item).strip().lower().replace(" ", "")
        if not name:
            continue
        parts = sorted(set(name.split("+")))
        name = "+".join(parts) if parts != ["energy", "forces"] else "energy+forces"
        if name not in LABEL_SETS:
            raise ValueError(f"unknown label set {item!r}: use a comma-separated list of "
                             f"{', '.join(LABEL_SETS)} (e.g. 'energy,forces,energy+forces')")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"no label set given: use one or more of {', '.join(LABEL_SETS)}")
    return out


def model_for(model, labels: str):
    """An unfitted clone of ``model`` that trains on the label set ``labels``.

    Raises
    ------
    ValueError
        For ``labels="forces"`` with ``optimize=True`` (the energy noise would be
        learned back) or with ``use_forces=False``.
    """
    m = clone(model)
    if labels == "energy+forces":
        return m
    if labels == "energy":
        return m.set_params(use_forces=False, use_virials=False)
    if labels == "forces":
        if getattr(m, "optimize", False):
            raise ValueError("labels='forces' needs optimize=False: a learned energy noise "
                             "would bring the energy labels back")
        if not getattr(m, "use_forces", True):
            raise ValueError("labels='forces' needs a model with use_forces=True")
        return m.set_params(energy_noise=FORCES_ONLY_ENERGY_NOISE, use_virials=False)
    raise ValueError(f"unknown label set {labels!r}; use one of {LABEL_SETS}")


def count_labels(frames: Sequence[Atoms], labels: str, model) -> int:
    """Reference labels a fit of ``model`` (configured by :func:`model_for`) on ``frames`` uses.

    1 per energy (all label sets but ``"forces"``), 3N per force set (where
    ``model.use_forces``) and 6 per virial (where the frame has one and
    ``model.use_virials``). Isolated atoms (for ``e0="isolated"``) are not counted.
    """
    n = 0
    use_forces = bool(getattr(model, "use_forces", True))
    use_virials = bool(getattr(model, "use_virials", True))
    for k, atoms in enumerate(frames):
        if atoms.info.get("config_type") == "isolated_atom":
            continue
        n += 0 if labels == "forces" else 1
        n += 3 * len(atoms) if use_forces else 0
        if use_virials:
            lab = get_labels(atoms, model.label_keys, index=k, require_energy=False,
                             require_forces=False)
            n += 6 if lab.virial is not None else 0
    return n


def refit_offsets(model, frames: Sequence[Atoms]):
    """Refit the per-species energy offsets of a fitted forces-only model, in place.

    The offsets are the least-squares (minimum-norm) solution of the training-energy
    residuals on the species counts, added to the model's ``E0``. Isolated atoms are
    ignored. Returns ``model``.
    """
    fitted = [a for a in frames if a.info.get("config_type") != "isolated_atom"]
    pred = model.predict(fitted, forces=False, stress=False)
    ref = np.array([get_labels(a, model.label_keys, index=k, require_forces=False).energy
                    for k, a in enumerate(fitted)])
    species = [int(z) for z in model.species_]
    counts = np.array([[np.count_nonzero(a.numbers == z) for z in species] for a in fitted],
                      dtype=np.float64)
    shift, *_ = np.linalg.lstsq(counts, ref - np.asarray(pred.energy), rcond=None)
    e0 = model.e0_
    values = {z: float(e0.values.get(z, 0.0)) + float(s) for z, s in zip(species, shift)}
    model.state_ = model.state_.replace(e0=ReferenceEnergies(values, f"{e0.method}+offset"))
    return model
