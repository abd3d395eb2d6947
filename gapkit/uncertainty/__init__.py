"""Uncertainty: flags on the predictive std and calibration statistics."""

from gapkit.uncertainty.calibration import (FlagThreshold, Flags, UncertaintyExceeded,
                                            calibration_metrics, fit_variance_scales,
                                            noise_level, observed_coverage)

__all__ = ["FlagThreshold", "Flags", "UncertaintyExceeded", "calibration_metrics",
           "fit_variance_scales", "noise_level", "observed_coverage"]
