"""Stain normalisation: map a patch's H&E colours onto a reference's (Macenko et al. 2009; Reinhard et al. 2001).

A :class:`StainNormalizer` is fitted once on reference patches (e.g. the training set: all their tissue pixels
pooled) and then transforms each new patch on its own:

- ``macenko``: the patch's two stain vectors in optical-density space (the extreme angles of its tissue pixels
  in the plane of the two main principal components) and its 99th-percentile stain concentrations are
  replaced by the reference's, then the pixels are recomposed;
- ``reinhard``: each CIELAB channel of the patch gets the reference's mean and standard deviation.

Patches with too little stained tissue to estimate from are returned unchanged. A fitted normaliser is plain
numbers (:meth:`StainNormalizer.to_dict`), so it can be saved as JSON and used in reader processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from skimage.color import lab2rgb, rgb2lab

from mitoscope.data.datasets import PatchDataset, identity_transform
from mitoscope.data.sources import load_patch_input
from mitoscope.utils.atomic import write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

METHODS: tuple[str, ...] = ("macenko", "reinhard")

#: optical density below which a pixel counts as unstained (Macenko's β)
OD_THRESHOLD = 0.15
#: percentile of the stain angles taken as the two stains' directions (Macenko's α = 1 → 1 and 99)
ANGLE_PERCENTILE = 1.0
#: percentile of each stain's concentrations matched to the reference
MAX_CONCENTRATION_PERCENTILE = 99.0
#: optical density above which in every channel a pixel is a black artefact (padding, dust), not stain
BLACK_OD = 2.5
#: reference patches a normaliser is fitted on when fitted from a catalog
REFERENCE_MAX_IMAGES = 512
#: fewer stained pixels than this and a patch is left as it is
MIN_TISSUE_PIXELS = 64


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density ``-log(I / 255)`` of uint8 RGB pixels (any shape ending in 3), zero-intensity clipped.

    Examples:
        >>> optical_density(np.array([[255, 255, 255]], np.uint8)).tolist()
        [[0.0, 0.0, 0.0]]
    """
    pixels = np.maximum(np.asarray(rgb, dtype=np.float64), 1.0)
    return np.log(255.0 / pixels)


def _stained(od: np.ndarray) -> np.ndarray:
    """The ``(N, 3)`` optical densities of the stained pixels: above Macenko's β in every channel (not
    background) and not black in every channel (padding or dust, which would pull the stain vectors to grey)."""
    flat = od.reshape(-1, 3)
    return flat[np.all(flat > OD_THRESHOLD, axis=1) & (flat.min(axis=1) < BLACK_OD)]


def macenko_stain_matrix(od: np.ndarray) -> np.ndarray | None:
    """Haematoxylin and eosin unit vectors ``(2, 3)`` (rows H, E) of stained optical densities ``(N, 3)``.

    ``None`` when there are too few pixels or they span no plane (e.g. a single colour).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> h, e = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
        >>> c = rng.uniform(0.2, 1.5, (500, 2))
        >>> c[:100, 1], c[100:200, 0] = 0.0, 0.0  # some pixels of one stain only
        >>> m = macenko_stain_matrix(c @ np.stack([h / np.linalg.norm(h), e / np.linalg.norm(e)]))
        >>> bool(np.allclose(m[0], h / np.linalg.norm(h), atol=0.05))
        True
    """
    if len(od) < MIN_TISSUE_PIXELS:
        return None
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(od, rowvar=False))
    if eigenvalues[1] <= 1e-12:
        return None
    plane = eigenvectors[:, [2, 1]]  # the two largest components
    plane[:, plane[0] < 0] *= -1  # point them into the positive octant
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    lo, hi = np.percentile(angles, [ANGLE_PERCENTILE, 100.0 - ANGLE_PERCENTILE])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1])  # haematoxylin absorbs more red
    norms = np.linalg.norm(stains, axis=1, keepdims=True)
    if np.any(norms < 1e-12):
        return None
    return stains / norms


