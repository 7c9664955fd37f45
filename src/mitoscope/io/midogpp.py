"""MIDOG++ / MIDOG 2021 JSON (COCO-like, ``bbox`` = ``[x1, y1, x2, y2]``) to and from the catalog.

Shape of the file (``MIDOG++.json``)::

    {"info": {...}, "licenses": [...],
     "images": [{"file_name": "001.tiff", "id": 1, "width": 7215, "height": 5412, "tumor_type": "..."}],
     "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
     "annotations": [{"bbox": [x1, y1, x2, y2], "category_id": 1, "image_id": 1, "labels": [1, 2, 1], "id": 1}]}

``labels`` are the experts' votes (1 mitotic figure, 2 not). The MIDOG 2021 file has the same shape without
``labels`` and ``tumor_type``. Extra per-annotation keys are kept when writing; ``atypical`` (true/false) is read
into the catalog's ``subclass`` (``"atypical"``/``"normal"``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mitoscope.io.catalog import make_catalog
from mitoscope.io.tables import read_json
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable

BOX_SIZE = 50
MIDOGPP_CATEGORIES = [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}]
_LABEL_OF_CATEGORY = {1: "mitotic figure", 2: "hard negative"}
_CATEGORY_OF_LABEL = {"mitotic figure": 1, "hard negative": 2, "not mitotic figure": 2}

# the same tumour appears under two names in the MIDOG++ files
TUMOR_ALIASES = {"canine lymphosarcoma": "canine lymphoma"}

# MIDOG 2021 training set: the scanner of each case range (from the challenge description)
MIDOG2021_SCANNERS = (
    (1, 50, "Hamamatsu XR"),
    (51, 100, "Hamamatsu S360"),
    (101, 150, "Aperio ScanScope CS2"),
    (151, 200, "Leica GT450"),
)


def canonical_tumor(name: str) -> str:
    """Harmonise tumour names across MIDOG files (``canine lymphosarcoma`` → ``canine lymphoma``).

    Examples:
        >>> canonical_tumor("canine lymphosarcoma")
        'canine lymphoma'
    """
    name = str(name or "").strip()
    return TUMOR_ALIASES.get(name.lower(), name)


def _slide_number(name: str) -> int | None:
    stem = Path(str(name)).stem
    return int(stem) if stem.isdigit() else None


def read_xvalidation_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``MIDOG++_datasets_xvalidation.csv`` (``;``-separated) indexed by slide number.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
        >>> _ = p.write_text("Slide;Dataset;Tumor;Scanner;Origin;Species\\n7;train;canine lymphoma;A;B;Canine\\n")
        >>> read_xvalidation_csv(p).loc[7, "Dataset"]
        'train'
    """
    try:
        frame = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read the cross-validation CSV: {exc}", path=path) from exc
    need = ["Slide", "Dataset", "Tumor", "Scanner", "Origin", "Species"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise InputError(f"missing columns {missing} (found {list(frame.columns)})", path=path)
    slides = []
    for i, value in enumerate(frame["Slide"]):
        num = _slide_number(value)
        if num is None:
            raise InputError(f"Slide {value!r} is not a case number", path=path, row=i + 2)
        slides.append(num)
    frame.index = pd.Index(slides, name="slide_number")
    frame["Tumor"] = frame["Tumor"].map(canonical_tumor)
    return frame


def _load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise InputError("not a MIDOG/COCO JSON (needs 'images' and 'annotations')", path=path)
    return data


def read_midogpp_json(
    path: str | os.PathLike[str],
    *,
    xvalidation_csv: str | os.PathLike[str] | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """Read a MIDOG++ (or MIDOG 2021) JSON into a detection catalog.

    One row per annotation: ``slide`` = file name, ``x``/``y`` = box centre, ``label`` ``mitotic figure`` or
    ``hard negative``, ``experts`` from ``labels`` (1 for a mitotic-figure vote, 0 otherwise), ``tumor`` from
    ``tumor_type``; ``group`` = slide, ``domain`` = the image's ``domain`` key when present (synthetic regions),
    else the tumour (or scanner when there is no tumour). With the cross-validation CSV,
    ``scanner``/``origin``/``species`` are filled and a ``split`` column (``train``/``test``) is added.
    Images without annotations are not in the catalog (their list is in ``frame.attrs["images"]``).

    Args:
        path: the JSON file.
        xvalidation_csv: optional ``MIDOG++_datasets_xvalidation.csv``.
        source: value of the ``source`` column (default ``midog++``, or ``midog2021`` for a file without votes).

    Returns:
        The catalog; ``frame.attrs["images"]`` maps file name to ``{"width", "height", "tumor"}``.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = write_midogpp_json(p, [{"file_name": "001.tiff", "id": 1, "width": 99, "height": 99,
        ...     "tumor_type": "human melanoma"}], [{"bbox": [10, 10, 60, 60], "category_id": 1, "image_id": 1,
        ...     "labels": [1, 2, 1]}])
        >>> cat = read_midogpp_json(p)
        >>> cat[["slide", "x", "y", "label", "experts"]].values.tolist()[0]
        ['001.tiff', 35.0, 35.0, 'mitotic figure', (1, 0, 1)]
    """
    data = _load_json(path)
    xval = read_xvalidation_csv(xvalidation_csv) if xvalidation_csv is not None else None
    domains = xval.to_dict("index") if xval is not None else {}
    categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", MIDOGPP_CATEGORIES)}
    images: dict[int, Mapping[str, Any]] = {}
    for i, img in enumerate(data["images"]):
        try:
            images[int(img["id"])] = img
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"image entry {i} has no valid 'id': {img!r}", path=path) from exc
    has_votes = any("labels" in a for a in data["annotations"][:100])
    source = source or ("midog++" if has_votes else "midog2021")
    rows = []
    splits = []
    for i, ann in enumerate(data["annotations"]):
        try:
            x1, y1, x2, y2 = (float(v) for v in ann["bbox"])
            image = images[int(ann["image_id"])]
            cat_id = int(ann["category_id"])
        except KeyError as exc:
            raise InputError(
                f"annotation {i} (id {ann.get('id')}): missing or unknown {exc}", path=path
            ) from exc
        except (TypeError, ValueError) as exc:
            raise InputError(f"annotation {i} (id {ann.get('id')}): malformed: {exc}", path=path) from exc
        name = categories.get(cat_id, "")
        label: str | None
        if name in _CATEGORY_OF_LABEL:
            label = _LABEL_OF_CATEGORY[_CATEGORY_OF_LABEL[name]]
        else:
            label = _LABEL_OF_CATEGORY.get(cat_id) if not name else None
        if label is None:
            raise InputError(f"annotation {i}: unknown category {cat_id} ({name!r})", path=path)
        votes = tuple(1 if int(v) == 1 else 0 for v in ann.get("labels", ()) or ())
        file_name = str(image.get("file_name", image["id"]))
        tumor = canonical_tumor(image.get("tumor_type", ""))
        num = _slide_number(file_name)
        scanner = origin = species = split = ""
        if num is not None and num in domains:
            info = domains[num]
            scanner, origin, species, split = (
                info["Scanner"],
                info["Origin"],
                info["Species"],
                info["Dataset"],
            )
            tumor = tumor or info["Tumor"]
        elif not has_votes and num is not None:
            scanner = next((s for lo, hi, s in MIDOG2021_SCANNERS if lo <= num <= hi), "")
            tumor = tumor or "human breast cancer"
        subclass = ""
        if "atypical" in ann and ann["atypical"] is not None:
            subclass = "atypical" if _truthy(ann["atypical"]) else "normal"
        elif "subclass" in ann:
            subclass = str(ann["subclass"])
        rows.append(
            {
                "slide": file_name,
                "x": (x1 + x2) / 2.0,
                "y": (y1 + y2) / 2.0,
                "label": label,
                "experts": votes,
                "tumor": tumor,
                "scanner": scanner,
                "origin": origin,
                "species": species,
                "domain": str(image.get("domain") or tumor or scanner),
                "group": file_name,
                "source": source,
                "subclass": subclass,
            }
        )
        splits.append(split)
    frame = make_catalog(rows)
    if xval is not None and not frame.empty:
        frame["split"] = splits
    frame.attrs["images"] = {
        str(img.get("file_name", img["id"])): {
            "width": img.get("width"),
            "height": img.get("height"),
            "tumor": canonical_tumor(img.get("tumor_type", "")),
        }
        for img in images.values()
    }
    return frame


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "atypical", "amf"}
    return bool(value)


