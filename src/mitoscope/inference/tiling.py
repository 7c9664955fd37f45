"""Overlapping tile grids over a slide or region at the model's resolution.

Sizes are in *output* pixels (pixels at the model's mpp); positions are kept both in output pixels relative to
the region's origin and in level-0 pixels of the slide. Tiles start every ``tile_size - overlap`` px and the last
row/column is aligned to the region's border (so no tile hangs over the end unless the region is smaller than a
tile). Each tile owns a *core*: the overlaps between neighbours are split at their middle, so the cores of all
tiles partition the region exactly (every pixel in exactly one core). A detection is kept only by the tile whose
core contains its centre; the rest of the tile is context (halo).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: where to read it and which part of it it owns.

    Attributes:
        index: position in the grid's list.
        row, col: grid position.
        x, y: top-left in output px relative to the region origin.
        size: edge in output px (tiles are square).
        core: ``(x0, y0, x1, y1)`` owned box in output px relative to the region origin (half-open).
        level0_x, level0_y: top-left in level-0 px of the slide (integers, what ``read_rect`` gets).
        scale: level-0 px per output px.
    """

    index: int
    row: int
    col: int
    x: int
    y: int
    size: int
    core: tuple[int, int, int, int]
    level0_x: int
    level0_y: int
    scale: float

    def owns(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Whether tile-local output coordinates ``(u, v)`` fall in this tile's core."""
        gx, gy = np.asarray(u) + self.x, np.asarray(v) + self.y
        x0, y0, x1, y1 = self.core
        return (gx >= x0) & (gx < x1) & (gy >= y0) & (gy < y1)

    def to_level0(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tile-local output coordinates → level-0 slide coordinates."""
        return self.level0_x + np.asarray(u) * self.scale, self.level0_y + np.asarray(v) * self.scale


def axis_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Tile starts along one axis: every ``tile_size - overlap`` px, the last one flush with the end.

    Examples:
        >>> axis_starts(1000, 512, 64)
        [0, 448, 488]
        >>> axis_starts(300, 512, 64)
        [0]
    """
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tile_size {tile_size}")
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    last = length - tile_size
    starts = list(range(0, last, stride))
    starts.append(last)
    return starts


def core_bounds(starts: Sequence[int], length: int, tile_size: int) -> list[tuple[int, int]]:
    """Owned interval ``[a, b)`` of each tile along one axis; together they partition ``[0, length)``.

    Examples:
        >>> core_bounds([0, 448, 488], 1000, 512)
        [(0, 480), (480, 724), (724, 1000)]
    """
    cuts = [0]
    for prev, nxt in itertools.pairwise(starts):
        cuts.append((nxt + prev + tile_size) // 2)  # middle of the overlap [nxt, prev + tile_size)
    cuts.append(length)
    return [(cuts[i], cuts[i + 1]) for i in range(len(starts))]


def tile_grid(
    dimensions: tuple[int, int],
    *,
    slide_mpp: float,
    mpp: float | None = None,
    tile_size: int = 512,
    overlap: int = 64,
    region: tuple[int, int, int, int] | None = None,
) -> list[Tile]:
    """All tiles over a slide (or a level-0 ``region``), row by row.

    Args:
        dimensions: slide level-0 ``(width, height)``.
        slide_mpp: µm per level-0 px.
        mpp: µm per output px (the model's); ``None`` uses the slide's.
        tile_size: tile edge in output px.
        overlap: overlap between neighbouring tiles in output px.
        region: ``(x, y, width, height)`` in level-0 px (default: the whole slide).

    Returns:
        The tiles; their cores partition the region (in output px).

    Examples:
        >>> tiles = tile_grid((2000, 1000), slide_mpp=0.25, mpp=0.5, tile_size=512, overlap=64)
        >>> len(tiles), tiles[-1].level0_x, tiles[-1].core
        (3, 976, (724, 0, 1000, 500))
    """
    width, height = dimensions
    rx, ry, rw, rh = region if region is not None else (0, 0, width, height)
    if rw <= 0 or rh <= 0:
        raise ValueError(f"region must have a positive size, got {rw}×{rh}")
    scale = (mpp if mpp is not None else slide_mpp) / slide_mpp
    out_w, out_h = max(1, math.ceil(rw / scale - 1e-9)), max(1, math.ceil(rh / scale - 1e-9))
    xs, ys = axis_starts(out_w, tile_size, overlap), axis_starts(out_h, tile_size, overlap)
    xb, yb = core_bounds(xs, out_w, tile_size), core_bounds(ys, out_h, tile_size)
    tiles: list[Tile] = []
    for r, (y, (cy0, cy1)) in enumerate(zip(ys, yb, strict=True)):
        for c, (x, (cx0, cx1)) in enumerate(zip(xs, xb, strict=True)):
            tiles.append(
                Tile(
                    index=len(tiles),
                    row=r,
                    col=c,
                    x=x,
                    y=y,
                    size=tile_size,
                    core=(cx0, cy0, cx1, cy1),
                    level0_x=round(rx + x * scale),
                    level0_y=round(ry + y * scale),
                    scale=scale,
                )
            )
    return tiles


def tissue_fractions(
    tiles: Sequence[Tile],
    mask: np.ndarray,
    mask_mpp: float,
    *,
    slide_mpp: float,
    region_origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Fraction of each tile's *core* covered by tissue in ``mask`` (a summed-area table, O(1) per tile).

    Examples:
        >>> tiles = tile_grid((1024, 512), slide_mpp=0.25, tile_size=512, overlap=0)
        >>> mask = np.zeros((16, 32), bool); mask[:, :16] = True  # 8 µm/px mask: left half tissue
        >>> tissue_fractions(tiles, mask, 8.0, slide_mpp=0.25).tolist()
        [1.0, 0.0]
    """
    mask = np.asarray(mask, dtype=bool)
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0), axis=1)
    per_px = slide_mpp / mask_mpp  # mask px per level-0 px
    out = np.zeros(len(tiles))
    for i, t in enumerate(tiles):
        x0, y0, x1, y1 = t.core
        lx0, ly0 = region_origin[0] + x0 * t.scale, region_origin[1] + y0 * t.scale
        lx1, ly1 = region_origin[0] + x1 * t.scale, region_origin[1] + y1 * t.scale
        mx0 = min(max(math.floor(lx0 * per_px), 0), mask.shape[1])
        my0 = min(max(math.floor(ly0 * per_px), 0), mask.shape[0])
        mx1 = min(max(math.ceil(lx1 * per_px), mx0), mask.shape[1])
        my1 = min(max(math.ceil(ly1 * per_px), my0), mask.shape[0])
        area = (mx1 - mx0) * (my1 - my0)
        if area == 0:
            continue
        total = sat[my1, mx1] - sat[my0, mx1] - sat[my1, mx0] + sat[my0, mx0]
        out[i] = total / area
    return out


def select_tissue_tiles(
    tiles: Sequence[Tile],
    mask: np.ndarray,
    mask_mpp: float,
    *,
    slide_mpp: float,
    min_tissue: float = 0.01,
    region_origin: tuple[int, int] = (0, 0),
) -> list[Tile]:
    """The tiles whose core is at least ``min_tissue`` tissue (a fraction; > 0 keeps any tissue at all).

    Examples:
        >>> tiles = tile_grid((1024, 512), slide_mpp=0.25, tile_size=512, overlap=0)
        >>> mask = np.zeros((16, 32), bool); mask[:, :16] = True
        >>> [t.col for t in select_tissue_tiles(tiles, mask, 8.0, slide_mpp=0.25)]
        [0]
    """
    fractions = tissue_fractions(tiles, mask, mask_mpp, slide_mpp=slide_mpp, region_origin=region_origin)
    return [t for t, f in zip(tiles, fractions, strict=True) if f >= min_tissue and f > 0]
