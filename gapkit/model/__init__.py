"""The fitted model: the :class:`GAP` estimator, its fitted state and its model file.

* :mod:`gapkit.model.state`: :class:`FittedState` (what a fit produces and a file stores);
* :mod:`gapkit.model.training`: the fit pipeline;
* :mod:`gapkit.model.prediction`: energies, forces and stress from a state;
* :mod:`gapkit.model.variance`: predictive variance by origin, calibrated;
* :mod:`gapkit.model.calibration`: fitting the calibration on validation data;
* :mod:`gapkit.model.delta`: Delta-learning baseline labels;
* :mod:`gapkit.model.model_file`: the versioned, pickle-free file format;
* :mod:`gapkit.model.estimator`: :class:`GAP` (and :func:`save`);
* :mod:`gapkit.model.loading`: :func:`load`;
* :mod:`gapkit.model.sparse_counts`: the ``n_sparse="auto"`` rule;
* :mod:`gapkit.model.hyperparameters`: ``optimize=True`` (bounded evidence, checked
  on held-out data);
* :mod:`gapkit.model.tuning`: :func:`~gapkit.model.tuning.tune` (``gapkit tune``).
"""

from gapkit.model.estimator import GAP, save
from gapkit.model.loading import load
from gapkit.model.model_file import ModelFileError
from gapkit.model.prediction import Prediction, StructurePrediction
from gapkit.model.state import Calibration, FittedState, NoiseGroup, VarianceScale, noise_level
from gapkit.model.variance import PredictionStd

__all__ = ["GAP", "load", "save", "ModelFileError", "Prediction", "StructurePrediction", "PredictionStd",
           "Calibration", "FittedState", "NoiseGroup", "VarianceScale", "noise_level"]
