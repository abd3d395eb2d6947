"""The ``gapkit`` command line."""

from gapkit.cli.app import main

__all__ = ["main"]
