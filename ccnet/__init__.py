"""Criss-cross attention (CCNet) library."""

__version__ = "0.1.0"
