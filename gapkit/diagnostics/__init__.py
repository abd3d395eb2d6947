"""Diagnostics: learning and capacity curves, and the bias/variance diagnosis."""

from gapkit.diagnostics.curves import (ERROR_METRICS, METRIC_INFO, METRICS, OTHER_METRICS,
                                       STD_METRICS, CapacityCurve, Diagnosis, LearningCurve,
                                       add_learning_curve_parser, capacity_curve, diagnose,
                                       learning_curve, run_learning_curve_cli)

__all__ = ["ERROR_METRICS", "METRIC_INFO", "METRICS", "OTHER_METRICS", "STD_METRICS",
           "CapacityCurve", "Diagnosis", "LearningCurve", "add_learning_curve_parser",
           "capacity_curve", "diagnose", "learning_curve", "run_learning_curve_cli"]
