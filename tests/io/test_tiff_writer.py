from __future__ import annotations

import numpy as np
import pytest
import tifffile

from mitoscope.io.tiff_writer import pyramid_levels, write_tiled_tiff


def _image(h: int = 600, w: int = 520) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx % 256), (yy % 256), ((xx + yy) % 256)], axis=-1).astype(np.uint8)


def test_tiled_pyramid_with_mpp_tags(tmp_path):
    path = write_tiled_tiff(tmp_path / "a.tiff", _image(), mpp=0.25, tile=128)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.tilewidth == 128
        assert page.shape == (600, 520, 3)
        assert "MPP = 0.25" in page.description
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.25)
        reduced = [p for p in tif.pages[1:]]
        assert [p.shape for p in reduced] == [(300, 260, 3), (150, 130, 3), (75, 65, 3)]
        assert all(p.subfiletype == 1 and p.is_tiled for p in reduced)


def test_lossless_roundtrip_and_no_pyramid(tmp_path):
    img = _image(300, 200)
    path = write_tiled_tiff(tmp_path / "b.tif", img, mpp=0.5, pyramid=False, compression="deflate")
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1
        np.testing.assert_array_equal(tif.pages[0].asarray(), img)


def test_grey_input_converted_and_bad_args(tmp_path):
    grey = np.full((64, 64), 7 * 257, np.uint16)
    path = write_tiled_tiff(tmp_path / "g.tiff", grey, mpp=0.25, compression="none")
    assert tifffile.imread(path).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="mpp"):
        write_tiled_tiff(tmp_path / "x.tiff", _image(), mpp=0)
    with pytest.raises(ValueError, match="compression"):
        write_tiled_tiff(tmp_path / "x.tiff", _image(), mpp=0.25, compression="gif")
    assert not (tmp_path / "x.tiff").exists()


def test_pyramid_levels_stop_at_tile():
    levels = pyramid_levels(np.zeros((1024, 512, 3), np.uint8), tile=256)
    assert [lv.shape[:2] for lv in levels] == [(1024, 512), (512, 256), (256, 128)]
