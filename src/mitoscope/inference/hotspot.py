"""The mitotic hotspot: the densest window of a given area (the "10 HPF" count).

Guidelines count mitoses in the area of 10 high-power fields where they are densest; MIDOG and most recent studies
use **2.37 mm²** for that area. :func:`densest_window` moves a window of that area over the slide and returns the
position holding the most detected figures.

How it is computed (exact and fast): the points are binned into a grid of cells whose size divides the window
exactly (``cell = window_side / ceil(window_side / step_um)``, so cells are at most ``step_um`` wide); a summed-area
table (integral image) of the cell counts then gives the count of every window whose corners lie on the grid in
O(1), for all positions at once. The count returned is exact for the window returned: a figure is inside when
``x <= px < x + w`` and ``y <= py < y + h`` (half-open, level-0 px). Positions are searched on the grid, so the
true continuous maximum can only be missed by windows offset by less than one cell (``step_um``, 10 µm by
default, ~1 nucleus) from a grid position.

The window is a square by default (``aspect=1``). ``aspect`` = width / height gives the HPF-shaped rectangle of
the same area, e.g. ``aspect=4/3`` for a 4:3 camera field. A window larger than the slide along an axis is
placed at 0 on that axis and covers the whole slide there (the count is then every figure along that axis).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_HPF_AREA_MM2 = 2.37


@dataclasses.dataclass(frozen=True)
class Hotspot:
    """The densest window: top-left ``(x, y)`` and size ``(w, h)`` in level-0 px, and its figure ``count``."""

    x: float
    y: float
    w: float
    h: float
    count: int
    area_mm2: float = DEFAULT_HPF_AREA_MM2

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for JSON)."""
        return dataclasses.asdict(self)

    def contains(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Boolean mask of points inside the window (half-open on the right and bottom)."""
        px, py = np.asarray(px, float), np.asarray(py, float)
        return (px >= self.x) & (px < self.x + self.w) & (py >= self.y) & (py < self.y + self.h)


def _xy(points: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(points, pd.DataFrame):
        if len(points) == 0:
            return np.zeros(0), np.zeros(0)
        return points["x"].to_numpy(float), points["y"].to_numpy(float)
    arr = np.asarray(points, dtype=float)
    if arr.size == 0:
        return np.zeros(0), np.zeros(0)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"points must be an (N, 2) array or a DataFrame with x, y; got shape {arr.shape}")
    return arr[:, 0], arr[:, 1]


def window_size_px(area_mm2: float, mpp: float, aspect: float = 1.0) -> tuple[float, float]:
    """Width and height in level-0 px of a window of ``area_mm2`` with width/height ``aspect``.

    Examples:
        >>> w, h = window_size_px(2.37, 0.25)
        >>> round(w), round(h)
        (6158, 6158)
    """
    if area_mm2 <= 0 or mpp <= 0 or aspect <= 0:
        raise ValueError(f"area_mm2, mpp and aspect must be positive (got {area_mm2}, {mpp}, {aspect})")
    area_px = area_mm2 * 1e6 / (mpp * mpp)
    h = math.sqrt(area_px / aspect)
    return h * aspect, h


def _axis_grid(window: float, extent: float, step_px: float) -> tuple[float, int, int]:
    """Cell size, number of cells over ``extent`` and window length in cells for one axis."""
    if window >= extent:
        # One position: the window covers the whole axis.
        return max(extent, 1.0), 1, 1
    k = max(1, math.ceil(window / step_px))
    cell = window / k
    n = max(k, math.ceil(extent / cell))
    return cell, n, k


def densest_window(
    points: pd.DataFrame | np.ndarray,
    slide_dims: tuple[int, int],
    mpp: float,
    area_mm2: float = DEFAULT_HPF_AREA_MM2,
    step_um: float = 10.0,
    *,
    aspect: float = 1.0,
) -> Hotspot:
    """Find the window of ``area_mm2`` holding the most points (the hotspot / "10 HPF" count).

    Args:
        points: figure centres in level-0 px (DataFrame with ``x``, ``y`` or an ``(N, 2)`` array).
        slide_dims: slide ``(width, height)`` in level-0 px.
        mpp: microns per level-0 pixel.
        area_mm2: window area (2.37 mm² = the usual 10 HPF).
        step_um: the largest grid step of the search in µm (smaller = finer, slower).
        aspect: window width / height (1 = square; 4/3 = a 4:3 field).

    Returns:
        The :class:`Hotspot`; ties go to the top-most, then left-most window. With no points, the count is 0 and
        the window is at the top-left corner.

    Examples:
        >>> pts = np.array([[100, 100], [120, 110], [5000, 5000]])
        >>> hs = densest_window(pts, (8000, 8000), mpp=0.25, area_mm2=0.01)  # 400×400 px window
        >>> hs.count, hs.x <= 100 and hs.x + hs.w > 120
        (2, True)
    """
    width, height = (float(v) for v in slide_dims)
    if width <= 0 or height <= 0:
        raise ValueError(f"slide_dims must be positive, got {slide_dims}")
    if step_um <= 0:
        raise ValueError(f"step_um must be positive, got {step_um}")
    win_w, win_h = window_size_px(area_mm2, mpp, aspect)
    step_px = step_um / mpp
    cell_x, nx, kx = _axis_grid(win_w, width, step_px)
    cell_y, ny, ky = _axis_grid(win_h, height, step_px)
    full_x, full_y = win_w >= width, win_h >= height

    px, py = _xy(points)
    keep = np.isfinite(px) & np.isfinite(py)
    px, py = px[keep], py[keep]
    if px.size == 0:
        return Hotspot(0.0, 0.0, win_w, win_h, 0, float(area_mm2))

    ix = np.clip(np.floor(px / cell_x).astype(np.int64), 0, nx - 1)
    iy = np.clip(np.floor(py / cell_y).astype(np.int64), 0, ny - 1)
    grid = np.zeros((ny, nx), dtype=np.int64)
    np.add.at(grid, (iy, ix), 1)
    sat = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    sat[1:, 1:] = grid.cumsum(axis=0).cumsum(axis=1)
    # Sum of every ky × kx block of cells, indexed by its top-left cell.
    sums = sat[ky:, kx:] - sat[:-ky, kx:] - sat[ky:, :-kx] + sat[:-ky, :-kx]
    flat = int(np.argmax(sums))
    row, col = divmod(flat, sums.shape[1])
    count = int(sums[row, col])
    x0 = 0.0 if full_x else col * cell_x
    y0 = 0.0 if full_y else row * cell_y
    return Hotspot(float(x0), float(y0), float(win_w), float(win_h), count, float(area_mm2))
