"""Evaluate a fitted model on labelled structures: one prediction, its errors and stds.

:func:`evaluate` predicts once (with standard deviations when asked) and returns an
:class:`Evaluation` that gives the error metrics, the mean predicted standard
deviations and the calibration of those standard deviations against the errors
(ZMS, ENCE, Spearman, AUROC with the reference of a perfectly calibrated σ: see
:mod:`gapkit.uncertainty.metrics`); :func:`calibration_warnings` says when σ is clearly off.
``gapkit evaluate`` and the learning and capacity curves share it.

The same prediction broken down by input file (:meth:`Evaluation.by_file`) and by
``config_type`` (:meth:`Evaluation.by_config_type`), with stress errors, comes from
:mod:`gapkit.diagnostics.breakdown`.

Units: energies in eV per structure or eV/atom (``*_per_atom``), forces in eV/Å,
stresses in GPa.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms

from gapkit.data import LabelKeys
from gapkit.diagnostics.breakdown import FrameErrors, breakdown, frame_errors, group_metrics
from gapkit.metrics import error_metrics, reference_arrays
from gapkit.model import Prediction, PredictionStd
from gapkit.uncertainty.calibration import calibration_metrics
from gapkit.uncertainty.metrics import (auroc_worst, ence, forces_ence, forces_spearman, reference,
                                        spearman, zms, zms_by_species)
from gapkit.utils import check_random_state

#: The entries of :func:`gapkit.uncertainty.calibration.calibration_metrics` reported
#: by :meth:`Evaluation.calibration`, once for energies and once for forces.
CALIBRATION_KEYS = ("z_mean", "z_std", "nll", "coverage_68", "coverage_95", "miscalibration_area",
                    "spearman")
#: Statistics of :mod:`gapkit.uncertainty.metrics` reported by :meth:`Evaluation.calibration`.
UNCERTAINTY_KEYS = ("energy_zms", "forces_zms", "forces_zms_by_species", "energy_ence",
                    "forces_ence", "energy_auroc_worst10")
#: Statistics reported with ``<key>_reference``, ``[mean, low, high]`` of a calibrated σ.
REFERENCED_KEYS = ("energy_spearman", "forces_spearman", "energy_auroc_worst10", "energy_ence",
                   "forces_ence")
#: Every key of :meth:`Evaluation.calibration` (fixed: scripts rely on these names).
CALIBRATION_REPORT_KEYS = (tuple(f"{p}_{k}" for p in ("energy", "forces") for k in CALIBRATION_KEYS)
                           + UNCERTAINTY_KEYS + tuple(f"{k}_reference" for k in REFERENCED_KEYS))
#: z std outside this range means that σ is clearly off (see :func:`calibration_warnings`).
Z_STD_RANGE = (0.5, 2.0)
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
        (``*_per_atom``: eV/atom), force errors in eV/Å, and ``stress_mae``,
        ``stress_rmse`` (GPa per Voigt component; None when no frame has a stress or
        virial label) and ``n_stress`` (frames with one).
    label_keys : LabelKeys or None
        Where the reference labels are stored.
    sources : list of str or None
        The file each frame came from (for :meth:`by_file`); None: one source.
    """

    frames: list
    pred: Prediction
    std: PredictionStd | None
    errors: dict
    label_keys: LabelKeys | None = None
    sources: list | None = None
    _frame_errors: FrameErrors | None = field(default=None, repr=False)

    def frame_errors(self) -> FrameErrors:
        """Per-frame errors (:func:`gapkit.diagnostics.breakdown.frame_errors`), computed once."""
        if self._frame_errors is None:
            self._frame_errors = frame_errors(self.pred, self.frames, self.label_keys, self.std)
        return self._frame_errors

    def by_file(self) -> dict[str, dict]:
        """Errors per input file: file name to the metrics of
        :func:`gapkit.diagnostics.breakdown.group_metrics` (the top-level error keys,
        stress in GPa, and ``energy_zms``/``forces_zms`` when σ were predicted).
        Without ``sources`` every frame counts as from ``"all"``."""
        tags = self.sources if self.sources is not None else ["all"] * len(self.frames)
        return breakdown(self.frame_errors(), tags)

    def by_config_type(self) -> dict[str, dict]:
        """Errors per ``config_type`` (``"default"`` for frames without one), as
        :meth:`by_file`."""
        fe = self.frame_errors()
        return breakdown(fe, fe.config_types)

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

    def calibration(self, n_draws: int = 200, random_state=0) -> dict:
        """Calibration of the predicted total standard deviations against the errors.

        Energies are per structure (eV); force ZMS, NLL, coverage, z statistics and
        miscalibration area are over force components (eV/Å), ``forces_spearman`` and
        ``forces_ence`` over per-atom ``|ΔF|`` against ``σ_F`` (see
        :mod:`gapkit.uncertainty.metrics`).

        Parameters
        ----------
        n_draws : int, default 200
            Draws of errors from a calibrated σ for the ``*_reference`` entries.
        random_state : int, RandomState or None, default 0
            Seed of those draws.

        Returns
        -------
        dict
            Every key of :data:`CALIBRATION_REPORT_KEYS`: ``energy_<k>`` and
            ``forces_<k>`` for ``k`` in :data:`CALIBRATION_KEYS`, the
            :data:`UNCERTAINTY_KEYS` (``forces_zms_by_species``: ``{symbol: zms}``) and
            ``<k>_reference`` (``[mean, low, high]``, :func:`~gapkit.uncertainty.metrics.reference`)
            for ``k`` in :data:`REFERENCED_KEYS`. ``None`` where there are no standard
            deviations, or for ``forces_*`` when no structure has reference forces.
        """
        out = dict.fromkeys(CALIBRATION_REPORT_KEYS)
        std = self.std
        if std is None:
            return out
        rng = check_random_state(random_state)
        ref = reference_arrays(self.frames, self.label_keys)
        de = np.asarray(self.pred.energy, dtype=np.float64) - ref["energy"]
        se = np.asarray(std.energy, dtype=np.float64)
        ce = calibration_metrics(de, se)
        out.update({f"energy_{k}": ce[k] for k in CALIBRATION_KEYS})
        energy_stats = {"energy_zms": zms, "energy_ence": ence, "energy_spearman": spearman,
                 "energy_auroc_worst10": auroc_worst}
        for key, stat in energy_stats.items():
            out[key] = stat(de, se)
            if key in REFERENCED_KEYS:
                out[f"{key}_reference"] = reference(stat, se, n_draws, rng)
        with_f = [k for k, r in enumerate(ref["forces"]) if r is not None]
        if not with_f or std.forces is None:
            return out
        fe = np.concatenate([(self.pred.forces[k] - ref["forces"][k]).reshape(-1, 3) for k in with_f])
        fs = np.concatenate([np.broadcast_to(np.reshape(std.forces[k], (len(self.frames[k]), -1)),
                                             (len(self.frames[k]), 3)) for k in with_f])
        numbers = np.concatenate([self.frames[k].numbers for k in with_f])
        cf = calibration_metrics(fe, fs)
        out.update({f"forces_{k}": cf[k] for k in CALIBRATION_KEYS})
        out["forces_zms"] = zms(fe, fs)
        out["forces_zms_by_species"] = zms_by_species(fe, fs, numbers)
        for key, stat in (("forces_spearman", forces_spearman), ("forces_ence", forces_ence)):
            out[key] = stat(fe, fs)
            out[f"{key}_reference"] = reference(stat, fs, n_draws, rng)
        return out


