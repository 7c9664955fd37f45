"""mitoscope: find mitotic figures in H&E histopathology and tell normal from atypical ones."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
