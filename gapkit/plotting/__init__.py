"""Matplotlib figures for fitted models, learning curves and uncertainties.

Every function draws into ``ax`` (a new figure when ``ax`` is None), returns the
axes and never calls ``plt.show()``. Units: energies eV (or eV/atom), forces eV/Å,
time fs. Matplotlib is imported lazily, so ``import gapkit`` does not need it.

Functions
---------
``parity``
    predicted against reference energies or forces, optional σ bars
``learning_curve``
    train/test error against training-set size (log–log) with the noise floor and,
    optionally, the extrapolation a N^-b + c with its band
``label_curves``
    test error of energy-, forces- and energy+forces-trained models against
    configurations or labels (label_curves_figure: the two-column comparison)
``extrapolation``
    a fitted learning-curve law with its bootstrap band, floor and target
``capacity_curve``
    train/test error against a model parameter
``calibration``
    observed against expected coverage of the predicted intervals
``reliability``
    binned RMSE against RMS σ (log–log) with the band of a calibrated σ
``error_vs_sigma``
    ``|error|`` against predicted σ (log–log), with binned RMSE
``sigma_trajectory``
    σ along an MD run, with the flag threshold

Modules: :mod:`~gapkit.plotting.predictions` (parity), :mod:`~gapkit.plotting.curves`
(learning and capacity curves), :mod:`~gapkit.plotting.learning` (label sets,
extrapolation), :mod:`~gapkit.plotting.uncertainty` (calibration, reliability, error
against σ, σ along a trajectory) and :mod:`~gapkit.plotting.style` (colours and axes
helpers).
"""

from gapkit.plotting.curves import capacity_curve, learning_curve
from gapkit.plotting.learning import extrapolation, label_curves, label_curves_figure
from gapkit.plotting.predictions import parity
from gapkit.plotting.style import COLORS
from gapkit.plotting.uncertainty import calibration, error_vs_sigma, reliability, sigma_trajectory

__all__ = ["COLORS", "calibration", "capacity_curve", "error_vs_sigma", "extrapolation",
    "label_curves", "label_curves_figure", "learning_curve", "parity",
    "reliability",
           "sigma_trajectory"]
