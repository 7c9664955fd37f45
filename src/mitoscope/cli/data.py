"""``mitoscope data``: look at a slide or a dataset, cut patches around slide points, convert between formats.

(``mitoscope data masks`` is added to this group by ``cli/main.py``.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli.errors import fail, one_line

app = typer.Typer(help="Inspect slides and datasets; extract and convert datasets (formats auto-detected).",
                  no_args_is_help=True)  # fmt: skip

CONVERT_TARGETS = ("sliderunner", "geojson", "midogpp", "csv")
_SUFFIX_TARGET = {".sqlite": "sliderunner", ".db": "sliderunner", ".geojson": "geojson", ".json": "midogpp",
                  ".csv": "csv"}  # fmt: skip


def _library_errors() -> tuple[type[BaseException], ...]:
    from mitoscope.utils.errors import InputError
    from mitoscope.utils.optional import MissingDependencyError

    return (InputError, MissingDependencyError, ValueError, FileNotFoundError)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['path']}[/]  format [cyan]{summary['format']}[/]")
    head = Table(show_header=False, box=None)
    for key in ("rows", "images", "slides", "groups", "hard"):
        head.add_row(key if key != "hard" else "hard (experts disagree)", str(summary[key]))
    for name, n in summary.get("splits", {}).items():
        head.add_row(f"split {name}", str(n))
    console.print(head)
    labels = list(summary["labels"])
    table = Table(title="records per class and domain")
    table.add_column("domain")
    for lab in labels:
        table.add_column(lab, justify="right")
    table.add_column("total", justify="right")
    for dom, counts in summary["domains"].items():
        table.add_row(dom, *(str(counts.get(lab, 0)) for lab in labels), str(sum(counts.values())))
    table.add_row("[bold]all[/]", *(f"[bold]{summary['labels'][lab]}[/]" for lab in labels),
                  f"[bold]{summary['rows']}[/]")  # fmt: skip
    console.print(table)
    if summary["subclasses"]:
        sub = Table(title="subclasses")
        sub.add_column("subclass")
        sub.add_column("records", justify="right")
        for name, n in summary["subclasses"].items():
            sub.add_row(name, str(n))
        console.print(sub)
    experts = summary["experts"]
    if experts["items_with_votes"]:
        agree = Table(title=f"experts' agreement (Fleiss' κ = {_fmt(experts['fleiss_kappa'])})")
        for col in ("pair", "items", "agreement", "Cohen's κ"):
            agree.add_column(col, justify="left" if col == "pair" else "right")
        for row in experts["pairwise"]:
            agree.add_row(
                str(row["pair"]), str(row["items"]), _fmt(row["agreement"]), _fmt(row["cohen_kappa"])
            )
        console.print(agree)
    if summary["skipped"]:
        console.print(f"[yellow]skipped {len(summary['skipped'])} bad rows[/]")
        for item in summary["skipped"][:10]:
            console.print(f"  row {item['row']}: {item['problem']}", highlight=False)


_TILE_HELP = "defaults: `mitoscope detect` with the CPU detector"


def _tile_settings(tile_size: int, tile_mpp: float, overlap: int) -> Any:
    from mitoscope.inference.slide_info import TileSettings
    from mitoscope.utils.errors import InputError

    if not 0 <= overlap < tile_size:
        raise InputError(f"--overlap must be in [0, --tile-size), got {overlap} for {tile_size} px tiles")
    return TileSettings(size=tile_size, mpp=tile_mpp, overlap=overlap)


def _open(path: Path, mpp: float | None) -> Any:
    """Open a slide quietly: what open_slide would warn about (an assumed mpp) the summary says itself."""
    import warnings

    from mitoscope.io.slides import open_slide

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_slide(path, mpp=mpp)


def _print_slide(summary: dict[str, Any]) -> None:
    lines = [f"{summary['path']}  slide: {summary['format']}, read by {summary['backend']}"]
    w, h = summary["width"], summary["height"]
    mm_w, mm_h = summary["size_mm"]
    lines.append(f"  size            {w} × {h} px ({mm_w:.3g} × {mm_h:.3g} mm)")
    lines.append(f"  µm/px           {summary['mpp']:g} {summary['mpp_source']}")
    for lv in summary["levels"]:
        lines.append(
            f"  {'levels' if lv['level'] == 0 else '':<15} {lv['level']}: {lv['width']} × {lv['height']} px, "
            f"downsample {lv['downsample']:g} ({lv['mpp']:.3g} µm/px)"
        )
    t = summary["tissue"]
    lines.append(
        f"  tissue          {t['area_mm2']:.3g} mm² ({t['fraction']:.0%} of the slide; mask "
        f"{t['mask_width']} × {t['mask_height']} px at {t['mask_mpp']:.3g} µm/px)"
    )
    tiles = summary.get("tiles")
    if tiles:
        lines.append(
            f"  detector tiles  {tiles['on_tissue']} of {tiles['total']} would run ({tiles['fraction']:.0%}): "
            f"{tiles['size']} px at {tiles['mpp']:g} µm/px, overlap {tiles['overlap']} px, "
            f"≥ {tiles['min_tissue']:.0%} tissue per tile ({_TILE_HELP})"
        )
    typer.echo("\n".join(lines))


@app.command("info")
def info(
    sources: list[Path] = typer.Argument(
        ...,
        help="Slides (SVS, TIFF, OME-TIFF, OpenSlide formats, PNG/JPEG) "
        "or dataset files/folders (format auto-detected).",
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
    mpp: float | None = typer.Option(None, "--mpp", help="Microns per pixel of slides that do not store it."),
    tile_size: int = typer.Option(
        256, "--tile-size", min=16, help=f"Detector tile edge in px ({_TILE_HELP})."
    ),
    tile_mpp: float = typer.Option(0.5, "--tile-mpp", min=0.01, help="Detector tile resolution in µm/px."),
    overlap: int = typer.Option(64, "--overlap", min=0, help="Overlap between detector tiles in px."),
) -> None:
    """Summarise slides or datasets.

    A slide: size, µm/px and where it came from, pyramid levels, the reader, the tissue area the mask finds and
    how many of the detector's tiles would run (read from a low-resolution level only). A dataset: counts per
    class, domain and hardness, and the experts' agreement.
    """
    import warnings

    from mitoscope.data.sources import is_slide_source, load_catalog, summarize_catalog
    from mitoscope.inference.slide_info import slide_summary

    summaries: list[dict[str, Any]] = []
    failed = 0
    for source in sources:
        try:
            if format is None and is_slide_source(source):
                settings = _tile_settings(tile_size, tile_mpp, overlap)
                with _open(source, mpp) as slide:
                    summary = slide_summary(slide, tiles=settings)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    catalog = load_catalog(source, format=format, skip_bad=skip_bad, images_dir=images_dir)
                summary = summarize_catalog(catalog)
        except _library_errors() as exc:
            if len(sources) == 1:
                fail(exc)
            typer.secho(f"error: {one_line(exc)}", fg=typer.colors.RED, err=True)
            failed += 1
            continue
        summaries.append(summary)
        if not as_json:
            (_print_slide if summary.get("kind") == "slide" else _print_summary)(summary)
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
    mpp: float | None = typer.Option(
        None, "--mpp", help="Microns per pixel, for slides that do not store it."
    ),
    tile_size: int = typer.Option(
        256, "--tile-size", min=16, help=f"Detector tile edge in px ({_TILE_HELP})."
    ),
    tile_mpp: float = typer.Option(0.5, "--tile-mpp", min=0.01, help="Detector tile resolution in µm/px."),
    overlap: int = typer.Option(64, "--overlap", min=0, help="Overlap between detector tiles in px."),
) -> None:
    """Write a thumbnail of a slide, read from the lowest pyramid level that serves (never level 0 whole)."""
    from mitoscope.report.thumbnail import image_format, slide_thumbnail, write_image

    try:
        image_format(out)
        settings = _tile_settings(tile_size, tile_mpp, overlap) if tiles else None
        with _open(slide_path, mpp) as slide:
            image = slide_thumbnail(slide, max_size=size, outline=mask, tiles=settings)
        write_image(out, image)
    except _library_errors() as exc:
        fail(exc)
    drawn = [what for what, on in (("tissue outlined", mask), ("detector tiles drawn", tiles)) if on]
    typer.echo(f"wrote {out} ({image.shape[1]} × {image.shape[0]} px{''.join('; ' + d for d in drawn)})")


@app.command("extract-patches")
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
    except _library_errors() as exc:
        fail(exc)
    typer.echo(f"wrote {len(result)} patches to {out} (index: {out / 'patches.csv'})")
    skipped = result.attrs.get("skipped", [])
    if skipped:
        typer.echo(f"skipped {len(skipped)} records:", err=True)
        for item in skipped[:20]:
            typer.echo(f"  record {item['row']}: {item['problem']}", err=True)


@app.command("mosaics")
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
    except _library_errors() as exc:
        fail(exc)
    for split, folder in folders.items():
        n = len(list(folder.glob("*.tiff")))
        typer.echo(f"{split}: {n} mosaic(s) in {folder} (annotations.json, slides.txt)")


@app.command("convert")
def convert(
    source: Path = typer.Argument(..., help="Dataset file or folder (format auto-detected)."),
    out: Path = typer.Argument(..., help="Output file."),
    to: str | None = typer.Option(
        None, "--to", help=f"One of {', '.join(CONVERT_TARGETS)} (default: from OUT's suffix)."
    ),
    format: str | None = typer.Option(None, "--format", help="Input format, to skip auto-detection."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows instead of failing."),
) -> None:
    """Convert annotations between formats (e.g. MIDOG++ JSON → SlideRunner SQLite or QuPath GeoJSON)."""
    import warnings

    from mitoscope.data.sources import load_catalog
    from mitoscope.utils.errors import InputError

    target = to or _SUFFIX_TARGET.get(out.suffix.lower())
    try:
        if target not in CONVERT_TARGETS:
            raise InputError(f"choose the output format with --to ({', '.join(CONVERT_TARGETS)})", path=out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            catalog = load_catalog(source, format=format, skip_bad=skip_bad, check_files=False)
        _write(catalog, out, target)
    except _library_errors() as exc:
        fail(exc)
    typer.echo(f"wrote {len(catalog)} records as {target} to {out}")


def _write(catalog: Any, out: Path, target: str) -> None:
    from mitoscope.utils.errors import InputError

    if target == "csv":
        from mitoscope.io.catalog_csv import write_catalog_csv

        write_catalog_csv(out, catalog)
        return
    points = catalog[(catalog["slide"].astype(str) != "") & catalog["x"].notna() & catalog["y"].notna()]
    if len(points) != len(catalog):
        raise InputError(
            f"{len(catalog) - len(points)} records are not points on a slide; only 'csv' can hold them"
        )
    if target == "sliderunner":
        from mitoscope.io.sliderunner import catalog_to_detections, write_sliderunner

        dims = {
            k: (v["width"], v["height"]) for k, v in catalog.attrs.get("images", {}).items() if v.get("width")
        }
        write_sliderunner(out, catalog_to_detections(catalog), slide_dims=dims)
    elif target == "geojson":
        from mitoscope.io.geojson import write_geojson

        cols = [c for c in ("x", "y", "score", "label", "p_atypical", "slide") if c in catalog]
        write_geojson(out, catalog[cols])
    else:
        from mitoscope.io.midogpp import catalog_to_midogpp, write_midogpp_json

        images, annotations = catalog_to_midogpp(catalog)
        write_midogpp_json(out, images, annotations)
