"""``mitoscope data``: look at a slide or a dataset (``info``, ``thumbnail``).

(``extract-patches``, ``mosaics``, ``convert`` (``cli/data_convert.py``) and ``masks`` (``cli/masks.py``) are added
to this group by ``cli/main.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail, input_errors, one_line, quietly

app = typer.Typer(help="Inspect slides and datasets; extract and convert datasets (formats auto-detected).",
                  no_args_is_help=True)  # fmt: skip


@app.command("info")
def info(
    sources: list[Path] = typer.Argument(
        ...,
        help="Slides (SVS, TIFF, OME-TIFF, OpenSlide formats, PNG/JPEG) or dataset files/folders (format "
        "auto-detected).",
    ),
    format: str | None = typer.Option(
        None, "--format", help="Read as this dataset format (e.g. midog25, amibr)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip bad rows (and list them) instead of failing."
    ),
    images_dir: Path | None = typer.Option(
        None, "--images", help="Folder of the patch images, if elsewhere."
    ),
    mpp: float | None = opt.mpp_option(),
    tile_size: int = opt.tile_size_option(),
    tile_mpp: float = opt.tile_mpp_option(),
    overlap: int = opt.overlap_option(),
) -> None:
    """Summarise slides or datasets.

    A slide: size, µm/px and where it came from, pyramid levels, the reader, the tissue area the mask finds and
    how many of the detector's tiles would run (read from a low-resolution level only). A dataset: counts per
    class, domain and hardness, and the experts' agreement.
    """
    from mitoscope.cli.tables import print_dataset_summary, slide_summary_text
    from mitoscope.data.sources import is_slide_source, load_catalog, summarize_catalog
    from mitoscope.inference.slide_info import slide_summary
    from mitoscope.io.slides import open_slide

    summaries: list[dict[str, Any]] = []
    failed = 0
    for source in sources:
        try:
            if format is None and is_slide_source(source):
                with quietly(open_slide, source, mpp=mpp) as slide:
                    summary = slide_summary(slide, tiles=opt.tile_settings(tile_size, tile_mpp, overlap))
            else:
                catalog = quietly(
                    load_catalog, source, format=format, skip_bad=skip_bad, images_dir=images_dir
                )
                summary = summarize_catalog(catalog)
        except input_errors() as exc:
            if len(sources) == 1:
                fail(exc)
            typer.secho(f"error: {one_line(exc)}", fg=typer.colors.RED, err=True)
            failed += 1
            continue
        summaries.append(summary)
        if not as_json and summary.get("kind") == "slide":
            typer.echo(slide_summary_text(summary, opt.TILES_NOTE))
        elif not as_json:
            print_dataset_summary(summary)
    if as_json and summaries:
        typer.echo(json.dumps(summaries[0] if len(sources) == 1 else summaries, indent=2, default=str))
    if failed:
        raise typer.Exit(1)


@app.command("thumbnail")
def thumbnail(
    slide_path: Path = typer.Argument(..., metavar="SLIDE", help="The slide (any format `data info` reads)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output image (.png, .jpg, .webp, .tif)."),
    mask: bool = typer.Option(False, "--mask", help="Outline the tissue mask (what detect/analyze analyse)."),
    tiles: bool = typer.Option(False, "--tiles", help="Draw the detector's tiles where it would run."),
    size: int = typer.Option(1024, "--size", min=16, help="Longer side of the image in px."),
    mpp: float | None = opt.mpp_option(),
    tile_size: int = opt.tile_size_option(),
    tile_mpp: float = opt.tile_mpp_option(),
    overlap: int = opt.overlap_option(),
) -> None:
    """Write a thumbnail of a slide, read from the lowest pyramid level that serves (never level 0 whole)."""
    from mitoscope.io.slides import open_slide
    from mitoscope.report.thumbnail import image_format, slide_thumbnail, write_image

    try:
        image_format(out)
        settings = opt.tile_settings(tile_size, tile_mpp, overlap) if tiles else None
        with quietly(open_slide, slide_path, mpp=mpp) as slide:
            image = slide_thumbnail(slide, max_size=size, outline=mask, tiles=settings)
        write_image(out, image)
    except input_errors() as exc:
        fail(exc)
    drawn = [what for what, on in (("tissue outlined", mask), ("detector tiles drawn", tiles)) if on]
    typer.echo(f"wrote {out} ({image.shape[1]} × {image.shape[0]} px{''.join('; ' + d for d in drawn)})")
