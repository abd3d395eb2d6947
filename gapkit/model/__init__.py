"""The fitted model: the :class:`GAP` estimator and its model file."""

from gapkit.model.estimator import GAP, Prediction, PredictionStd
from gapkit.model.model_file import load, save

__all__ = ["GAP", "Prediction", "PredictionStd", "load", "save"]
