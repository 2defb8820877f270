"""The package version, below everything else so any module can record it without a cycle."""

__version__ = "0.3.0"
