"""One catalog shape for every source: a table of plain records.

Each row is one figure (mitosis or imposter), either as its own patch image or as a point on a slide.

| column    | meaning |
| --------- | ------- |
| image     | patch image file (``""`` when the record is a point on a slide) |
| page      | page of a multi-page TIFF stack (``-1`` when not a stack) |
| slide     | slide file or slide id the figure lies on (``""`` if unknown) |
| x, y      | centre in slide pixels (level 0), ``NaN`` if unknown |
| label     | ``atypical``/``normal`` (classification) or ``mitotic figure``/``hard negative`` (detection) |
| target    | 1 for atypical / mitotic figure, 0 for normal / hard negative, -1 unlabelled |
| experts   | tuple of each expert's vote (1 positive, 0 negative, ``None`` missing) |
| hard      | the experts disagree |
| tumor, scanner, origin, species | domain fields (``""`` if unknown) |
| domain    | the domain key used for leave-one-domain-out splits |
| group     | split group (slide / patient): rows of one group never straddle a split |
| source    | which reader produced the row (``amibr``, ``midog++``, ``synthetic``, …) |
| subclass  | finer label where the source has one (``AMF multipolar``, ``NMF metaphase``) |
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

CATALOG_COLUMNS: tuple[str, ...] = (
    "image", "page", "slide", "x", "y", "label", "target", "experts", "hard",
    "tumor", "scanner", "origin", "species", "domain", "group", "source", "subclass",
)  # fmt: skip

CLASSIFICATION_LABELS = ("normal", "atypical")
DETECTION_LABELS = ("hard negative", "mitotic figure")
UNLABELLED = "unlabelled"

_TARGET_OF_LABEL = {
    "normal": 0,
    "atypical": 1,
    "hard negative": 0,
    "mitotic figure": 1,
    UNLABELLED: -1,
}

_DEFAULTS: dict[str, Any] = {
    "image": "",
    "page": -1,
    "slide": "",
    "x": math.nan,
    "y": math.nan,
    "label": UNLABELLED,
    "experts": (),
    "tumor": "",
    "scanner": "",
    "origin": "",
    "species": "",
    "domain": "",
    "group": "",
    "source": "",
    "subclass": "",
}


def target_of(label: str) -> int:
    """Integer target of a label name (1 positive, 0 negative, -1 unlabelled)."""
    try:
        return _TARGET_OF_LABEL[label]
    except KeyError:
        raise ValueError(f"unknown label {label!r}; expected one of {sorted(_TARGET_OF_LABEL)}") from None


def experts_disagree(votes: Iterable[int | None]) -> bool:
    """True when the known votes are not all the same."""
    known = {v for v in votes if v is not None}
    return len(known) > 1


def make_catalog(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a catalog from row mappings, filling defaults and derived columns.

    ``target`` is derived from ``label``, ``hard`` from ``experts`` (unless given), ``group`` falls back to
    ``slide`` and then to ``image``.

    Examples:
        >>> cat = make_catalog([{"image": "a.png", "label": "atypical", "experts": (1, 0, 1)}])
        >>> int(cat.loc[0, "target"]), bool(cat.loc[0, "hard"]), cat.loc[0, "group"]
        (1, True, 'a.png')
    """
    records = []
    for row in rows:
        unknown = set(row) - set(CATALOG_COLUMNS)
        if unknown:
            raise ValueError(f"unknown catalog columns: {sorted(unknown)}")
        rec = {**_DEFAULTS, **row}
        rec["experts"] = tuple(rec["experts"])
        rec["target"] = target_of(rec["label"])
        if "hard" not in row:
            rec["hard"] = experts_disagree(rec["experts"])
        if not rec["group"]:
            rec["group"] = rec["slide"] or rec["image"]
        records.append(rec)
    frame = pd.DataFrame.from_records(records, columns=list(CATALOG_COLUMNS))
    if frame.empty:
        return frame
    frame["page"] = frame["page"].astype(int)
    frame["target"] = frame["target"].astype(int)
    frame["hard"] = frame["hard"].astype(bool)
    frame["x"] = frame["x"].astype(float)
    frame["y"] = frame["y"].astype(float)
    return frame


def validate_catalog(frame: pd.DataFrame) -> pd.DataFrame:
    """Raise ``ValueError`` unless ``frame`` has every catalog column; return it unchanged."""
    missing = [c for c in CATALOG_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a mitoscope catalog: missing columns {missing}")
    return frame
