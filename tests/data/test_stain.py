"""Stain tools: HED deconvolution, haematoxylin channel, HED jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2hed

from mitoscope.data.stain import (
    STAIN_TTA_SCALES,
    HEDJitter,
    hed_to_rgb,
    hematoxylin_channel,
    rgb_to_hed,
    rgb_to_hed_torch,
    stain_views,
)


def _img(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_rgb_to_hed_matches_skimage_and_inverts() -> None:
    img = _img()
    np.testing.assert_allclose(rgb_to_hed(img), rgb2hed(img))
    np.testing.assert_allclose(rgb_to_hed(img.astype(np.float32) / 255), rgb2hed(img), atol=1e-6)
    # H&E-like colours (non-negative stain amounts, no DAB) round-trip up to rounding
    hed = np.random.default_rng(1).uniform(0, 0.15, (16, 16, 3))
    hed[..., 2] = 0
    he_img = hed_to_rgb(hed)
    assert np.abs(hed_to_rgb(rgb_to_hed(he_img)).astype(int) - he_img).max() <= 1


def test_hematoxylin_is_high_on_nuclei_colour() -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (60, 40, 130)  # haematoxylin blue-purple
    img[0, 1] = (235, 150, 190)  # eosin pink
    img[1] = 245
    h = hematoxylin_channel(img)
    assert h[0, 0] > max(h[0, 1], h[1, 0]) + 0.05


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="RGB"):
        rgb_to_hed(np.zeros((4, 4), np.uint8))
    with pytest.raises(TypeError, match="dtype"):
        rgb_to_hed(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ValueError, match=">= 0"):
        HEDJitter(sigma=-0.1)


def test_hed_jitter_is_seeded_and_bounded() -> None:
    img = _img(1)
    a = HEDJitter(0.05, 0.05)(img, np.random.default_rng(3))
    b = HEDJitter(0.05, 0.05)(img, np.random.default_rng(3))
    c = HEDJitter(0.05, 0.05)(img, np.random.default_rng(4))
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    same = HEDJitter(0.0, 0.0)(img, np.random.default_rng(0))
    np.testing.assert_array_equal(same, hed_to_rgb(rgb_to_hed(img)))
    strong = HEDJitter(0.5, 0.2)(img, np.random.default_rng(0))
    assert np.abs(strong.astype(int) - img).mean() > np.abs(a.astype(int) - img).mean()


def test_torch_hed_matches_numpy_and_is_differentiable() -> None:
    img = _img(2)
    t = (torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255).requires_grad_(True)
    out = rgb_to_hed_torch(t)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).detach().numpy(), rgb_to_hed(img), atol=1e-10)
    out.sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()


def test_stain_views_rescale_each_stain_like_the_numpy_round_trip() -> None:
    images = np.stack([_img(3), _img(4)])
    views = stain_views(torch.from_numpy(images))
    assert len(views) == 1 + len(STAIN_TTA_SCALES)
    assert torch.equal(views[0], torch.from_numpy(images))
    for view, scale in zip(views[1:], STAIN_TTA_SCALES, strict=True):
        assert view.dtype == torch.uint8 and view.shape == images.shape
        for image, got in zip(images, view.numpy(), strict=True):
            expected = hed_to_rgb(rgb_to_hed(image) * np.asarray(scale))
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    # darker haematoxylin: a haematoxylin-coloured pixel absorbs more
    nucleus = torch.tensor([[[[90, 60, 150]]]], dtype=torch.uint8)
    lighter, darker = stain_views(nucleus, [(0.8, 1.0, 1.0), (1.2, 1.0, 1.0)])[1:]
    assert int(darker.sum()) < int(nucleus.sum()) < int(lighter.sum())
    assert stain_views(nucleus, [])[0] is nucleus
    with pytest.raises(ValueError, match="uint8"):
        stain_views(nucleus.float())
