"""The densest-window (hotspot) search: exact counts on hand-made points."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mitoscope.inference.hotspot import Hotspot, densest_window, window_size_px


def _brute_force(px: np.ndarray, py: np.ndarray, w: float, h: float, xs: np.ndarray, ys: np.ndarray) -> int:
    best = 0
    for y0 in ys:
        for x0 in xs:
            inside = (px >= x0) & (px < x0 + w) & (py >= y0) & (py < y0 + h)
            best = max(best, int(inside.sum()))
    return best


def test_window_size_matches_area() -> None:
    w, h = window_size_px(2.37, 0.25)
    assert w * h * 0.25**2 / 1e6 == pytest.approx(2.37)
    w, h = window_size_px(2.37, 0.25, aspect=4 / 3)
    assert w / h == pytest.approx(4 / 3)
    assert w * h * 0.25**2 / 1e6 == pytest.approx(2.37)


def test_known_cluster_is_found() -> None:
    # mpp 1 µm/px, window 0.01 mm² = 100×100 px. A cluster of 5 near (1000, 2000), 3 near (200, 200).
    pts = pd.DataFrame(
        {
            "x": [1010, 1030, 1050, 1070, 1090, 210, 250, 280, 3000],
            "y": [2010, 2020, 2050, 2080, 2090, 210, 230, 260, 100],
        }
    )
    hs = densest_window(pts, (4000, 4000), mpp=1.0, area_mm2=0.01, step_um=10)
    assert isinstance(hs, Hotspot)
    assert hs.count == 5
    assert hs.w == pytest.approx(100) and hs.h == pytest.approx(100)
    assert int(hs.contains(pts["x"], pts["y"]).sum()) == 5
    assert hs.x <= 1010 and hs.x + hs.w > 1090


def test_count_exact_and_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    px = np.concatenate([rng.uniform(0, 3000, 150), rng.normal(2200, 120, 40)])
    py = np.concatenate([rng.uniform(0, 2000, 150), rng.normal(700, 120, 40)])
    px, py = np.clip(px, 0, 2999), np.clip(py, 0, 1999)
    pts = np.stack([px, py], axis=1)
    mpp, area = 0.5, 0.04  # window 400×400 px
    hs = densest_window(pts, (3000, 2000), mpp=mpp, area_mm2=area, step_um=10)
    # The count reported is exactly the number of points inside the window reported.
    assert hs.count == int(hs.contains(px, py).sum())
    # And it is the maximum over every grid position (cell = 20 px here).
    cell = hs.w / math.ceil(hs.w / (10 / mpp))
    xs = np.arange(0, 3000 - hs.w + cell, cell)
    ys = np.arange(0, 2000 - hs.h + cell, cell)
    assert hs.count == _brute_force(px, py, hs.w, hs.h, xs, ys)
    # A finer search can only find as many or more.
    fine = densest_window(pts, (3000, 2000), mpp=mpp, area_mm2=area, step_um=2)
    assert fine.count >= hs.count


def test_half_open_window_edges() -> None:
    # mpp 1, window 100×100 px, cells of 10 px: a point at exactly x = 100 is outside the window at x = 0.
    pts = np.array([[0, 0], [99.9, 50], [100, 50]])
    hs = densest_window(pts, (1000, 1000), mpp=1.0, area_mm2=0.01, step_um=10)
    assert hs.count == 2  # no 100-px window holds both x = 0 and x = 100
    assert hs.x == 0 and hs.y == 0  # ties: top-left window first
    assert not bool(hs.contains(np.array([100.0]), np.array([50.0]))[0])
    assert int(hs.contains(pts[:, 0], pts[:, 1]).sum()) == hs.count


def test_no_points() -> None:
    hs = densest_window(pd.DataFrame({"x": [], "y": []}), (5000, 5000), mpp=0.25)
    assert hs.count == 0 and hs.x == 0 and hs.y == 0
    hs = densest_window(np.zeros((0, 2)), (5000, 5000), mpp=0.25)
    assert hs.count == 0


def test_window_larger_than_slide_counts_everything() -> None:
    # 2.37 mm² at 0.25 µm/px is ~6158 px wide: larger than this 2000×1500 slide.
    pts = np.array([[10, 10], [1990, 1490], [1000, 700]])
    hs = densest_window(pts, (2000, 1500), mpp=0.25)
    assert hs.count == 3
    assert hs.x == 0 and hs.y == 0
    assert hs.w > 2000 and hs.h > 1500


def test_window_larger_along_one_axis_only() -> None:
    # Window 100×100 px on a 1000×60 strip: one position vertically, sliding horizontally.
    pts = np.array([[10, 5], [20, 55], [500, 30], [520, 10], [560, 50], [900, 1]])
    hs = densest_window(pts, (1000, 60), mpp=1.0, area_mm2=0.01, step_um=5)
    assert hs.y == 0
    assert hs.count == 3
    assert hs.x + hs.w > 560 and hs.x <= 500


def test_ties_go_top_left_and_bad_input() -> None:
    pts = np.array([[50, 50], [850, 850]])
    hs = densest_window(pts, (1000, 1000), mpp=1.0, area_mm2=0.01, step_um=10)
    assert hs.count == 1 and hs.y <= 50 and hs.x <= 50
    with pytest.raises(ValueError, match="slide_dims"):
        densest_window(pts, (0, 10), mpp=1.0)
    with pytest.raises(ValueError, match="positive"):
        densest_window(pts, (10, 10), mpp=0.0)
    with pytest.raises(ValueError, match="points"):
        densest_window(np.zeros((3, 1)), (10, 10), mpp=1.0)
