"""What a slide says about itself (reader, µm/px and its source, levels), thumbnails of any size, clear errors on
truncated files, and writing any slide as a pyramidal TIFF tile by tile."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from mitoscope.io import slide_base
from mitoscope.io.openslide_slide import openslide_available
from mitoscope.io.slide_base import ArraySlide
from mitoscope.io.slides import looks_like_slide, open_slide
from mitoscope.io.tiff_writer import write_slide_tiff, write_tiled_tiff
from mitoscope.utils.errors import InputError


def _gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 251, yy % 241, (xx // 7 + yy // 5) % 256], axis=-1).astype(np.uint8)


def test_real_svs_says_where_its_mpp_comes_from(shared_data):
    with open_slide(shared_data / "slides" / "cmu_small_region.svs") as slide:
        assert (slide.backend, slide.file_format) == ("tifffile", "Aperio SVS")
        assert slide.mpp_source == "from the Aperio metadata"
        assert slide.level_dimensions == [(2220, 2967)] and slide.level_downsamples == [1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_slide(shared_data / "slides" / "cmu_small_region.svs", mpp=0.5) as slide:
            assert slide.mpp == 0.5 and slide.mpp_source == "as given (the file says 0.499)"


@pytest.mark.skipif(not openslide_available(), reason="openslide not installed")
def test_openslide_levels_and_mpp_source(shared_data, tmp_path):
    with open_slide(shared_data / "slides" / "cmu_small_region.svs", backend="openslide") as slide:
        assert slide.backend == "openslide" and slide.file_format == "aperio (OpenSlide)"
        assert slide.mpp_source == "from the OpenSlide property openslide.mpp-x"
        assert slide.level_dimensions[0] == (2220, 2967) and slide.level_downsamples[0] == 1.0
    path = write_tiled_tiff(tmp_path / "p.tiff", _gradient(1000, 700), mpp=0.25, tile=128)
    with open_slide(path) as a, open_slide(path, backend="openslide") as b:
        assert a.level_dimensions == b.level_dimensions
        assert a.level_downsamples == pytest.approx(b.level_downsamples, rel=0.01)


def test_mpp_sources_of_tiff_flavours_and_plain_images(tmp_path):
    img = _gradient(64, 64)
    ome = tmp_path / "a.ome.tif"
    tifffile.imwrite(ome, img, tile=(32, 32), photometric="rgb", metadata={"PhysicalSizeX": 0.5})
    with open_slide(ome) as s:
        assert s.mpp_source == "from the OME-XML metadata" and s.file_format == "OME-TIFF"
    tags = tmp_path / "t.tif"
    tifffile.imwrite(tags, img, tile=(32, 32), resolution=(40000, 40000), resolutionunit="CENTIMETER",
                     metadata=None)  # fmt: skip
    with open_slide(tags) as s:
        assert (s.mpp, s.mpp_source, s.file_format) == (0.25, "from the TIFF resolution tags", "TIFF")
    png = tmp_path / "p.png"
    Image.fromarray(img).save(png)
    with pytest.warns(UserWarning, match="no resolution"):
        s = open_slide(png)
    assert s.backend == "pil" and s.mpp_source.startswith("assumed") and "--mpp" in s.mpp_source
    assert open_slide(png, mpp=0.5).mpp_source == "as given"
    assert ArraySlide(img).backend == "array" and ArraySlide(img).mpp_source == "as given"


def test_looks_like_slide(tmp_path):
    assert looks_like_slide("x.svs") and looks_like_slide("a.ome.tiff") and looks_like_slide("b.PNG")
    assert not looks_like_slide("labels.csv") and not looks_like_slide(tmp_path)
    magic = tmp_path / "scan.raw"
    magic.write_bytes(b"II*\x00" + bytes(16))
    assert looks_like_slide(magic)


def test_thumbnail_of_a_slide_without_pyramid_is_read_block_by_block(monkeypatch):
    img = _gradient(900, 1300)
    whole = ArraySlide(img, mpp=0.25).thumbnail(200)
    reads: list[tuple[int, int]] = []

    class Counting(ArraySlide):
        def _read_level0(self, x, y, width, height, downsample):
            reads.append((width, height))
            return super()._read_level0(x, y, width, height, downsample)

    monkeypatch.setattr(slide_base, "THUMBNAIL_BLOCK_PX", 300 * 300)
    blocks = Counting(img, mpp=0.25).thumbnail(200)
    assert blocks.shape == whole.shape == (138, 200, 3)
    assert len(reads) > 4 and max(w * h for w, h in reads) <= 300 * 300 * 1.1
    assert np.abs(blocks.astype(int) - whole.astype(int)).mean() < 3


def test_truncated_and_foreign_files_fail_in_one_line(shared_data, tmp_path, capfd):
    svs = (shared_data / "slides" / "cmu_small_region.svs").read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(svs[:300_000])  # the Aperio SVS keeps its directories at the end
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        open_slide(cut)
    assert "\n" not in str(err.value)
    written = write_tiled_tiff(tmp_path / "w.tiff", _gradient(1024, 1024), mpp=0.25, compression="deflate")
    data = written.read_bytes()
    tail = tmp_path / "tail.tiff"
    tail.write_bytes(data[: len(data) // 2])  # directories first, tiles cut
    with open_slide(tail) as slide, pytest.raises(InputError, match="the file is truncated: tile"):
        slide.read_rect(0, 0, 1024, 1024)
    fake = tmp_path / "fake.svs"
    fake.write_text("not a slide")
    with pytest.raises(InputError, match="not a TIFF file"):
        open_slide(fake)
    assert "invalid" not in capfd.readouterr().err  # tifffile's own log lines are not printed


def test_write_slide_tiff_round_trip(tmp_path):
    img = _gradient(700, 1000)
    path = write_slide_tiff(tmp_path / "s.tiff", ArraySlide(img, mpp=0.5), tile=256, compression="deflate")
    with open_slide(path) as s:
        assert s.dimensions == (1000, 700) and s.mpp == 0.5 and s.mpp_source == "from the Aperio metadata"
        assert s.level_dimensions == [(1000, 700), (500, 350), (250, 175)]
        np.testing.assert_array_equal(s.read_rect(0, 0, 1000, 700), img)
        low = s.read_rect(0, 0, 250, 175, mpp=2.0)
        ref = ArraySlide(img, mpp=0.5).read_rect(0, 0, 250, 175, mpp=2.0)
        assert np.abs(low.astype(int) - ref.astype(int)).mean() < 2
    with pytest.raises(ValueError, match="multiple of 16"):
        write_slide_tiff(tmp_path / "x.tiff", ArraySlide(img), tile=100)
    assert not (tmp_path / "x.tiff").exists()
