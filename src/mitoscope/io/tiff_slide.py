"""Tiled / pyramidal TIFF and SVS slides read through tifffile (+ imagecodecs), tile by tile.

Only the tiles a region touches are read and decoded (page ``dataoffsets`` + ``decode``), from the pyramid level
that best fits the requested resolution, so reading a small region of a 40k × 40k slide costs a few tiles.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from mitoscope.io.mpp import page_mpp_source, resolve_mpp
from mitoscope.io.slide_base import Slide, as_rgb_uint8
from mitoscope.utils.errors import InputError

_TILE_CACHE_BYTES = 48 * 2**20  # decoded tiles kept per open slide
_FLAVOURS = (("svs", "Aperio SVS"), ("ome", "OME-TIFF"), ("ndpi", "Hamamatsu NDPI"), ("scn", "Leica SCN"),
             ("qpi", "PerkinElmer QPI"), ("philips", "Philips TIFF"), ("bif", "Ventana BIF"))  # fmt: skip


class TiffLog(logging.Handler):
    """Collects (instead of printing) what tifffile logs, e.g. on a truncated file, which it logs, not raises.

    Examples:
        >>> with TiffLog() as log:
        ...     logging.getLogger("tifffile").error("<tifffile.TiffPages @8> invalid page offset 948966")
        >>> log.messages
        ['invalid page offset 948966']
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._logger = logging.getLogger("tifffile")

    def emit(self, record: logging.LogRecord) -> None:
        # "<tifffile.TiffPages @1275950> invalid offset to first page 1275950" -> the part after the object
        self.messages.append(" ".join(re.sub(r"^<[^>]*>\s*", "", record.getMessage()).split()))

    def __enter__(self) -> TiffLog:
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


class _Level:
    """One pyramid level: a tifffile page and its downsample relative to level 0."""

    def __init__(self, page: Any, downsample: float) -> None:
        self.page = page
        self.downsample = downsample
        self.height, self.width = int(page.imagelength), int(page.imagewidth)
        self.tiled = bool(page.is_tiled)
        self.tile_h = int(page.tilelength) if self.tiled else int(page.rowsperstrip or self.height)
        self.tile_w = int(page.tilewidth) if self.tiled else self.width


