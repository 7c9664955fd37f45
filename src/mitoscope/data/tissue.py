"""Tissue masks from low-resolution thumbnails: Otsu on saturation and optical density, then morphology.

Background in scanned H&E is either white glass (bright, grey: low saturation, low optical density) or black
(padding outside the scanned area, or dark scanner borders). A pixel is tissue when it is coloured (saturation
above an Otsu threshold, clamped to a sensible range so an all-tissue or all-glass image is not split in two) or
optically dense, and not black. Small specks are removed and small holes filled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from mitoscope.io.slide_base import as_rgb_uint8

if TYPE_CHECKING:
    from mitoscope.io.slide_base import Slide


def _otsu(values: np.ndarray, default: float) -> float:
    from skimage.filters import threshold_otsu

    if values.size == 0 or float(values.max()) - float(values.min()) < 1e-6:
        return default
    return float(threshold_otsu(values))


def tissue_mask(
    rgb_thumbnail: np.ndarray,
    *,
    saturation_range: tuple[float, float] = (0.05, 0.15),
    od_threshold: float = 0.6,
    black_level: int = 30,
    closing_radius: int = 2,
    min_object_px: int = 64,
    min_hole_px: int = 64,
) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail (True = tissue).

    Args:
        rgb_thumbnail: ``(H, W, 3)`` image (uint8, or float in [0, 1]).
        saturation_range: the Otsu threshold on HSV saturation is clamped to this range.
        od_threshold: mean optical density (``-log10(I / 255)`` over channels) above which a pixel is tissue
            even when grey (dense, dark tissue).
        black_level: pixels whose brightest channel is below this are background (black padding).
        closing_radius: radius (px) of the binary closing that joins nearby tissue.
        min_object_px: connected tissue regions smaller than this are removed (capped at 1% of the image).
        min_hole_px: holes smaller than this are filled (capped at 1% of the image).

    Returns:
        ``(H, W)`` bool array.

    Examples:
        >>> img = np.full((64, 64, 3), 240, np.uint8)
        >>> img[16:48, 16:48] = (200, 100, 180)  # pink tissue on white glass
        >>> m = tissue_mask(img)
        >>> int(m.sum()), bool(m[32, 32]), bool(m[2, 2])
        (1024, True, False)
    """
    from scipy import ndimage
    from skimage import morphology

    rgb = as_rgb_uint8(rgb_thumbnail, source="thumbnail")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return np.zeros(rgb.shape[:2], dtype=bool)
    f = rgb.astype(np.float32)
    cmax, cmin = f.max(axis=2), f.min(axis=2)
    saturation = np.where(cmax > 0, (cmax - cmin) / np.maximum(cmax, 1.0), 0.0)
    od = -np.log10(np.clip(f, 1.0, 255.0) / 255.0).mean(axis=2)
    not_black = cmax >= black_level
    lo, hi = saturation_range
    sat_t = min(max(_otsu(saturation[not_black], default=lo), lo), hi)
    mask = not_black & ((saturation > sat_t) | (od > od_threshold))
    if closing_radius > 0:
        mask = ndimage.binary_closing(mask, structure=morphology.disk(closing_radius), border_value=0) | mask
        mask &= not_black
    cap = max(1, int(0.01 * mask.size))
    if min_object_px > 0:
        mask = morphology.remove_small_objects(mask, max_size=min(min_object_px, cap) - 1)
    if min_hole_px > 0:
        mask = morphology.remove_small_holes(mask, max_size=min(min_hole_px, cap) - 1)
    return mask.astype(bool)


def tissue_area_mm2(mask: np.ndarray, mask_mpp: float) -> float:
    """Tissue area in mm² of a mask whose pixels are ``mask_mpp`` µm wide.

    Examples:
        >>> tissue_area_mm2(np.ones((125, 125), bool), 8.0)
        1.0
    """
    if mask_mpp <= 0:
        raise ValueError(f"mask_mpp must be positive, got {mask_mpp}")
    return float(np.count_nonzero(mask)) * (float(mask_mpp) / 1000.0) ** 2


def slide_tissue_mask(
    slide: Slide, *, target_mpp: float = 8.0, min_size: int = 256, **mask_kwargs: object
) -> tuple[np.ndarray, float]:
    """Tissue mask of a whole slide from a thumbnail near ``target_mpp`` µm/px.

    Small slides and regions are masked at a finer resolution so that the mask's longer side has at least
    ``min_size`` pixels (never finer than the slide's own level 0).

    Args:
        slide: any :class:`~mitoscope.io.slide_base.Slide`.
        target_mpp: wanted resolution of the mask.
        min_size: smallest long side of the mask (px).
        **mask_kwargs: passed to :func:`tissue_mask`.

    Returns:
        ``(mask, mask_mpp)``; ``mask_mpp`` is the mean µm per mask pixel (level-0 px per mask px × slide mpp).

    Examples:
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> img = np.full((2000, 1000, 3), 240, np.uint8); img[:1000] = (190, 90, 170)
        >>> mask, mpp = slide_tissue_mask(ArraySlide(img, mpp=0.25), target_mpp=2.0)
        >>> mask.shape, mpp, round(tissue_area_mm2(mask, mpp), 4)
        ((256, 128), 1.953125, 0.0625)
    """
    w, h = slide.dimensions
    longest_um = max(w, h) * slide.mpp
    mpp = min(float(target_mpp), longest_um / max(min_size, 1))
    mpp = max(mpp, slide.mpp)
    size = max(1, math.ceil(longest_um / mpp - 1e-9))
    thumb = slide.thumbnail(max_size=size)
    mask = tissue_mask(thumb, **mask_kwargs)  # type: ignore[arg-type]
    mask_mpp = slide.mpp * 0.5 * (w / mask.shape[1] + h / mask.shape[0])
    return mask, float(mask_mpp)


def mask_outline(mask: np.ndarray, shape_hw: tuple[int, int], *, width: int | None = None) -> np.ndarray:
    """The outline of a tissue ``mask`` drawn at ``shape_hw`` (e.g. a thumbnail's size), as a bool image.

    The mask is scaled smoothly (bilinear, cut at 0.5) so a coarse mask gets a smooth outline that follows the
    same tissue; the line lies just inside the tissue and is ``width`` px wide (default: 1 px per 400 px of the
    longer side, at least 2).

    Args:
        mask: ``(h, w)`` bool tissue mask covering the whole slide.
        shape_hw: ``(height, width)`` of the image to draw on.
        width: line width in px.

    Returns:
        ``shape_hw`` bool array, True on the outline.

    Examples:
        >>> m = np.zeros((8, 8), bool); m[2:6, 2:6] = True
        >>> line = mask_outline(m, (32, 32), width=1)
        >>> bool(line[8, 16]), bool(line[16, 16]), bool(line[1, 1])
        (True, False, False)
    """
    from scipy import ndimage
    from skimage.transform import resize

    h, w = int(shape_hw[0]), int(shape_hw[1])
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (h, w):
        mask = resize(mask.astype(np.float32), (h, w), order=1, anti_aliasing=False) >= 0.5
    if width is None:
        width = max(2, round(max(h, w) / 400))
    inner = ndimage.binary_erosion(mask, iterations=max(1, int(width)), border_value=0)
    return mask & ~inner
