"""The package version (one place: profit/__init__.py and the CLI read it here)."""

__version__ = "0.1.0"
