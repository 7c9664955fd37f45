"""``mitoscope synth``: synthetic multi-domain H&E patches, regions and a gallery."""

from __future__ import annotations

from pathlib import Path

import typer

from mitoscope.cli.errors import run_reported
from mitoscope.cli.progress import Bar

app = typer.Typer(
    help="Make synthetic H&E data: labelled patches, annotated regions, a gallery of all kinds.",
    no_args_is_help=True,
)


@app.command("patches")
def patches(
    out: Path = typer.Argument(..., help="Output folder (gets Atypical/, Normal/, labels.csv)."),
    n: int = typer.Option(1000, "--n", help="Number of patches."),
    domains: int = typer.Option(1, "--domains", help="Use the first K built-in domains."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
    size: int = typer.Option(128, "--size", help="Patch side in pixels."),
    atypical_fraction: float = typer.Option(0.25, "--atypical-fraction", help="Share of atypical figures."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT."),
    workers: int = typer.Option(1, "--workers", help="Render in this many processes (same output)."),
) -> None:
    """N patches centred on a mitotic figure, labelled by 3 simulated experts (AMi-Br layout)."""
    from mitoscope.data.synthetic import make_patch_set

    with Bar("patches") as bar:
        path = run_reported(
            lambda: make_patch_set(
                out,
                n=n,
                domains=domains,
                seed=seed,
                size=size,
                atypical_fraction=atypical_fraction,
                overwrite=overwrite,
                workers=workers,
                progress=bar,
            )
        )
    typer.echo(f"wrote {n} patches to {path}")


@app.command("regions")
def regions(
    out: Path = typer.Argument(..., help="Output folder (gets *.tiff, annotations.json, atypical.csv)."),
    n: int = typer.Option(10, "--n", help="Number of regions."),
    size: tuple[int, int] = typer.Option((2048, 2048), "--size", help="Region width and height (W H)."),
    domains: int = typer.Option(1, "--domains", help="Use the first K built-in domains."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
    atypical_fraction: float = typer.Option(0.3, "--atypical-fraction", help="Share of atypical mitoses."),
    extra_tissue: float = typer.Option(
        0.0,
        "--extra-tissue",
        help="Share (0-1) of each region given to unlabelled fat, vessels, necrosis, collagen, ink, blur.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT."),
    workers: int = typer.Option(1, "--workers", help="Render in this many processes (same output)."),
) -> None:
    """N regions as tiled pyramidal TIFFs (0.25 µm/px) with MIDOG++ JSON annotations."""
    from mitoscope.data.synthetic import make_region_set

    with Bar("regions") as bar:
        path = run_reported(
            lambda: make_region_set(
                out,
                n=n,
                size=size,
                domains=domains,
                seed=seed,
                atypical_fraction=atypical_fraction,
                extra_tissue=extra_tissue,
                overwrite=overwrite,
                workers=workers,
                progress=bar,
            )
        )
    typer.echo(f"wrote {n} regions to {path}")


@app.command("gallery")
def gallery(
    out: Path = typer.Argument(..., help="Output PNG."),
    domains: int = typer.Option(6, "--domains", help="Use the first K built-in domains (columns)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """A labelled contact sheet: rows = figure kinds, columns = domains."""
    from mitoscope.data.synthetic import make_gallery

    path = run_reported(lambda: make_gallery(out, domains=domains, seed=seed))
    typer.echo(f"wrote gallery to {path}")


@app.command("domains")
def domains_() -> None:
    """List the built-in domain styles (index, name, tumour, scanner)."""
    from mitoscope.data.synthetic import get_domain, list_domains

    for i, name in enumerate(list_domains()):
        s = get_domain(name)
        typer.echo(f"{i}\t{name}\t{s.tumor}\t{s.scanner}")
