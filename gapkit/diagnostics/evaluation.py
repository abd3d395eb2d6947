"""Evaluate a fitted model on labelled structures: one prediction, its errors and stds.

:func:`evaluate` predicts once (with standard deviations when asked) and returns an
:class:`Evaluation` that gives the error metrics, the mean predicted standard
deviations and the calibration of those standard deviations against the errors.
``gapkit evaluate`` and the learning and capacity curves share it.

Units: energies in eV per structure or eV/atom (``*_per_atom``), forces in eV/Å.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms

from gapkit.data import LabelKeys
from gapkit.metrics import error_metrics, reference_arrays
from gapkit.model import Prediction, PredictionStd
from gapkit.uncertainty.calibration import calibration_metrics

#: The entries of :func:`gapkit.uncertainty.calibration.calibration_metrics` reported
#: by :meth:`Evaluation.calibration`, once for energies and once for forces.
CALIBRATION_KEYS = ("z_mean", "z_std", "nll", "coverage_68", "coverage_95", "miscalibration_area",
                    "spearman")
#: The keys of :meth:`Evaluation.mean_stds`.
MEAN_STD_KEYS = ("energy_std", "energy_std_epistemic", "energy_std_per_atom",
                 "energy_std_epistemic_per_atom", "forces_std", "forces_std_epistemic")


def predict_with_std(model, frames: Sequence[Atoms],
                     with_std: bool = True) -> tuple[Prediction, PredictionStd | None]:
    """``model.predict(frames)``, with the standard deviations when ``with_std``.

    Parameters
    ----------
    model : GAP
        A fitted model.
    frames : list of ase.Atoms
    with_std : bool, default True
        Also predict the standard deviations (costs roughly one more pass).

    Returns
    -------
    pred : Prediction
    std : PredictionStd or None
        None when ``with_std`` is False.
    """
    if with_std:
        return model.predict(frames, return_std=True)
    return model.predict(frames), None


@dataclass
class Evaluation:
    """A model's predictions on labelled structures, made by :func:`evaluate`.

    Attributes
    ----------
    frames : list of ase.Atoms
        The labelled structures.
    pred : Prediction
    std : PredictionStd or None
        None when evaluated without standard deviations.
    errors : dict
        :func:`gapkit.metrics.error_metrics` of ``pred``: energy errors in eV
        (``*_per_atom``: eV/atom), force errors in eV/Å.
    label_keys : LabelKeys or None
        Where the reference labels are stored.
    """

    frames: list
    pred: Prediction
    std: PredictionStd | None
    errors: dict
    label_keys: LabelKeys | None = None

    def mean_stds(self) -> dict:
        """Mean predicted standard deviations over the structures (or force components).

        Returns
        -------
        dict
            ``energy_std``, ``energy_std_epistemic`` (total and epistemic, eV per
            structure), ``energy_std_per_atom``, ``energy_std_epistemic_per_atom``
            (eV/atom), ``forces_std``, ``forces_std_epistemic`` (eV/Å, per force
            component). NaN where there are no standard deviations (or no forces).
        """
        out = dict.fromkeys(MEAN_STD_KEYS, float("nan"))
        std = self.std
        if std is None:
            return out
        nat = np.array([len(a) for a in self.frames], dtype=np.float64)
        out["energy_std"] = float(np.mean(std.energy))
        out["energy_std_epistemic"] = float(np.mean(std.energy_epistemic))
        out["energy_std_per_atom"] = float(np.mean(std.energy / nat))
        out["energy_std_epistemic_per_atom"] = float(np.mean(std.energy_epistemic / nat))
        if std.forces is not None:
            out["forces_std"] = float(np.mean(np.concatenate([s.ravel() for s in std.forces])))
            out["forces_std_epistemic"] = float(np.mean(
                np.concatenate([s.ravel() for s in std.forces_epistemic])))
        return out

    def calibration(self) -> dict:
        """Calibration of the predicted total standard deviations against the errors.

        Returns
        -------
        dict
            ``energy_<k>`` and (when some structure has reference forces)
            ``forces_<k>`` for every ``k`` in :data:`CALIBRATION_KEYS`; empty without
            standard deviations.
        """
        std = self.std
        if std is None:
            return {}
        ref = reference_arrays(self.frames, self.label_keys)
        ce = calibration_metrics(self.pred.energy - ref["energy"], std.energy)
        out = {f"energy_{k}": ce[k] for k in CALIBRATION_KEYS}
        fe = [(p - r).ravel() for p, r in zip(self.pred.forces, ref["forces"]) if r is not None]
        if fe:
            fs = [s.ravel() for s, r in zip(std.forces, ref["forces"]) if r is not None]
            cf = calibration_metrics(np.concatenate(fe), np.concatenate(fs))
            out.update({f"forces_{k}": cf[k] for k in CALIBRATION_KEYS})
        return out


def evaluate(model, frames: Sequence[Atoms], with_std: bool = True) -> Evaluation:
    """Predict ``frames`` with ``model`` once and compare with their labels.

    Parameters
    ----------
    model : GAP
        A fitted model; its ``label_keys`` say where the reference labels are.
    frames : list of ase.Atoms
        Labelled structures (energies in eV, forces in eV/Å).
    with_std : bool, default True
        Also predict standard deviations (for :meth:`Evaluation.mean_stds` and
        :meth:`Evaluation.calibration`).

    Returns
    -------
    Evaluation
    """
    frames = list(frames)
    pred, std = predict_with_std(model, frames, with_std)
    return Evaluation(frames=frames, pred=pred, std=std,
                      errors=error_metrics(pred, frames, model.label_keys),
                      label_keys=model.label_keys)