class TiffSlide(Slide):
    """A slide in a (tiled, pyramidal) TIFF or SVS file.

    Args:
        path: the file.
        mpp: microns per pixel; overrides the file's (with a warning when they differ) and is required when the
            file has none.

    Examples:
        >>> import tempfile, pathlib
        >>> from mitoscope.io.tiff_writer import write_tiled_tiff
        >>> p = write_tiled_tiff(pathlib.Path(tempfile.mkdtemp()) / "s.tiff", np.zeros((512, 512, 3), np.uint8),
        ...                      mpp=0.25)
        >>> with TiffSlide(p) as s:
        ...     s.read_rect(100, 100, 64, 64, mpp=0.5).shape
        (64, 64, 3)
    """

    backend = "tifffile"

    def __init__(self, path: str | os.PathLike[str], *, mpp: float | None = None) -> None:
        import tifffile

        self.path = str(path)
        with TiffLog() as log:
            try:
                self._tif = tifffile.TiffFile(self.path)
            except (OSError, tifffile.TiffFileError, ValueError) as exc:
                raise InputError(f"cannot open as TIFF: {exc}", path=path) from exc
            self._lock = threading.Lock()
            self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
            self._cache_bytes = 0
            try:
                if not self._tif.pages:
                    why = f" ({log.messages[0]})" if log.messages else ""
                    raise InputError(
                        f"no image in the TIFF{why}: the file ({os.path.getsize(self.path)} bytes) is truncated "
                        "or corrupt",
                        path=path,
                    )
                self._levels = self._find_levels()
            except Exception:
                self._tif.close()
                raise
        base = self._levels[0].page
        found, source = page_mpp_source(base)
        try:
            self._mpp, self._assumed, self._mpp_source = resolve_mpp(path, found, source, mpp)
        except InputError:
            self._tif.close()
            raise

    def _find_levels(self) -> list[_Level]:
        tif = self._tif
        if not tif.pages:
            raise InputError("TIFF has no pages", path=self.path)
        base: Any = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
        if base.ndim < 2 or (base.shape[-1] not in (1, 3, 4) and base.ndim == 3):
            raise InputError(f"unsupported TIFF page shape {base.shape}", path=self.path)
        tif.pages.useframes = False  # real pages (with tags), never lazy frames
        pages: list[Any] = [base, *(base.pages or [])]  # SubIFD pyramids (OME, tifffile)
        if len(pages) == 1 and tif.series and len(tif.series[0].levels) > 1:  # SVS and other series pyramids
            pages = [lv.pages[0] for lv in tif.series[0].levels if lv.pages]
        if len(pages) == 1:  # generic pyramids: reduced-resolution pages after the first
            aspect = base.imagewidth / base.imagelength
            rest: list[Any] = list(tif.pages[1:])
            for page in rest:
                if not hasattr(page, "subfiletype") or not page.subfiletype & 1 or not page.is_tiled:
                    continue
                if abs(page.imagewidth / page.imagelength - aspect) < 0.05 * aspect:
                    pages.append(page)
        width = float(base.imagewidth)
        levels = [_Level(p, width / float(p.imagewidth)) for p in pages if p is not None]
        return sorted(levels, key=lambda lv: lv.downsample)

    @property
    def dimensions(self) -> tuple[int, int]:
        lv = self._levels[0]
        return lv.width, lv.height

    @property
    def mpp(self) -> float:
        return self._mpp

    @property
    def level_downsamples(self) -> list[float]:
        """Downsample of every pyramid level relative to level 0."""
        return [lv.downsample for lv in self._levels]

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        """``(width, height)`` of every pyramid level, level 0 first."""
        return [(lv.width, lv.height) for lv in self._levels]

    @property
    def file_format(self) -> str:
        """The TIFF flavour tifffile recognised (``Aperio SVS``, ``OME-TIFF``, ``NDPI``, …, else ``TIFF``)."""
        for flag, name in _FLAVOURS:
            if getattr(self._tif, f"is_{flag}", False):
                return name
        return "TIFF"

    def close(self) -> None:
        self._tif.close()
        self._cache.clear()
        self._cache_bytes = 0

    def _pick_level(self, downsample: float) -> int:
        best = 0
        for i, lv in enumerate(self._levels):
            if lv.downsample <= downsample * 1.01:
                best = i
        return best

    def _read_level0(self, x: int, y: int, width: int, height: int, downsample: float) -> np.ndarray:
        index = self._pick_level(downsample)
        lv = self._levels[index]
        ds = lv.downsample
        lx0, ly0 = math.floor(x / ds), math.floor(y / ds)
        lx1 = min(lv.width, max(lx0 + 1, math.ceil((x + width) / ds)))
        ly1 = min(lv.height, max(ly0 + 1, math.ceil((y + height) / ds)))
        return self._read_level_box(index, lx0, ly0, lx1, ly1)

    def _read_level_box(self, index: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        lv = self._levels[index]
        out = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        tiles_across = math.ceil(lv.width / lv.tile_w)
        for ty in range(y0 // lv.tile_h, (y1 - 1) // lv.tile_h + 1):
            for tx in range(x0 // lv.tile_w, (x1 - 1) // lv.tile_w + 1):
                tile = self._tile(index, ty * tiles_across + tx)
                oy, ox = ty * lv.tile_h, tx * lv.tile_w
                sy0, sx0 = max(y0 - oy, 0), max(x0 - ox, 0)
                sy1 = min(y1 - oy, tile.shape[0])
                sx1 = min(x1 - ox, tile.shape[1])
                if sy1 <= sy0 or sx1 <= sx0:
                    continue
                out[oy + sy0 - y0 : oy + sy1 - y0, ox + sx0 - x0 : ox + sx1 - x0] = tile[sy0:sy1, sx0:sx1]
        return out

    def _tile(self, level: int, index: int) -> np.ndarray:
        key = (level, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            page = self._levels[level].page
            offset, count = page.dataoffsets[index], page.databytecounts[index]
            data: bytes | None = None
            if count:
                fh = self._tif.filehandle
                fh.seek(offset)
                data = fh.read(count)
                if len(data) < count:
                    raise InputError(
                        f"the file is truncated: tile {index} of level {level} ends at byte {offset + count}, "
                        f"the file at byte {offset + len(data)}",
                        path=self.path,
                    )
        try:
            segment = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)[0]
        except Exception as exc:
            raise InputError(f"cannot decode tile {index} of level {level}: {exc}", path=self.path) from exc
        if segment is None:  # missing tile
            lv = self._levels[level]
            tile = np.zeros((lv.tile_h, lv.tile_w, 3), np.uint8)
        else:
            arr = np.asarray(segment)
            arr = arr.reshape(arr.shape[-3:]) if arr.ndim > 3 else arr
            tile = as_rgb_uint8(arr, source=self.path)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = tile
                self._cache_bytes += tile.nbytes
            while self._cache_bytes > _TILE_CACHE_BYTES and len(self._cache) > 1:
                self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return tile
