"""Shared output helpers: argument checks, all-or-nothing output folders, deterministic PNGs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` or an :class:`InputError` naming the argument.

    Examples:
        >>> check_count("n", 3)
        3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


@contextlib.contextmanager
def prepared_output(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out_dir`` that becomes ``out_dir`` on success.

    Raises:
        InputError: ``out_dir`` is a file, a non-empty folder (without ``overwrite``), or not writable.
            Nothing is left behind on any error.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output exists and is not a folder", path=out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("output folder exists and is not empty (use --overwrite to replace it)", path=out)
    try:
        with atomic_path(out) as tmp:
            tmp.mkdir()
            yield tmp
    except (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise InputError(f"cannot write output: {exc.strerror or exc}", path=out) from exc
    except OSError as exc:
        if exc.errno is None:
            raise
        raise InputError(f"cannot write output: {exc.strerror or exc}", path=out) from exc


def save_png(path: Path, image: np.ndarray) -> Path:
    """Save an RGB uint8 array as PNG with fixed settings (byte-identical for equal pixels)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG", compress_level=6, optimize=False)
    return path
