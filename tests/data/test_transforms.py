"""Patch transforms: joint geometry, determinism, normalisation, TTA views."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, laplace

from mitoscope.data.transforms import (
    PatchTransform,
    build_patch_transform,
    center_crop,
    coarsen,
    denormalize,
    jitter_sharpness,
    sharpen,
    tta_views,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: a focus measure, higher is sharper."""
    return float(laplace(image.astype(np.float32).mean(-1)).var())


def _patch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    mask = np.zeros((128, 128), bool)
    mask[40:70, 50:90] = True
    img[mask] = (40, 20, 90)  # a dark "figure" exactly under the mask
    return img, mask


def test_eval_is_deterministic_resize_and_normalise() -> None:
    img, mask = _patch()
    tf = build_patch_transform(train=False, size=64, mean=MEAN, std=STD)
    x, m = tf(img, mask)
    x2, _ = tf(img, mask, np.random.default_rng(5))
    assert x.shape == (3, 64, 64) and m.shape == (1, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x, x2)
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    same = build_patch_transform(train=False, size=128, mean=MEAN, std=STD)(img)[0]
    torch.testing.assert_close(same, torch.from_numpy((img / 255.0 - 0.5) / 0.5).permute(2, 0, 1).float())
    assert build_patch_transform(train=False, size=128, mean=MEAN, std=STD)(img)[1] is None