def calibration_warnings(calibration: dict, z_std_range: tuple[float, float] = Z_STD_RANGE
                         ) -> list[str]:
    """Messages for the properties whose z std says that σ is clearly off.

    Parameters
    ----------
    calibration : dict
        :meth:`Evaluation.calibration` (or any dict with ``energy_z_std`` and
        ``forces_z_std``; None or NaN entries are skipped).
    z_std_range : (float, float), default (0.5, 2.0)
        The z stds inside which no warning is given.

    Returns
    -------
    list of str
        One message per property outside the range (empty when none is).
    """
    low, high = z_std_range
    out = []
    for prop, noun in (("energy", "energies"), ("forces", "forces")):
        z = calibration.get(f"{prop}_z_std")
        if z is None or not np.isfinite(z) or low <= z <= high:
            continue
        how = ("too small (over-confident)" if z > high else "too large (under-confident)")
        out.append(f"{prop} z std {z:.2f} is outside [{low:g}, {high:g}]: the predicted σ of the "
                   f"{noun} is {how}")
    return out


def evaluate(model, frames: Sequence[Atoms], with_std: bool = True,
             sources: Sequence[str] | None = None) -> Evaluation:
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
    sources : sequence of str, optional
        The file (or any group name) of each frame, for :meth:`Evaluation.by_file`.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        If ``sources`` does not have one entry per frame.
    """
    frames = list(frames)
    if sources is not None and len(sources) != len(frames):
        raise ValueError(f"sources has {len(sources)} entries for {len(frames)} frames: give "
                         "one per frame")
    pred, std = predict_with_std(model, frames, with_std)
    ev = Evaluation(frames=frames, pred=pred, std=std,
                    errors=error_metrics(pred, frames, model.label_keys),
                    label_keys=model.label_keys,
                    sources=None if sources is None else [str(s) for s in sources])
    top = group_metrics(ev.frame_errors())
    ev.errors.update({k: top[k] for k in ("stress_mae", "stress_rmse", "n_stress")})
    return ev
