"""Write tiled, pyramidal TIFFs that :func:`mitoscope.io.slides.open_slide` (and common readers) open.

The resolution is stored twice so every reader finds it: as TIFF resolution tags (centimetre unit,
``X/YResolution = 10000 / mpp`` pixels per cm) and Aperio-style in the ImageDescription (``|MPP = 0.25``).
Reduced levels follow as further pages marked "reduced resolution" (NewSubfileType 1, 2× downsampling each), the
layout OpenSlide's generic-TIFF reader, QuPath and tifffile all understand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mitoscope.io.slide_base import Slide, as_rgb_uint8
from mitoscope.utils.atomic import atomic_path

_COMPRESSIONS = {"jpeg", "deflate", "zlib", "lzw", "none", "jpeg2000", "webp", "zstd"}


def mpp_description(mpp: float, *, name: str = "mitoscope tiled TIFF") -> str:
    """The Aperio-like ImageDescription carrying the resolution.

    Examples:
        >>> mpp_description(0.25)
        'mitoscope tiled TIFF|MPP = 0.25'
    """
    return f"{name}|MPP = {float(mpp):g}"


def _downsample2(image: np.ndarray) -> np.ndarray:
    """Halve an (H, W, 3) uint8 image by 2×2 block averaging (odd edges are dropped)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return image[: max(1, image.shape[0] // 2), : max(1, image.shape[1] // 2)]
    blocks = image[:h, :w].reshape(h // 2, 2, w // 2, 2, image.shape[2]).astype(np.uint16)
    return (blocks.sum(axis=(1, 3)) + 2) // 4


def pyramid_levels(rgb: np.ndarray, *, tile: int = 256) -> list[np.ndarray]:
    """Level 0 and its successive 2× reductions until the longer side fits one tile.

    Examples:
        >>> [lv.shape for lv in pyramid_levels(np.zeros((1000, 600, 3), np.uint8), tile=256)]
        [(1000, 600, 3), (500, 300, 3), (250, 150, 3)]
    """
    levels = [rgb]
    while max(levels[-1].shape[:2]) > tile and min(levels[-1].shape[:2]) >= 2:
        levels.append(_downsample2(levels[-1]).astype(np.uint8))
    return levels


def write_tiled_tiff(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    mpp: float,
    tile: int = 256,
    pyramid: bool = True,
    compression: str = "jpeg",
    quality: int = 90,
) -> Path:
    """Write ``rgb`` as a tiled (optionally pyramidal) TIFF with its mpp, atomically.

    Args:
        path: output file (``.tif``/``.tiff``).
        rgb: image (H, W, 3) uint8; grey, RGBA and 16-bit images are converted to RGB uint8.
        mpp: microns per pixel of ``rgb``.
        tile: tile edge in pixels (multiple of 16).
        pyramid: also store 2× reduced levels (as reduced-resolution pages after the first).
        compression: ``jpeg`` (default), ``deflate``, ``lzw``, ``zstd``, ``webp``, ``jpeg2000`` or ``none``.
        quality: JPEG quality.

    Returns:
        The written path.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "region.tiff"
        >>> _ = write_tiled_tiff(p, np.full((600, 500, 3), 200, np.uint8), mpp=0.25)
        >>> from mitoscope.io.slides import open_slide
        >>> s = open_slide(p)
        >>> s.dimensions, s.mpp
        ((500, 600), 0.25)
    """
    import tifffile

    if not mpp or mpp <= 0:
        raise ValueError(f"{path}: mpp must be positive, got {mpp!r}")
    if tile % 16:
        raise ValueError(f"{path}: tile must be a multiple of 16, got {tile}")
    comp = compression.lower()
    if comp not in _COMPRESSIONS:
        raise ValueError(f"{path}: unknown compression {compression!r}; use one of {sorted(_COMPRESSIONS)}")
    image = as_rgb_uint8(rgb, source=path)
    levels = pyramid_levels(image, tile=tile) if pyramid else [image]
    kwargs: dict = {"photometric": "rgb", "tile": (tile, tile), "metadata": None}
    if comp != "none":
        kwargs["compression"] = comp
        if comp == "jpeg":
            kwargs["compressionargs"] = {"level": int(quality)}
    res = 1e4 / float(mpp)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=image.nbytes > 2**31) as tif:
        tif.write(
            levels[0],
            resolution=(res, res),
            resolutionunit="CENTIMETER",
            description=mpp_description(mpp),
            **kwargs,
        )
        for i, level in enumerate(levels[1:], start=1):
            r = res / 2**i
            tif.write(level, subfiletype=1, resolution=(r, r), resolutionunit="CENTIMETER", **kwargs)
    return Path(path)


def write_slide_tiff(
    path: str | os.PathLike[str],
    slide: Slide,
    *,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    pad_value: int = 255,
) -> Path:
    """Write any :class:`~mitoscope.io.slide_base.Slide` as a tiled pyramidal TIFF, tile by tile, atomically.

    Unlike :func:`write_tiled_tiff` the image is never held whole: each tile of each level is read from ``slide``
    (``read_rect`` at the level's resolution) as it is written, so memory stays bounded whatever the slide's
    size. The levels are those of :func:`pyramid_levels` (2× reductions until the longer side fits one tile).

    Args:
        path: output file (``.tif``/``.tiff``).
        slide: the source; its mpp is written with the image.
        tile: tile edge in pixels (multiple of 16).
        compression: as for :func:`write_tiled_tiff`.
        quality: JPEG quality.
        pad_value: fill of the edge tiles past the image.

    Returns:
        The written path.

    Examples:
        >>> import tempfile, pathlib
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> from mitoscope.io.slides import open_slide
        >>> src = ArraySlide(np.full((600, 500, 3), 200, np.uint8), mpp=0.25)
        >>> p = write_slide_tiff(pathlib.Path(tempfile.mkdtemp()) / "s.tiff", src, compression="deflate")
        >>> s = open_slide(p)
        >>> s.dimensions, s.mpp, s.level_dimensions[-1]
        ((500, 600), 0.25, (125, 150))
    """
    import tifffile

    if tile % 16:
        raise ValueError(f"{path}: tile must be a multiple of 16, got {tile}")
    comp = compression.lower()
    if comp not in _COMPRESSIONS:
        raise ValueError(f"{path}: unknown compression {compression!r}; use one of {sorted(_COMPRESSIONS)}")
    width, height = slide.dimensions
    sizes = [(width, height)]
    while max(sizes[-1]) > tile and min(sizes[-1]) >= 2:
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    kwargs: dict = {"photometric": "rgb", "tile": (tile, tile), "metadata": None}
    if comp != "none":
        kwargs["compression"] = comp
        if comp == "jpeg":
            kwargs["compressionargs"] = {"level": int(quality)}
    res = 1e4 / float(slide.mpp)

    def tiles(level: int) -> Iterator[np.ndarray]:
        lw, lh = sizes[level]
        ds = 2.0**level
        for ty in range(0, lh, tile):
            for tx in range(0, lw, tile):
                yield slide.read_rect(
                    round(tx * ds), round(ty * ds), tile, tile, mpp=slide.mpp * ds, pad_value=pad_value
                )

    big = width * height * 3 > 2**31
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=big) as tif:
        for level, (lw, lh) in enumerate(sizes):
            extra: dict = {"description": mpp_description(slide.mpp)} if level == 0 else {"subfiletype": 1}
            r = res / 2**level
            tif.write(
                tiles(level),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                resolution=(r, r),
                resolutionunit="CENTIMETER",
                **extra,
                **kwargs,
            )
    return Path(path)
