"""Uncertainty: flags on the predictive std and calibration statistics.

* :mod:`gapkit.uncertainty.flags`: :class:`FlagThreshold`, :class:`UncertaintyExceeded`;
* :mod:`gapkit.uncertainty.calibration`: calibration statistics of errors against stds;
* :mod:`gapkit.uncertainty.metrics`: ZMS, ENCE, Spearman, AUROC, coverage and NLL, per
  value and per atom, and their :func:`reference` under a perfectly calibrated σ.
"""

from gapkit.model.state import noise_level
from gapkit.uncertainty.calibration import calibration_metrics, observed_coverage
from gapkit.uncertainty.flags import FlagThreshold, Flags, UncertaintyExceeded
from gapkit.uncertainty.metrics import (auroc_worst, coverage, ence, forces_ence, forces_spearman,
                                        gaussian_nll, reference, spearman, zms, zms_by_species)

__all__ = ["FlagThreshold", "Flags", "UncertaintyExceeded", "auroc_worst", "calibration_metrics",
           "coverage", "ence", "forces_ence", "forces_spearman", "gaussian_nll", "noise_level",
           "observed_coverage", "reference", "spearman", "zms", "zms_by_species"]
