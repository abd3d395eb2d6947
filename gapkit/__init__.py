"""gapkit: Gaussian Approximation Potentials on SOAP (and ACSF, 2-body) descriptors.

Where things live (data flows down this list; see ARCHITECTURE.md):

* helpers: :mod:`gapkit.utils`; data, labels, E0, geometry checks: :mod:`gapkit.data`;
  error metrics: :mod:`gapkit.metrics`
* descriptors: :mod:`gapkit.descriptors` (:class:`SOAP`, :class:`ACSF`, :class:`TwoBody`
  on the abstract :class:`~gapkit.descriptors.base.Descriptor`)
* the GP layer: :mod:`gapkit.gp` (kernels, additive terms :class:`Term`, sparse points,
  the streamed QR solver)
* the model: :mod:`gapkit.model` (:class:`GAP`, its :class:`~gapkit.model.state.FittedState`,
  calibration of the std, model files, :func:`load`, :func:`save`)
* uses: :mod:`gapkit.calculator` (:class:`GAPCalculator`), :mod:`gapkit.uncertainty`
  (flags, calibration metrics with references), :mod:`gapkit.diagnostics` (evaluation,
  learning curves, bias/variance diagnosis), :mod:`gapkit.plotting`,
  :mod:`gapkit.physics` (Delta-learning baselines, active learning)
* the command line: :mod:`gapkit.cli` (``gapkit fit | evaluate | predict | recalibrate |
  learning-curve``)
"""

from gapkit._version import __version__

from gapkit.calculator import GAPCalculator
from gapkit.data import LabelKeys, read_frames
from gapkit.descriptors import ACSF, SOAP, TwoBody
from gapkit.gp.terms import Term
from gapkit.model import GAP, ModelFileError, Prediction, PredictionStd, load, save
from gapkit.uncertainty import FlagThreshold, UncertaintyExceeded

__all__ = ["GAP", "SOAP", "ACSF", "TwoBody", "Term", "GAPCalculator", "FlagThreshold", "UncertaintyExceeded",
           "LabelKeys", "ModelFileError", "Prediction", "PredictionStd", "load", "save", "read_frames",
           "__version__"]
