"""Shared output helpers: argument checks, all-or-nothing output folders, deterministic PNGs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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


T = TypeVar("T")
#: ``progress(done, total)`` callback type.
Progress = Callable[[int, int], None]


def run_jobs(
    fn: Callable[..., T],
    jobs: Iterable[tuple[Any, ...]],
    *,
    total: int,
    workers: int = 1,
    progress: Progress | None = None,
) -> Iterator[T]:
    """Yield ``fn(*job)`` for each job **in order**, in this process or in ``workers`` processes.

    Every job carries its own seed, so the results do not depend on ``workers``.

    Examples:
        >>> list(run_jobs(pow, [(2, 3), (3, 2)], total=2))
        [8, 9]
    """
    workers = check_count("workers", workers)
    if workers == 1:
        for i, job in enumerate(jobs):
            yield fn(*job)
            if progress is not None:
                progress(i + 1, total)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        cols = list(zip(*jobs, strict=True))
        for i, result in enumerate(pool.map(fn, *cols, chunksize=4)):
            yield result
            if progress is not None:
                progress(i + 1, total)