def stain_concentrations(od: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
    """Least-squares concentrations ``(N, 2)`` of the two stains in optical densities ``(N, 3)``."""
    return np.linalg.lstsq(stain_matrix.T, od.reshape(-1, 3).T, rcond=None)[0].T


class StainNormalizer:
    """Fit on reference RGB patches, then map any patch onto the reference's stain.

    Args:
        method: ``"macenko"`` or ``"reinhard"``.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> ref = [rng.integers(60, 250, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
        >>> norm = StainNormalizer("reinhard").fit(ref)
        >>> norm.transform(ref[0]).shape, norm.transform(ref[0]).dtype
        ((32, 32, 3), dtype('uint8'))
        >>> StainNormalizer.from_dict(norm.to_dict()).method
        'reinhard'
    """

    def __init__(self, method: str = "macenko") -> None:
        if method not in METHODS:
            raise ValueError(
                f"stain normalisation method must be one of {', '.join(METHODS)}, got {method!r}"
            )
        self.method = method
        self.reference: dict[str, list[Any]] | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, images: Iterable[np.ndarray]) -> StainNormalizer:
        """Estimate the reference stain from all pixels of ``images`` (uint8 RGB patches) pooled."""
        arrays = [np.asarray(img)[..., :3].reshape(-1, 3) for img in images]
        if not arrays:
            raise ValueError("no reference images to fit the stain normaliser on")
        pixels = np.concatenate(arrays).astype(np.uint8)
        if self.method == "reinhard":
            lab = rgb2lab(pixels[None])[0]
            self.reference = {"mean": lab.mean(axis=0).tolist(), "std": lab.std(axis=0).tolist()}
            return self
        od = _stained(optical_density(pixels))
        stains = macenko_stain_matrix(od)
        if stains is None:
            raise ValueError(
                f"the reference images have too little stained tissue to estimate stains from "
                f"({len(od)} stained pixels)"
            )
        max_conc = np.percentile(stain_concentrations(od, stains), MAX_CONCENTRATION_PERCENTILE, axis=0)
        self.reference = {"stain_matrix": stains.tolist(), "max_concentrations": max_conc.tolist()}
        return self

    # ------------------------------------------------------------------ applying
    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.transform(image)

    def transform(self, image: np.ndarray) -> np.ndarray:
        """The patch (uint8 ``(H, W, 3)``) with the reference's stain; unchanged if it has too little tissue."""
        if self.reference is None:
            raise RuntimeError("the stain normaliser is not fitted: call fit() or load a saved reference")
        rgb = np.asarray(image)[..., :3]
        if self.method == "reinhard":
            return self._reinhard(rgb)
        return self._macenko(rgb)

    def _reinhard(self, rgb: np.ndarray) -> np.ndarray:
        assert self.reference is not None
        lab = rgb2lab(rgb)
        mean, std = lab.mean(axis=(0, 1)), lab.std(axis=(0, 1))
        ref_mean, ref_std = np.asarray(self.reference["mean"]), np.asarray(self.reference["std"])
        lab = (lab - mean) / np.maximum(std, 1e-6) * ref_std + ref_mean
        return _to_uint8(lab2rgb(lab) * 255.0)

    def _macenko(self, rgb: np.ndarray) -> np.ndarray:
        assert self.reference is not None
        od = optical_density(rgb)
        tissue = _stained(od)
        stains = macenko_stain_matrix(tissue)
        if stains is None:
            return np.ascontiguousarray(rgb, dtype=np.uint8)
        max_conc = np.percentile(stain_concentrations(tissue, stains), MAX_CONCENTRATION_PERCENTILE, axis=0)
        if np.any(max_conc <= 1e-6):
            return np.ascontiguousarray(rgb, dtype=np.uint8)
        flat = od.reshape(-1, 3)
        concentrations = stain_concentrations(flat, stains)
        concentrations *= np.asarray(self.reference["max_concentrations"]) / max_conc
        out = _to_uint8(255.0 * np.exp(-(concentrations @ np.asarray(self.reference["stain_matrix"]))))
        black = flat.min(axis=1) >= BLACK_OD  # padding and dust stay as they are
        out[black] = rgb.reshape(-1, 3)[black]
        return out.reshape(rgb.shape)

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        """``{"method": ..., "reference": {...}}``: plain numbers, JSON-serialisable."""
        if self.reference is None:
            raise RuntimeError("the stain normaliser is not fitted")
        return {"method": self.method, "reference": self.reference}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: object = "stain reference") -> StainNormalizer:
        """Rebuild a fitted normaliser from :meth:`to_dict`'s output (``source`` is named in errors)."""
        try:
            norm = cls(str(data["method"]))
            ref = data["reference"]
            keys = ("mean", "std") if norm.method == "reinhard" else ("stain_matrix", "max_concentrations")
            shapes = ((3,), (3,)) if norm.method == "reinhard" else ((2, 3), (2,))
            for key, shape in zip(keys, shapes, strict=True):
                value = np.asarray(ref[key], dtype=np.float64)
                if value.shape != shape or not np.all(np.isfinite(value)):
                    raise ValueError(f"{key} must be {shape} finite numbers, got {ref[key]!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not a stain reference ({exc})") from exc
        norm.reference = {key: np.asarray(ref[key], dtype=np.float64).tolist() for key in keys}
        return norm

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StainNormalizer:
        """Read a JSON file written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read a stain reference ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a stain reference (expected a JSON object)")
        return cls.from_dict(data, source=path)


class StainNormalizedTransform:
    """``transform`` applied to the stain-normalised patch: ``(rgb, mask, rng) -> transform(normalizer(rgb), ...)``
    (picklable, for reader processes)."""

    def __init__(self, normalizer: StainNormalizer, transform: Any) -> None:
        self.normalizer = normalizer
        self.transform = transform

    def __call__(self, rgb: np.ndarray, mask: Any = None, rng: Any = None) -> Any:
        return self.transform(self.normalizer(rgb), mask, rng)


def fit_on_catalog(
    catalog: pd.DataFrame,
    method: str,
    *,
    max_images: int = REFERENCE_MAX_IMAGES,
    seed: int = 0,
    size: int = 128,
    source: object = None,
) -> StainNormalizer:
    """Fit a :class:`StainNormalizer` on up to ``max_images`` random records of a catalog (images, stack pages
    or slide points read ``size`` pixels wide); read errors name the record (``source``: the catalog's file)."""
    dataset = PatchDataset(catalog, transform=identity_transform, size=size, targets=(), source=source)
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{source or 'catalog'}: no reference images to fit the stain normaliser on")
    chosen = np.random.default_rng(seed).choice(n, size=min(n, max_images), replace=False)
    return StainNormalizer(method).fit(dataset.load_rgb(int(i)) for i in np.sort(chosen))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def reference_normalizer(
    method: str | None,
    reference: str | os.PathLike[str] | None,
    *,
    save: str | os.PathLike[str] | None = None,
) -> StainNormalizer | None:
    """The normaliser onto a reference stain: loaded from a saved JSON, or fitted on patches (a folder, a source
    CSV, an image: anything :func:`mitoscope.data.sources.load_patch_input` reads), then saved to ``save``.

    ``None`` when ``method`` is None (``reference`` and ``save`` need a method).

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.full((8, 8, 3), (180, 90, 160), np.uint8)).save(d / "a.png")
        >>> reference_normalizer("reinhard", d, save=d / "ref.json").method, (d / "ref.json").is_file()
        ('reinhard', True)
        >>> reference_normalizer(None, None) is None
        True
    """
    if method is None:
        if reference is not None or save is not None:
            raise ValueError("stain_reference and save_stain_reference need stain_normalize")
        return None
    if method not in METHODS:
        raise ValueError(f"stain_normalize must be one of {', '.join(METHODS)}, got {method!r}")
    if reference is None:
        raise ValueError("stain_normalize needs stain_reference (e.g. the training data, or a saved JSON)")
    reference = Path(reference)
    if reference.suffix.lower() == ".json":
        normalizer = StainNormalizer.load(reference)
        if normalizer.method != method:
            raise ValueError(f"{reference}: a {normalizer.method} reference, but stain_normalize {method}")
    else:
        catalog, _ = load_patch_input(reference)
        normalizer = fit_on_catalog(catalog, method, source=reference)
    if save is not None:
        normalizer.save(save)
    return normalizer
