"""``mitoscope report``: the HTML report of an ``analyze`` output directory."""

from __future__ import annotations

from pathlib import Path

import typer

from mitoscope.cli.errors import fail


def report(
    directory: Path = typer.Argument(..., help="Output directory of `mitoscope analyze`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report folder (default DIR/report)."),
    slide: list[str] | None = typer.Option(None, "--slide", help="Only this slide (repeatable)."),
) -> None:
    """Write a self-contained HTML page per slide and one for the cohort (DIR/report/index.html)."""
    from mitoscope.report.html import write_report

    try:
        index = write_report(directory, slides=slide or None, report_dir=str(out) if out else None)
    except (ValueError, OSError) as exc:
        fail(exc, code=2)
    typer.echo(str(index))
