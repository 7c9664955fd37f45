"""What the tool sees in a slide before analysing it: :func:`slide_summary`.

Size, resolution and where it came from, the pyramid, the reader, the tissue the mask finds and the share of the
detector's tiles that would run. Only the tissue mask's low-resolution thumbnail is read (from the coarsest
pyramid level that serves ~8 µm/px), so a 40,000² px slide is summarised in a moment with little memory.

The tile count follows ``mitoscope detect`` / ``analyze`` exactly: the same tissue mask
(:func:`~mitoscope.data.tissue.slide_tissue_mask` with its defaults), the same grid
(:func:`~mitoscope.inference.tiling.tile_grid`) and the same selection
(:func:`~mitoscope.inference.tiling.select_tissue_tiles`); :data:`DETECT_TILES` holds the defaults of the
command with the CPU detector (256 px tiles at 0.5 µm/px, overlap 64 px, at least 1% tissue per tile core).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
from mitoscope.inference.tiling import Tile, select_tissue_tiles, tile_grid
from mitoscope.io.slide_base import Slide


@dataclasses.dataclass(frozen=True)
class TileSettings:
    """The detector's tiling: tile edge and resolution, overlap, least tissue per tile core.

    Attributes:
        size: tile edge in px at ``mpp``.
        mpp: µm per px of the tiles (the detector's).
        overlap: overlap between neighbouring tiles in px at ``mpp``.
        min_tissue: least tissue fraction of a tile's core for the tile to run.
    """

    size: int = 256
    mpp: float = 0.5
    overlap: int = 64
    min_tissue: float = 0.01

    def describe(self) -> str:
        """The settings in words.

        Examples:
            >>> TileSettings().describe()
            '256 px tiles at 0.5 µm/px, overlap 64 px, ≥ 1% tissue per tile'
        """
        return (
            f"{self.size} px tiles at {self.mpp:g} µm/px, overlap {self.overlap} px, "
            f"≥ {self.min_tissue * 100:g}% tissue per tile"
        )


#: ``mitoscope detect`` / ``analyze`` defaults with the CPU detector (``detector-cpu`` recipe).
DETECT_TILES = TileSettings()


def detector_tiles(
    slide: Slide, mask: np.ndarray, mask_mpp: float, settings: TileSettings = DETECT_TILES
) -> tuple[list[Tile], int]:
    """The tiles the detector would run on (those with tissue) and the number of tiles in the whole grid.

    Examples:
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> s = ArraySlide(np.zeros((1024, 2048, 3), np.uint8), mpp=0.5)
        >>> mask = np.zeros((64, 128), bool); mask[:, :64] = True  # left half tissue, 8 µm/px
        >>> kept, total = detector_tiles(s, mask, 8.0, TileSettings(size=256, overlap=0))
        >>> len(kept), total
        (16, 32)
    """
    tiles = tile_grid(
        slide.dimensions,
        slide_mpp=slide.mpp,
        mpp=settings.mpp,
        tile_size=settings.size,
        overlap=settings.overlap,
    )
    kept = select_tissue_tiles(tiles, mask, mask_mpp, slide_mpp=slide.mpp, min_tissue=settings.min_tissue)
    return kept, len(tiles)


def slide_summary(
    slide: Slide,
    *,
    tiles: TileSettings | None = DETECT_TILES,
    tissue: tuple[np.ndarray, float] | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary of an open slide: size, µm/px and its source, levels, reader, tissue, tiles to run.

    Args:
        slide: an open slide (:func:`~mitoscope.io.slides.open_slide`).
        tiles: the detector's tiling to count (``None``: do not count tiles).
        tissue: a precomputed ``(mask, mask_mpp)``; default: :func:`~mitoscope.data.tissue.slide_tissue_mask`.

    Returns:
        ``kind`` (``"slide"``), ``path``, ``format``, ``backend``, ``width``, ``height``, ``mpp``,
        ``mpp_source`` (worded to follow "0.5 µm/px", e.g. ``"from the Aperio metadata"``), ``mpp_assumed``,
        ``size_mm``, ``levels`` (``level``, ``width``, ``height``, ``downsample``, ``mpp`` each), ``tissue``
        (``area_mm2``, ``fraction`` of the slide, ``mask_mpp``, ``mask_width``, ``mask_height``) and ``tiles``
        (the settings, ``total``, ``on_tissue`` and their ``fraction``).

    Examples:
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> img = np.full((2000, 1000, 3), 240, np.uint8); img[:1000] = (190, 90, 170)  # top half tissue
        >>> s = slide_summary(ArraySlide(img, mpp=0.5, path="a.png"))
        >>> s["width"], s["height"], s["mpp_source"], s["tissue"]["area_mm2"]
        (1000, 2000, 'as given', 0.25)
    """
    width, height = slide.dimensions
    mpp = float(slide.mpp)
    mask, mask_mpp = tissue if tissue is not None else slide_tissue_mask(slide)
    area = tissue_area_mm2(mask, mask_mpp)
    slide_area = width * height * (mpp / 1000.0) ** 2
    summary: dict[str, Any] = {
        "kind": "slide",
        "path": str(slide.path),
        "format": slide.file_format,
        "backend": slide.backend,
        "width": int(width),
        "height": int(height),
        "mpp": mpp,
        "mpp_source": slide.mpp_source,
        "mpp_assumed": bool(slide.mpp_is_assumed),
        "size_mm": [round(width * mpp / 1000.0, 3), round(height * mpp / 1000.0, 3)],
        "levels": [
            {
                "level": i,
                "width": int(w),
                "height": int(h),
                "downsample": round(float(d), 3),
                "mpp": round(mpp * float(d), 4),
            }
            for i, ((w, h), d) in enumerate(zip(slide.level_dimensions, slide.level_downsamples, strict=True))
        ],
        "tissue": {
            "area_mm2": round(area, 4),
            "fraction": round(area / slide_area, 4) if slide_area > 0 else 0.0,
            "mask_mpp": round(float(mask_mpp), 4),
            "mask_width": int(mask.shape[1]),
            "mask_height": int(mask.shape[0]),
        },
    }
    if tiles is not None:
        kept, total = detector_tiles(slide, mask, mask_mpp, tiles)
        summary["tiles"] = {
            **dataclasses.asdict(tiles),
            "total": total,
            "on_tissue": len(kept),
            "fraction": round(len(kept) / total, 4) if total else 0.0,
        }
    return summary


__all__ = ["DETECT_TILES", "TileSettings", "detector_tiles", "slide_summary"]
