from __future__ import annotations

import math
import tracemalloc
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from mitoscope.io.openslide_slide import OpenSlideSlide, openslide_available
from mitoscope.io.slide_base import ArraySlide
from mitoscope.io.slides import open_slide
from mitoscope.io.tiff_slide import TiffSlide
from mitoscope.io.tiff_writer import write_tiled_tiff
from mitoscope.utils.errors import InputError


def _gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 251, yy % 241, (xx // 7 + yy // 5) % 256], axis=-1).astype(np.uint8)


def test_real_svs(shared_data):
    path = shared_data / "slides" / "cmu_small_region.svs"
    with open_slide(path) as slide:
        assert isinstance(slide, TiffSlide)
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert not slide.mpp_is_assumed
        whole = tifffile.imread(path)
        np.testing.assert_array_equal(slide.read_rect(300, 450, 500, 333), whole[450:783, 300:800])
        # half resolution from the same region; border padded with black
        low = slide.read_rect(-100, -100, 200, 200, mpp=0.998)
        assert low.shape == (200, 200, 3) and (low[:50, :50] == 0).all() and low[60:, 60:].mean() > 100
        assert slide.thumbnail(300).shape == (300, 224, 3)


@pytest.mark.skipif(not openslide_available(), reason="openslide not installed")
def test_openslide_backend_matches_tifffile(shared_data, tmp_path):
    svs = shared_data / "slides" / "cmu_small_region.svs"
    with open_slide(svs) as a, open_slide(svs, backend="openslide") as b:
        assert isinstance(b, OpenSlideSlide) and b.mpp == pytest.approx(a.mpp)
        np.testing.assert_array_equal(a.read_rect(1000, 1200, 256, 256), b.read_rect(1000, 1200, 256, 256))
    # OpenSlide reads our writer's pyramid and resolution too
    path = write_tiled_tiff(tmp_path / "p.tiff", _gradient(1000, 700), mpp=0.25, tile=128)
    with OpenSlideSlide(path) as s:
        assert s.mpp == 0.25 and s._osr.level_count == 4


def test_written_pyramid_levels_and_exact_reads(tmp_path):
    img = _gradient(1200, 900)
    path = write_tiled_tiff(tmp_path / "r.tiff", img, mpp=0.25, tile=256, compression="deflate")
    with open_slide(path) as slide:
        assert slide.dimensions == (900, 1200) and slide.mpp == 0.25
        assert slide.level_downsamples[:3] == [1.0, 2.0, 4.0]
        np.testing.assert_array_equal(slide.read_rect(255, 511, 300, 2), img[511:513, 255:555])
        patch = slide.read_centered(450, 600, 64, mpp=1.0)
        assert patch.shape == (64, 64, 3)
        ref = ArraySlide(img, mpp=0.25).read_centered(450, 600, 64, mpp=1.0)
        assert np.abs(patch.astype(int) - ref).mean() < 8


def _constant_tiled_tiff(path, size: int, tile: int = 512, mpp: float = 0.25) -> None:
    """A size×size tiled TIFF of constant tiles, written from pre-compressed bytes (cheap)."""
    import imagecodecs

    one = imagecodecs.zlib_encode(np.full((tile, tile, 3), 180, np.uint8).tobytes())
    n = math.ceil(size / tile) ** 2
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            (one for _ in range(n)),
            shape=(size, size, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            compression="zlib",
            photometric="rgb",
            resolution=(1e4 / mpp, 1e4 / mpp),
            resolutionunit="CENTIMETER",
            metadata=None,
        )


def test_large_tiff_region_reads_only_its_tiles(tmp_path):
    path = tmp_path / "big.tiff"
    _constant_tiled_tiff(path, 40_000)
    tracemalloc.start()
    with open_slide(path) as slide:
        assert slide.dimensions == (40_000, 40_000)
        region = slide.read_rect(20_000, 30_000, 512, 512)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert region.shape == (512, 512, 3) and (region == 180).all()
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the whole image would be 4.8 GB


def test_mpp_missing_given_and_plain_images(tmp_path):
    img = _gradient(100, 80)
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, img, tile=(64, 64), metadata=None)
    with pytest.raises(InputError, match="--mpp"):
        open_slide(bare)
    with pytest.warns(UserWarning, match="assuming 0.5"):
        slide = open_slide(bare, mpp=0.5)
    assert slide.mpp == 0.5 and slide.mpp_is_assumed
    np.testing.assert_array_equal(slide.read_rect(0, 0, 80, 100), img)

    png = tmp_path / "a.png"
    Image.fromarray(img).save(png)
    with pytest.warns(UserWarning, match="0.25"):
        s = open_slide(png)
    assert s.mpp == 0.25 and s.mpp_is_assumed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_slide(png, mpp=0.3).mpp == 0.3
    np.testing.assert_array_equal(open_slide(png, mpp=0.3).read_rect(0, 0, 80, 100), img)


def test_grey_rgba_16bit_images(tmp_path):
    grey = tmp_path / "g.png"
    Image.fromarray(np.full((10, 12), 77, np.uint8)).save(grey)
    rgba = tmp_path / "r.png"
    Image.fromarray(np.full((10, 12, 4), 99, np.uint8)).save(rgba)
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((10, 12), 257 * 40, np.uint16)).save(deep)
    for path, value in ((grey, 77), (rgba, 99), (deep, 40)):
        arr = open_slide(path, mpp=0.25).read_rect(0, 0, 12, 10)
        assert arr.shape == (10, 12, 3) and arr.dtype == np.uint8 and (arr == value).all(), path


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_slide(tmp_path / "missing.svs")
    corrupt = tmp_path / "c.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match=r"c\.png"):
        open_slide(corrupt, mpp=0.25)
    junk = tmp_path / "j.tiff"
    junk.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match=r"j\.tiff"):
        open_slide(junk, mpp=0.25)
    other = tmp_path / "x.abc"
    other.write_text("x")
    with pytest.raises(InputError, match="unsupported"):
        open_slide(other)
    with pytest.raises(ValueError, match="backend"):
        open_slide(other, backend="nope")
    arr = open_slide(np.zeros((5, 5, 3), np.uint8), mpp=1.0)
    assert isinstance(arr, ArraySlide)


def test_mpp_from_ome_and_inch_resolution(tmp_path, shared_data):
    img = _gradient(64, 64)
    ome = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        ome, img, tile=(32, 32), photometric="rgb", metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    )
    assert open_slide(ome).mpp == pytest.approx(0.5)
    inch = tmp_path / "i.tif"
    tifffile.imwrite(
        inch, img, tile=(32, 32), resolution=(25400 / 0.3, 25400 / 0.3), resolutionunit="INCH", metadata=None
    )
    assert open_slide(inch).mpp == pytest.approx(0.3)
    # 72 dpi is a screen default, not a scan resolution
    dpi = tmp_path / "d.tif"
    tifffile.imwrite(dpi, img, tile=(32, 32), resolution=(72, 72), resolutionunit="INCH", metadata=None)
    with pytest.raises(InputError, match="mpp"):
        open_slide(dpi)
    # the Track 2 stack stores its resolution in pixels per inch
    assert open_slide(shared_data / "slides" / "midog25_track2_stack_5.tiff").mpp == pytest.approx(
        0.248, abs=0.001
    )
