"""Joint image/mask patch transforms for the classifiers, and the 8 dihedral views for test-time augmentation.

A transform takes ``(image, mask, rng)`` — uint8 RGB ``(H, W, 3)``, an optional ``(H, W)`` mask and a numpy
generator — and returns ``(tensor, mask_tensor)``: the normalised float image ``(3, size, size)`` and the mask
``(1, size, size)`` (float 0/1) or ``None``. Geometric operations are applied to both; colour operations only to
the image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from skimage.transform import rotate
from torch import Tensor

from mitoscope.data.stain import HEDJitter

PatchTransformFn = Callable[
    [np.ndarray, "np.ndarray | None", "np.random.Generator | None"], tuple[Tensor, "Tensor | None"]
]


@dataclass(frozen=True)
class ColorJitter:
    """Random brightness, contrast, saturation (factors in ``[1 - x, 1 + x]``) and hue shift (``±hue``, turns).

    Examples:
        >>> img = np.full((4, 4, 3), 128, np.uint8)
        >>> ColorJitter(0.0, 0.0, 0.0, 0.0)(img, np.random.default_rng(0)).tolist() == img.tolist()
        True
    """

    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.025

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Jitter a uint8 RGB image."""
        x = image.astype(np.float32) / 255.0
        if self.brightness:
            x = x * rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = float(_gray(x).mean())
            x = (x - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.saturation:
            gray = _gray(x)[..., None]
            x = gray + (x - gray) * rng.uniform(1 - self.saturation, 1 + self.saturation)
        if self.hue:
            x = x @ _hue_matrix(rng.uniform(-self.hue, self.hue)).T
        return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _hue_matrix(turns: float) -> np.ndarray:
    """RGB → RGB matrix rotating the hue by ``turns`` (a rotation of the chroma plane in YIQ space)."""
    angle = 2.0 * np.pi * float(turns)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).astype(np.float32)


