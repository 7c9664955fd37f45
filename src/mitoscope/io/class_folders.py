"""Patches sorted into class folders (``Atypical/``, ``Normal/``, any depth), with or without AtNorM-MD's
``expert_votes.csv`` (``Filename, Expert_1..Expert_5, Majority``)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mitoscope.io.catalog import make_catalog
from mitoscope.io.tables import BadRows, find_files, parse_vote, read_table, require_columns
from mitoscope.utils.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CLASS_FOLDERS = {
    "atypical": "atypical", "amf": "atypical", "abnormal": "atypical",
    "normal": "normal", "nmf": "normal", "typical": "normal",
}  # fmt: skip


def class_of_folder(name: str) -> str | None:
    """``atypical``/``normal`` for a class folder name (case-insensitive), else ``None``.

    Examples:
        >>> class_of_folder("Atypical"), class_of_folder("NMF"), class_of_folder("images")
        ('atypical', 'normal', None)
    """
    return CLASS_FOLDERS.get(name.strip().lower())


def _label_of_path(path: Path, root: Path) -> str | None:
    for part in reversed(path.relative_to(root).parts[:-1]):
        label = class_of_folder(part)
        if label is not None:
            return label
    return None


def read_class_folders(root: str | os.PathLike[str], *, source: str = "folders") -> pd.DataFrame:
    """Every image under ``root`` whose nearest class folder is ``Atypical``/``Normal`` (or AMF/NMF).

    No slide ids: each image is its own group.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for sub in ("x/Atypical", "x/Normal"):
        ...     (d / sub).mkdir(parents=True)
        ...     Image.new("RGB", (8, 8)).save(d / sub / "1.png")
        >>> read_class_folders(d)["label"].tolist()
        ['atypical', 'normal']
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            label = _label_of_path(path, root)
            if label is None:
                continue
            rows.append({"image": str(path), "label": label, "domain": root.name, "source": source})
    if not rows:
        raise InputError("no images in Atypical/ or Normal/ class folders", path=root)
    return make_catalog(rows)


def read_atnorm_votes(
    path: str | os.PathLike[str],
    *,
    images_root: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Read AtNorM-MD's ``expert_votes.csv``; each file is looked up in whichever class folder holds it.

    ``label`` from ``Majority``, ``experts`` from ``Expert_1..Expert_n``; no slide ids (group = image).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "Normal").mkdir()
        >>> _ = (d / "Normal" / "1.png").write_bytes(b"")
        >>> _ = (d / "expert_votes.csv").write_text("Filename,Expert_1,Expert_2,Majority\\n1.png,Normal,Atypical,Normal\\n")
        >>> read_atnorm_votes(d / "expert_votes.csv")[["label", "experts", "hard"]].values.tolist()[0]
        ['normal', (0, 1), True]
    """
    table = read_table(path, sep=",")
    require_columns(table, ["Filename", "Majority"], path=path, what="AtNorM-MD expert votes")
    expert_cols = sorted(
        (c for c in table.columns if c.lower().startswith("expert_")), key=lambda c: int(c.split("_")[-1])
    )
    root = Path(images_root) if images_root is not None else Path(path).parent
    files = find_files(root, suffixes=IMAGE_SUFFIXES)
    bad = BadRows(path, skip_bad=skip_bad)
    rows = []
    first_row: dict[str, int] = {}
    for i, rec in enumerate(table.to_dict("records")):
        line = i + 2
        name = str(rec["Filename"])
        if name in first_row:
            bad.add(line, f"{name!r} is listed again (first on row {first_row[name]})")
            continue
        first_row[name] = line
        try:
            votes = tuple(parse_vote(rec[c]) for c in expert_cols)
            final = parse_vote(rec["Majority"])
        except ValueError as exc:
            bad.add(line, str(exc))
            continue
        if final is None:
            bad.add(line, "Majority is blank")
            continue
        image = files.get(Path(name).name)
        if image is None:
            if check_files:
                bad.add(line, f"image {name!r} not found in any folder under {root}")
                continue
            image = root / name
        rows.append(
            {
                "image": str(image),
                "label": "atypical" if final else "normal",
                "experts": votes,
                "domain": "AtNorM-MD",
                "source": "atnorm-md",
            }
        )
    return bad.finish(make_catalog(rows))
