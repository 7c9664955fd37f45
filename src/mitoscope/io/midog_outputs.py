"""MIDOG challenge inputs and outputs: the Track 2 TIFF stack of crops, the Track 2 JSON list and the Track 1
"Multiple points" JSON of the MIDOG reference docker (coordinates in millimetres)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.io.catalog import make_catalog
from mitoscope.io.slide_base import as_rgb_uint8
from mitoscope.io.tables import read_json
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError

TRACK1_NAME = "mitotic figure"
#: Name of a below-threshold candidate in a Track 1 output (kept for AP and FROC).
TRACK1_CANDIDATE_NAME = "non-mitotic figure"
TRACK2_CLASSES = ("normal", "atypical")


def _tiff(path: str | os.PathLike[str]) -> Any:
    import tifffile

    if not os.path.isfile(path):
        raise InputError("file not found", path=path)
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise InputError(f"cannot open as TIFF: {exc}", path=path) from exc


def count_stack_pages(path: str | os.PathLike[str]) -> int:
    """Number of pages (crops) in a Track 2 TIFF stack.

    Examples:
        >>> import tempfile, pathlib, tifffile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.tiff"
        >>> tifffile.imwrite(p, np.zeros((3, 8, 8, 3), np.uint8), photometric="rgb")
        >>> count_stack_pages(p)
        3
    """
    with _tiff(path) as tif:
        return len(tif.pages)


def read_stack_page(path: str | os.PathLike[str], page: int) -> np.ndarray:
    """One crop of a multi-page TIFF stack as RGB uint8.

    Examples:
        >>> import tempfile, pathlib, tifffile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.tiff"
        >>> tifffile.imwrite(p, np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3), photometric="rgb")
        >>> int(read_stack_page(p, 1)[0, 0, 0])
        48
    """
    with _tiff(path) as tif:
        n = len(tif.pages)
        if not 0 <= page < n:
            raise InputError(f"page {page} does not exist (the stack has {n} pages)", path=path)
        try:
            data = tif.pages[page].asarray()
        except Exception as exc:
            raise InputError(f"cannot decode page {page}: {exc}", path=path) from exc
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)
    try:
        return as_rgb_uint8(data, source=f"{path} page {page}")
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def read_track2_stack(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One unlabelled catalog record per page of a Track 2 stack, in page order (``image`` = path, ``page``).

    Examples:
        >>> import tempfile, pathlib, tifffile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.tiff"
        >>> tifffile.imwrite(p, np.zeros((2, 8, 8, 3), np.uint8), photometric="rgb")
        >>> read_track2_stack(p)[["page", "label"]].values.tolist()
        [[0, 'unlabelled'], [1, 'unlabelled']]
    """
    n = count_stack_pages(path)
    name = str(Path(path))
    return make_catalog(
        {"image": name, "page": i, "group": name, "source": "midog25-track2", "domain": Path(path).stem}
        for i in range(n)
    )


