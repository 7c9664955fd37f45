"""QuPath-compatible GeoJSON of point detections (a FeatureCollection of ``Point`` features).

Each feature carries ``properties = {"objectType": "annotation", "classification": {"name", "color": [r, g, b]},
"measurements": {"score": …, "p_atypical": …}, "isLocked": false}``; QuPath imports it with classes and colours.
"""

from __future__ import annotations

import json
import math
import os
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mitoscope.io.tables import read_json
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError

DEFAULT_CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "mitotic figure": (252, 124, 167),
    "hard negative": (197, 182, 178),
    "atypical": (230, 25, 75),
    "normal": (60, 180, 75),
}
_MEASUREMENTS = ("score", "p_atypical")


def _color(name: str, colors: Mapping[str, tuple[int, int, int]]) -> list[int]:
    if name in colors:
        return [int(c) for c in colors[name]]
    h = zlib.crc32(name.encode("utf-8")) & 0xFFFFFF  # a stable colour for classes without one
    return [(h >> 16) & 255, (h >> 8) & 255, h & 255]


def write_geojson(
    path: str | os.PathLike[str],
    detections: pd.DataFrame,
    *,
    class_colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write a detections table (x, y, score, label[, p_atypical][, slide]) as QuPath GeoJSON, atomically.

    Examples:
        >>> import tempfile, pathlib
        >>> det = pd.DataFrame({"x": [10.0], "y": [20.0], "score": [0.9], "label": ["mitotic figure"]})
        >>> p = write_geojson(pathlib.Path(tempfile.mkdtemp()) / "d.geojson", det)
        >>> f = json.loads(p.read_text())["features"][0]
        >>> f["geometry"], f["properties"]["classification"]["name"]
        ({'type': 'Point', 'coordinates': [10.0, 20.0]}, 'mitotic figure')
    """
    colors = {**DEFAULT_CLASS_COLORS, **(class_colors or {})}
    missing = [c for c in ("x", "y") if c not in detections.columns]
    if missing:
        raise InputError(f"detections need columns {missing}; found {list(detections.columns)}", path=path)
    features = []
    for rec in detections.to_dict("records"):
        x, y = float(rec["x"]), float(rec["y"])
        if math.isnan(x) or math.isnan(y):
            raise InputError("a detection has no coordinates", path=path)
        props: dict[str, Any] = {"objectType": "annotation", "isLocked": False}
        label = rec.get("label")
        if label is not None and str(label):
            props["classification"] = {"name": str(label), "color": _color(str(label), colors)}
        measurements = {
            k: float(rec[k]) for k in _MEASUREMENTS if k in rec and rec[k] is not None and not pd.isna(rec[k])
        }
        if measurements:
            props["measurements"] = measurements
        if "slide" in rec and rec["slide"] is not None and str(rec["slide"]):
            props["metadata"] = {"slide": str(rec["slide"])}
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": {"type": "Point", "coordinates": [x, y]},
                "properties": props,
            }
        )
    return write_text_atomic(path, json.dumps({"type": "FeatureCollection", "features": features}))


def _points(geometry: Mapping[str, Any]) -> list[tuple[float, float]]:
    kind = geometry.get("type")
    coords: Any = geometry.get("coordinates")
    if kind == "Point":
        return [(float(coords[0]), float(coords[1]))]
    if kind == "MultiPoint":
        return [(float(c[0]), float(c[1])) for c in coords]
    if kind in ("Polygon", "MultiPolygon", "LineString"):  # a shape: its mean vertex stands for it
        flat: list[Any] = coords
        while flat and isinstance(flat[0], list) and isinstance(flat[0][0], list):
            flat = [c for part in flat for c in part]
        xs, ys = [float(c[0]) for c in flat], [float(c[1]) for c in flat]
        return [(sum(xs) / len(xs), sum(ys) / len(ys))]
    raise ValueError(f"unsupported geometry type {kind!r}")


def read_geojson(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read point features (QuPath export or :func:`write_geojson`) into a detections table.

    Columns ``x``, ``y``, ``score`` (NaN when absent), ``label`` (classification name, ``""`` when none), plus
    ``p_atypical`` and ``slide`` when any feature has them.

    Examples:
        >>> import tempfile, pathlib
        >>> det = pd.DataFrame({"x": [10.0], "y": [20.0], "score": [0.9], "label": ["atypical"]})
        >>> read_geojson(write_geojson(pathlib.Path(tempfile.mkdtemp()) / "d.geojson", det)).values.tolist()
        [[10.0, 20.0, 0.9, 'atypical']]
    """
    data = read_json(path)
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, list):
        features = data
    else:
        raise InputError("not GeoJSON (expected a FeatureCollection or a list of Features)", path=path)
    rows = []
    for i, feat in enumerate(features):
        try:
            points = _points(feat.get("geometry") or {})
        except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as exc:
            raise InputError(f"feature {i}: {exc}", path=path) from exc
        props = feat.get("properties") or {}
        cls = props.get("classification") or {}
        meas = props.get("measurements") or {}
        if isinstance(meas, list):  # older QuPath: [{"name": ..., "value": ...}]
            meas = {m.get("name"): m.get("value") for m in meas if isinstance(m, dict)}
        meta = props.get("metadata") or {}
        for x, y in points:
            row: dict[str, Any] = {
                "x": x,
                "y": y,
                "score": float(meas["score"]) if meas.get("score") is not None else math.nan,
                "label": str(cls.get("name", "")) if isinstance(cls, dict) else str(cls),
            }
            if meas.get("p_atypical") is not None:
                row["p_atypical"] = float(meas["p_atypical"])
            if "slide" in meta:
                row["slide"] = str(meta["slide"])
            rows.append(row)
    frame = pd.DataFrame(rows)
    for col in ("x", "y", "score", "label"):
        if col not in frame:
            frame[col] = pd.Series(dtype=float if col != "label" else object)
    order = ["x", "y", "score", "label"] + [c for c in ("p_atypical", "slide") if c in frame]
    return frame[order]
