"""Write a catalog of annotations in another format: catalog CSV, SlideRunner SQLite, QuPath GeoJSON, MIDOG++ JSON."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mitoscope.io.catalog_csv import write_catalog_csv
from mitoscope.io.geojson import write_geojson
from mitoscope.io.midogpp import catalog_to_midogpp, write_midogpp_json
from mitoscope.io.sliderunner import catalog_to_detections, write_sliderunner
from mitoscope.utils.errors import InputError

CONVERT_TARGETS = ("sliderunner", "geojson", "midogpp", "csv")
SUFFIX_TARGET = {".sqlite": "sliderunner", ".db": "sliderunner", ".geojson": "geojson", ".json": "midogpp",
                 ".csv": "csv"}  # fmt: skip


def convert_target(out: str | os.PathLike[str], to: str | None = None) -> str:
    """The output format: ``to``, else the one ``out``'s suffix names.

    Examples:
        >>> convert_target("a.geojson"), convert_target("a.json", "csv")
        ('geojson', 'csv')
    """
    target = to or SUFFIX_TARGET.get(Path(out).suffix.lower())
    if target not in CONVERT_TARGETS:
        raise InputError(f"choose the output format with --to ({', '.join(CONVERT_TARGETS)})", path=out)
    return target


def write_annotations(catalog: pd.DataFrame, out: str | os.PathLike[str], target: str) -> None:
    """Write ``catalog`` to ``out`` as ``target`` (one of :data:`CONVERT_TARGETS`); all but ``csv`` need every record
    to be a point on a slide.

    Examples:
        >>> import tempfile
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog([{"slide": "a.tiff", "x": 10.0, "y": 20.0, "label": "mitotic figure"}])
        >>> p = Path(tempfile.mkdtemp()) / "a.geojson"
        >>> write_annotations(cat, p, "geojson"); p.is_file()
        True
    """
    if target == "csv":
        write_catalog_csv(out, catalog)
        return
    points = catalog[(catalog["slide"].astype(str) != "") & catalog["x"].notna() & catalog["y"].notna()]
    if len(points) != len(catalog):
        raise InputError(
            f"{len(catalog) - len(points)} records are not points on a slide; only 'csv' can hold them"
        )
    if target == "sliderunner":
        dims = {
            k: (v["width"], v["height"]) for k, v in catalog.attrs.get("images", {}).items() if v.get("width")
        }
        write_sliderunner(out, catalog_to_detections(catalog), slide_dims=dims)
    elif target == "geojson":
        cols = [c for c in ("x", "y", "score", "label", "p_atypical", "slide") if c in catalog]
        write_geojson(out, catalog[cols])
    elif target == "midogpp":
        images, annotations = catalog_to_midogpp(catalog)
        write_midogpp_json(out, images, annotations)
    else:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(CONVERT_TARGETS)}")
