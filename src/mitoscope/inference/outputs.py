"""The per-slide detection output bundle: CSV, QuPath GeoJSON, MIDOG track-1 JSON and SlideRunner SQLite.

One call writes every requested format for one slide into ``out_dir``::

    <name>.csv          slide, x, y (level-0 px), x_mm, y_mm, score, label, class, + any extra columns
                        (p_atypical, …)
    <name>.geojson      QuPath points, classified and coloured by ``class``   (mitoscope.io.geojson)
    <name>.midog.json   MIDOG track-1 output, points in mm (mitotic figures)  (mitoscope.io.midog_outputs)
    <name>.sqlite       SlideRunner database, one spot class per ``class``    (mitoscope.io.sliderunner)

The CSV is written here; the other formats go through the writers of :mod:`mitoscope.io`.
Every file is written atomically; :func:`write_done_marker` / :func:`outputs_complete` let a resumable command
tell a finished slide from an interrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mitoscope.io.geojson import write_geojson
from mitoscope.io.midog_outputs import write_track1_json
from mitoscope.io.sliderunner import write_sliderunner
from mitoscope.utils.atomic import atomic_path, write_text_atomic
from mitoscope.utils.jsonable import to_jsonable

FORMATS = ("csv", "geojson", "midog", "sqlite")
SUFFIXES = {"csv": ".csv", "geojson": ".geojson", "midog": ".midog.json", "sqlite": ".sqlite"}
DONE_SUFFIX = ".done.json"
#: Default colours (RGB) of classes in GeoJSON.
DEFAULT_CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "mitotic figure": (220, 30, 30),
    "normal": (30, 160, 60),
    "atypical": (220, 30, 30),
    "non-mitotic figure": (120, 120, 120),
    "hard negative": (120, 120, 120),
}
_BASE_COLUMNS = ["slide", "x", "y", "x_mm", "y_mm", "score", "label", "class"]


def output_paths(
    out_dir: str | os.PathLike[str], slide_name: str, formats: Sequence[str] = FORMATS
) -> dict[str, Path]:
    """Where each format of ``slide_name`` goes in ``out_dir``.

    Examples:
        >>> output_paths("out", "case1", ("csv", "midog"))["midog"].name
        'case1.midog.json'
    """
    unknown = [f for f in formats if f not in SUFFIXES]
    if unknown:
        raise ValueError(f"unknown output formats {unknown}; choose from {list(FORMATS)}")
    return {f: Path(out_dir) / f"{slide_name}{SUFFIXES[f]}" for f in formats}


def detections_table(detections: pd.DataFrame, *, slide_name: str, mpp: float) -> pd.DataFrame:
    """The CSV table: base columns first (``class`` defaults to ``label``), then any extra columns.

    Examples:
        >>> t = detections_table(pd.DataFrame({"x": [4000.0], "y": [0.0], "score": [0.9]}), slide_name="a", mpp=0.25)
        >>> t.iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
        {'slide': 'a', 'x': 4000.0, 'y': 0.0, 'x_mm': 1.0, 'y_mm': 0.0, 'score': 0.9, 'label': 'mitotic figure',
         'class': 'mitotic figure'}
    """
    for col in ("x", "y"):
        if col not in detections.columns:
            raise ValueError(f"detections of {slide_name!r} have no {col!r} column")
    table = detections.copy()
    table["slide"] = slide_name
    if "score" not in table.columns:
        table["score"] = 1.0
    if "label" not in table.columns:
        table["label"] = "mitotic figure"
    if "class" not in table.columns:
        table["class"] = table["label"]
    table["x"] = table["x"].astype(float)
    table["y"] = table["y"].astype(float)
    table["x_mm"] = table["x"] * float(mpp) / 1000.0
    table["y_mm"] = table["y"] * float(mpp) / 1000.0
    extra = [c for c in table.columns if c not in _BASE_COLUMNS]
    return table[_BASE_COLUMNS + extra].reset_index(drop=True)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _write_other(
    fmt: str,
    path: Path,
    table: pd.DataFrame,
    *,
    slide_name: str,
    mpp: float,
    slide_dims: tuple[int, int] | None,
    class_colors: Mapping[str, Any],
) -> None:
    by_class = table.assign(label=table["class"])  # GeoJSON/SlideRunner classes: normal/atypical when given
    if fmt == "geojson":
        write_geojson(path, by_class, class_colors=dict(class_colors))
    elif fmt == "midog":
        write_track1_json(path, table, mpp=mpp)
    elif fmt == "sqlite":
        dims = {slide_name: (int(slide_dims[0]), int(slide_dims[1]))} if slide_dims is not None else None
        write_sliderunner(path, {slide_name: by_class}, slide_dims=dims)


def write_detection_outputs(
    out_dir: str | os.PathLike[str],
    slide_name: str,
    detections: pd.DataFrame,
    *,
    mpp: float,
    formats: Sequence[str] = ("csv", "geojson", "midog"),
    slide_dims: tuple[int, int] | None = None,
    class_colors: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the detections of one slide in each requested format; return ``{format: path}`` written.

    Args:
        out_dir: output folder (created).
        slide_name: the slide's name (file names and the ``slide`` column).
        detections: ``x, y`` (level-0 px), ``score``, ``label``; optional ``class`` (e.g. normal/atypical),
            ``p_atypical`` and any other columns (kept in the CSV).
        mpp: µm per level-0 px (for the mm columns and the MIDOG JSON).
        formats: any of ``csv``, ``geojson``, ``midog``, ``sqlite``.
        slide_dims: level-0 ``(width, height)``, recorded in the done marker.
        class_colors: colour per class for GeoJSON (default :data:`DEFAULT_CLASS_COLORS`).

    Returns:
        The formats written and their paths.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> dets = pd.DataFrame({"x": [10.0], "y": [20.0], "score": [0.8], "label": ["mitotic figure"]})
        >>> sorted(write_detection_outputs(d, "s1", dets, mpp=0.25, formats=("csv",)))
        ['csv']
    """
    paths = output_paths(out_dir, slide_name, formats)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    table = detections_table(detections, slide_name=slide_name, mpp=mpp)
    colors = {**DEFAULT_CLASS_COLORS, **(class_colors or {})}
    written: dict[str, Path] = {}
    for fmt, path in paths.items():
        if fmt == "csv":
            _write_csv(path, table)
        else:
            _write_other(
                fmt, path, table, slide_name=slide_name, mpp=mpp, slide_dims=slide_dims, class_colors=colors
            )
        written[fmt] = path
    return written


