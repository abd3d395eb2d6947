"""gapkit: Gaussian Approximation Potentials on SOAP (and ACSF, 2-body) descriptors.

Where things live:

* descriptors: :mod:`gapkit.descriptors` (:class:`SOAP`, :class:`ACSF`, :class:`TwoBody`)
* kernel: :mod:`gapkit.kernels`; additive kernels over several descriptors ("2b+SOAP"): :mod:`gapkit.terms`
* sparse points: :mod:`gapkit.sparsify`
* GP solver (streaming QR, evidence, variance): :mod:`gapkit.gp`
* estimator: :mod:`gapkit.model` (:class:`GAP`)
* model files: :mod:`gapkit.io` (:func:`save`, :func:`load`)
* ASE calculator: :mod:`gapkit.calculator` (:class:`GAPCalculator`)
* uncertainty flags and calibration: :mod:`gapkit.uncertainty`
* learning curves and bias/variance diagnosis: :mod:`gapkit.diagnostics`
* plots (matplotlib): :mod:`gapkit.plotting`
* baselines for Delta-learning (Coulomb/Ewald): :mod:`gapkit.baselines`
* active learning (sample, flag, label, refit): :mod:`gapkit.active`
* streaming, multi-process and Dask fits: :mod:`gapkit.streaming`
* data and labels: :mod:`gapkit.data`; error metrics: :mod:`gapkit.metrics`
"""

from gapkit._version import __version__

from gapkit.calculator import GAPCalculator
from gapkit.data import LabelKeys, read_frames
from gapkit.descriptors import ACSF, SOAP, TwoBody
from gapkit.gp.terms import Term
from gapkit.model import GAP, Prediction, PredictionStd, load, save
from gapkit.uncertainty import FlagThreshold, UncertaintyExceeded

__all__ = ["GAP", "SOAP", "ACSF", "TwoBody", "Term", "GAPCalculator", "FlagThreshold", "UncertaintyExceeded",
           "LabelKeys", "Prediction", "PredictionStd", "load", "save", "read_frames",
           "__version__"]