def write_track2_json(
    path: str | os.PathLike[str],
    p_atypical: Sequence[float] | pd.Series | np.ndarray,
    *,
    threshold: float = 0.5,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write the Track 2 output: a list of ``{"class": "normal"|"atypical", "confidence": P(atypical)}``.

    ``class`` is ``P(atypical) >= threshold`` unless ``labels`` gives each page's decision (an ensemble's
    majority vote can differ from thresholding the mean probability).

    Examples:
        >>> import tempfile, pathlib
        >>> p = write_track2_json(pathlib.Path(tempfile.mkdtemp()) / "o.json", [0.1, 0.8])
        >>> json.loads(p.read_text())[1]
        {'class': 'atypical', 'confidence': 0.8}
        >>> p = write_track2_json(p, [0.1, 0.8], labels=["atypical", "normal"])
        >>> [r["class"] for r in json.loads(p.read_text())]
        ['atypical', 'normal']
    """
    values = np.asarray(p_atypical, dtype=float).ravel()
    if labels is not None and len(labels) != len(values):
        raise InputError(f"{len(labels)} labels for {len(values)} pages", path=path)
    out = []
    for i, value in enumerate(values):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"P(atypical) of page {i} is {value}, not in [0, 1]", path=path)
        label = ("atypical" if value >= threshold else "normal") if labels is None else str(labels[i])
        if label not in TRACK2_CLASSES:
            raise InputError(f"page {i}: class {label!r} is not 'normal' or 'atypical'", path=path)
        out.append({"class": label, "confidence": float(value)})
    return write_text_atomic(path, json.dumps(out, indent=1))


def read_track2_json(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Track 2 output list as a table with ``page``, ``label`` and ``p_atypical``.

    Examples:
        >>> import tempfile, pathlib
        >>> p = write_track2_json(pathlib.Path(tempfile.mkdtemp()) / "o.json", [0.25])
        >>> read_track2_json(p).values.tolist()
        [[0, 'normal', 0.25]]
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError("a Track 2 output is a JSON list", path=path)
    rows = []
    for i, item in enumerate(data):
        try:
            label = str(item["class"])
            conf = float(item["confidence"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"entry {i} needs 'class' and 'confidence': {item!r}", path=path) from exc
        if label not in TRACK2_CLASSES:
            raise InputError(f"entry {i}: class {label!r} is not 'normal' or 'atypical'", path=path)
        rows.append({"page": i, "label": label, "p_atypical": conf})
    return pd.DataFrame(rows, columns=["page", "label", "p_atypical"])


def write_track1_json(
    path: str | os.PathLike[str],
    detections: pd.DataFrame,
    *,
    mpp: float,
    labels: Sequence[str] = ("mitotic figure", "atypical", "normal"),
    candidates: bool = False,
) -> Path:
    """Write detections in the MIDOG reference docker's "Multiple points" format (millimetres).

    Rows whose ``label`` is in ``labels`` (mitotic figures, typed or not) become points named
    ``mitotic figure`` at ``[x_mm, y_mm, 0]`` with ``x_mm = x_px * mpp / 1000`` and ``probability = score``.
    With ``candidates`` the other rows (below-threshold candidates) are written too, named
    ``non-mitotic figure``: the MIDOG 2025 evaluator counts only ``mitotic figure`` points for F1 and every
    point, by its probability, for AP and FROC.

    Examples:
        >>> import tempfile, pathlib
        >>> det = pd.DataFrame({"x": [1000.0], "y": [2000.0], "score": [0.9], "label": ["mitotic figure"]})
        >>> p = write_track1_json(pathlib.Path(tempfile.mkdtemp()) / "o.json", det, mpp=0.25)
        >>> json.loads(p.read_text())["points"][0]["point"]
        [0.25, 0.5, 0]
        >>> det.loc[1] = [0.0, 0.0, 0.3, "non-mitotic figure"]
        >>> p = write_track1_json(p, det, mpp=0.25, candidates=True)
        >>> [(q["name"], q["probability"]) for q in json.loads(p.read_text())["points"]]
        [('mitotic figure', 0.9), ('non-mitotic figure', 0.3)]
    """
    if not mpp or mpp <= 0:
        raise InputError(f"mpp must be positive to convert to millimetres, got {mpp!r}", path=path)
    missing = [c for c in ("x", "y") if c not in detections.columns]
    if missing:
        raise InputError(f"detections need columns {missing}", path=path)
    positive = (
        np.ones(len(detections), dtype=bool)
        if "label" not in detections
        else detections["label"].astype(str).isin(labels).to_numpy()
    )
    keep = detections if candidates else detections[positive]
    points = []
    for rec, is_positive in zip(
        keep.to_dict("records"), positive if candidates else positive[positive], strict=True
    ):
        score = rec.get("score", 1.0)
        score = 1.0 if score is None or (isinstance(score, float) and math.isnan(score)) else float(score)
        points.append(
            {
                "name": TRACK1_NAME if is_positive else TRACK1_CANDIDATE_NAME,
                "point": [float(rec["x"]) * mpp / 1000.0, float(rec["y"]) * mpp / 1000.0, 0],
                "probability": score,
            }
        )
    doc = {
        "name": "Points of interest",
        "type": "Multiple points",
        "points": points,
        "version": {"major": 1, "minor": 0},
    }
    return write_text_atomic(path, json.dumps(doc, indent=1))


def read_track1_json(path: str | os.PathLike[str], *, mpp: float) -> pd.DataFrame:
    """Read a "Multiple points" JSON back into a detections table (pixels at ``mpp``).

    Examples:
        >>> import tempfile, pathlib
        >>> det = pd.DataFrame({"x": [1000.0], "y": [2000.0], "score": [0.9], "label": ["mitotic figure"]})
        >>> p = write_track1_json(pathlib.Path(tempfile.mkdtemp()) / "o.json", det, mpp=0.25)
        >>> read_track1_json(p, mpp=0.25).values.tolist()
        [[1000.0, 2000.0, 0.9, 'mitotic figure']]
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise InputError("not a 'Multiple points' JSON (needs a 'points' list)", path=path)
    rows = []
    for i, pt in enumerate(data["points"]):
        try:
            x_mm, y_mm = float(pt["point"][0]), float(pt["point"][1])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"point {i} has no valid 'point' [x, y, z]", path=path) from exc
        rows.append(
            {
                "x": round(x_mm * 1000.0 / mpp, 6),
                "y": round(y_mm * 1000.0 / mpp, 6),
                "score": float(pt.get("probability", 1.0)),
                "label": str(pt.get("name", TRACK1_NAME)),
            }
        )
    return pd.DataFrame(rows, columns=["x", "y", "score", "label"])
