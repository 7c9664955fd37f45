"""Tissue masks on made-up thumbnails with known tissue, and on the real SVS crop."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2, tissue_mask
from mitoscope.io.slide_base import ArraySlide


def _he_texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pink = np.array([225, 150, 200], float)
    purple = np.array([120, 70, 160], float)
    mix = rng.random(shape)[..., None]
    img = pink * (1 - mix) + purple * mix + rng.normal(0, 8, (*shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _glass(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(238, 4, (*shape, 3)), 0, 255).astype(np.uint8)


def test_tissue_on_white_glass():
    img = _glass((120, 160))
    img[20:80, 30:110] = _he_texture((60, 80))
    mask = tissue_mask(img)
    truth = np.zeros((120, 160), bool)
    truth[20:80, 30:110] = True
    assert (mask == truth).mean() > 0.98
    assert mask[50, 70] and not mask[5, 5]


def test_tissue_on_black_background():
    img = np.zeros((100, 100, 3), np.uint8)
    img += np.random.default_rng(3).integers(0, 12, img.shape, dtype=np.uint8)  # noisy black
    img[30:70, 30:70] = _he_texture((40, 40))
    mask = tissue_mask(img)
    assert mask[30:70, 30:70].mean() > 0.98
    assert mask.sum() < 1.05 * 40 * 40


def test_all_tissue_is_not_split_in_two_by_otsu():
    mask = tissue_mask(_he_texture((80, 80)))
    assert mask.mean() > 0.99


def test_all_glass_is_empty():
    assert tissue_mask(_glass((80, 80))).sum() == 0


def test_dark_grey_dense_tissue_counts_by_optical_density():
    img = _glass((60, 60))
    img[10:50, 10:50] = 40  # dense, grey, but not black padding
    mask = tissue_mask(img)
    assert mask[10:50, 10:50].mean() > 0.98


def test_small_specks_removed_and_holes_filled():
    img = _glass((200, 200))
    img[50:150, 50:150] = _he_texture((100, 100))
    img[95:99, 95:99] = 240  # a 16 px hole inside tissue
    img[10:12, 10:12] = (150, 60, 160)  # a 4 px speck on glass
    mask = tissue_mask(img, closing_radius=0)
    assert mask[96, 96]
    assert not mask[10, 10]


def test_area_mm2():
    assert tissue_area_mm2(np.ones((250, 250), bool), 4.0) == pytest.approx(1.0)
    assert tissue_area_mm2(np.zeros((10, 10), bool), 4.0) == 0.0
    with pytest.raises(ValueError):
        tissue_area_mm2(np.ones((2, 2), bool), 0.0)


def test_slide_tissue_mask_area_matches_truth():
    img = _glass((1600, 1200))
    img[200:1000, 100:900] = _he_texture((800, 800))
    slide = ArraySlide(img, mpp=0.5)
    mask, mask_mpp = slide_tissue_mask(slide, target_mpp=8.0, min_size=64)
    assert mask_mpp == pytest.approx(8.0, rel=0.01)
    truth_mm2 = 800 * 800 * 0.5**2 / 1e6
    assert tissue_area_mm2(mask, mask_mpp) == pytest.approx(truth_mm2, rel=0.08)


def test_slide_tissue_mask_small_region_uses_finer_resolution():
    slide = ArraySlide(_he_texture((300, 200)), mpp=0.25)
    mask, mask_mpp = slide_tissue_mask(slide)
    assert max(mask.shape) >= 256 or mask_mpp == pytest.approx(0.25)
    assert mask.mean() > 0.99


@pytest.mark.slow
def test_real_svs_has_a_plausible_tissue_fraction(shared_data):
    from mitoscope.io.slides import open_slide

    with open_slide(shared_data / "slides" / "cmu_small_region.svs") as slide:
        mask, mask_mpp = slide_tissue_mask(slide)
    # the CMU-1 crop is a strip of skin on white glass (about a third of the area, by eye)
    assert 0.25 < mask.mean() < 0.5
    assert 0.4 < tissue_area_mm2(mask, mask_mpp) < 0.8