def _gray(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _color_jitter(spec: float | Mapping[str, float] | ColorJitter | None) -> ColorJitter | None:
    if spec is None or spec is False:
        return None
    if isinstance(spec, ColorJitter):
        return spec
    if isinstance(spec, Mapping):
        return ColorJitter(**{k: float(v) for k, v in spec.items()})
    strength = float(spec)
    if strength <= 0:
        return None
    return ColorJitter(strength, strength, strength, strength / 4)


def _check_inputs(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
        mask = mask > 0
    return image, mask


def sharpen(image: np.ndarray, gain: float) -> np.ndarray:
    """``image + (gain - 1) * (image - G(image))`` for a uint8 RGB image, ``G`` a Gaussian blur of sigma 1 px:
    ``gain < 1`` blurs (0 gives ``G`` itself), ``gain > 1`` is an unsharp mask.

    Examples:
        >>> flat = np.full((8, 8, 3), 90, np.uint8)
        >>> bool((sharpen(flat, 2.5) == flat).all())
        True
    """
    from scipy.ndimage import gaussian_filter

    x = image.astype(np.float32)
    detail = x - gaussian_filter(x, sigma=(1.0, 1.0, 0.0), mode="reflect")
    return np.clip(np.round(x + (gain - 1.0) * detail), 0, 255).astype(np.uint8)


def jitter_sharpness(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """:func:`sharpen` with a gain drawn log-uniformly from ``[1/(1+strength), 1+strength]``: blurs or sharpens at
    random, for the spread of focus and compression between scanners (AtNorM-MD patches are about 3x sharper than
    AMi-Br's by the variance of the Laplacian, a focus measure).
    """
    bound = np.log1p(strength)
    return sharpen(image, float(np.exp(rng.uniform(-bound, bound))))


LOW_RESOLUTION_FACTORS = (1.5, 2.5)


def coarsen(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` as a scanner ``factor`` times coarser would give it, read back at the same size: shrunk
    (antialiased bilinear) and enlarged again (bilinear), like a 20x slide read at 40x's 0.25 µm/px.

    Examples:
        >>> img = np.zeros((32, 32, 3), np.uint8); img[::2] = 255
        >>> coarsen(img, 2.0).shape, int(coarsen(img, 2.0).std()) < int(img.std())
        ((32, 32, 3), True)
    """
    from PIL import Image

    h, w = image.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    pil = Image.fromarray(np.ascontiguousarray(image)).resize(
        small, Image.Resampling.BILINEAR, reducing_gap=None
    )
    return np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR))


def center_crop(
    array: np.ndarray,
    size: int,
    *,
    pad_mode: Literal["constant", "edge", "reflect", "symmetric"] = "constant",
) -> np.ndarray:
    """The central ``size × size`` region, padded (``np.pad`` ``pad_mode``: zeros by default) when the array is smaller.

    Examples:
        >>> center_crop(np.arange(16).reshape(4, 4), 2).tolist()
        [[5, 6], [9, 10]]
        >>> int(center_crop(np.ones((2, 2)), 4).sum())
        4
        >>> int(center_crop(np.ones((2, 2)), 4, pad_mode="reflect").sum())
        16
    """
    h, w = array.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (array.ndim - 2)
        array = np.pad(array, pad, mode=pad_mode)
        h, w = array.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return array[top : top + size, left : left + size]


def resize_uint8(image: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """Resize a uint8 ``(H, W[, 3])`` array to ``size × size`` with PIL: bilinear (antialiased when shrinking)
    or nearest. Much cheaper than ``skimage.transform.resize`` (float64 scipy zoom) on the data path.

    Examples:
        >>> resize_uint8(np.zeros((128, 96, 3), np.uint8), 224).shape
        (224, 224, 3)
        >>> resize_uint8(np.eye(4, dtype=np.uint8), 8, nearest=True)[:2, :4].tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0]]
    """
    from PIL import Image

    if image.dtype != np.uint8:
        raise TypeError(f"resize_uint8 needs uint8, got {image.dtype}")
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.array(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), method))  # writable


class PatchTransform:
    """The callable :func:`build_patch_transform` returns (picklable, for DataLoader workers)."""

    def __init__(
        self,
        *,
        train: bool,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        rotate: bool = True,
        max_angle: float = 15.0,
        color_jitter: ColorJitter | None = None,
        hed_jitter: HEDJitter | None = None,
        crop: int | None = None,
        scale_jitter: float = 0.0,
        sharpness: float = 0.0,
        low_resolution: float = 0.0,
        normalize: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not 0 <= scale_jitter < 1:
            raise ValueError(f"scale_jitter must be in [0, 1), got {scale_jitter}")
        if sharpness < 0:
            raise ValueError(f"sharpness must be >= 0, got {sharpness}")
        if not 0 <= low_resolution <= 1:
            raise ValueError(f"low_resolution must be a probability in [0, 1], got {low_resolution}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {mean}, {std}")
        self.train = train
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.rotate = rotate
        self.max_angle = float(max_angle)
        self.color_jitter = color_jitter
        self.hed_jitter = hed_jitter
        self.crop = crop
        self.scale_jitter = float(scale_jitter)
        self.sharpness = float(sharpness)
        self.low_resolution = float(low_resolution)
        self.normalize = normalize

    def __repr__(self) -> str:
        return (
            f"PatchTransform(train={self.train}, size={self.size}, crop={self.crop}, rotate={self.rotate}, "
            f"max_angle={self.max_angle}, scale_jitter={self.scale_jitter}, sharpness={self.sharpness}, "
            f"low_resolution={self.low_resolution}, color_jitter={self.color_jitter}, hed_jitter={self.hed_jitter})"
        )

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Transform ``image`` (and ``mask``); ``rng`` drives the random choices (fresh entropy when None)."""
        image, mask = _check_inputs(image, mask)
        if self.crop is not None:
            image = center_crop(image, self.crop)
            mask = None if mask is None else center_crop(mask, self.crop)
        if self.train:
            gen = rng if rng is not None else np.random.default_rng()
            image, mask = self._geometric(image, mask, gen)
            if self.low_resolution > 0 and gen.random() < self.low_resolution:
                image = coarsen(image, float(gen.uniform(*LOW_RESOLUTION_FACTORS)))
            if self.sharpness > 0:
                image = jitter_sharpness(image, self.sharpness, gen)
            if self.hed_jitter is not None:
                image = self.hed_jitter(image, gen)
            if self.color_jitter is not None:
                image = self.color_jitter(image, gen)
        if image.shape[:2] != (self.size, self.size):
            image = resize_uint8(image, self.size)
            if mask is not None:
                mask = resize_uint8(mask.astype(np.uint8), self.size, nearest=True) > 0
        if self.normalize:
            x = (image.astype(np.float32) / 255.0 - self.mean) / self.std
            tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        else:  # uint8 (H, W, 3): batches are normalised later by normalize_batch
            pixels = np.ascontiguousarray(image, dtype=np.uint8)
            tensor = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
        mask_t = (
            None if mask is None else torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        )
        return tensor, mask_t

    def _geometric(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], None if mask is None else mask[:, ::-1]
        if self.rotate:
            k = int(rng.integers(4))
            image, mask = np.rot90(image, k), None if mask is None else np.rot90(mask, k)
            if self.max_angle > 0:
                angle = float(rng.uniform(-self.max_angle, self.max_angle))
                stack = image if mask is None else np.dstack([image, mask.astype(np.uint8) * 255])
                turned = rotate(stack, angle, order=1, mode="reflect", preserve_range=True)
                image = np.clip(np.round(turned[..., :3]), 0, 255).astype(np.uint8)
                if mask is not None:
                    mask = turned[..., 3] > 127.5
        elif rng.random() < 0.5:
            image, mask = image[::-1], None if mask is None else mask[::-1]
        if self.scale_jitter > 0:
            # zoom by z, log-uniform in [1/(1+s), 1+s]: keep the centre H/z pixels (resized to size later)
            bound = np.log1p(self.scale_jitter)
            side = max(1, round(image.shape[0] / float(np.exp(rng.uniform(-bound, bound)))))
            image = center_crop(image, side, pad_mode="reflect")
            mask = None if mask is None else center_crop(mask, side, pad_mode="reflect")
        return np.ascontiguousarray(image), None if mask is None else np.ascontiguousarray(mask)


def build_patch_transform(
    *,
    train: bool,
    size: int,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    rotate: bool = True,
    max_angle: float = 15.0,
    color_jitter: float | Mapping[str, float] | ColorJitter | None = 0.1,
    hed_jitter: float | HEDJitter | None = 0.05,
    crop: int | None = None,
    scale_jitter: float = 0.0,
    sharpness: float = 0.0,
    low_resolution: float = 0.0,
    normalize: bool = True,
) -> PatchTransform:
    """Build the joint image/mask transform of classifier patches.

    Training: random horizontal flip, random 90° rotation and a small random rotation (``±max_angle`` degrees,
    reflect padding) — or, with ``rotate=False``, random flips only — then an optional random zoom about the
    centre (``scale_jitter``), a coarser scan (``low_resolution``), a random blur or sharpening (``sharpness``),
    HED stain jitter and colour jitter.
    Both modes: optional centre ``crop`` first, resize to ``size × size`` (bilinear image, nearest mask), and
    normalisation with ``mean``/``std``. Eval does only the crop/resize and normalisation.

    Args:
        train: training (random) or evaluation (deterministic) transform.
        size: output side in pixels.
        mean, std: per-channel normalisation of the [0, 1] image (the model's ``mean``/``std``).
        rotate: random 90° and small rotations.
        max_angle: largest small rotation in degrees (0 disables it).
        color_jitter: strength ``x`` (brightness/contrast/saturation ``±x``, hue ``±x/4``), a dict of the four
            values, a :class:`ColorJitter`, or ``None``.
        hed_jitter: ``sigma = bias`` of :class:`~mitoscope.data.stain.HEDJitter`, an instance, or ``None``.
        crop: centre crop side applied before resizing (``None``: the whole patch is resized).
        scale_jitter: ``s`` of a random zoom by ``z`` drawn log-uniformly from ``[1/(1+s), 1+s]`` (the centre
            ``H/z`` pixels, reflect-padded when ``z < 1``, fill the output), so the model sees nuclei at the sizes
            other scanners and tissues give them; 0 disables it.
        sharpness: ``s`` of :func:`jitter_sharpness` (the high-frequency gain drawn log-uniformly from
            ``[1/(1+s), 1+s]``), for scanners that focus or compress differently; 0 disables it.
        low_resolution: the probability that a patch is :func:`coarsen`-ed by a factor drawn uniformly from
            :data:`LOW_RESOLUTION_FACTORS`, so that a model read at 0.25 µm/px also knows 20x slides; 0 disables it.
        normalize: return the normalised float ``(3, size, size)`` tensor; ``False`` returns the uint8
            ``(size, size, 3)`` pixels instead, for :func:`normalize_batch` (4x less to copy and collate).

    Returns:
        A callable ``(image, mask=None, rng=None) -> (tensor (3, size, size), mask (1, size, size) or None)``.

    Examples:
        >>> t = build_patch_transform(train=True, size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> img = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
        >>> x, m = t(img, np.ones((128, 128), bool), np.random.default_rng(1))
        >>> tuple(x.shape), tuple(m.shape), x.dtype
        ((3, 64, 64), (1, 64, 64), torch.float32)
    """
    if isinstance(hed_jitter, HEDJitter) or hed_jitter is None:
        hed = hed_jitter
    else:
        hed = HEDJitter(sigma=float(hed_jitter), bias=float(hed_jitter)) if float(hed_jitter) > 0 else None
    return PatchTransform(
        train=train,
        size=size,
        mean=mean,
        std=std,
        rotate=rotate,
        max_angle=max_angle,
        color_jitter=_color_jitter(color_jitter),
        hed_jitter=hed,
        crop=crop,
        scale_jitter=scale_jitter,
        sharpness=sharpness,
        low_resolution=low_resolution,
        normalize=normalize,
    )


def normalize_batch(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``(N, H, W, 3)`` pixels → the normalised float ``(N, 3, H, W)`` batch, in channels-last memory.

    Same values as the ``normalize=True`` transform (``(x / 255 - mean) / std``), computed once per batch on the
    batch's device.

    Examples:
        >>> x = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
        >>> y = normalize_batch(x, (0.5,) * 3, (0.5,) * 3)
        >>> tuple(y.shape), float(y.max()), y.is_contiguous(memory_format=torch.channels_last)
        ((2, 3, 4, 4), 1.0, True)
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"normalize_batch needs uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    x = images.permute(0, 3, 1, 2).float()
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.div_(255.0).sub_(m).div_(s)  # in place: one batch-sized allocation instead of four


def tta_views(images: Tensor) -> list[Tensor]:
    """The 8 dihedral views (4 rotations × optional horizontal flip) of a batch ``(N, C, H, W)``.

    The first view is the batch itself. Average the model's probabilities over the views for test-time
    augmentation (classification outputs need no inverse transform).

    Examples:
        >>> views = tta_views(torch.arange(4.0).view(1, 1, 2, 2))
        >>> len(views), len({tuple(v.flatten().tolist()) for v in views})
        (8, 8)
    """
    if images.ndim != 4:
        raise ValueError(f"tta_views needs (N, C, H, W), got {tuple(images.shape)}")
    flipped = torch.flip(images, dims=(3,))
    return [torch.rot90(base, k, dims=(2, 3)) for base in (images, flipped) for k in range(4)]


def denormalize(tensor: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of a ``(3, H, W)`` tensor: uint8 ``(H, W, 3)`` for viewing.

    Examples:
        >>> t = build_patch_transform(train=False, size=4, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> img = np.full((4, 4, 3), 200, np.uint8)
        >>> int(denormalize(t(img)[0], (0.5,) * 3, (0.5,) * 3)[0, 0, 0])
        200
    """
    x = tensor.detach().cpu().float().numpy().transpose(1, 2, 0)
    x = x * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
