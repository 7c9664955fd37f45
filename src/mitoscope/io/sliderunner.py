"""SlideRunner SQLite databases: read annotations (MIDOG 2021 ships its labels this way) and write predictions.

The schema is SlideRunner's own (as in ``MIDOG2021.sqlite``): ``Slides``, ``Annotations`` (``type`` 1 = spot,
``agreedClass``, ``deleted``), ``Annotations_coordinates``, ``Annotations_label`` (one row per person's label),
``Classes``, ``Persons``, ``Log``, and SlideRunner's triggers (which call the SQL functions ``pycurrent_time``,
``generate_uuid`` and ``randcolor`` that SlideRunner registers; we register the same ones while writing).
A prediction's score (and ``p_atypical``) are kept in the annotation's ``description`` as ``score=…;p_atypical=…``.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from mitoscope.io.catalog import make_catalog
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError

SPOT = 1
DEFAULT_CLASSES = ("mitotic figure", "not mitotic figure")
DEFAULT_COLORS = {
    "mitotic figure": "#fc7ca7",
    "not mitotic figure": "#c5b6b2",
    "atypical": "#e6194b",
    "normal": "#3cb44b",
}
_CATALOG_LABEL = {
    "mitotic figure": "mitotic figure",
    "not mitotic figure": "hard negative",
    "hard negative": "hard negative",
    "non-mitotic figure": "hard negative",
    "mitotic figure look-alike": "hard negative",
    "atypical": "atypical",
    "atypical mitotic figure": "atypical",
    "normal": "normal",
    "normal mitotic figure": "normal",
}

SLIDERUNNER_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE `Annotations_label` (\t`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,\t`person`\tINTEGER,\t`class`\tINTEGER,   `exact_id` INTEGER,\t`annoId`\tINTEGER)",
    "CREATE TABLE `Annotations_coordinates` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`coordinateX`\tINTEGER,`coordinateY`\tINTEGER,`coordinateZ`\tINTEGER DEFAULT 0,`slide`\tINTEGER,`annoId`\tINTEGER,`orderIdx`\tINTEGER)",
    "CREATE TABLE `Annotations` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`slide`\tINTEGER,`guid`\tTEXT,`lastModified`\tREAL DEFAULT 1616148830.5508225,`deleted`\tINTEGER DEFAULT 0,`type`\tINTEGER,`agreedClass`\tINTEGER,`description` TEXT,`clickable` INTEGER DEFAULT 1)",
    "CREATE TABLE `Classes` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`name`\tTEXT,`color` TEXT)",
    "CREATE TABLE `Persons` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`name`\tTEXT,`isExactUser` INTEGER DEFAULT 0)",
    "CREATE TABLE `Slides` (`uid`\tINTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,`filename`\tTEXT,`width`\tINTEGER,`height`\tINTEGER,`directory` TEXT,`uuid` TEXT,`exactImageID` TEXT, `EXACTUSER` INTEGER DEFAULT 0)",
    "CREATE TABLE `Log` (`uid` INTEGER PRIMARY KEY AUTOINCREMENT,`dateTime` FLOAT,`labelId` INTEGER)",
    "CREATE TRIGGER updateAnnotation_fromLabelUPDATE\n                        AFTER UPDATE ON Annotations_label\n                        BEGIN\n                            UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId;\n                        END",
    "CREATE TRIGGER updateAnnotation_fromCoordsUPDATE\n                        AFTER UPDATE ON Annotations_coordinates\n                        BEGIN\n                            UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId;\n                        END",
    "CREATE TRIGGER updateAnnotation_UPDATE\n                        AFTER UPDATE ON Annotations\n                        BEGIN\n                            UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.uid;\n                        END",
    "CREATE TRIGGER updateAnnotation_fromLabelINSERT\n                        AFTER INSERT ON Annotations_label\n                        BEGIN\n                            UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId;\n                        END",
    "CREATE TRIGGER updateAnnotation_fromCoordsINSERT\n                        AFTER INSERT ON Annotations_coordinates\n                        BEGIN\n                            UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.annoId;\n                        END",
    "CREATE TRIGGER updateAnnotation_INSERT\n                        AFTER INSERT ON Annotations\n                        BEGIN\n                            UPDATE Annotations SET lastModified=pycurrent_time() where uid==new.uid;\n                        END",
    "CREATE TRIGGER updateAnnotation_ins\n                    AFTER INSERT ON Annotations\n                    BEGIN\n                        UPDATE Annotations SET guid=generate_uuid() where uid==new.uid and guid is Null;\n                    END",
    "CREATE TRIGGER setRandomcolor\n                    AFTER INSERT ON Classes\n                    BEGIN\n                        UPDATE Classes SET color=randcolor() where uid==new.uid and color is Null;\n                    END",
)


def _connect_for_writing(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.create_function("pycurrent_time", 0, time.time)
    conn.create_function("generate_uuid", 0, lambda: str(uuid.uuid4()))
    conn.create_function("randcolor", 0, lambda: f"#{random.randrange(0x1000000):06x}")
    return conn


def _open_db(path: str | os.PathLike[str]) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise InputError("database not found", path=path)
    try:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as exc:
        raise InputError(f"not an SQLite database: {exc}", path=path) from exc
    need = {"Slides", "Annotations", "Annotations_coordinates", "Annotations_label", "Classes", "Persons"}
    if not need <= tables:
        conn.close()
        raise InputError(f"not a SlideRunner database: missing tables {sorted(need - tables)}", path=path)
    return conn


def _parse_description(text: str | None) -> dict[str, float]:
    values: dict[str, float] = {}
    for part in str(text or "").split(";"):
        key, _, value = part.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            continue
    return values


def _spots(conn: sqlite3.Connection, include_deleted: bool) -> pd.DataFrame:
    annotations = pd.read_sql_query(
        "select a.uid as anno, s.filename as slide, a.agreedClass as class_id, a.description as description,"
        " a.deleted as deleted from Annotations a join Slides s on s.uid = a.slide where a.type = ? order by a.uid",
        conn,
        params=(SPOT,),
    )
    coords = pd.read_sql_query(
        "select annoId as anno, coordinateX as x, coordinateY as y, orderIdx from Annotations_coordinates",
        conn,
    )
    first = coords.sort_values(["anno", "orderIdx"], kind="stable").drop_duplicates("anno")
    frame = annotations.merge(first[["anno", "x", "y"]], on="anno", how="inner")
    if not include_deleted:
        frame = frame[frame["deleted"].fillna(0).astype(int) == 0]
    return frame.reset_index(drop=True)


def read_sliderunner(
    path: str | os.PathLike[str], *, include_deleted: bool = False, source: str = "sliderunner"
) -> pd.DataFrame:
    """Read the spot annotations of a SlideRunner database into a detection catalog.

    ``label`` from ``agreedClass`` (``not mitotic figure`` → ``hard negative``), ``experts`` the latest label of
    each person whose name starts with "expert" (all persons when none does; ``None`` where one did not vote).
    Deleted annotations are left out unless ``include_deleted``.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.sqlite"
        >>> det = pd.DataFrame({"x": [10], "y": [20], "score": [0.9], "label": ["mitotic figure"]})
        >>> _ = write_sliderunner(p, {"001.tiff": det})
        >>> read_sliderunner(p)[["slide", "x", "y", "label"]].values.tolist()[0]
        ['001.tiff', 10.0, 20.0, 'mitotic figure']
    """
    conn = _open_db(path)
    try:
        classes = {int(u): str(n) for u, n in conn.execute("select uid, name from Classes")}
        persons = [(int(u), str(n)) for u, n in conn.execute("select uid, name from Persons order by uid")]
        spots = _spots(conn, include_deleted)
        labels = pd.read_sql_query(
            "select uid, person, class, annoId from Annotations_label order by uid", conn
        )
    except sqlite3.DatabaseError as exc:
        raise InputError(f"cannot read the SlideRunner tables: {exc}", path=path) from exc
    finally:
        conn.close()
    experts = [u for u, n in persons if n.lower().startswith("expert")] or [u for u, _ in persons]
    latest = labels[labels["person"].isin(experts)].groupby(["annoId", "person"])["class"].last()
    votes_of: dict[int, dict[int, int]] = {}
    for (anno, person), cls in latest.items():
        votes_of.setdefault(int(anno), {})[int(person)] = int(cls)
    positive = {
        u for u, n in classes.items() if _CATALOG_LABEL.get(n.lower()) in ("mitotic figure", "atypical")
    }
    rows = []
    for rec in spots.itertuples(index=False):
        name = classes.get(int(rec.class_id), "") if not pd.isna(rec.class_id) else ""
        label = _CATALOG_LABEL.get(name.lower())
        if label is None:
            raise InputError(
                f"annotation {rec.anno}: class {name or rec.class_id!r} is not one mitoscope knows "
                f"({sorted(_CATALOG_LABEL)})",
                path=path,
            )
        cast = votes_of.get(int(rec.anno), {})
        votes = tuple(
            (1 if cast[p] in positive else 0) if p in cast and cast[p] in classes else None for p in experts
        )
        rows.append(
            {
                "slide": str(rec.slide),
                "x": float(rec.x),
                "y": float(rec.y),
                "label": label,
                "experts": votes if any(v is not None for v in votes) else (),
                "domain": "",
                "group": str(rec.slide),
                "source": source,
            }
        )
    return make_catalog(rows)


def read_sliderunner_detections(path: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Read a SlideRunner database as detections tables (x, y, score, label[, p_atypical]) per slide file name.

    ``label`` is the class name (``not mitotic figure`` → ``hard negative``); ``score`` comes from the
    ``description`` written by :func:`write_sliderunner` (NaN when absent).

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.sqlite"
        >>> det = pd.DataFrame({"x": [10], "y": [20], "score": [0.9], "label": ["mitotic figure"]})
        >>> _ = write_sliderunner(p, {"001.tiff": det})
        >>> read_sliderunner_detections(p)["001.tiff"]["score"].tolist()
        [0.9]
    """
    conn = _open_db(path)
    try:
        classes = {int(u): str(n) for u, n in conn.execute("select uid, name from Classes")}
        slides = [str(r[0]) for r in conn.execute("select filename from Slides order by uid")]
        spots = _spots(conn, include_deleted=False)
    finally:
        conn.close()
    out: dict[str, pd.DataFrame] = {}
    for slide in slides:
        part = spots[spots["slide"] == slide]
        rows = []
        for rec in part.itertuples(index=False):
            name = classes.get(int(rec.class_id), str(rec.class_id)) if not pd.isna(rec.class_id) else ""
            extra = _parse_description(rec.description)
            row = {
                "x": float(rec.x),
                "y": float(rec.y),
                "score": extra.get("score", math.nan),
                "label": _CATALOG_LABEL.get(name.lower(), name),
            }
            if "p_atypical" in extra:
                row["p_atypical"] = extra["p_atypical"]
            rows.append(row)
        frame = pd.DataFrame(rows, columns=["x", "y", "score", "label"] if not rows else None)
        if "p_atypical" in frame and frame["p_atypical"].isna().all():
            frame = frame.drop(columns="p_atypical")
        out[slide] = frame.reset_index(drop=True)
    return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _class_name(label: str) -> str:
    return "not mitotic figure" if label == "hard negative" else label


