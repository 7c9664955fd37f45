"""``mitoscope data masks``: masks of mitotic figures from point annotations, drawn on an overlay sheet."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _folder_images(folder: Path) -> list[tuple[Path, str]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, p.parent.name) for p in files]


def _load_patches(source: Path, n: int, seed: int) -> list[tuple[Any, str, int, str]]:
    """Up to ``n`` random patches from a catalog source or a plain folder of images.

    Returns ``(rgb, cache key, page, title)`` tuples.
    """
    import numpy as np

    from mitoscope.utils.errors import InputError

    rng = np.random.default_rng(seed)
    from mitoscope.data.sources import load_catalog

    catalog = None
    try:
        catalog = load_catalog(source)
    except InputError:
        if not source.is_dir():
            raise
    if catalog is not None:
        from mitoscope.data.datasets import PatchDataset, identity_transform

        if len(catalog) == 0:
            raise InputError("the source holds no records", path=source)
        take = np.sort(rng.choice(len(catalog), size=min(n, len(catalog)), replace=False))
        sub = catalog.iloc[take]
        # the readers already resolve image paths (a catalog CSV's against its folder): no root here
        ds = PatchDataset(sub, transform=identity_transform, size=128, source=source)
        out = []
        for i, (_, rec) in enumerate(sub.iterrows()):
            image = str(rec["image"] or "")
            key = image or f"{rec['slide']}@{float(rec['x']):.1f},{float(rec['y']):.1f}"
            title = str(rec["label"])[:1].upper() if isinstance(rec["label"], str) else ""
            out.append((ds.load_rgb(i), key, int(rec["page"]), title))
        return out
    files = _folder_images(source)
    if not files:
        raise InputError("no images found in the folder", path=source)
    take = np.sort(rng.choice(len(files), size=min(n, len(files)), replace=False))
    from mitoscope.io.image_slide import read_image

    return [(read_image(files[i][0]), str(files[i][0]), -1, files[i][1][:1].upper()) for i in take]


def masks(
    source: Path = typer.Argument(
        ..., help="A folder of patch images, or a source the catalog loader reads."
    ),
    out: Path = opt.out_option("PNG overlay sheet to write."),
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
        fail(f"--method must be one of {', '.join(MASK_METHODS)}, got {method!r}", code=2)
    if not source.exists():
        fail(f"{source}: no such file or folder")
    try:
        records = _load_patches(source, n, seed)
        store = MaskCache(cache) if cache is not None else None
        images = [r[0] for r in records]
        titles = [r[3] for r in records]
        computed = []
        for img, key, page, _ in records:
            if store is None:
                computed.append(compute_mask(img, method))
            else:
                computed.append(
                    store.get_or_compute(key, partial(compute_mask, img, method), page=page, method=method)
                )
        path = mask_overlay_sheet(images, computed, out, ncols=ncols, titles=titles)
    except (InputError, MissingDependencyError, ValueError, OSError) as exc:
        fail(exc)
    areas = [int(m.sum()) for m in computed]
    typer.echo(
        f"wrote {path} ({len(images)} patches, method {method}, mask area median {sorted(areas)[len(areas) // 2]} px)"
    )
