"""The slide thumbnail with the tissue outlined and the detector's tiles, written atomically."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.inference.slide_info import DETECT_TILES
from mitoscope.io.slide_base import ArraySlide
from mitoscope.report.plots import TISSUE_COLOR, _hex_to_rgb
from mitoscope.report.thumbnail import image_format, slide_thumbnail, write_image
from mitoscope.utils.errors import InputError


def tissue_slide() -> ArraySlide:
    img = np.full((1600, 2400, 3), 240, np.uint8)
    img[400:1200, 600:1800] = (200, 100, 170)
    return ArraySlide(img, mpp=0.5, path="t.png")


def test_outline_follows_the_tissue_and_tiles_cover_it() -> None:
    slide = tissue_slide()
    plain = slide_thumbnail(slide, max_size=600, outline=False)
    outlined = slide_thumbnail(slide, max_size=600)
    assert plain.shape == outlined.shape == (400, 600, 3)
    blue = np.all(outlined == _hex_to_rgb(TISSUE_COLOR), axis=2)
    ys, xs = np.nonzero(blue)
    # The tissue block is rows 100-300, columns 150-450 of the thumbnail; the line runs just inside it.
    assert abs(ys.min() - 100) <= 2 and abs(ys.max() - 299) <= 2 and abs(xs.min() - 150) <= 2
    assert not blue[200, 300] and not blue[20, 20]
    with_tiles = slide_thumbnail(slide, max_size=600, tiles=DETECT_TILES)
    changed = np.any(with_tiles != outlined, axis=2)
    assert changed[100:300, 150:450].mean() > 0.02 and not changed[:80, :100].any()  # tiles only on tissue


def test_write_image_formats_and_atomicity(tmp_path) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    for name in ("a.png", "b.jpg", "c.webp"):
        assert write_image(tmp_path / name, img).is_file()
    with pytest.raises(InputError, match=r"x\.gif: write the image as one of"):
        image_format(tmp_path / "x.gif")
    with pytest.raises(ValueError):
        slide_thumbnail(tissue_slide(), max_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "c.webp"]
