"""The catalog as a CSV file (what ``extract_patches`` and ``mitoscope data convert --to csv`` write).

``experts`` is written as votes joined by ``|`` (blank for a missing vote, e.g. ``1|0|``). Reading accepts any
CSV with at least ``label`` and either ``image`` or ``slide``/``x``/``y``; other catalog columns are filled in.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from mitoscope.io.catalog import CATALOG_COLUMNS, make_catalog, target_of
from mitoscope.io.tables import BadRows, read_table
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError

_LABEL_ALIASES = {
    "amf": "atypical", "nmf": "normal", "1": None, "0": None, "true": "atypical", "false": "normal",
    "not mitotic figure": "hard negative", "mitosis": "mitotic figure", "non-mitosis": "hard negative",
}  # fmt: skip


def _experts_to_text(votes: object) -> str:
    if not isinstance(votes, tuple | list) or not votes:
        return ""
    return "|".join("" if v is None else str(int(v)) for v in votes) + ("|" if len(votes) == 1 else "")


def _experts_from_text(text: str) -> tuple[int | None, ...]:
    text = str(text or "").strip()
    if not text:
        return ()
    parts = text.split("|")
    if len(parts) == 2 and parts[1] == "" and parts[0] != "":
        parts = parts[:1]
    return tuple(None if p.strip() == "" else int(float(p)) for p in parts)


def write_catalog_csv(path: str | os.PathLike[str], catalog: pd.DataFrame) -> Path:
    """Write a catalog (plus any extra columns) to CSV atomically.

    Examples:
        >>> import tempfile, pathlib
        >>> cat = make_catalog([{"image": "a.png", "label": "atypical", "experts": (1, 0, None)}])
        >>> p = write_catalog_csv(pathlib.Path(tempfile.mkdtemp()) / "c.csv", cat)
        >>> read_catalog_csv(p, check_files=False).loc[0, "experts"]
        (1, 0, None)
    """
    frame = catalog.copy()
    if "experts" in frame:
        frame["experts"] = frame["experts"].map(_experts_to_text)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def _label(value: str) -> str:
    text = str(value).strip()
    low = text.lower()
    alias = _LABEL_ALIASES.get(low, low)
    if alias is None:
        raise ValueError(f"ambiguous label {value!r}: use atypical/normal or mitotic figure/hard negative")
    target_of(alias)  # raises ValueError for unknown labels
    return alias


def read_catalog_csv(
    path: str | os.PathLike[str], *, check_files: bool = True, skip_bad: bool = False
) -> pd.DataFrame:
    """Read a catalog CSV (relative ``image`` paths are resolved against the CSV's folder).

    Args:
        path: the CSV.
        check_files: raise (or skip) rows whose ``image`` file is missing.
        skip_bad: skip bad rows (listed in ``frame.attrs["skipped"]``) instead of raising.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.csv"
        >>> _ = p.write_text("slide,x,y,label\\ns.tiff,10,20,mitotic figure\\n")
        >>> read_catalog_csv(p)[["slide", "x", "target", "group"]].values.tolist()[0]
        ['s.tiff', 10.0, 1, 's.tiff']
    """
    table = read_table(path, sep=",")
    if "label" not in table.columns or not (
        {"image"} <= set(table.columns) or {"slide", "x", "y"} <= set(table.columns)
    ):
        raise InputError(
            f"a catalog CSV needs 'label' and 'image' or 'slide','x','y' columns; found {list(table.columns)}",
            path=path,
        )
    root = Path(path).parent
    bad = BadRows(path, skip_bad=skip_bad)
    known = [c for c in CATALOG_COLUMNS if c in table.columns and c not in ("target",)]
    extras = [c for c in table.columns if c not in CATALOG_COLUMNS]
    rows, extra_rows = [], []
    for i, rec in enumerate(table.to_dict("records")):
        line = i + 2
        row: dict[str, Any] = {c: rec[c] for c in known}
        try:
            row["label"] = _label(rec["label"])
            if "experts" in row:
                row["experts"] = _experts_from_text(str(row["experts"]))
            for c in ("x", "y"):
                if c in row:
                    row[c] = float(row[c]) if str(row[c]).strip() not in ("", "nan") else math.nan
            if "page" in row:
                row["page"] = int(float(row["page"])) if str(row["page"]).strip() else -1
            if "hard" in row:
                row["hard"] = str(row["hard"]).strip().lower() in ("true", "1", "yes")
        except ValueError as exc:
            bad.add(line, str(exc))
            continue
        image = str(row.get("image", "") or "")
        if image:
            full = Path(image) if Path(image).is_absolute() else root / image
            if check_files and not full.is_file():
                bad.add(line, f"image file not found: {full}")
                continue
            row["image"] = str(full)
        elif not row.get("slide") or math.isnan(float(row.get("x", math.nan))):
            bad.add(line, "row has neither an image nor a slide point")
            continue
        row.setdefault("source", "csv")
        if not row.get("source"):
            row["source"] = "csv"
        rows.append(row)
        extra_rows.append({c: rec[c] for c in extras})
    frame = make_catalog(rows)
    for c in extras:
        frame[c] = [r[c] for r in extra_rows]
    return bad.finish(frame)
