"""MIDOG 2025 atypical training labels: ``MIDOG25_atypical_train.csv``.

Columns: ``image_id, filename, coordinateX, coordinateY, Tumor, Scanner, Origin, Species, expert1, expert2,
expert3, majority`` with votes ``AMF``/``NMF`` (``expert3`` blank where experts 1 and 2 agree). ``filename`` is the
MIDOG++ region TIFF and the coordinates are mitotic-figure centres in it; ``image_id`` names the patch image.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mitoscope.io.catalog import make_catalog
from mitoscope.io.midogpp import canonical_tumor
from mitoscope.io.tables import BadRows, find_files, parse_vote, read_table, require_columns

MIDOG25_COLUMNS = (
    "image_id", "filename", "coordinateX", "coordinateY", "Tumor", "Scanner", "Origin", "Species",
    "expert1", "expert2", "expert3", "majority",
)  # fmt: skip


def read_midog25_csv(
    path: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Read the MIDOG 2025 atypical CSV into a classification catalog.

    Every row is a point on a slide (``slide`` = ``filename``, ``x``/``y`` = coordinates), ready for
    :func:`mitoscope.data.patch_extraction.extract_patches`. With ``images_dir`` (a folder of the patch images,
    any depth) ``image`` is also set to the file named by ``image_id``. The frame has an extra ``patch_id`` column
    (``image_id``). ``domain`` is the tumour type, ``group`` the slide.

    Args:
        path: the CSV.
        images_dir: optional folder holding the patch images.
        check_files: with ``images_dir``, raise (or skip) rows whose image is missing.
        skip_bad: skip bad rows (listed in ``frame.attrs["skipped"]``) instead of raising.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
        >>> _ = p.write_text(",".join(MIDOG25_COLUMNS) + "\\n1.png,201.tiff,50,60,canine lung cancer,3D Histech,"
        ...     "VMU Vienna,Canine,AMF,NMF,AMF,AMF\\n")
        >>> read_midog25_csv(p)[["slide", "x", "label", "experts", "hard"]].values.tolist()[0]
        ['201.tiff', 50.0, 'atypical', (1, 0, 1), True]
    """
    table = read_table(path, sep=",")
    require_columns(table, MIDOG25_COLUMNS, path=path, what="the MIDOG 2025 atypical CSV")
    files = find_files(images_dir) if images_dir is not None else {}
    bad = BadRows(path, skip_bad=skip_bad)
    rows, ids = [], []
    for i, rec in enumerate(table.to_dict("records")):
        line = i + 2
        try:
            votes = tuple(parse_vote(rec[c]) for c in ("expert1", "expert2", "expert3"))
            final = parse_vote(rec["majority"])
            x, y = float(rec["coordinateX"]), float(rec["coordinateY"])
        except ValueError as exc:
            bad.add(line, str(exc))
            continue
        if final is None:
            bad.add(line, "majority is blank")
            continue
        image = ""
        if images_dir is not None:
            found = files.get(Path(rec["image_id"]).name)
            if found is None and check_files:
                bad.add(line, f"patch image {rec['image_id']!r} not found under {images_dir}")
                continue
            image = str(found or Path(images_dir) / rec["image_id"])
        tumor = canonical_tumor(rec["Tumor"])
        rows.append(
            {
                "image": image,
                "slide": rec["filename"],
                "x": x,
                "y": y,
                "label": "atypical" if final else "normal",
                "experts": votes,
                "tumor": tumor,
                "scanner": rec["Scanner"],
                "origin": rec["Origin"],
                "species": rec["Species"],
                "domain": tumor,
                "group": rec["filename"],
                "source": "midog25",
            }
        )
        ids.append(rec["image_id"])
    frame = make_catalog(rows)
    if not frame.empty:
        frame["patch_id"] = ids
    return bad.finish(frame)
