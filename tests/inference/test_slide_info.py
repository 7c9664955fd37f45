"""``slide_summary``: what the tool sees in a slide, the same tiles as ``detect``, and a 40,000² px slide
summarised from its low levels only."""

from __future__ import annotations

import inspect
import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml

from mitoscope.data.tissue import slide_tissue_mask
from mitoscope.inference.slide_info import DETECT_TILES, TileSettings, detector_tiles, slide_summary
from mitoscope.io.slide_base import Slide
from mitoscope.io.slides import open_slide
from mitoscope.io.tiff_slide import TiffSlide
from mitoscope.io.tiff_writer import write_slide_tiff
from mitoscope.report.thumbnail import slide_thumbnail


class BlankWithTissue(Slide):
    """A 40,000² px slide at 0.25 µm/px: white glass with one disc of pink tissue, drawn on demand."""

    def __init__(self, size: int = 40_000, disc: tuple[int, int, int] = (14_000, 22_000, 6_000)) -> None:
        self.size, self.disc = size, disc

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.size, self.size

    @property
    def mpp(self) -> float:
        return 0.25

    def _read_level0(self, x: int, y: int, width: int, height: int, downsample: float) -> np.ndarray:
        ds = max(1.0, downsample)
        oh, ow = max(1, math.ceil(height / ds)), max(1, math.ceil(width / ds))
        out = np.full((oh, ow, 3), 240, np.uint8)
        cx, cy, r = self.disc
        if x < cx + r and x + width > cx - r and y < cy + r and y + height > cy - r:
            yy = y + (np.arange(oh) + 0.5) * height / oh
            xx = x + (np.arange(ow) + 0.5) * width / ow
            out[(yy[:, None] - cy) ** 2 + (xx[None, :] - cx) ** 2 < r * r] = (200, 110, 170)
        return out


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory) -> Path:
    # zstd on mostly blank tiles: ~1.6 MB on disk for 40,000² px and 8 levels
    path = tmp_path_factory.mktemp("big") / "big.tiff"
    return write_slide_tiff(path, BlankWithTissue(), tile=512, compression="zstd")


def test_real_svs_summary(shared_data):
    with open_slide(shared_data / "slides" / "cmu_small_region.svs") as slide:
        s = slide_summary(slide)
    assert (s["kind"], s["format"], s["backend"]) == ("slide", "Aperio SVS", "tifffile")
    assert (s["width"], s["height"], s["mpp"]) == (2220, 2967, 0.499)
    assert s["mpp_source"] == "from the Aperio metadata" and not s["mpp_assumed"]
    assert s["levels"] == [{"level": 0, "width": 2220, "height": 2967, "downsample": 1.0, "mpp": 0.499}]
    assert 0.4 < s["tissue"]["area_mm2"] < 0.8 and 0.25 < s["tissue"]["fraction"] < 0.5
    t = s["tiles"]
    assert (t["size"], t["mpp"], t["overlap"], t["min_tissue"]) == (256, 0.5, 64, 0.01)
    assert 0 < t["on_tissue"] < t["total"] and t["fraction"] == round(t["on_tissue"] / t["total"], 4)


def test_tiles_are_those_detect_would_run(shared_data):
    from mitoscope.inference.detect import _tiles_for, detect_slide

    with open_slide(shared_data / "slides" / "cmu_small_region.svs") as slide:
        mask, mask_mpp = slide_tissue_mask(slide)
        ours, total = detector_tiles(slide, mask, mask_mpp)
        theirs, their_total = _tiles_for(slide, tile_size=256, overlap=64, mpp=0.5, region=None,
                                         tissue=True, min_tissue=0.01)  # fmt: skip
    assert total == their_total and [t.core for t in ours] == [t.core for t in theirs]
    # DETECT_TILES are the defaults of `detect` with the CPU detector recipe.
    defaults = inspect.signature(detect_slide).parameters
    assert (defaults["overlap"].default, defaults["min_tissue"].default) == (64, 0.01)
    recipe = Path(__file__).parents[2] / "src" / "mitoscope" / "configs" / "detector-cpu.yaml"
    data = yaml.safe_load(recipe.read_text())["data"]
    assert (data["crop_size"], data["mpp"]) == (DETECT_TILES.size, DETECT_TILES.mpp)


def test_summary_options(shared_data):
    with open_slide(shared_data / "slides" / "cmu_small_region.svs") as slide:
        coarse = slide_summary(slide, tiles=TileSettings(size=512, mpp=1.0, overlap=0))
        assert coarse["tiles"]["total"] < 20
        assert "tiles" not in slide_summary(slide, tiles=None)
        given = (np.zeros((10, 10), bool), 150.0)
        s = slide_summary(slide, tissue=given)
        assert s["tissue"]["area_mm2"] == 0 and s["tiles"]["on_tissue"] == 0


@pytest.mark.slow
def test_40k_slide_summarised_from_low_levels_only(big_slide, monkeypatch):
    assert big_slide.stat().st_size < 5e6
    levels_read: list[int] = []
    real_tile = TiffSlide._tile

    def counting(self, level, index):
        levels_read.append(level)
        return real_tile(self, level, index)

    monkeypatch.setattr(TiffSlide, "_tile", counting)
    tracemalloc.start()
    t0 = time.perf_counter()
    with open_slide(big_slide) as slide:
        s = slide_summary(slide)
        seconds = time.perf_counter() - t0
        downsamples = slide.level_downsamples
        thumb = slide_thumbnail(slide, tiles=DETECT_TILES)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (s["width"], s["height"], len(s["levels"])) == (40_000, 40_000, 8)
    print(
        f"40k² summary: {seconds:.2f} s, peak {peak / 2**20:.0f} MiB traced, {len(levels_read)} tiles decoded "
        f"from levels {sorted(set(levels_read))} (downsamples {[downsamples[i] for i in sorted(set(levels_read))]})"
    )
    # Only levels at least 16× smaller than level 0 were decoded, and few of their tiles.
    assert levels_read and min(downsamples[lv] for lv in levels_read) >= 16
    assert len(levels_read) < 100
    assert seconds < 10 and peak < 250 * 2**20, (seconds, peak / 2**20)
    # The disc of tissue: π × 1.5² mm² = 7.07 mm²; tiles on it ≈ its share of the slide (7%), plus its rim.
    assert s["tissue"]["area_mm2"] == pytest.approx(math.pi * 1.5**2, rel=0.02)
    assert 0.06 < s["tiles"]["fraction"] < 0.09, s["tiles"]
    assert thumb.shape == (1024, 1024, 3)
