"""Plain images (PNG, JPEG, BMP, single-page small TIFF) as slides, read whole with Pillow."""

from __future__ import annotations

import os
import warnings

import numpy as np

from mitoscope.io.slide_base import ArraySlide, as_rgb_uint8
from mitoscope.utils.errors import InputError

DEFAULT_MPP = 0.25


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB uint8 (grey, RGBA, palette and 16-bit images are converted).

    Raises:
        InputError: the file is missing, corrupt or not an image.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.png"
        >>> Image.fromarray(np.zeros((4, 5), np.uint8)).save(p)
        >>> read_image(p).shape
        (4, 5, 3)
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise InputError("image file not found", path=path)
    try:
        with Image.open(path) as opened:
            opened.load()
            im: Image.Image = opened
            if im.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image (corrupt or not an image): {exc}", path=path) from exc
    if arr.dtype in (np.int32, np.uint32, np.int16):  # Pillow's "I"/"I;16" modes
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    try:
        return as_rgb_uint8(arr, source=path)
    except ValueError as exc:
        raise InputError(str(exc).split(": ", 1)[-1], path=path) from exc


class ImageSlide(ArraySlide):
    """A plain image as a slide; ``mpp`` defaults to 0.25 µm/px with a warning when not given.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"
        >>> Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(p)
        >>> ImageSlide(p, mpp=0.5).dimensions
        (30, 40)
    """

    backend = "pil"

    def __init__(self, path: str | os.PathLike[str], *, mpp: float | None = None) -> None:
        self._mpp_source = "as given"
        if mpp is None:
            self._mpp_source = "assumed: plain images carry no resolution (pass --mpp)"
            warnings.warn(
                f"{path}: plain images carry no resolution; assuming {DEFAULT_MPP} µm/px (pass --mpp to set it)",
                stacklevel=3,
            )
            mpp = DEFAULT_MPP
        super().__init__(read_image(path), mpp=mpp, path=str(path))
        self._assumed = True