def write_midogpp_json(
    path: str | os.PathLike[str],
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    *,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write images and annotations in the MIDOG++ JSON shape, atomically.

    Each image needs ``file_name`` and ``id`` (``width``, ``height``, ``tumor_type`` are written when given; other
    keys are kept). Each annotation needs ``image_id`` and either ``bbox`` (``[x1, y1, x2, y2]``) or a centre
    ``x``/``y`` (a 50×50 box is made), and either ``category_id`` (1/2) or ``label`` (``mitotic figure`` /
    ``hard negative``); ``labels`` (votes) and ``id`` are optional (ids are numbered from 1); any other key (e.g.
    ``atypical``) is kept as it is.

    Returns:
        The written path.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = write_midogpp_json(p, [{"file_name": "a.tiff", "id": 1, "width": 500, "height": 400}],
        ...     [{"x": 100, "y": 120, "label": "mitotic figure", "image_id": 1, "atypical": True}])
        >>> ann = json.loads(p.read_text())["annotations"][0]
        >>> ann["bbox"], ann["category_id"], ann["atypical"]
        ([75, 95, 125, 145], 1, True)
    """
    out_images = []
    ids = set()
    for i, img in enumerate(images):
        if "file_name" not in img or "id" not in img:
            raise InputError(f"image {i} needs 'file_name' and 'id', got {sorted(img)}", path=path)
        entry = {"license": 1, **{k: to_jsonable(v) for k, v in img.items()}}
        out_images.append(entry)
        ids.add(entry["id"])
    out_anns = []
    for i, ann in enumerate(annotations):
        entry = {k: to_jsonable(v) for k, v in ann.items() if k not in ("x", "y", "label")}
        if "bbox" not in entry:
            if "x" not in ann or "y" not in ann:
                raise InputError(f"annotation {i} needs 'bbox' or 'x'/'y'", path=path)
            cx, cy = float(ann["x"]), float(ann["y"])
            if math.isnan(cx) or math.isnan(cy):
                raise InputError(f"annotation {i} has no coordinates", path=path)
            half = BOX_SIZE / 2
            # whole-pixel boxes as integers (as in MIDOG++); half-pixel centres keep their exact box
            entry["bbox"] = [_num(cx - half), _num(cy - half), _num(cx + half), _num(cy + half)]
        if "category_id" not in entry:
            label = str(ann.get("label", ""))
            if label not in _CATEGORY_OF_LABEL:
                raise InputError(
                    f"annotation {i}: label {label!r} is not 'mitotic figure' or 'hard negative'", path=path
                )
            entry["category_id"] = _CATEGORY_OF_LABEL[label]
        if entry.get("image_id") not in ids:
            raise InputError(
                f"annotation {i}: image_id {entry.get('image_id')!r} is not an image id", path=path
            )
        entry.setdefault("id", i + 1)
        out_anns.append(entry)
    doc = {
        "info": info or {"description": "written by mitoscope", "version": "1.0"},
        "licenses": [{"id": 1, "name": "unspecified", "url": ""}],
        "images": out_images,
        "categories": MIDOGPP_CATEGORIES,
        "annotations": out_anns,
    }
    return write_text_atomic(path, json.dumps(doc))


def catalog_to_midogpp(
    catalog: pd.DataFrame, *, slide_dims: Mapping[str, tuple[int, int]] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turn a detection catalog (or detections table with ``slide``/``x``/``y``/``label``) into images + annotations.

    Examples:
        >>> cat = make_catalog([{"slide": "a.tiff", "x": 10, "y": 20, "label": "mitotic figure"}])
        >>> imgs, anns = catalog_to_midogpp(cat)
        >>> imgs[0]["file_name"], anns[0]["x"], anns[0]["y"], anns[0]["label"]
        ('a.tiff', 10.0, 20.0, 'mitotic figure')
    """
    dims = dict(slide_dims or {})
    known = catalog.attrs.get("images", {}) if hasattr(catalog, "attrs") else {}
    slides = list(dict.fromkeys(str(s) for s in catalog["slide"]))
    images = []
    id_of: dict[str, int] = {}
    for i, slide in enumerate(slides, start=1):
        nums = _slide_number(slide)
        img_id = nums if nums is not None and nums not in id_of.values() else i
        id_of[slide] = img_id
        img: dict[str, Any] = {"file_name": slide, "id": img_id}
        if slide in dims:
            img["width"], img["height"] = (int(v) for v in dims[slide])
        elif slide in known:
            img["width"], img["height"] = known[slide].get("width"), known[slide].get("height")
        tumors = catalog.loc[catalog["slide"].astype(str) == slide, "tumor"] if "tumor" in catalog else []
        tumor = next((t for t in tumors if t), "")
        if tumor:
            img["tumor_type"] = tumor
        images.append(img)
    annotations = []
    for i, row in enumerate(catalog.itertuples(index=False), start=1):
        rec = row._asdict()
        ann: dict[str, Any] = {
            "x": rec["x"],
            "y": rec["y"],
            "label": rec["label"],
            "image_id": id_of[str(rec["slide"])],
        }
        votes = rec.get("experts")
        if votes:
            ann["labels"] = [1 if v == 1 else 2 for v in votes if v is not None]
        if rec.get("subclass") in ("atypical", "normal"):
            ann["atypical"] = rec["subclass"] == "atypical"
        if "score" in rec and rec["score"] is not None and not pd.isna(rec["score"]):
            ann["score"] = float(rec["score"])
        ann["id"] = i
        annotations.append(ann)
    return images, annotations
