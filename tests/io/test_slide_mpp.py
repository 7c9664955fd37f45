"""``open_slide`` rejects a missing or absurd mpp (given or read from the file) with an error naming the slide."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile

from mitoscope.io.mpp import resolve_mpp
from mitoscope.io.slides import MPP_RANGE, check_mpp, open_slide
from mitoscope.io.tiff_writer import write_tiled_tiff
from mitoscope.utils.errors import InputError

RGB = np.full((64, 64, 3), 200, np.uint8)


@pytest.mark.parametrize("bad", [0.0, -0.25, math.nan, math.inf, 0.01, 10.5, 352.8, "abc", None])
def test_check_mpp_rejects_absurd_values(bad):
    with pytest.raises(InputError, match=r"slide\.tif: mpp .* not plausible"):
        check_mpp(bad, "slide.tif")


@pytest.mark.parametrize("good", [MPP_RANGE[0], 0.125, 0.25, 0.5, "0.499", MPP_RANGE[1]])
def test_check_mpp_accepts_plausible_values(good):
    assert check_mpp(good, "slide.tif") == float(good)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, 0.001, 50.0])
def test_absurd_given_mpp_names_the_slide_for_every_kind_of_source(tmp_path, bad):
    tiff = write_tiled_tiff(tmp_path / "a.tiff", RGB, mpp=0.25, tile=64, pyramid=False, compression="deflate")
    png = tmp_path / "b.png"
    from PIL import Image

    Image.fromarray(RGB).save(png)
    for source, name in ((tiff, "a.tiff"), (png, "b.png"), (RGB, "<array>")):
        with pytest.raises(InputError, match=r"not plausible") as info:
            open_slide(source, mpp=bad)
        assert name in str(info.value) and "(given)" in str(info.value)


def test_absurd_mpp_in_file_is_rejected_and_overridable(tmp_path):
    path = tmp_path / "aperio.tif"
    tifffile.imwrite(path, RGB, photometric="rgb", description="Aperio Image Library|AppMag = 20|MPP = 25.0")
    with pytest.raises(InputError, match=r"aperio\.tif: mpp 25\.0 µm/px \(read from the file\)"):
        open_slide(path)
    with pytest.warns(UserWarning, match="using the given"):
        slide = open_slide(path, mpp=0.25)
    with slide:
        assert slide.mpp == 0.25


def test_missing_mpp_in_tiff_is_an_input_error(tmp_path):
    path = tmp_path / "bare.tif"
    tifffile.imwrite(path, RGB, photometric="rgb")
    with pytest.raises(InputError, match=r"bare\.tif: no resolution \(mpp\)"):
        open_slide(path)


def test_plausible_mpp_from_file_opens(tmp_path):
    tiff = write_tiled_tiff(
        tmp_path / "ok.tiff", RGB, mpp=0.499, tile=64, pyramid=False, compression="deflate"
    )
    with open_slide(tiff) as slide:
        assert slide.mpp == pytest.approx(0.499)


def test_resolve_mpp_given_over_file_warns_and_says_why():
    with pytest.warns(UserWarning, match=r"s\.svs: the file says 0\.499 µm/px; using the given 0\.3"):
        assert resolve_mpp("s.svs", 0.499, "the Aperio metadata", 0.3) == (
            0.3,
            False,
            "as given (the file says 0.499)",
        )
    with pytest.warns(UserWarning, match=r"s\.svs: no mpp in the file; assuming 0\.25"):
        assert resolve_mpp("s.svs", 0.0, "the OpenSlide property openslide.mpp-x", 0.25) == (
            0.25,
            True,
            "as given",
        )
    with pytest.raises(InputError, match=r"s\.svs: mpp must be positive, got -1"):
        resolve_mpp("s.svs", 0.499, "the Aperio metadata", -1.0)
    with pytest.raises(InputError, match=r"s\.svs: no resolution \(mpp\)"):
        resolve_mpp("s.svs", 0.0, "the OpenSlide property openslide.mpp-x", None)