def test_train_is_seeded_and_varies() -> None:
    img, mask = _patch()
    tf = build_patch_transform(train=True, size=64, mean=MEAN, std=STD)
    a = tf(img, mask, np.random.default_rng(1))
    b = tf(img, mask, np.random.default_rng(1))
    c = tf(img, mask, np.random.default_rng(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("seed", range(6))
def test_mask_follows_the_geometry(seed) -> None:
    """After flips/rotations the mask still covers the dark figure (colour jitter off)."""
    img, mask = _patch()
    tf = build_patch_transform(train=True, size=128, mean=MEAN, std=STD, color_jitter=None, hed_jitter=None)
    x, m = tf(img, mask, np.random.default_rng(seed))
    dark = denormalize(x, MEAN, STD).astype(int).sum(-1) < 200
    inside = m[0].numpy() > 0.5
    assert dark[inside].mean() > 0.9
    assert abs(int(inside.sum()) - int(mask.sum())) < 0.1 * mask.sum()


def _only(**augment: float) -> PatchTransform:
    """A 128 px training transform with flips and the given augmentation only (no rotation, no colour)."""
    return build_patch_transform(
        train=True, size=128, mean=MEAN, std=STD, rotate=False, color_jitter=None, hed_jitter=None, **augment
    )


def test_scale_jitter_zooms_image_and_mask_together() -> None:
    """Random zoom about the centre: the figure's area scales by z² within the bounds, both ways, mask on it."""
    img, mask = _patch()
    tf = _only(scale_jitter=0.5)
    ratios = []
    for seed in range(12):
        x, m = tf(img, mask, np.random.default_rng(seed))
        inside = m[0].numpy() > 0.5
        dark = denormalize(x, MEAN, STD).astype(int).sum(-1) < 200
        assert dark[inside].mean() > 0.9
        ratios.append(inside.sum() / mask.sum())
    assert 1 / 1.5**2 - 0.05 < min(ratios) < 0.95 and 1.05 < max(ratios) < 1.5**2 + 0.1
    with pytest.raises(ValueError, match="scale_jitter"):
        build_patch_transform(train=True, size=64, mean=MEAN, std=STD, scale_jitter=1.0)


def test_sharpness_blurs_and_sharpens_within_its_bounds() -> None:
    """Random gain on the detail above a 1 px Gaussian: blurs and sharpens, within the gain bounds."""
    noise = np.random.default_rng(0).normal(128, 60, (128, 128, 3))
    img = np.clip(gaussian_filter(noise, (1.5, 1.5, 0)), 0, 255).astype(np.uint8)  # smooth, never clipped

    ratios = [
        laplacian_variance(jitter_sharpness(img, 1.5, np.random.default_rng(seed))) / laplacian_variance(img)
        for seed in range(16)
    ]
    assert min(ratios) < 0.8 and max(ratios) > 1.5
    assert min(ratios) > 0.1 and max(ratios) < 2.5**2 + 0.5
    assert (
        laplacian_variance(sharpen(img, 2.5))
        > laplacian_variance(img)
        > laplacian_variance(sharpen(img, 0.4))
    )
    tf = _only(sharpness=1.5)
    assert tf(img, None, np.random.default_rng(3))[0].shape == (3, 128, 128)
    with pytest.raises(ValueError, match="sharpness"):
        build_patch_transform(train=True, size=64, mean=MEAN, std=STD, sharpness=-0.5)


def test_low_resolution_coarsens_some_patches_and_keeps_their_size() -> None:
    """A coarser scan read back at the same size loses detail; the probability decides how many patches."""
    noise = np.random.default_rng(0).normal(128, 60, (128, 128, 3))
    img = np.clip(gaussian_filter(noise, (1.0, 1.0, 0)), 0, 255).astype(np.uint8)
    for factor in (1.5, 2.5):
        out = coarsen(img, factor)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert laplacian_variance(out) < 0.6 * laplacian_variance(img)
    assert laplacian_variance(coarsen(img, 2.5)) < laplacian_variance(coarsen(img, 1.5))
    always, never = _only(low_resolution=1.0), _only(low_resolution=0.0)
    sharp = laplacian_variance(denormalize(never(img, None, np.random.default_rng(1))[0], MEAN, STD))
    soft = [
        laplacian_variance(denormalize(always(img, None, np.random.default_rng(s))[0], MEAN, STD))
        for s in range(4)
    ]
    assert max(soft) < 0.6 * sharp
    half = _only(low_resolution=0.5)
    coarse = [
        laplacian_variance(denormalize(half(img, None, np.random.default_rng(s))[0], MEAN, STD)) < 0.6 * sharp
        for s in range(32)
    ]
    assert 4 < sum(coarse) < 28
    with pytest.raises(ValueError, match="low_resolution"):
        build_patch_transform(train=True, size=64, mean=MEAN, std=STD, low_resolution=1.5)


def test_crop_and_colour_options() -> None:
    img, mask = _patch()
    tf = build_patch_transform(train=False, size=32, mean=MEAN, std=STD, crop=64)
    x, m = tf(img, mask)
    assert x.shape == (3, 32, 32) and m.shape == (1, 32, 32)
    jit = build_patch_transform(
        train=True, size=64, mean=MEAN, std=STD, rotate=False, color_jitter={"brightness": 0.3, "hue": 0.0}
    )
    assert jit.color_jitter is not None and jit.color_jitter.brightness == 0.3
    assert jit(img, mask, np.random.default_rng(0))[0].shape == (3, 64, 64)
    assert center_crop(np.zeros((10, 12)), 4).shape == (4, 4)


def test_bad_inputs_raise() -> None:
    img, mask = _patch()
    tf = build_patch_transform(train=False, size=32, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="mask shape"):
        tf(img, mask[:10])
    with pytest.raises(TypeError, match="uint8"):
        tf(img.astype(np.float32))
    with pytest.raises(ValueError, match="RGB"):
        tf(img[..., 0])
    with pytest.raises(ValueError, match="mean and std"):
        build_patch_transform(train=False, size=32, mean=(0.5,), std=(0.5,))


def test_transform_pickles_for_workers() -> None:
    tf = build_patch_transform(train=True, size=32, mean=MEAN, std=STD)
    clone = pickle.loads(pickle.dumps(tf))
    img, mask = _patch()
    a = tf(img, mask, np.random.default_rng(0))[0]
    b = clone(img, mask, np.random.default_rng(0))[0]
    assert torch.equal(a, b)


def test_tta_views_are_the_dihedral_group() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = tta_views(x)
    assert len(views) == 8 and torch.equal(views[0], x)
    keys = {tuple(v[0, 0].flatten().tolist()) for v in views}
    assert len(keys) == 8
    assert all(v.shape == x.shape for v in views)
    with pytest.raises(ValueError):
        tta_views(x[0])
