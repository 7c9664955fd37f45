"""``mitoscope data extract-patches | mosaics | convert``: build datasets from slides, patches and annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from mitoscope.cli.errors import fail, input_errors, quietly


def extract_patches_command(
    csv: Path = typer.Argument(
        ..., help="Records with slide points (MIDOG25 CSV, catalog CSV, MIDOG++ JSON, …)."
    ),
    slides: Path = typer.Option(..., "--slides", help="Folder holding the slide files."),
    out: Path = typer.Option(..., "--out", help="New output folder (class folders of PNGs + patches.csv)."),
    size: int = typer.Option(128, "--size", help="Patch edge in pixels."),
    mpp: float | None = typer.Option(None, "--mpp", help="Output resolution (default: each slide's own)."),
    slide_mpp: float | None = typer.Option(None, "--slide-mpp", help="Resolution of slides without one."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip records that cannot be cut, and list them."
    ),
) -> None:
    """Cut patches centred on slide points; padding past the slide border is black."""
    import warnings

    from mitoscope.data.patch_extraction import extract_patches
    from mitoscope.data.sources import load_catalog

    try:
        catalog = load_catalog(csv, skip_bad=skip_bad, check_files=False)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            result = extract_patches(catalog, slides_dir=slides, out_dir=out, size=size, mpp=mpp,
                                     slide_mpp=slide_mpp, skip_bad=skip_bad)  # fmt: skip
    except input_errors() as exc:
        fail(exc)
    typer.echo(f"wrote {len(result)} patches to {out} (index: {out / 'patches.csv'})")
    skipped = result.attrs.get("skipped", [])
    if skipped:
        typer.echo(f"skipped {len(skipped)} records:", err=True)
        for item in skipped[:20]:
            typer.echo(f"  record {item['row']}: {item['problem']}", err=True)


def mosaics_command(
    source: Path = typer.Argument(
        ...,
        help="Patches centred on mitotic figures: AMi-Br CSV, AtNorM-MD folder, class folders, catalog CSV.",
    ),
    out: Path = typer.Argument(
        ..., help="Output folder: one sub-folder of mosaic TIFFs + MIDOG++ JSON per split."
    ),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", min=0.0, max=0.9, help="Share of slides that validate."
    ),
    test_fraction: float = typer.Option(
        0.0, "--test-fraction", min=0.0, max=0.9, help="Share of slides held out."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the slide split and of the arrangement."),
) -> None:
    """Arrange figure patches into annotated mosaics (the detection data `train detector` builds from patches), with a
    slide-disjoint split, to look at or to train on."""
    from mitoscope.data.mosaic import patch_mosaics
    from mitoscope.data.sources import load_catalog

    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    try:
        folders = patch_mosaics(
            load_catalog(source), out, fractions={k: v for k, v in fractions.items() if v > 0}, seed=seed,
            source=source,
        )  # fmt: skip
    except input_errors() as exc:
        fail(exc)
    for split, folder in folders.items():
        n = len(list(folder.glob("*.tiff")))
        typer.echo(f"{split}: {n} mosaic(s) in {folder} (annotations.json, slides.txt)")


def convert(
    source: Path = typer.Argument(..., help="Dataset file or folder (format auto-detected)."),
    out: Path = typer.Argument(..., help="Output file."),
    to: str | None = typer.Option(
        None, "--to", help="One of sliderunner, geojson, midogpp, csv (default: from OUT's suffix)."
    ),
    format: str | None = typer.Option(None, "--format", help="Input format, to skip auto-detection."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows instead of failing."),
) -> None:
    """Convert annotations between formats (e.g. MIDOG++ JSON → SlideRunner SQLite or QuPath GeoJSON)."""
    from mitoscope.data.convert import convert_target, write_annotations
    from mitoscope.data.sources import load_catalog

    try:
        target = convert_target(out, to)
        catalog = quietly(load_catalog, source, format=format, skip_bad=skip_bad, check_files=False)
        write_annotations(catalog, out, target)
    except input_errors() as exc:
        fail(exc)
    typer.echo(f"wrote {len(catalog)} records as {target} to {out}")
