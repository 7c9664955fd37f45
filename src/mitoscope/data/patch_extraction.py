"""Cut patches around slide points (e.g. the MIDOG 2025 atypical CSV on the MIDOG++ region TIFFs).

The output folder holds one PNG per record in a class folder (``Atypical/``, ``Normal/``, ``Mitotic figure/`` …)
and ``patches.csv``, a catalog CSV that :func:`mitoscope.io.catalog_csv.read_catalog_csv` (and the class-folder
reader) read back. Crops reaching past the slide border are padded with ``pad_value`` (black, as the challenge's
Track 2 crops are). The folder appears complete or not at all.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mitoscope.io.catalog_csv import write_catalog_csv
from mitoscope.io.slides import open_slide
from mitoscope.io.tables import find_files
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError

PATCHES_CSV = "patches.csv"
_FOLDER_OF_LABEL = {
    "atypical": "Atypical",
    "normal": "Normal",
    "mitotic figure": "Mitotic figure",
    "hard negative": "Hard negative",
    "unlabelled": "Unlabelled",
}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "patch"


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / PATCHES_CSV).is_file())
    ):
        raise InputError(
            "output exists and is not an earlier patch extraction; choose a new folder", path=out_dir
        )


def extract_patches(
    catalog: pd.DataFrame,
    *,
    slides_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    size: int = 128,
    mpp: float | None = None,
    slide_mpp: float | None = None,
    pad_value: int = 0,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Cut a ``size`` × ``size`` patch centred on each record's ``(slide, x, y)`` and write PNGs + ``patches.csv``.

    Args:
        catalog: records with ``slide``, ``x``, ``y`` (level-0 pixels), ``label``; an optional ``patch_id``
            column names the files.
        slides_dir: folder holding the slide files named in ``slide`` (searched at any depth).
        out_dir: new folder (or an earlier extraction, which is replaced).
        size: patch edge in output pixels.
        mpp: output resolution; ``None`` keeps each slide's own resolution.
        slide_mpp: resolution to assume for slides without one in their metadata.
        pad_value: fill value for the parts of a crop outside the slide.
        skip_bad: skip records with a missing slide or a centre outside the slide (listed in
            ``result.attrs["skipped"]``, with a warning) instead of raising ``InputError``.

    Returns:
        The catalog of the written patches (``image`` set to the PNG paths).

    Examples:
        >>> import tempfile, pathlib
        >>> from mitoscope.io.catalog import make_catalog
        >>> from mitoscope.io.tiff_writer import write_tiled_tiff
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_tiled_tiff(d / "s.tiff", np.full((300, 300, 3), 200, np.uint8), mpp=0.25)
        >>> cat = make_catalog([{"slide": "s.tiff", "x": 5, "y": 150, "label": "atypical"}])
        >>> out = extract_patches(cat, slides_dir=d, out_dir=d / "patches", size=64)
        >>> out.loc[0, "image"].endswith("Atypical/s_0.png"), (d / "patches" / "patches.csv").is_file()
        (True, True)
    """
    from PIL import Image

    for col in ("slide", "x", "y", "label"):
        if col not in catalog.columns:
            raise InputError(
                f"records need a {col!r} column to extract patches; found {list(catalog.columns)}"
            )
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    slides_dir, out_dir = Path(slides_dir), Path(out_dir)
    if not slides_dir.is_dir():
        raise InputError("slides folder not found", path=slides_dir)
    _prepare_out_dir(out_dir)
    slide_files = find_files(slides_dir)
    skipped: list[dict[str, object]] = []
    written: list[dict[str, object]] = []
    used_names: set[str] = set()

    def bad(index: object, where: object, problem: str) -> None:
        if not skip_bad:
            raise InputError(f"record {index}: {problem}", path=where)
        skipped.append({"row": index, "problem": f"{where}: {problem}"})

    with atomic_path(out_dir, suffix="") as tmp:
        tmp.mkdir(parents=True)
        for slide_name, rows in catalog.groupby("slide", sort=False):
            path = slide_files.get(Path(str(slide_name)).name)
            if path is None:
                for index in rows.index:
                    bad(index, slides_dir / str(slide_name), "slide file not found")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore" if slide_mpp is not None else "default")
                slide = open_slide(path, mpp=slide_mpp)
            with slide:
                width, height = slide.dimensions
                for index, rec in rows.iterrows():
                    x, y = float(rec["x"]), float(rec["y"])
                    if math.isnan(x) or math.isnan(y) or not (0 <= x < width and 0 <= y < height):
                        bad(index, path, f"centre ({x:g}, {y:g}) is outside the slide ({width}×{height})")
                        continue
                    patch = slide.read_centered(x, y, size, mpp=mpp, pad_value=pad_value)
                    folder = _FOLDER_OF_LABEL.get(str(rec["label"]), _safe_name(str(rec["label"])))
                    stem = str(rec["patch_id"]) if "patch_id" in rec and str(rec["patch_id"]) else ""
                    stem = (
                        _safe_name(Path(stem).stem)
                        if stem
                        else f"{_safe_name(Path(str(slide_name)).stem)}_{index}"
                    )
                    name = f"{folder}/{stem}.png"
                    k = 1
                    while name in used_names:
                        name = f"{folder}/{stem}_{k}.png"
                        k += 1
                    used_names.add(name)
                    (tmp / folder).mkdir(exist_ok=True)
                    Image.fromarray(np.ascontiguousarray(patch)).save(tmp / name)
                    written.append({**rec.to_dict(), "image": name})
        result = pd.DataFrame(written, columns=list(catalog.columns))
        write_catalog_csv(tmp / PATCHES_CSV, result)
    result["image"] = [str(out_dir / name) for name in result["image"]]
    result.attrs["skipped"] = skipped
    if skipped:
        first = "; ".join(str(s["problem"]) for s in skipped[:3])
        warnings.warn(f"skipped {len(skipped)} records: {first}", stacklevel=2)
    return result
