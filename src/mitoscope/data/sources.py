"""Recognise a dataset's format from a file or folder and load it as a catalog: :func:`load_catalog`.

Formats (names returned by :func:`detect_source`):

| format          | what |
| --------------- | ---- |
| ``amibr``       | AMi-Br ``amibr_train.csv`` (or its folder) |
| ``atnorm-md``   | AtNorM-MD ``expert_votes.csv`` (or its folder) |
| ``class-folders`` | a folder of ``Atypical/`` and ``Normal/`` images (any depth, no CSV) |
| ``midog25``     | MIDOG 2025 atypical CSV (slide points; patches with ``images_dir=``) |
| ``midog++``     | MIDOG++ JSON (with its ``MIDOG++_datasets_xvalidation.csv`` when it lies beside it) |
| ``midog2021``   | MIDOG 2021 JSON |
| ``sliderunner`` | SlideRunner SQLite |
| ``track2-stack``| MIDOG 2025 Track 2 multi-page TIFF of crops |
| ``catalog-csv`` | a catalog CSV (``patches.csv`` of ``extract-patches``, or any CSV with ``label`` and ``image`` or ``slide,x,y``) |
| ``geojson``     | point annotations/detections as GeoJSON (QuPath) |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.io.amibr import AMIBR_COLUMNS, read_amibr_csv
from mitoscope.io.catalog import make_catalog, validate_catalog
from mitoscope.io.catalog_csv import read_catalog_csv
from mitoscope.io.class_folders import class_of_folder, read_atnorm_votes, read_class_folders
from mitoscope.io.geojson import read_geojson
from mitoscope.io.midog25 import MIDOG25_COLUMNS, read_midog25_csv
from mitoscope.io.midog_outputs import read_track2_stack
from mitoscope.io.midogpp import read_midogpp_json
from mitoscope.io.sliderunner import read_sliderunner
from mitoscope.io.slides import looks_like_slide
from mitoscope.io.tiff_slide import TiffLog
from mitoscope.utils.errors import InputError

FORMATS = (
    "amibr", "atnorm-md", "class-folders", "midog25", "midog++", "midog2021", "sliderunner", "track2-stack",
    "catalog-csv", "geojson",
)  # fmt: skip
XVALIDATION_NAME = "MIDOG++_datasets_xvalidation.csv"


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            line = fh.readline()
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from exc
    sep = ";" if line.count(";") > line.count(",") else ","
    return [c.strip().strip('"') for c in line.strip().split(sep)]


def _csv_format(path: Path) -> str | None:
    cols = set(_csv_header(path))
    if set(AMIBR_COLUMNS) <= cols:
        return "amibr"
    if set(MIDOG25_COLUMNS) <= cols:
        return "midog25"
    if {"Filename", "Majority"} <= cols:
        return "atnorm-md"
    if "label" in cols and ("image" in cols or {"slide", "x", "y"} <= cols):
        return "catalog-csv"
    return None


def _json_format(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(1 << 20)
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from exc
    if '"FeatureCollection"' in head or '"Feature"' in head:
        return "geojson"
    if '"annotations"' in head or '"images"' in head:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read: {exc}", path=path) from exc
        if '"annotations"' in text and '"images"' in text:
            return "midog++" if '"labels"' in text else "midog2021"
    return None


def _tiff_format(path: Path) -> str | None:
    import tifffile

    try:
        with TiffLog(), tifffile.TiffFile(path) as tif:
            pages = tif.pages
            if len(pages) < 2:
                return None
            first = pages.first if hasattr(pages, "first") else pages[0]
            shapes = {p.shape for p in pages[: min(len(pages), 64)]}
            if len(shapes) == 1 and max(first.shape[:2]) <= 1024:
                return "track2-stack"
    except (tifffile.TiffFileError, OSError, ValueError):
        return None
    return None


def _has_class_folders(path: Path) -> bool:
    return any(any(class_of_folder(d) for d in dirnames) for _dirpath, dirnames, _ in os.walk(path))


def _file_format(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return _csv_format(path)
    if suffix in (".json", ".geojson"):
        return _json_format(path)
    if suffix in (".sqlite", ".db", ".sqlite3"):
        return "sliderunner"
    if suffix in (".tif", ".tiff"):
        return _tiff_format(path)
    return None


def _folder_candidates(path: Path) -> list[tuple[Path, str]]:
    found = []
    for child in sorted(path.iterdir()):
        if child.is_file() and child.name != XVALIDATION_NAME:
            fmt = _file_format(child)
            if fmt is not None:
                found.append((child, fmt))
    return found


def resolve_source(source: str | os.PathLike[str]) -> tuple[Path, str]:
    """The file to read and its format; a folder resolves to its one recognised file or to class folders.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "c.csv").write_text("image,label\\n")
        >>> resolve_source(d)[1]
        'catalog-csv'
    """
    path = Path(source)
    if not path.exists():
        raise InputError("not found", path=path)
    if path.is_file():
        fmt = _file_format(path)
        if fmt is None:
            raise InputError(f"unrecognised data format; supported formats: {', '.join(FORMATS)}", path=path)
        return path, fmt
    candidates = _folder_candidates(path)
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        listing = ", ".join(f"{p.name} ({f})" for p, f in candidates)
        raise InputError(f"folder holds several datasets, name one of them: {listing}", path=path)
    if _has_class_folders(path):
        return path, "class-folders"
    raise InputError(
        "no recognised dataset in this folder (expected a known CSV/JSON/SQLite file or Atypical/ and Normal/ "
        "class folders)",
        path=path,
    )


def is_slide_source(source: str | os.PathLike[str]) -> bool:
    """True for a slide file (one that ``open_slide`` reads) rather than a dataset.

    A multi-page TIFF of equal small crops stays a dataset (``track2-stack``); a TIFF, SVS, OpenSlide format or
    plain image that no dataset format claims is a slide.

    Examples:
        >>> is_slide_source("case_01.svs"), is_slide_source("amibr_train.csv")
        (True, False)
    """
    path = Path(source)
    if not looks_like_slide(path):
        return False
    return not path.is_file() or _file_format(path) is None


def detect_source(source: str | os.PathLike[str]) -> str:
    """The format of a dataset file or folder (one of :data:`FORMATS`).

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "v.csv"
        >>> _ = p.write_text("Filename,Expert_1,Majority\\n")
        >>> detect_source(p)
        'atnorm-md'
    """
    return resolve_source(source)[1]


def _geojson_catalog(path: Path, slide: str | None) -> pd.DataFrame:
    det = read_geojson(path)
    aliases = {"not mitotic figure": "hard negative", "": "unlabelled"}
    rows = []
    for i, rec in enumerate(det.to_dict("records")):
        label = aliases.get(str(rec["label"]).lower(), str(rec["label"]).lower())
        if label not in ("mitotic figure", "hard negative", "atypical", "normal", "unlabelled"):
            raise InputError(f"feature {i}: class {rec['label']!r} is not one mitoscope knows", path=path)
        name = slide or rec.get("slide") or path.stem
        rows.append({"slide": str(name), "x": rec["x"], "y": rec["y"], "label": label, "source": "geojson"})
    return make_catalog(rows)


def load_catalog(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    format: str | None = None,
    skip_bad: bool = False,
    check_files: bool = True,
    images_dir: str | os.PathLike[str] | None = None,
    xvalidation_csv: str | os.PathLike[str] | None = None,
    slide: str | None = None,
) -> pd.DataFrame:
    """Load any supported dataset as a catalog (see :mod:`mitoscope.io.catalog`).

    Args:
        source: a file or folder of a supported format, or an existing catalog (returned as is).
        format: skip auto-detection (one of :data:`FORMATS`).
        skip_bad: skip bad rows (listed in ``frame.attrs["skipped"]``) instead of raising ``InputError``.
        check_files: check that patch image files exist.
        images_dir: MIDOG 2025 CSV: folder of its patch images; AMi-Br / AtNorM-MD: images root.
        xvalidation_csv: MIDOG++ domain/split CSV (found automatically beside the JSON).
        slide: GeoJSON: the slide the points lie on (default: the file's stem).

    Returns:
        The catalog; ``frame.attrs["format"]`` and ``frame.attrs["path"]`` say what was read.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.csv"
        >>> _ = p.write_text("slide,x,y,label\\na.tiff,1,2,atypical\\n")
        >>> cat = load_catalog(p)
        >>> cat.attrs["format"], len(cat)
        ('catalog-csv', 1)
    """
    if isinstance(source, pd.DataFrame):
        return validate_catalog(source)
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; use one of {FORMATS}")
        path = Path(source)
        if not path.exists():
            raise InputError("not found", path=path)
        if path.is_dir() and format != "class-folders":
            found = [p for p, f in _folder_candidates(path) if f == format]
            if len(found) != 1:
                raise InputError(f"expected one {format} file in this folder, found {len(found)}", path=path)
            path = found[0]
        fmt = format
    else:
        path, fmt = resolve_source(source)
    frame = _load(path, fmt, skip_bad=skip_bad, check_files=check_files, images_dir=images_dir,
                  xvalidation_csv=xvalidation_csv, slide=slide)  # fmt: skip
    frame.attrs["format"] = fmt
    frame.attrs["path"] = str(path)
    frame.attrs.setdefault("skipped", [])
    return frame


def _load(path: Path, fmt: str, **opts: Any) -> pd.DataFrame:
    skip_bad, check_files, images_dir = opts["skip_bad"], opts["check_files"], opts["images_dir"]
    if fmt == "amibr":
        return read_amibr_csv(path, images_root=images_dir, check_files=check_files, skip_bad=skip_bad)
    if fmt == "atnorm-md":
        return read_atnorm_votes(path, images_root=images_dir, check_files=check_files, skip_bad=skip_bad)
    if fmt == "class-folders":
        return read_class_folders(path)
    if fmt == "midog25":
        return read_midog25_csv(path, images_dir=images_dir, check_files=check_files, skip_bad=skip_bad)
    if fmt in ("midog++", "midog2021"):
        xval = opts["xvalidation_csv"]
        if xval is None and fmt == "midog++" and (path.parent / XVALIDATION_NAME).is_file():
            xval = path.parent / XVALIDATION_NAME
        return read_midogpp_json(path, xvalidation_csv=xval)
    if fmt == "sliderunner":
        return read_sliderunner(path)
    if fmt == "track2-stack":
        return read_track2_stack(path)
    if fmt == "catalog-csv":
        return read_catalog_csv(path, check_files=check_files, skip_bad=skip_bad)
    if fmt == "geojson":
        return _geojson_catalog(path, opts["slide"])
    raise ValueError(f"unknown format {fmt!r}")


def fleiss_kappa(votes: list[tuple[int | None, ...]] | pd.Series) -> float:
    """Fleiss' κ of binary votes; items with fewer than two votes are left out, missing votes (``None``) allowed.

    Examples:
        >>> round(fleiss_kappa([(1, 1, 1), (0, 0, 0), (1, 0, 1), (0, 0, 1)]), 3)
        0.333
        >>> fleiss_kappa([(1, 1), (0, 0)])
        1.0
    """
    counts = []
    for item in votes:
        known = [v for v in item if v is not None]
        if len(known) >= 2:
            counts.append((sum(known), len(known) - sum(known)))
    if not counts:
        return float("nan")
    arr = np.asarray(counts, dtype=float)
    n_i = arr.sum(axis=1)
    p_i = ((arr**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_bar = p_i.mean()
    p_j = arr.sum(axis=0) / n_i.sum()
    p_e = float((p_j**2).sum())
    if p_e >= 1.0:
        return 1.0 if p_bar >= 1.0 else float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def pairwise_agreement(votes: list[tuple[int | None, ...]] | pd.Series) -> list[dict[str, float | int | str]]:
    """Per pair of expert positions: items both voted on, percentage agreement and Cohen's κ.

    Examples:
        >>> pairwise_agreement([(1, 1), (0, 1), (0, 0), (1, 1)])[0]["agreement"]
        0.75
    """
    items = [tuple(v) for v in votes]
    width = max((len(v) for v in items), default=0)
    out: list[dict[str, float | int | str]] = []
    for a in range(width):
        for b in range(a + 1, width):
            pairs = [(v[a], v[b]) for v in items if len(v) > b and v[a] is not None and v[b] is not None]
            if not pairs:
                continue
            x = np.asarray(pairs, dtype=float)
            agree = float((x[:, 0] == x[:, 1]).mean())
            pa, pb = x[:, 0].mean(), x[:, 1].mean()
            p_e = pa * pb + (1 - pa) * (1 - pb)
            kappa = float((agree - p_e) / (1 - p_e)) if p_e < 1 else float("nan")
            out.append({"pair": f"expert{a + 1}-expert{b + 1}", "items": len(pairs), "agreement": agree,
                        "cohen_kappa": kappa})  # fmt: skip
    return out


def summarize_catalog(catalog: pd.DataFrame) -> dict[str, Any]:
    """Counts per label, domain, hardness and subclass, and the experts' agreement, as plain JSON-able values.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog([{"image": "a", "label": "atypical", "experts": (1, 1)},
        ...                     {"image": "b", "label": "normal", "experts": (0, 1)}])
        >>> s = summarize_catalog(cat)
        >>> s["rows"], s["labels"], s["hard"]
        (2, {'atypical': 1, 'normal': 1}, 1)
    """
    votes = catalog["experts"].tolist() if "experts" in catalog else []
    with_votes = [v for v in votes if len([x for x in v if x is not None]) >= 1]
    summary: dict[str, Any] = {
        "format": catalog.attrs.get("format", ""),
        "path": catalog.attrs.get("path", ""),
        "rows": len(catalog),
        "labels": {str(k): int(v) for k, v in catalog["label"].value_counts().sort_index().items()},
        "groups": int(catalog["group"].nunique()) if len(catalog) else 0,
        "slides": int((catalog["slide"].astype(str) != "").groupby(catalog["slide"]).any().sum()),
        "images": int((catalog["image"].astype(str) != "").sum()),
        "hard": int(catalog["hard"].sum()) if len(catalog) else 0,
        "domains": {},
        "subclasses": {
            str(k): int(v) for k, v in catalog["subclass"][catalog["subclass"] != ""].value_counts().items()
        },
        "experts": {
            "items_with_votes": len(with_votes),
            "max_experts": max((len(v) for v in with_votes), default=0),
            "fleiss_kappa": fleiss_kappa(with_votes) if with_votes else None,
            "pairwise": pairwise_agreement(with_votes) if with_votes else [],
        },
        "skipped": list(catalog.attrs.get("skipped", [])),
    }
    if len(catalog) and (catalog["domain"].astype(str) != "").any():
        table = pd.crosstab(catalog["domain"], catalog["label"])
        summary["domains"] = {
            str(dom): {str(lab): int(n) for lab, n in row.items()} for dom, row in table.iterrows()
        }
    if "split" in catalog:
        summary["splits"] = {str(k): int(v) for k, v in catalog["split"].value_counts().items()}
    return summary


PATCH_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def unreadable_image(path: str | os.PathLike[str]) -> str | None:
    """Why an image file cannot be decoded (None when it can)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # PIL raises many types for broken files
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'cannot decode'}"
    return None


