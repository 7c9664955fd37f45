"""Stain tools: colour deconvolution to HED (Ruifrok & Johnston) and HED stain augmentation (Tellez et al.).

The numpy functions follow ``skimage.color.rgb2hed`` / ``hed2rgb`` exactly; :func:`rgb_to_hed_torch` and
:func:`hed_to_rgb_torch` are the same transforms written in torch, so that models can compute HED channels
differentiably on the fly and test-time augmentation can re-stain whole batches (:func:`stain_views`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from skimage.color import hed2rgb, hed_from_rgb, rgb2hed, rgb_from_hed

_LOG_ADJUST = float(np.log(1e-6))

#: Per-view (haematoxylin, eosin, DAB) scale factors of the stain test-time augmentation: each stain 20 %
#: lighter and 20 % darker, the ends of the multiplicative range of the recipe's training augmentation
#: (``hed_jitter`` 0.2). The unchanged patch is the first view.
STAIN_TTA_SCALES: tuple[tuple[float, float, float], ...] = (
    (0.8, 1.0, 1.0),
    (1.2, 1.0, 1.0),
    (1.0, 0.8, 1.0),
    (1.0, 1.2, 1.0),
)


def _as_rgb01(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr.astype(np.float64), 0.0, 1.0)
    raise TypeError(f"expected a uint8 or float RGB image, got dtype {arr.dtype}")


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and DAB optical densities of an RGB image (``skimage.color.rgb2hed``).

    Args:
        rgb: ``(H, W, 3)`` uint8 (0–255) or float (0–1) RGB.

    Returns:
        float64 ``(H, W, 3)``, non-negative; channel 0 is haematoxylin.

    Examples:
        >>> hed = rgb_to_hed(np.full((2, 2, 3), 255, np.uint8))
        >>> float(hed.max())
        0.0
    """
    return rgb2hed(_as_rgb01(rgb))


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hed`: uint8 RGB.

    Examples:
        >>> img = np.array([[[200, 120, 180]]], np.uint8)
        >>> int(np.abs(hed_to_rgb(rgb_to_hed(img)).astype(int) - img).max()) <= 1
        True
    """
    rgb = hed2rgb(np.asarray(hed, dtype=np.float64))
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def hematoxylin_channel(rgb: np.ndarray) -> np.ndarray:
    """The haematoxylin optical density ``(H, W)`` (high on nuclei and chromatin).

    Examples:
        >>> img = np.zeros((4, 4, 3), np.uint8); img[..., :] = (240, 230, 240); img[1, 1] = (60, 30, 110)
        >>> h = hematoxylin_channel(img)
        >>> bool(h[1, 1] > h[0, 0])
        True
    """
    return rgb_to_hed(rgb)[..., 0]


class HEDJitter:
    """HED stain augmentation (Tellez et al. 2018): each stain channel becomes ``α·c + β``.

    ``α ~ U(1 - sigma, 1 + sigma)`` and ``β ~ U(-bias, bias)`` are drawn per channel and per call from the
    generator passed to the call (else the one given at construction), so results are reproducible with a
    seeded generator.

    Args:
        sigma: half-width of the multiplicative perturbation.
        bias: half-width of the additive perturbation (in optical-density units).
        rng: default generator (``np.random.default_rng()`` when omitted).

    Examples:
        >>> img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        >>> a = HEDJitter(rng=np.random.default_rng(1))(img)
        >>> b = HEDJitter(rng=np.random.default_rng(1))(img)
        >>> a.dtype, a.shape, bool((a == b).all())
        (dtype('uint8'), (8, 8, 3), True)
    """

    def __init__(
        self, sigma: float = 0.05, bias: float = 0.05, rng: np.random.Generator | None = None
    ) -> None:
        if sigma < 0 or bias < 0:
            raise ValueError(f"sigma and bias must be >= 0, got {sigma}, {bias}")
        self.sigma = float(sigma)
        self.bias = float(bias)
        self.rng = rng

    def __call__(self, rgb: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return a stain-perturbed uint8 copy of ``rgb``."""
        gen = rng or self.rng or np.random.default_rng()
        alpha = gen.uniform(1 - self.sigma, 1 + self.sigma, size=3)
        beta = gen.uniform(-self.bias, self.bias, size=3)
        hed = rgb_to_hed(rgb)
        return hed_to_rgb(hed * alpha + beta)

    def __repr__(self) -> str:
        return f"HEDJitter(sigma={self.sigma}, bias={self.bias})"


def rgb_to_hed_torch(rgb: torch.Tensor) -> torch.Tensor:
    """Differentiable :func:`rgb_to_hed` for float tensors ``(N, 3, H, W)`` in [0, 1].

    Examples:
        >>> img = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
        >>> t = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
        >>> out = rgb_to_hed_torch(t)[0].permute(1, 2, 0).numpy()
        >>> bool(np.allclose(out, rgb_to_hed(img)))
        True
    """
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W), got {tuple(rgb.shape)}")
    matrix = torch.as_tensor(hed_from_rgb, dtype=rgb.dtype, device=rgb.device)
    od = torch.log(rgb.clamp(1e-6, 1.0)) / _LOG_ADJUST
    hed = torch.einsum("nchw,cd->ndhw", od, matrix)
    return hed.clamp_min(0.0)


def hed_to_rgb_torch(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed_torch` (``skimage.color.hed2rgb``): float RGB in [0, 1], ``(N, 3, H, W)``.

    Examples:
        >>> hed = np.random.default_rng(0).uniform(0.0, 0.3, (4, 5, 3))
        >>> out = hed_to_rgb_torch(torch.from_numpy(hed).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        >>> bool(np.allclose(out, hed2rgb(hed)))
        True
    """
    if hed.ndim != 4 or hed.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W), got {tuple(hed.shape)}")
    matrix = torch.as_tensor(rgb_from_hed, dtype=hed.dtype, device=hed.device)
    log_rgb = torch.einsum("nchw,cd->ndhw", hed * _LOG_ADJUST, matrix)
    return torch.exp(log_rgb).clamp(0.0, 1.0)


def stain_views(
    pixels: torch.Tensor, scales: Sequence[Sequence[float]] = STAIN_TTA_SCALES
) -> list[torch.Tensor]:
    """A uint8 batch ``(N, H, W, 3)`` and its re-stained copies: each stain's optical density times a scale.

    The first view is ``pixels`` itself; view ``k + 1`` multiplies the (haematoxylin, eosin, DAB) densities by
    ``scales[k]`` (the deterministic counterpart of :class:`HEDJitter` with no additive term; the same result
    as ``hed_to_rgb(rgb_to_hed(image) * scale)`` up to rounding).

    Examples:
        >>> img = np.array([[[200, 120, 180], [90, 60, 150]]], np.uint8)
        >>> views = stain_views(torch.from_numpy(img)[None], [(1.2, 1.0, 1.0)])
        >>> expected = hed_to_rgb(rgb_to_hed(img) * np.array([1.2, 1.0, 1.0]))
        >>> len(views), int(np.abs(views[1][0].numpy().astype(int) - expected).max()) <= 1
        (2, True)
    """
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(
            f"stain_views needs uint8 pixels (N, H, W, 3), got {pixels.dtype} {tuple(pixels.shape)}"
        )
    if not scales:
        return [pixels]
    hed = rgb_to_hed_torch(pixels.permute(0, 3, 1, 2).float() / 255.0)
    views = [pixels]
    for scale in scales:
        factor = torch.as_tensor(scale, dtype=hed.dtype, device=hed.device).view(1, 3, 1, 1)
        rgb = hed_to_rgb_torch(hed * factor)
        views.append((rgb * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous())
    return views
