"""Atomic-environment descriptors: normalised feature vectors with sparse derivatives."""

from .base import DescriptorSet
from .soap import SOAP

__all__ = ["DescriptorSet", "SOAP"]
