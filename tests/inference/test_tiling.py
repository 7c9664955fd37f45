"""Tile grids: full exact coverage by cores, border alignment, level-0 mapping, tissue selection."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.inference.tiling import (
    axis_starts,
    core_bounds,
    select_tissue_tiles,
    tile_grid,
    tissue_fractions,
)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [
        (1000, 512, 64),
        (512, 512, 64),
        (513, 512, 64),
        (100, 512, 64),
        (5000, 256, 0),
        (777, 128, 127),
        (2, 1, 0),
    ],
)
def test_axis_starts_cover_and_align_to_border(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if length >= tile:
        assert starts[-1] == length - tile  # last one flush with the border
        gaps = np.diff(starts)
        assert (gaps <= tile - overlap).all()  # at least the requested overlap everywhere
    covered = np.zeros(length, int)
    for a, b in core_bounds(starts, length, tile):
        covered[a:b] += 1
    assert (covered == 1).all()


def test_axis_starts_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        axis_starts(100, 64, 64)
    with pytest.raises(ValueError, match="tile_size"):
        axis_starts(100, 0, 0)


@pytest.mark.parametrize(
    ("dims", "slide_mpp", "mpp", "region"),
    [
        ((1300, 900), 0.25, 0.25, None),
        ((1300, 900), 0.5, 0.25, None),
        ((2600, 1800), 0.25, 0.5, None),
        ((3000, 3000), 0.25, 0.25, (700, 1100, 1234, 567)),
    ],
)
def test_cores_partition_the_region_exactly(dims, slide_mpp, mpp, region):
    tiles = tile_grid(dims, slide_mpp=slide_mpp, mpp=mpp, tile_size=256, overlap=32, region=region)
    rx, ry, rw, rh = region or (0, 0, *dims)
    scale = mpp / slide_mpp
    out_w, out_h = int(np.ceil(rw / scale)), int(np.ceil(rh / scale))
    count = np.zeros((out_h, out_w), np.int32)
    for t in tiles:
        x0, y0, x1, y1 = t.core
        # the core lies inside the tile that owns it
        assert t.x <= x0 and x1 <= t.x + t.size and t.y <= y0 and y1 <= t.y + t.size
        count[y0:y1, x0:x1] += 1
        assert t.level0_x == round(rx + t.x * scale) and t.level0_y == round(ry + t.y * scale)
    assert (count == 1).all()  # every output pixel in exactly one kept core
    # every level-0 pixel of the region is read by some tile
    last = tiles[-1]
    assert last.level0_x + last.size * scale >= rx + rw - 1e-6
    assert last.level0_y + last.size * scale >= ry + rh - 1e-6


def test_owns_and_to_level0():
    tiles = tile_grid((1000, 1000), slide_mpp=0.5, mpp=0.25, tile_size=512, overlap=64)
    t = tiles[1]  # second tile in the first row
    u = np.array([0.0, t.core[0] - t.x, t.core[2] - t.x - 0.01, t.core[2] - t.x])
    v = np.full(4, 10.0)
    assert t.owns(u, v).tolist() == [False, True, True, False]
    x, y = t.to_level0(np.array([10.0]), np.array([20.0]))
    assert x[0] == pytest.approx(t.level0_x + 5.0) and y[0] == pytest.approx(t.level0_y + 10.0)


def test_tissue_selection_uses_the_mask():
    tiles = tile_grid((2048, 1024), slide_mpp=0.25, tile_size=512, overlap=0)
    mask = np.zeros((32, 64), bool)  # 8 µm/px: 32 level-0 px per mask px
    mask[:16, 16:17] = True  # a thin strip in the second column of tiles, top row
    fractions = tissue_fractions(tiles, mask, 8.0, slide_mpp=0.25)
    assert fractions[1] == pytest.approx(1 / 16)
    assert fractions[[0, 2, 3, 4, 5, 6, 7]].sum() == 0
    kept = select_tissue_tiles(tiles, mask, 8.0, slide_mpp=0.25, min_tissue=0.01)
    assert [t.index for t in kept] == [1]
    assert select_tissue_tiles(tiles, mask, 8.0, slide_mpp=0.25, min_tissue=0.5) == []


def test_tissue_selection_with_region_origin():
    region = (1024, 0, 1024, 512)
    tiles = tile_grid((2048, 1024), slide_mpp=0.25, tile_size=512, overlap=0, region=region)
    mask = np.zeros((32, 64), bool)
    mask[:16, 48:] = True  # tissue only in the last 512 level-0 px columns
    kept = select_tissue_tiles(tiles, mask, 8.0, slide_mpp=0.25, region_origin=region[:2])
    assert [(t.level0_x, t.level0_y) for t in kept] == [(1536, 0)]
