"""``mitoscope models``: list the registered architectures."""

from __future__ import annotations

import typer


def models() -> None:
    """List the model architectures that can be built by name."""
    from mitoscope.models.registry import list_models

    for name in list_models():
        typer.echo(name)
