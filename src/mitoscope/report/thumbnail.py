"""A look at a slide before analysing it: the thumbnail with the tissue mask outlined and the detector's tiles.

The thumbnail is read from the coarsest pyramid level that serves it (:meth:`~mitoscope.io.slide_base.Slide.thumbnail`,
block by block when the slide has no pyramid), the mask is the one ``detect`` / ``analyze`` use
(:func:`~mitoscope.data.tissue.slide_tissue_mask`), and the tiles are those they would run
(:func:`~mitoscope.inference.slide_info.detector_tiles`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mitoscope.data.tissue import slide_tissue_mask
from mitoscope.inference.slide_info import DETECT_TILES, TileSettings, detector_tiles
from mitoscope.io.slide_base import Slide
from mitoscope.report.plots import draw_tissue
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError

#: Image formats a thumbnail can be written as, by suffix.
IMAGE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def slide_thumbnail(
    slide: Slide,
    *,
    max_size: int = 1024,
    outline: bool = True,
    tiles: TileSettings | None = None,
    tissue: tuple[np.ndarray, float] | None = None,
) -> np.ndarray:
    """The slide's thumbnail with the tissue mask outlined and, with ``tiles``, the tiles the detector would run.

    Args:
        slide: an open slide.
        max_size: longer side of the thumbnail in px.
        outline: outline the tissue mask.
        tiles: the detector's tiling (e.g. :data:`~mitoscope.inference.slide_info.DETECT_TILES`) to draw the
            tiles it would run on (their cores); ``None``: no tiles.
        tissue: a precomputed ``(mask, mask_mpp)``; default: :func:`~mitoscope.data.tissue.slide_tissue_mask`.

    Returns:
        RGB uint8 image, longer side ``max_size`` (or the slide's own size when smaller).

    Examples:
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> img = np.full((800, 600, 3), 240, np.uint8); img[200:600, 150:450] = (190, 90, 170)
        >>> slide_thumbnail(ArraySlide(img, mpp=0.5), max_size=400, tiles=DETECT_TILES).shape
        (400, 300, 3)
    """
    if max_size < 16:
        raise ValueError(f"max_size must be at least 16 px, got {max_size}")
    thumb = slide.thumbnail(max_size)
    if not outline and tiles is None:
        return thumb
    if tissue is None:
        tissue = slide_tissue_mask(slide)
    mask, mask_mpp = tissue
    kept = detector_tiles(slide, mask, mask_mpp, tiles)[0] if tiles is not None else None
    return draw_tissue(thumb, mask if outline else None, tiles=kept, slide_dims=slide.dimensions)


def write_image(path: str | os.PathLike[str], image: np.ndarray, *, quality: int = 90) -> Path:
    """Write an RGB image atomically, in the format its suffix names (:data:`IMAGE_FORMATS`).

    Raises:
        InputError: an unknown suffix.

    Examples:
        >>> import tempfile, pathlib
        >>> write_image(pathlib.Path(tempfile.mkdtemp()) / "t.png", np.zeros((4, 4, 3), np.uint8)).suffix
        '.png'
    """
    from PIL import Image

    fmt = image_format(path)
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **kwargs)
    return Path(path)


def image_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format for ``path``'s suffix, or InputError naming the ones supported.

    Examples:
        >>> image_format("overview.jpg")
        'JPEG'
    """
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"write the image as one of {', '.join(sorted(IMAGE_FORMATS))}", path=path)
    return fmt


__all__ = ["DETECT_TILES", "IMAGE_FORMATS", "image_format", "slide_thumbnail", "write_image"]
