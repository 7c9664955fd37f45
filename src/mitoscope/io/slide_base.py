"""The slide interface every backend implements, and the array-backed slide for tests and patches.

Coordinates follow TIAToolbox ``read_rect``: ``(x, y)`` is the top-left corner in level-0 (baseline) pixels,
``(width, height)`` is the size of the returned image in pixels *at the requested mpp*. Areas outside the
slide are filled with ``pad_value``.
"""

from __future__ import annotations

import abc
import math
import os
from typing import Any

import numpy as np
from skimage.transform import resize

#: Most level pixels a thumbnail reads at once (about 48 MB of RGB): a slide whose pyramid has no level small
#: enough is read and reduced block by block, so memory stays bounded whatever the slide's size.
THUMBNAIL_BLOCK_PX = 16 * 2**20


class Slide(abc.ABC):
    """A readable slide or region image (RGB, uint8)."""

    path: str = ""
    #: The reader behind the slide, as named by ``open_slide(backend=...)``.
    backend: str = ""
    _assumed: bool = False  # backends that read an mpp set these two (mitoscope.io.mpp.resolve_mpp)
    _mpp_source: str = "as given"

    @property
    @abc.abstractmethod
    def dimensions(self) -> tuple[int, int]:
        """Level-0 size as ``(width, height)``."""

    @property
    @abc.abstractmethod
    def mpp(self) -> float:
        """Microns per pixel at level 0."""

    @abc.abstractmethod
    def _read_level0(self, x: int, y: int, width: int, height: int, downsample: float) -> np.ndarray:
        """Read the level-0 box ``(x, y, width, height)`` (fully inside the slide) at roughly ``downsample``.

        Backends with a pyramid may return the box at any resolution between level 0 and ``downsample``;
        :meth:`read_rect` resizes the result to the exact output size.
        """

    def read_rect(
        self,
        x: int,
        y: int,
        width: int,
        height: int,
        *,
        mpp: float | None = None,
        pad_value: int = 0,
    ) -> np.ndarray:
        """Read an RGB region of ``width`` × ``height`` output pixels at ``mpp`` with top-left ``(x, y)``.

        Examples:
            >>> s = ArraySlide(np.zeros((100, 80, 3), np.uint8), mpp=0.25)
            >>> s.read_rect(70, 90, 20, 20).shape
            (20, 20, 3)
            >>> s.read_rect(0, 0, 10, 10, mpp=0.5).shape
            (10, 10, 3)
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {width}×{height}")
        x, y = int(x), int(y)
        scale = 1.0 if mpp is None else float(mpp) / self.mpp
        slide_w, slide_h = self.dimensions
        x0, y0 = max(x, 0), max(y, 0)
        x1 = min(x + max(1, round(width * scale)), slide_w)
        y1 = min(y + max(1, round(height * scale)), slide_h)
        out = np.full((height, width, 3), pad_value, dtype=np.uint8)
        if x1 <= x0 or y1 <= y0:
            return out
        ox0, oy0 = round((x0 - x) / scale), round((y0 - y) / scale)
        ox1, oy1 = min(width, round((x1 - x) / scale)), min(height, round((y1 - y) / scale))
        if ox1 <= ox0 or oy1 <= oy0:
            return out
        data = self._read_level0(x0, y0, x1 - x0, y1 - y0, scale)
        out[oy0:oy1, ox0:ox1] = _fit(data, (oy1 - oy0, ox1 - ox0))
        return out

    def read_centered(
        self, cx: float, cy: float, size: int, *, mpp: float | None = None, pad_value: int = 0
    ) -> np.ndarray:
        """Read a ``size`` × ``size`` patch at ``mpp`` centred on level-0 point ``(cx, cy)``."""
        scale = 1.0 if mpp is None else float(mpp) / self.mpp
        half = size * scale / 2.0
        return self.read_rect(round(cx - half), round(cy - half), size, size, mpp=mpp, pad_value=pad_value)

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """The whole slide downsampled so that its longer side is at most ``max_size``.

        It is read from the coarsest pyramid level that still serves the thumbnail's resolution; when that level
        is larger than :data:`THUMBNAIL_BLOCK_PX` (a slide without a pyramid) it is read and reduced block by
        block, never whole.

        Examples:
            >>> ArraySlide(np.zeros((300, 200, 3), np.uint8)).thumbnail(100).shape
            (100, 67, 3)
        """
        w, h = self.dimensions
        factor = max(w, h) / max_size if max(w, h) > max_size else 1.0
        tw, th = max(1, round(w / factor)), max(1, round(h / factor))
        level_ds = self.serving_downsample(factor)
        if (w / level_ds) * (h / level_ds) <= THUMBNAIL_BLOCK_PX:
            return _fit(self._read_level0(0, 0, w, h, factor), (th, tw))
        block = max(1, math.floor(math.sqrt(THUMBNAIL_BLOCK_PX) * level_ds / factor))
        sx, sy = w / tw, h / th
        out = np.empty((th, tw, 3), np.uint8)
        for oy0 in range(0, th, block):
            oy1 = min(oy0 + block, th)
            y0, y1 = round(oy0 * sy), min(h, max(round(oy1 * sy), round(oy0 * sy) + 1))
            for ox0 in range(0, tw, block):
                ox1 = min(ox0 + block, tw)
                x0, x1 = round(ox0 * sx), min(w, max(round(ox1 * sx), round(ox0 * sx) + 1))
                data = self._read_level0(x0, y0, x1 - x0, y1 - y0, factor)
                out[oy0:oy1, ox0:ox1] = _fit(data, (oy1 - oy0, ox1 - ox0))
        return out

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        """``(width, height)`` of every pyramid level, level 0 first (one level without a pyramid)."""
        return [self.dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        """Downsample of every pyramid level relative to level 0 (``[1.0]`` without a pyramid)."""
        return [1.0]

    def serving_downsample(self, downsample: float) -> float:
        """Downsample of the level a read at ``downsample`` comes from: the coarsest one not coarser than asked.

        Examples:
            >>> ArraySlide(np.zeros((8, 8, 3), np.uint8)).serving_downsample(16.0)
            1.0
        """
        served = [d for d in self.level_downsamples if d <= downsample * 1.01]
        return max(served) if served else 1.0

    @property
    def mpp_is_assumed(self) -> bool:
        """True when the mpp was not in the file but given or defaulted by the user."""
        return self._assumed

    @property
    def file_format(self) -> str:
        """What kind of file the slide is (``Aperio SVS``, ``OME-TIFF``, …; by default the file's suffix).

        Examples:
            >>> ArraySlide(np.zeros((8, 8, 3), np.uint8), path="a.png").file_format
            'PNG'
        """
        suffix = os.path.splitext(self.path)[1].lstrip(".")
        return suffix.upper() if suffix else "in-memory array"

    @property
    def mpp_source(self) -> str:
        """Where the mpp comes from, worded to follow "0.5 µm/px": ``"from the Aperio metadata"``, ``"as given"``."""
        return self._mpp_source

    def close(self) -> None:  # noqa: B027
        """Release file handles (no-op by default)."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"{type(self).__name__}({self.path!r}, {w}×{h} px, {self.mpp:g} µm/px)"


def _fit(data: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Resize ``data`` (H, W, 3 uint8) to ``shape_hw`` unless it already has that shape."""
    if data.shape[:2] == tuple(shape_hw):
        return data
    resized = resize(data, (*shape_hw, data.shape[2]), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def as_rgb_uint8(image: np.ndarray, *, source: object = "array") -> np.ndarray:
    """Convert grey, RGBA or 16-bit images to RGB uint8; raise ``ValueError`` naming ``source`` otherwise."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{source}: expected an RGB image, got array of shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        peak = 1.0 if float(np.nanmax(arr)) <= 1.0 else 255.0
        arr = np.clip(np.rint(arr / peak * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"{source}: unsupported pixel type {arr.dtype}")
    return np.ascontiguousarray(arr)


class ArraySlide(Slide):
    """A slide backed by an in-memory RGB array (tests, patches, synthetic regions)."""

    backend = "array"

    def __init__(self, array: np.ndarray, *, mpp: float = 0.25, path: str = "<array>") -> None:
        self._array = as_rgb_uint8(array, source=path)
        self._mpp = float(mpp)
        self.path = path

    @property
    def dimensions(self) -> tuple[int, int]:
        return int(self._array.shape[1]), int(self._array.shape[0])

    @property
    def mpp(self) -> float:
        return self._mpp

    def _read_level0(self, x: int, y: int, width: int, height: int, downsample: float) -> np.ndarray:
        return self._array[y : y + height, x : x + width]
