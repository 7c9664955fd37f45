"""AMi-Br (atypical mitosis, breast) patches: ``amibr_train.csv`` plus ``images/{Atypical,Normal}/*.png``.

CSV columns: ``file, slide, dataset, uid, x, y, expert1_label, expert2_label, expert{1,2,3}_atypical,
majority_atypical, label``. ``expert*_label`` carry subclasses (``NMF metaphase``, ``AMF multipolar``, …).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mitoscope.io.catalog import make_catalog
from mitoscope.io.tables import BadRows, parse_vote, read_table, require_columns

AMIBR_COLUMNS = (
    "file", "slide", "dataset", "x", "y", "expert1_atypical", "expert2_atypical", "expert3_atypical",
    "majority_atypical",
)  # fmt: skip


def _subclass(final: int, labels: list[str]) -> str:
    """The first expert subclass consistent with the final label (``AMF …`` for atypical, ``NMF …`` otherwise)."""
    prefix = "AMF" if final == 1 else "NMF"
    for text in labels:
        if text.upper().startswith(prefix):
            return text
    return next((t for t in labels if t), "")


def read_amibr_csv(
    path: str | os.PathLike[str],
    *,
    images_root: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Read the AMi-Br CSV into a classification catalog.

    ``image`` = ``images_root / file`` (``images_root`` defaults to the CSV's folder), ``label`` from
    ``majority_atypical``, ``experts`` from ``expert{1,2,3}_atypical``, ``subclass`` the experts' finer class,
    ``group`` = slide, ``domain`` = dataset (``MIDOG21`` / ``TUPAC16``), ``tumor`` human breast cancer; optional
    ``domain`` and ``tumor`` columns (as ``mitoscope synth patches`` writes them) take precedence.

    Args:
        path: ``amibr_train.csv``.
        images_root: folder the ``file`` column is relative to.
        check_files: raise (or skip) rows whose image file does not exist.
        skip_bad: skip bad rows (listed in ``frame.attrs["skipped"]``, with a warning) instead of raising.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.csv").write_text("file,slide,dataset,x,y,expert1_label,expert2_label,expert1_atypical,"
        ...     "expert2_atypical,expert3_atypical,majority_atypical\\n"
        ...     "p.png,s1,MIDOG21,5,6,AMF other,NMF metaphase,True,False,True,True\\n")
        >>> cat = read_amibr_csv(d / "a.csv", check_files=False)
        >>> cat[["label", "experts", "hard", "subclass", "group", "domain"]].values.tolist()[0]
        ['atypical', (1, 0, 1), True, 'AMF other', 's1', 'MIDOG21']
    """
    table = read_table(path, sep=",")
    require_columns(table, AMIBR_COLUMNS, path=path, what="AMi-Br")
    root = Path(images_root) if images_root is not None else Path(path).parent
    bad = BadRows(path, skip_bad=skip_bad)
    label_cols = [c for c in ("expert1_label", "expert2_label") if c in table.columns]
    rows = []
    for i, rec in enumerate(table.to_dict("records")):
        line = i + 2
        try:
            votes = tuple(parse_vote(rec[f"expert{k}_atypical"]) for k in (1, 2, 3))
            final = parse_vote(rec["majority_atypical"])
            x, y = float(rec["x"]), float(rec["y"])
        except ValueError as exc:
            bad.add(line, str(exc))
            continue
        if final is None:
            bad.add(line, "majority_atypical is blank")
            continue
        image = root / rec["file"]
        if check_files and not image.is_file():
            bad.add(line, f"image file not found: {image}")
            continue
        rows.append(
            {
                "image": str(image),
                "slide": rec["slide"],
                "x": x,
                "y": y,
                "label": "atypical" if final else "normal",
                "experts": votes,
                "tumor": rec.get("tumor") or "human breast cancer",
                "species": "Human",
                "domain": rec.get("domain") or rec["dataset"],
                "group": rec["slide"],
                "source": "amibr",
                "subclass": _subclass(final, [rec[c] for c in label_cols]),
            }
        )
    return bad.finish(make_catalog(rows))
