"""The gapkit version (one place; read by setup.cfg and the model files)."""

__version__ = "0.2.0"