def _patch_folder(folder: Path, bad: list[tuple[Path, str]]) -> pd.DataFrame:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in PATCH_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(PATCH_SUFFIXES)}) in this folder")
    good = []
    for p in files:
        reason = unreadable_image(p)
        if reason is None:
            good.append(p)
        else:
            bad.append((p, reason))
    return make_catalog({"image": str(p), "source": "folder"} for p in good)


def load_patch_input(
    path: str | os.PathLike[str], unreadable: list[tuple[Path, str]] | None = None
) -> tuple[pd.DataFrame, bool]:
    """``(catalog, is_stack)`` of patches to classify: a folder of images (recursive, labels unused), a MIDOG 2025
    Track 2 TIFF stack (one crop per page), a single image, or any source :func:`load_catalog` reads.

    Images of a folder that cannot be decoded are left out and appended to ``unreadable`` with the reason.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "a.png"); _ = (d / "b.png").write_text("no")
        >>> bad = []
        >>> cat, is_stack = load_patch_input(d, bad)
        >>> len(cat), is_stack, [p.name for p, _ in bad]
        (1, False, ['b.png'])
    """
    path = Path(path)
    if path.is_dir():
        return _patch_folder(path, unreadable if unreadable is not None else []), False
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input not found")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):  # a MIDOG 2025 Track 2 stack (one crop per page; one page is a stack too)
        return read_track2_stack(path), True
    if suffix in PATCH_SUFFIXES:
        return make_catalog([{"image": str(path), "source": "file"}]), False
    return load_catalog(path), False
