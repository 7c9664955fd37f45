"""Built-in architectures; importing this package registers them."""

from __future__ import annotations