def write_sliderunner(
    path: str | os.PathLike[str],
    detections: Mapping[str, pd.DataFrame],
    *,
    class_names: Sequence[str] = DEFAULT_CLASSES,
    slide_dims: Mapping[str, tuple[int, int]] | None = None,
    person: str = "mitoscope",
) -> Path:
    """Write detections as a SlideRunner database (spot annotations), atomically.

    Args:
        path: the ``.sqlite`` file.
        detections: slide file name → detections table (``x``, ``y`` level-0 px, ``score``, ``label``, optional
            ``p_atypical``). Whole-pixel coordinates are stored as integers, others as reals (as in MIDOG 2021).
        class_names: classes created first, in this order (``hard negative`` is written as SlideRunner's
            ``not mitotic figure``); labels not listed are added after them.
        slide_dims: optional ``(width, height)`` per slide.
        person: the "person" the labels are attributed to.

    Returns:
        The written path.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "p.sqlite"
        >>> det = pd.DataFrame({"x": [5.0], "y": [6.0], "score": [0.7], "label": ["mitotic figure"]})
        >>> write_sliderunner(p, {"a.tiff": det}).name
        'p.sqlite'
    """
    dims = dict(slide_dims or {})
    names = [_class_name(n) for n in class_names]
    for frame in detections.values():
        missing = [c for c in ("x", "y", "label") if c not in frame.columns]
        if missing:
            raise InputError(f"detections need columns {missing}; found {list(frame.columns)}", path=path)
        for label in frame["label"].astype(str):
            if _class_name(label) not in names:
                names.append(_class_name(label))
    with atomic_path(path) as tmp:
        conn = _connect_for_writing(tmp)
        try:
            conn.execute("PRAGMA user_version = 3")
            for stmt in SLIDERUNNER_SCHEMA:
                conn.execute(stmt)
            class_id = {}
            for i, name in enumerate(names, start=1):
                conn.execute(
                    "insert into Classes (uid, name, color) values (?, ?, ?)",
                    (i, name, DEFAULT_COLORS.get(name)),
                )
                class_id[name] = i
            conn.execute("insert into Persons (uid, name, isExactUser) values (1, ?, 0)", (person,))
            for s_uid, (slide, frame) in enumerate(detections.items(), start=1):
                w, h = dims.get(slide, (None, None))
                conn.execute(
                    "insert into Slides (uid, filename, width, height, directory, EXACTUSER) values (?, ?, ?, ?, ?, 0)",
                    (s_uid, str(slide), w, h, ""),
                )
                for rec in frame.to_dict("records"):
                    x, y = float(rec["x"]), float(rec["y"])
                    if math.isnan(x) or math.isnan(y):
                        raise InputError(f"slide {slide}: a detection has no coordinates", path=path)
                    parts = []
                    for key in ("score", "p_atypical"):
                        value = rec.get(key)
                        if value is not None and not pd.isna(value):
                            parts.append(f"{key}={float(value)!r}")
                    cid = class_id[_class_name(str(rec["label"]))]
                    cur = conn.execute(
                        "insert into Annotations (slide, guid, lastModified, deleted, type, agreedClass, description,"
                        " clickable) values (?, ?, ?, 0, ?, ?, ?, 1)",
                        (s_uid, str(uuid.uuid4()), time.time(), SPOT, cid, ";".join(parts) or None),
                    )
                    anno = cur.lastrowid
                    conn.execute(
                        "insert into Annotations_coordinates (coordinateX, coordinateY, coordinateZ, slide, annoId,"
                        " orderIdx) values (?, ?, 0, ?, ?, 1)",
                        (_number(x), _number(y), s_uid, anno),
                    )
                    conn.execute(
                        "insert into Annotations_label (person, class, annoId) values (1, ?, ?)", (cid, anno)
                    )
            conn.commit()
        finally:
            conn.close()
    return Path(path)


def catalog_to_detections(catalog: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split a detection catalog (or a detections table with a ``slide`` column) into per-slide tables.

    Examples:
        >>> cat = make_catalog([{"slide": "a", "x": 1, "y": 2, "label": "mitotic figure"}])
        >>> catalog_to_detections(cat)["a"].columns.tolist()
        ['x', 'y', 'score', 'label']
    """
    out = {}
    for slide, part in catalog.groupby("slide", sort=False):
        frame = pd.DataFrame(
            {
                "x": part["x"].astype(float).to_numpy(),
                "y": part["y"].astype(float).to_numpy(),
                "score": part["score"].astype(float).to_numpy() if "score" in part else math.nan,
                "label": part["label"].astype(str).to_numpy(),
            }
        )
        if "p_atypical" in part:
            frame["p_atypical"] = part["p_atypical"].astype(float).to_numpy()
        out[str(slide)] = frame
    return out
