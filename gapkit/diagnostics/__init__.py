"""Diagnostics: model evaluation, learning and capacity curves, and the bias/variance diagnosis.

Modules: :mod:`~gapkit.diagnostics.metric_names` (names and units of the recorded
quantities), :mod:`~gapkit.diagnostics.evaluation` (errors, mean stds and calibration
of one prediction), :mod:`~gapkit.diagnostics.results` (:class:`LearningCurve`,
:class:`CapacityCurve`), :mod:`~gapkit.diagnostics.curves` (:func:`learning_curve`,
:func:`capacity_curve`, :func:`label_curves` with the label sets of
:mod:`~gapkit.diagnostics.label_sets`), :mod:`~gapkit.diagnostics.diagnosis` (:func:`diagnose`),
:mod:`~gapkit.diagnostics.extrapolation` (:func:`extrapolate`: ``a N**-b + c`` with a
bootstrap interval, the floor and the frames for a target) and
:mod:`~gapkit.diagnostics.check_data` (:func:`check_data`: wrong labels, with the
model-free checks of :mod:`~gapkit.diagnostics.data_checks`).
The command ``gapkit learning-curve`` lives in :mod:`gapkit.cli.learning_curve`.
"""

from gapkit.diagnostics.check_data import check_data
from gapkit.diagnostics.curves import capacity_curve, label_curves, learning_curve
from gapkit.diagnostics.diagnosis import Diagnosis, diagnose
from gapkit.diagnostics.extrapolation import Extrapolation, PowerLaw, extrapolate, fit_power_law
from gapkit.diagnostics.metric_names import (ERROR_METRICS, METRIC_INFO, METRICS, OTHER_METRICS,
                                             STD_METRICS)
from gapkit.diagnostics.results import CapacityCurve, LearningCurve

__all__ = ["ERROR_METRICS", "METRIC_INFO", "METRICS", "OTHER_METRICS", "STD_METRICS",
           "CapacityCurve", "Diagnosis", "Extrapolation", "LearningCurve", "PowerLaw", "capacity_curve",
           "check_data", "diagnose", "extrapolate", "fit_power_law", "label_curves", "learning_curve"]
