"""One entry point to open any slide: :func:`open_slide`."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from mitoscope.io.image_slide import ImageSlide
from mitoscope.io.openslide_slide import OpenSlideSlide, openslide_available
from mitoscope.io.slide_base import ArraySlide, Slide
from mitoscope.io.tiff_slide import TiffSlide
from mitoscope.utils.errors import InputError

TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".btf", ".qptiff", ".ome.tif", ".ome.tiff"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
OPENSLIDE_SUFFIXES = {".mrxs", ".ndpi", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".dcm"}
SLIDE_SUFFIXES = TIFF_SUFFIXES | IMAGE_SUFFIXES | OPENSLIDE_SUFFIXES
TIFF_LIKE_SUFFIXES = {".ndpi", ".scn", ".bif"}
BACKENDS = ("auto", "tifffile", "openslide", "pil", "array")
#: Plausible microns per pixel of a slide: from 0.05 (beyond any optical scanner) to 10 (a thumbnail).
MPP_RANGE = (0.05, 10.0)


def open_slide(
    source: str | os.PathLike[str] | np.ndarray | Slide,
    *,
    mpp: float | None = None,
    backend: str = "auto",
) -> Slide:
    """Open a slide (TIFF/SVS, OpenSlide formats, plain images, arrays) as a :class:`Slide`.

    Args:
        source: a path, an (H, W, 3) array or an already opened slide (returned as is).
        mpp: microns per pixel, needed when the file has none (it is then assumed, with a warning).
        backend: ``auto`` (tifffile for TIFF/SVS, Pillow for PNG/JPEG, OpenSlide for other WSI formats or when
            tifffile fails and OpenSlide is installed), ``tifffile``, ``openslide``, ``pil`` or ``array``.

    Raises:
        InputError: missing file, unsupported format, no mpp in the file and none given, or an mpp (given or
            from the file) that is not a number within :data:`MPP_RANGE` (e.g. a 72 dpi resolution tag).

    Examples:
        >>> s = open_slide(np.zeros((64, 48, 3), np.uint8), mpp=0.5)
        >>> s.dimensions, s.mpp
        ((48, 64), 0.5)
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown slide backend {backend!r}; use one of {BACKENDS}")
    if isinstance(source, Slide):
        return source
    name = "<array>" if isinstance(source, np.ndarray) else str(source)
    if mpp is not None:
        check_mpp(mpp, name, origin="given")
    slide = _open(source, mpp=mpp, backend=backend)
    if mpp is None:
        try:
            check_mpp(slide.mpp, name, origin="read from the file")
        except InputError:
            slide.close()
            raise
    return slide


def check_mpp(mpp: object, name: str | os.PathLike[str], *, origin: str = "given") -> float:
    """``mpp`` as a float if it is a plausible resolution (within :data:`MPP_RANGE` µm/px), else InputError.

    Args:
        mpp: microns per pixel to check.
        name: the slide, named in the error.
        origin: where the value comes from, for the message (``"given"``, ``"read from the file"``).

    Examples:
        >>> check_mpp(0.25, "a.tif")
        0.25
        >>> try:
        ...     check_mpp(352.8, "a.tif", origin="read from the file")
        ... except InputError as exc:
        ...     print(str(exc)[:45])
        a.tif: mpp 352.8 µm/px (read from the file) i
    """
    lo, hi = MPP_RANGE
    try:
        value = float(mpp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InputError(
            f"mpp {mpp} µm/px ({origin}) is not plausible for a slide (expected {lo:g}-{hi:g} µm/px); "
            "pass the right one with --mpp (or mpp=)",
            path=name,
        )
    return value


def _open(source: str | os.PathLike[str] | np.ndarray, *, mpp: float | None, backend: str) -> Slide:
    if isinstance(source, np.ndarray) or backend == "array":
        if mpp is None:
            warnings.warn("array slide without mpp; assuming 0.25 µm/px", stacklevel=3)
            mpp = 0.25
        return ArraySlide(np.asarray(source), mpp=mpp)
    path = Path(source)
    if not path.exists():
        raise InputError("slide file not found", path=path)
    if path.is_dir() and path.suffix.lower() != ".mrxs":
        raise InputError("is a folder, not a slide file", path=path)
    suffix = path.suffix.lower()
    auto = backend == "auto"
    if auto:
        if suffix in IMAGE_SUFFIXES:
            backend = "pil"
        elif suffix in OPENSLIDE_SUFFIXES:
            backend = "openslide"
        elif suffix in TIFF_SUFFIXES or _is_tiff(path):
            backend = "tifffile"
        else:
            raise InputError(
                f"unsupported slide format {suffix or '(no suffix)'!r}; supported: {sorted(SLIDE_SUFFIXES)}",
                path=path,
            )
    if backend == "pil":
        return ImageSlide(path, mpp=mpp)
    if backend == "openslide" and (openslide_available() or suffix not in TIFF_LIKE_SUFFIXES):
        return OpenSlideSlide(path, mpp=mpp)
    # without OpenSlide, NDPI, SCN and BIF go to tifffile: they are TIFF variants that it reads too
    try:
        return TiffSlide(path, mpp=mpp)
    except InputError as exc:
        if not auto or "mpp" in str(exc):
            raise
        if openslide_available():
            try:
                return OpenSlideSlide(path, mpp=mpp)
            except InputError:
                reason = str(exc).removeprefix(f"{path}: ")
                raise InputError(f"{reason} (and OpenSlide cannot read it either)", path=path) from exc
        raise


def looks_like_slide(path: str | os.PathLike[str]) -> bool:
    """True for a file :func:`open_slide` would try: a slide suffix (:data:`SLIDE_SUFFIXES`) or TIFF magic bytes.

    Examples:
        >>> looks_like_slide("case.svs"), looks_like_slide("labels.csv")
        (True, False)
    """
    p = Path(path)
    if p.suffix.lower() in SLIDE_SUFFIXES:
        return not p.is_dir() or p.suffix.lower() == ".mrxs"
    return p.is_file() and _is_tiff(p)


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
