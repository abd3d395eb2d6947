"""Uncertainty: flags on the predictive std and calibration statistics.

* :mod:`gapkit.uncertainty.flags`: :class:`FlagThreshold`, :class:`UncertaintyExceeded`;
* :mod:`gapkit.uncertainty.calibration`: calibration statistics of errors against stds.
"""

from gapkit.model.state import noise_level
from gapkit.uncertainty.calibration import calibration_metrics, observed_coverage
from gapkit.uncertainty.flags import FlagThreshold, Flags, UncertaintyExceeded

__all__ = ["FlagThreshold", "Flags", "UncertaintyExceeded", "calibration_metrics",
           "noise_level", "observed_coverage"]
