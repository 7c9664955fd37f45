"""``mitoscope data masks``: masks of mitotic figures from point annotations, drawn on an overlay sheet."""

from __future__ import annotations

from pathlib import Path

import typer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _folder_images(folder: Path) -> list[tuple[Path, str]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, p.parent.name) for p in files]


def _load_patches(source: Path, n: int, seed: int) -> tuple[list, list[str]]:
    """Up to ``n`` patches (RGB uint8) and short titles from a folder of images or a catalog source."""
    import numpy as np

    from mitoscope.utils.errors import InputError

    rng = np.random.default_rng(seed)
    try:
        from mitoscope.data.sources import load_catalog  # type: ignore[import-not-found]
    except ImportError:
        load_catalog = None
    if load_catalog is not None and (source.is_file() or not _folder_images(source)):
        from mitoscope.data.datasets import PatchDataset

        catalog = load_catalog(source)
        if len(catalog) == 0:
            raise InputError("the source holds no records", path=source)
        take = np.sort(rng.choice(len(catalog), size=min(n, len(catalog)), replace=False))
        sub = catalog.iloc[take]
        root = source if source.is_dir() else source.parent
        ds = PatchDataset(
            sub, transform=lambda rgb, mask, rng: (rgb, None), size=128, root=root, source=source
        )
        images = [ds.load_rgb(i) for i in range(len(sub))]
        titles = [str(lab)[:1].upper() if isinstance(lab, str) and lab else "" for lab in sub["label"]]
        return images, titles
    if not source.is_dir():
        raise InputError("not a folder of images (catalog sources need mitoscope.data.sources)", path=source)
    files = _folder_images(source)
    if not files:
        raise InputError("no images found in the folder", path=source)
    take = np.sort(rng.choice(len(files), size=min(n, len(files)), replace=False))
    from mitoscope.io.image_slide import read_image

    images = [read_image(files[i][0]) for i in take]
    titles = [files[i][1][:1].upper() for i in take]
    return images, titles


def masks(
    source: Path = typer.Argument(
        ..., help="A folder of patch images, or a source the catalog loader reads."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="PNG overlay sheet to write."),
    n: int = typer.Option(64, "--n", min=1, help="How many patches to draw (a random sample)."),
    method: str = typer.Option("hematoxylin", "--method", help="hematoxylin | nuclick | disk"),
    ncols: int = typer.Option(8, "--ncols", min=1, help="Columns of the sheet."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random sample."),
    cache: Path | None = typer.Option(None, "--cache", help="Directory caching the masks between runs."),
) -> None:
    """Compute masks of the figure at each patch centre and write an overlay sheet to look at them."""
    from mitoscope.data.masks import MASK_METHODS, MaskCache, compute_mask, mask_overlay_sheet
    from mitoscope.utils.errors import InputError
    from mitoscope.utils.optional import MissingDependencyError

    if method not in MASK_METHODS:
        typer.echo(f"error: --method must be one of {', '.join(MASK_METHODS)}, got {method!r}", err=True)
        raise typer.Exit(2)
    if not source.exists():
        typer.echo(f"error: {source}: no such file or folder", err=True)
        raise typer.Exit(1)
    try:
        images, titles = _load_patches(source, n, seed)
        store = MaskCache(cache) if cache is not None else None
        computed = []
        for i, img in enumerate(images):
            if store is None:
                computed.append(compute_mask(img, method))
            else:
                key = f"{source.resolve()}#{seed}#{i}#{img.shape}#{int(img.sum())}"
                computed.append(
                    store.get_or_compute(key, lambda img=img: compute_mask(img, method), method=method)
                )
        path = mask_overlay_sheet(images, computed, out, ncols=ncols, titles=titles)
    except (InputError, MissingDependencyError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    areas = [int(m.sum()) for m in computed]
    typer.echo(
        f"wrote {path} ({len(images)} patches, method {method}, mask area median {sorted(areas)[len(areas) // 2]} px)"
    )
