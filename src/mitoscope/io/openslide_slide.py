"""Slides read through OpenSlide (optional: ``pip install 'mitoscope[wsi]'``): MRXS, NDPI, SCN, VMS, SVS, …"""

from __future__ import annotations

import math
import os

import numpy as np

from mitoscope.io.mpp import resolve_mpp
from mitoscope.io.slide_base import Slide
from mitoscope.utils.errors import InputError
from mitoscope.utils.optional import optional_import


def openslide_available() -> bool:
    """True when ``openslide`` (with its library) imports.

    Examples:
        >>> isinstance(openslide_available(), bool)
        True
    """
    try:
        optional_import("openslide", extra="wsi")
    except ImportError:
        return False
    return True


class OpenSlideSlide(Slide):
    """A whole-slide image opened with OpenSlide.

    Args:
        path: the slide file.
        mpp: microns per pixel when the file has none (or to override it).

    Examples:
        >>> import tempfile, pathlib
        >>> from mitoscope.io.tiff_writer import write_tiled_tiff
        >>> p = write_tiled_tiff(pathlib.Path(tempfile.mkdtemp()) / "s.tiff", np.zeros((512, 512, 3), np.uint8),
        ...                      mpp=0.25)
        >>> OpenSlideSlide(p).dimensions  # doctest: +SKIP
        (512, 512)
    """

    backend = "openslide"

    def __init__(self, path: str | os.PathLike[str], *, mpp: float | None = None) -> None:
        openslide = optional_import("openslide", extra="wsi", purpose="reading slides with OpenSlide")
        self.path = str(path)
        try:
            self._osr = openslide.OpenSlide(self.path)
        except Exception as exc:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise InputError(f"OpenSlide cannot open it: {exc}", path=path) from exc
        props = self._osr.properties
        found, source = None, ""
        for key in ("openslide.mpp-x", "aperio.MPP"):
            try:
                found, source = float(props[key]), f"the OpenSlide property {key}"
                break
            except (KeyError, ValueError):
                continue
        try:
            self._mpp, self._assumed, self._mpp_source = resolve_mpp(path, found, source, mpp)
        except InputError:
            self._osr.close()
            raise

    @property
    def dimensions(self) -> tuple[int, int]:
        w, h = self._osr.dimensions
        return int(w), int(h)

    @property
    def mpp(self) -> float:
        return self._mpp

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(int(w), int(h)) for w, h in self._osr.level_dimensions]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._osr.level_downsamples]

    @property
    def file_format(self) -> str:
        vendor = self._osr.properties.get("openslide.vendor")
        return f"{vendor} (OpenSlide)" if vendor else "OpenSlide"

    def close(self) -> None:
        self._osr.close()

    def _read_level0(self, x: int, y: int, width: int, height: int, downsample: float) -> np.ndarray:
        level = int(self._osr.get_best_level_for_downsample(max(downsample, 1.0) * 1.01))
        ds = float(self._osr.level_downsamples[level])
        lw, lh = self._osr.level_dimensions[level]
        w = min(max(1, math.ceil(width / ds)), lw)
        h = min(max(1, math.ceil(height / ds)), lh)
        region = self._osr.read_region((int(x), int(y)), level, (w, h))
        rgba = np.asarray(region)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        # transparent (unscanned) areas become white, as OpenSlide viewers show them
        rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
