"""Atomic-environment descriptors with sparse derivatives.

:class:`SOAP` (normalised power spectra), :class:`ACSF` (Behler-Parrinello symmetry
functions, normalised by default) and :class:`TwoBody` (radial Gaussians, a pure
2-body descriptor, unnormalised by default); all return a :class:`DescriptorSet`.
"""

from .acsf import ACSF, TwoBody
from .base import DescriptorSet
from .soap import SOAP

__all__ = ["ACSF", "DescriptorSet", "SOAP", "TwoBody"]
