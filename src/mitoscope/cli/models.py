"""``mitoscope models``: the trained models shipped with mitoscope, and the architectures that can be built."""

from __future__ import annotations

import typer

from mitoscope.cli.errors import fail


def models(
    name: str | None = typer.Argument(None, help="A bundled model's name: print its model card."),
) -> None:
    """List the bundled models (name, task, input, size, training data, headline figures) and the architectures;
    with NAME, print that model's card."""
    from mitoscope.models.pretrained import bundle_card, bundle_info, bundled_names
    from mitoscope.models.registry import list_models
    from mitoscope.utils.errors import InputError

    if name is not None:
        try:
            bundle_info(name)
        except InputError as exc:
            fail(exc)
        typer.echo(bundle_card(name), nl=False)
        return
    typer.echo("Bundled models (`--model`, `--detector`, `--classifier` take these names):")
    for bundled in bundled_names():
        info = bundle_info(bundled)
        contract = info["contract"]
        summary = info.get("summary", {})
        size_mb = info.get("bytes", 0) / 1e6
        typer.echo(
            f"  {bundled:<22}{info['task']:<16}{contract['input_size']} px at {contract['mpp']:g} µm/px, "
            f"{size_mb:.1f} MB ({info.get('dtype', '?')})"
        )
        for line in (summary.get("data"), summary.get("figures")):
            if line:
                typer.echo(f"  {'':<22}{line}")
    typer.echo("\nArchitectures (`mitoscope train ... --config`):")
    for arch in list_models():
        typer.echo(f"  {arch}")
