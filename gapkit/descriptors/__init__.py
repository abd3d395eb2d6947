"""Atomic-environment descriptors with sparse derivatives.

:class:`SOAP` (normalised power spectra), :class:`ACSF` (Behler-Parrinello symmetry
functions, normalised by default) and :class:`TwoBody` (radial Gaussians, a pure
2-body descriptor, unnormalised by default) subclass :class:`Descriptor`, whose
module (:mod:`gapkit.descriptors.base`) states the contract; all return a
:class:`DescriptorSet`.
"""

from .acsf import ACSF
from .base import Descriptor, DescriptorSet  # noqa: F401 (Descriptor: see below)
from .soap import SOAP
from .twobody import TwoBody

# ``Descriptor`` (abstract) is importable from here but left out of ``__all__``:
# gapkit.model.model_file treats every name in ``__all__`` but "DescriptorSet" as a
# loadable descriptor class.
__all__ = ["ACSF", "DescriptorSet", "SOAP", "TwoBody"]
