"""Placeholder: this command is not built yet."""

from __future__ import annotations

import typer


def train_classifier() -> None:
    """Not built yet."""
    typer.echo("not built yet", err=True)
    raise typer.Exit(2)