def write_done_marker(
    out_dir: str | os.PathLike[str], slide_name: str, written: Mapping[str, Path], info: Mapping[str, Any]
) -> Path:
    """Write ``<name>.done.json`` last: the slide's outputs are complete (the formats and run info inside).

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = write_done_marker(d, "s1", {}, {"n": 0})
        >>> outputs_complete(d, "s1")
        True
    """
    marker = Path(out_dir) / f"{slide_name}{DONE_SUFFIX}"
    payload = {"slide": slide_name, "files": {k: Path(v).name for k, v in written.items()}, **info}
    return write_text_atomic(marker, json.dumps(to_jsonable(payload), indent=2, default=str))


def outputs_complete(
    out_dir: str | os.PathLike[str], slide_name: str, formats: Sequence[str] | None = None
) -> bool:
    """True when the done marker exists, every file it lists exists, and it covers ``formats`` (if given)."""
    marker = Path(out_dir) / f"{slide_name}{DONE_SUFFIX}"
    if not marker.is_file():
        return False
    try:
        payload = json.loads(marker.read_text(encoding="utf-8"))
        files = dict(payload.get("files", {}))
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    if formats is not None:
        unavailable = set(payload.get("unavailable_formats", []))
        if any(f not in files and f not in unavailable for f in formats):
            return False
    return all((Path(out_dir) / name).is_file() for name in files.values())
